from __future__ import annotations

import base64
import time

import jwt
import orjson
import pytest

from gateway.auth.sessions import decode_token, issue_token
from gateway.errors import GatewayError

SECRET = "s" * 48


def _decode_fails(token: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        decode_token(token, secret=SECRET)
    assert caught.value.status == 401 and caught.value.code == "invalid_token"
    return caught.value


def test_round_trip_has_the_standard_claims() -> None:
    token = issue_token("user-1", secret=SECRET, ttl_seconds=3600)
    claims = decode_token(token, secret=SECRET)
    assert claims.user_id == "user-1"
    assert claims.expires_at - claims.issued_at == 3600
    assert len(claims.token_id) == 32
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_each_token_has_its_own_id() -> None:
    first = decode_token(issue_token("u", secret=SECRET, ttl_seconds=60), secret=SECRET)
    second = decode_token(issue_token("u", secret=SECRET, ttl_seconds=60), secret=SECRET)
    assert first.token_id != second.token_id


def test_expired_token_is_refused() -> None:
    token = issue_token("user-1", secret=SECRET, ttl_seconds=60, now=time.time() - 120)
    assert "expired" in _decode_fails(token).message


def test_wrong_secret_is_refused() -> None:
    _decode_fails(issue_token("user-1", secret="other" * 10, ttl_seconds=60))


def test_tampered_payload_is_refused() -> None:
    header, payload, signature = issue_token("user-1", secret=SECRET, ttl_seconds=60).split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin-user"
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    _decode_fails(f"{header}.{forged}.{signature}")


def test_unsigned_token_is_refused() -> None:
    claims = {"sub": "user-1", "iat": int(time.time()), "exp": int(time.time()) + 60, "jti": "x"}
    _decode_fails(jwt.encode(claims, None, algorithm="none"))


def test_token_without_a_jti_is_refused() -> None:
    claims = {"sub": "user-1", "iat": int(time.time()), "exp": int(time.time()) + 60}
    _decode_fails(jwt.encode(claims, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c"])
def test_garbage_is_refused(token: str) -> None:
    _decode_fails(token)
