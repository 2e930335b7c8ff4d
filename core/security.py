"""Password hashing (argon2id) and signed, expiring bearer tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_PREFIX = "th1"


def password_hasher(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def verify_password(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    token_version: int
    expires_at: datetime


def issue_token(key: bytes, claims: TokenClaims) -> str:
    payload = json.dumps(
        {"sub": claims.user_id, "ver": claims.token_version, "exp": int(claims.expires_at.timestamp())},
        separators=(",", ":"),
    ).encode()
    body = f"{TOKEN_PREFIX}.{_b64(payload)}"
    signature = hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


def read_token(key: bytes, token: str, now: datetime) -> TokenClaims | None:
    """The claims of a well-signed, unexpired token; None for anything else."""
    try:
        prefix, payload, signature = token.split(".")
        if prefix != TOKEN_PREFIX:
            return None
        expected = hmac.new(key, f"{prefix}.{payload}".encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        data = json.loads(_unb64(payload))
        claims = TokenClaims(
            user_id=int(data["sub"]),
            token_version=int(data["ver"]),
            expires_at=datetime.fromtimestamp(int(data["exp"]), UTC),
        )
    except (ValueError, KeyError, TypeError, UnicodeError):
        return None
    return claims if claims.expires_at > now else None
