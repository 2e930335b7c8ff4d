"""Keys derived from the server secret, one per purpose, so no key serves two jobs."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Bumped if the code-encryption key ever changes; stored beside each ciphertext.
CODE_KEY_VERSION = 1
# Likewise for the key that seals webhook endpoints' signing secrets (services/webhook_secrets.py).
WEBHOOK_KEY_VERSION = 1


def _derive(secret: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"tihuo", info=purpose.encode()).derive(secret)


@dataclass(frozen=True)
class Keys:
    token: bytes
    code_lookup: bytes
    code_encryption: dict[int, bytes]
    download: bytes
    # by version; a field with a default, so Keys made by hand (tests) need not name it
    webhook_encryption: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def from_secret(cls, secret: bytes) -> Keys:
        return cls(
            token=_derive(secret, "token-signing"),
            code_lookup=_derive(secret, "card-code-lookup"),
            code_encryption={CODE_KEY_VERSION: _derive(secret, f"card-code-encryption-v{CODE_KEY_VERSION}")},
            download=_derive(secret, "download-token"),
            webhook_encryption={
                WEBHOOK_KEY_VERSION: _derive(secret, f"webhook-secret-encryption-v{WEBHOOK_KEY_VERSION}")
            },
        )

    def code_hash(self, normalised_code: str) -> bytes:
        return hmac.digest(self.code_lookup, normalised_code.encode("ascii"), hashlib.sha256)
