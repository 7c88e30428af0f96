"""Hostile credentials: malformed webhook signatures and correctly signed tokens with odd claims
are 401, never a 500, and nothing half valid is taken as valid."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from jose import jwt
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.security import MAX_NUMERIC_DATE
from tests.checks import count
from tests.conftest import TEST_JWT_SECRET, WEBHOOK_SECRET, Api
from tests.support import pay

URL = "/api/v1/bookings/"
LATER = int(time.time()) + 3600


def _signed_webhook_header(timestamp: str, body: bytes) -> bytes:
    digest = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return _header_bytes(f"t={timestamp},v1={digest}")


def _header_bytes(text: str) -> bytes:
    """As a client would send it: Latin-1 where it can (the server reads header bytes as Latin-1), else UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


@pytest.mark.parametrize(
    "timestamp",
    ["²", "¹²³", "9" * 5000, "١٢٣", " 123", "+123", "-123", "1_000", "0x10", "1e3", "", "1234567890123"],
    ids=[
        "superscript",
        "superscripts",
        "5000-digits",
        "arabic-indic",
        "space",
        "plus",
        "minus",
        "underscore",
        "hex",
        "exponent",
        "empty",
        "13-digits",
    ],
)
async def test_malformed_signature_timestamps_are_401(api: Api, db: AsyncConnection, timestamp: str) -> None:
    await api.create_event(1, capacity=5)
    intent = await pay(api, 5, (await api.book(5, 1)).json()["id"])
    body = json.dumps({**{k: intent[k] for k in ("payment_reference", "amount", "currency")}, "outcome": "succeeded"})
    header = _signed_webhook_header(timestamp, body.encode())  # even correctly signed over it
    response = await api.client.post(
        "/api/v1/payments/webhook",
        content=body,
        headers={b"Evently-Signature": header, b"content-type": b"application/json"},
    )
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid_signature"
    assert await count(db, "bookings", "status = 'confirmed'") == 0


@pytest.mark.parametrize("signature", ["é" * 64, "00", "z" * 64, ""])
async def test_malformed_signature_digests_are_401(api: Api, signature: str) -> None:
    header = _header_bytes(f"t={int(time.time())},v1={signature}")
    response = await api.client.post("/api/v1/payments/webhook", content=b"{}", headers={b"Evently-Signature": header})
    assert response.status_code == 401 and response.json()["code"] == "invalid_signature"


def _token(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")


def _raw_token(payload: str, header: str = '{"alg":"HS256","typ":"JWT"}') -> str:
    """Signed with the right secret over a payload that json.dumps would not write (Infinity, nesting)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(header.encode()) + b"." + b64(payload.encode())
    signature = hmac.new(TEST_JWT_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


BAD_TOKENS = {
    "exp-null": _token({"user_id": 5, "exp": None}),
    "exp-list": _token({"user_id": 5, "exp": [LATER]}),
    "exp-object": _token({"user_id": 5, "exp": {"at": LATER}}),
    "exp-infinity": _raw_token('{"user_id": 5, "exp": Infinity}'),
    "exp-nan": _raw_token('{"user_id": 5, "exp": NaN}'),
    "exp-huge": _raw_token('{"user_id": 5, "exp": 1e400}'),
    "exp-numeric-string": _token({"user_id": 5, "exp": str(LATER)}),
    "exp-bool": _token({"user_id": 5, "exp": True}),
    "exp-after-9999": _token({"user_id": 5, "exp": MAX_NUMERIC_DATE + 1}),
    "exp-10-to-30": _token({"user_id": 5, "exp": 10**30}),
    "nbf-list": _token({"user_id": 5, "exp": LATER, "nbf": [1]}),
    "nbf-future": _token({"user_id": 5, "exp": LATER, "nbf": LATER - 60}),
    "iat-object": _token({"user_id": 5, "exp": LATER, "iat": {"a": 1}}),
    "iat-string": _token({"user_id": 5, "exp": LATER, "iat": "1"}),
    "iat-future": _token({"user_id": 5, "exp": LATER, "iat": int(time.time()) + 600}),
    "user-id-float": _token({"user_id": 1.9, "exp": LATER}),
    "user-id-whole-float": _token({"user_id": 5.0, "exp": LATER}),
    "user-id-arabic-digits": _token({"user_id": "١٢٣", "exp": LATER}),
    "user-id-fullwidth": _token({"user_id": "\uff15", "exp": LATER}),
    "user-id-2-63": _token({"user_id": 2**63, "exp": LATER}),
    "user-id-huge-string": _token({"user_id": "9" * 5000, "exp": LATER}),
    "user-id-list": _token({"user_id": [5], "exp": LATER}),
    "user-id-signed": _token({"user_id": "+5", "exp": LATER}),
    "sub-spaces": _token({"sub": " 5 ", "exp": LATER}),
    "sub-number": _token({"sub": 5, "exp": LATER}),
    "jti-number": _token({"user_id": 5, "exp": LATER, "jti": 123}),
    "at-hash": _token({"user_id": 5, "exp": LATER, "at_hash": "c2lnbmF0dXJl"}),
    "role-list": _token({"user_id": 5, "exp": LATER, "role": ["admin"]}),
    "role-object": _token({"user_id": 5, "exp": LATER, "role": {"admin": True}}),
    "claims-nested": _raw_token('{"user_id": 5, "exp": ' + str(LATER) + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"),
    "claims-list": _raw_token("[1, 2]"),
    "header-nested": _raw_token('{"user_id": 5}', header='{"alg":"HS256","x":' + "[" * 3000 + "]" * 3000 + "}"),
    "header-list": _raw_token('{"user_id": 5}', header='["HS256"]'),
}


async def test_tokens_the_service_cannot_read_are_401(api: Api) -> None:
    wrong = {}
    for name, token in BAD_TOKENS.items():
        response = await api.client.get(URL, headers={"Authorization": f"Bearer {token}"})
        answer = (response.status_code, response.json().get("code"), response.headers.get("WWW-Authenticate"))
        if answer != (401, "invalid_token", "Bearer"):
            wrong[name] = answer
    assert not wrong


GOOD_TOKENS = {
    "exp-float": _token({"user_id": 5, "exp": LATER + 0.5}),
    "iat-now": _token({"user_id": 5, "exp": LATER, "iat": int(time.time())}),
    "iat-slightly-ahead": _token({"user_id": 5, "exp": LATER, "iat": int(time.time()) + 5}),
    "nbf-past": _token({"user_id": 5, "exp": LATER, "nbf": int(time.time()) - 10}),
    "sub-string": _token({"sub": "5", "exp": LATER}),
    "user-id-largest": _token({"user_id": 2**63 - 1, "exp": LATER}),
    "user-id-digits": _token({"user_id": "5", "exp": LATER}),
}


async def test_well_formed_tokens_still_work(api: Api) -> None:
    statuses = {
        name: (await api.client.get(URL, headers={"Authorization": f"Bearer {token}"})).status_code
        for name, token in GOOD_TOKENS.items()
    }
    assert statuses == dict.fromkeys(GOOD_TOKENS, 200)
