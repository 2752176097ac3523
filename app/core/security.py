"""Password hashing and JWTs. Who may do what lives in app/identity."""

from __future__ import annotations

import secrets
from datetime import timedelta
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from jose import JWTError, jwt

from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Unauthorized

_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verifying against this keeps unknown-user logins as slow as wrong-password ones (made on
    first use: an argon2 hash costs 0.2 s, at every start of every process otherwise)."""
    return _hasher.hash("dummy-password-for-timing")


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), secret) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


class TokenCodec:
    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        if self.algorithm == "RS256":
            assert settings.jwt_private_key_file and settings.jwt_public_key_file
            self._sign_key = settings.jwt_private_key_file.read_text()
            self._verify_key = settings.jwt_public_key_file.read_text()
        else:
            self._sign_key = self._verify_key = settings.jwt_secret
        self.access_ttl = timedelta(minutes=settings.access_token_minutes)
        self.refresh_ttl = timedelta(days=settings.refresh_token_days)

    def encode(self, claims: dict[str, Any], ttl: timedelta) -> tuple[str, int]:
        now = utcnow()
        body = {**claims, "iat": int(now.timestamp()), "exp": int((now + ttl).timestamp())}
        body.setdefault("jti", secrets.token_hex(16))
        return jwt.encode(body, self._sign_key, algorithm=self.algorithm), int(ttl.total_seconds())

    def decode(self, token: str, expected_type: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(token, self._verify_key, algorithms=[self.algorithm])
        except JWTError as e:
            code = "token_expired" if "expired" in str(e).lower() else "invalid_token"
            raise Unauthorized(
                "The token is expired" if code == "token_expired" else "The token is not valid", code=code
            )
        if claims.get("typ") != expected_type:
            raise Unauthorized(f"A {expected_type} token is required", code="invalid_token")
        return claims
