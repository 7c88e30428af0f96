"""The payment webhook's signature check (app/services/payments.py), without a request."""

from __future__ import annotations

import pytest

from app.core.errors import InvalidSignatureError
from app.services.payments import sign, verify_signature

SECRET = "whsec_unit_" + "z" * 24
BODY = b'{"payment_reference": "pay_1", "outcome": "succeeded"}'
NOW = 1_900_000_000


def refusal(header: str | None, body: bytes = BODY, secret: str = SECRET, now: float = NOW) -> str | None:
    try:
        verify_signature(header, body, secret, tolerance=300, now=now)
    except InvalidSignatureError as error:  # StaleSignatureError is one too
        return error.code
    return None


def test_a_signature_of_the_body_within_the_tolerance_is_accepted() -> None:
    assert refusal(sign(BODY, SECRET, NOW)) is None
    assert refusal(sign(BODY, SECRET, NOW - 300)) is None
    assert refusal(sign(BODY, SECRET, NOW).upper().replace("T=", "t=").replace("V1=", "v1=")) is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "v1=" + "a" * 64,
        f"t={NOW}",
        f"t={NOW},v1=xyz",
        "t=\uff11\uff12\uff13,v1=" + "a" * 64,  # fullwidth digits: not ASCII
    ],
)
def test_a_missing_or_malformed_header_is_refused(header: str | None) -> None:
    assert refusal(header) == "invalid_signature"


def test_another_body_secret_or_timestamp_does_not_match() -> None:
    assert refusal(sign(BODY, SECRET, NOW), body=BODY + b" ") == "invalid_signature"
    assert refusal(sign(BODY, "another-secret", NOW)) == "invalid_signature"
    forged_time = sign(BODY, SECRET, NOW).replace(f"t={NOW}", f"t={NOW + 1}")
    assert refusal(forged_time) == "invalid_signature"


def test_a_timestamp_outside_the_tolerance_is_stale() -> None:
    assert refusal(sign(BODY, SECRET, NOW - 301)) == "stale_signature"
    assert refusal(sign(BODY, SECRET, NOW + 301)) == "stale_signature"


def test_without_a_secret_nothing_is_accepted() -> None:
    assert refusal(sign(BODY, "", NOW), secret="") == "invalid_signature"
