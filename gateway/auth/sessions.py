"""Dashboard sessions: HS256 JWTs carried as a Bearer header or the `pr_session` cookie."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from starlette.requests import Request
from starlette.responses import Response

from gateway.clientip import request_scheme
from gateway.db.models import User
from gateway.errors import GatewayError
from gateway.settings import Settings

COOKIE_NAME = "pr_session"
ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["sub", "exp", "iat", "jti"]


@dataclass(frozen=True)
class SessionClaims:
    user_id: str
    issued_at: int
    expires_at: int
    token_id: str
    session_version: int = 0  # users.session_version when issued (tokens without `sv` count as 0)


def invalid_token(message: str = "The session token is missing, malformed or expired; log in again.") -> GatewayError:
    return GatewayError(401, "invalid_token", message, headers={"WWW-Authenticate": 'Bearer realm="api"'})


def issue_token(user_id: str, *, secret: str, ttl_seconds: int, now: float | None = None,
                session_version: int = 0) -> str:
    """A signed session token for `user_id`, valid for `ttl_seconds`, bound to the user's session version."""
    issued = int(now if now is not None else time.time())
    claims = {"sub": user_id, "iat": issued, "exp": issued + ttl_seconds, "jti": uuid.uuid4().hex,
              "sv": session_version}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def issue_session(user: User, settings: Settings) -> str:
    """A session token for `user` bound to their current session version (what every sign-in must use:
    a token issued with an older version is refused)."""
    return issue_token(user.id, secret=settings.jwt_secret, ttl_seconds=settings.jwt_ttl_seconds,
                       session_version=user.session_version)


def decode_token(token: str, *, secret: str) -> SessionClaims:
    """The claims of a valid token; 401 `invalid_token` for a tampered, expired or incomplete one."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": _REQUIRED_CLAIMS})
    except jwt.ExpiredSignatureError:
        raise invalid_token("The session token has expired; log in again.") from None
    except jwt.PyJWTError:
        raise invalid_token() from None
    subject, token_id, version = claims["sub"], claims["jti"], claims.get("sv", 0)
    if (not isinstance(subject, str) or not subject or not isinstance(token_id, str)
            or not isinstance(version, int) or isinstance(version, bool)):
        raise invalid_token()
    return SessionClaims(user_id=subject, issued_at=int(claims["iat"]), expires_at=int(claims["exp"]),
                         token_id=token_id, session_version=version)


@dataclass(frozen=True)
class Credential:
    """A session token and where it came from (`from_cookie`: the browser sent it on its own)."""

    token: str
    from_cookie: bool


def credential_from_request(request: Request) -> Credential | None:
    """The Bearer token if there is an Authorization header, else the session cookie, else None."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise invalid_token("The Authorization header must be 'Bearer <token>'.")
        return Credential(value.strip(), from_cookie=False)
    cookie = request.cookies.get(COOKIE_NAME)
    return Credential(cookie, from_cookie=True) if cookie else None


def token_from_request(request: Request) -> str | None:
    """The session token from the Authorization header or the cookie (see `credential_from_request`)."""
    credential = credential_from_request(request)
    return credential.token if credential is not None else None


def cookie_secure(request: Request, settings: Settings) -> bool:
    """COOKIE_SECURE when forced, else whether this request arrived over https (directly or via a trusted proxy)."""
    if settings.cookie_secure is not None:
        return settings.cookie_secure
    return request_scheme(request.scope, settings.trusted_proxies) == "https"


def set_session_cookie(response: Response, token: str, settings: Settings, *, request: Request) -> None:
    """Set `pr_session` (HttpOnly, SameSite=Lax, Secure per `cookie_secure`) for the token's lifetime."""
    response.set_cookie(COOKIE_NAME, token, max_age=settings.jwt_ttl_seconds, path="/", httponly=True,
                        samesite="lax", secure=cookie_secure(request, settings))


def clear_session_cookie(response: Response, settings: Settings, *, request: Request) -> None:
    """Expire `pr_session` with the same attributes it was set with."""
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax",
                           secure=cookie_secure(request, settings))
