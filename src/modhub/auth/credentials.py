"""Password hashes (argon2id), signed access tokens (JWT) and API tokens."""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
import uuid
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from modhub.errors import Unauthorized
from modhub.keys import derive_key

API_TOKEN_PREFIX = "mh_"
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password anyone has")


def hash_password(password: str) -> str:
    """Return the argon2id hash of `password`."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Return whether `password` matches; takes as long when the user does not exist."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def new_api_token() -> tuple[str, str]:
    """Return a new API token and the SHA-256 under which it is stored."""
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_api_token(token)


def hash_api_token(token: str) -> str:
    """Return the stored form of an API token."""
    return hashlib.sha256(token.encode()).hexdigest()


class AccessTokens:
    """Issues and checks the HS256 JWTs that `POST /auth/login` hands out."""

    ALGORITHM = "HS256"

    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._key = derive_key(secret, "modhub access token")
        self.ttl = ttl_seconds
        # Every request checks its token, and checking a signature costs more than the
        # rest of authentication. A token that verified once verifies the same way until
        # it expires, so the claims of valid tokens are kept (a bounded LRU; the expiry is
        # checked again on every use). Invalid tokens raise and are never kept.
        self._verified = functools.lru_cache(maxsize=4096)(self._verify)

    def issue(self, username: str, role: str) -> str:
        """Return a signed token for `username` that expires after the TTL."""
        now = int(time.time())
        claims = {
            "sub": username,
            "role": role,
            "iat": now,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
            "typ": "access",
        }
        return jwt.encode(claims, self._key, algorithm=self.ALGORITHM)

    def subject(self, token: str) -> str:
        """Return the user name of a valid token; raise Unauthorized otherwise."""
        subject, expires = self._verified(token)
        if expires <= time.time():
            raise Unauthorized("the access token has expired; log in again")
        return subject

    def _verify(self, token: str) -> tuple[str, float]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[self.ALGORITHM],
                options={"require": ["sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the access token has expired; log in again") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("the access token is not valid") from None
        if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
            raise Unauthorized("the access token is not valid")
        return str(claims["sub"]), float(claims["exp"])
