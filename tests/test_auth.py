"""Every authentication case of the foundation issue, over HTTP."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from jose import jwt

from app.core.config import RedisFailureMode
from app.core.security import Role, create_access_token
from tests.conftest import TEST_JWT_SECRET, Api, make_settings, running_app
from tests.support import closed_port

URL = "/api/v1/bookings/"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _expect_401(response, code: str = "invalid_token") -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["code"] == code


async def test_platform_access_token_works(api: Api) -> None:
    token = jwt.encode(
        {"user_id": 42, "email": "a@b.c", "role": "user", "type": "access", "exp": 4102444800},
        TEST_JWT_SECRET,
        algorithm="HS256",
    )
    response = await api.client.get(URL, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_sub_is_accepted_as_user_id(api: Api) -> None:
    token = jwt.encode({"sub": "42", "exp": 4102444800}, TEST_JWT_SECRET, algorithm="HS256")
    assert (await api.client.get(URL, headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_missing_token(api: Api) -> None:
    _expect_401(await api.client.get(URL), code="not_authenticated")
    _expect_401(await api.client.get(URL, headers={"Authorization": "Basic abc"}), code="not_authenticated")


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode({"user_id": 1, "exp": 1}, TEST_JWT_SECRET, algorithm="HS256"),  # expired
        jwt.encode({"user_id": 1, "exp": 4102444800}, "another-secret", algorithm="HS256"),  # bad signature
        jwt.encode({"user_id": 1, "exp": 4102444800}, TEST_JWT_SECRET, algorithm="HS512"),  # other algorithm
        jwt.encode({"user_id": 1}, TEST_JWT_SECRET, algorithm="HS256"),  # no exp
        jwt.encode({"user_id": 1, "exp": 4102444800, "type": "refresh"}, TEST_JWT_SECRET, algorithm="HS256"),
        jwt.encode({"email": "x@y.z", "exp": 4102444800}, TEST_JWT_SECRET, algorithm="HS256"),  # no user
        jwt.encode({"user_id": 1, "role": "root", "exp": 4102444800}, TEST_JWT_SECRET, algorithm="HS256"),
        _b64({"alg": "none", "typ": "JWT"}) + "." + _b64({"user_id": 1, "exp": 4102444800}) + ".",
        "not.a.jwt",
    ],
    ids=["expired", "bad-signature", "other-alg", "no-exp", "refresh", "no-user", "bad-role", "alg-none", "garbage"],
)
async def test_bad_tokens_are_401(api: Api, token: str) -> None:
    _expect_401(await api.client.get(URL, headers={"Authorization": f"Bearer {token}"}))


async def test_user_token_on_admin_route_is_403(api: Api) -> None:
    response = await api.client.get("/api/v1/admin/bookings/", headers=api.headers(5))
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert (await api.client.get("/api/v1/admin/bookings/", headers=api.admin())).status_code == 200


async def test_revoked_jti_and_user_are_401(api: Api) -> None:
    redis = api.runtime.redis.client
    token = create_access_token(api.settings, 8, extra={"jti": "tok-1"})
    await redis.set("revoked:jti:tok-1", "1", ex=60)
    try:
        _expect_401(await api.client.get(URL, headers={"Authorization": f"Bearer {token}"}), code="token_revoked")
        await redis.set("revoked:user:9", "1", ex=60)
        _expect_401(await api.client.get(URL, headers=api.headers(9)), code="token_revoked")
        assert (await api.client.get(URL, headers=api.headers(10))).status_code == 200
    finally:
        await redis.delete("revoked:jti:tok-1", "revoked:user:9")


async def test_revocation_check_with_redis_down_follows_the_setting(database_url: str) -> None:
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    async with running_app(make_settings(database_url, dead)) as allowing:
        assert (await allowing.client.get(URL, headers=allowing.headers(5))).status_code == 200
    denying = make_settings(database_url, dead, auth_redis_failure_mode=RedisFailureMode.DENY)
    async with running_app(denying) as api:
        response = await api.client.get(URL, headers=api.headers(5))
        assert response.status_code == 503


async def test_open_routes_need_no_token(api: Api) -> None:
    for path in ("/health", "/api/v1/health", "/api/v1/info", "/docs", "/openapi.json", "/metrics"):
        assert (await api.client.get(path)).status_code == 200, path


async def test_every_api_route_requires_a_token(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1/") or path in ("/api/v1/health", "/api/v1/info", "/api/v1/payments/webhook"):
            continue
        for method in operations:
            concrete = path.replace("{booking_id}", "1").replace("{event_id}", "1").replace("{entry_id}", "1")
            response = await api.client.request(method.upper(), concrete)
            assert response.status_code == 401, (method, path)


async def test_token_lifetime_follows_setting(api: Api) -> None:
    token = create_access_token(api.settings, 5, role=Role.USER, expires_in=timedelta(seconds=-1))
    _expect_401(await api.client.get(URL, headers={"Authorization": f"Bearer {token}"}))
