"""Webhook endpoints' signing secrets and the Standard Webhooks signature made with them.

A secret is 24 random bytes, shown once as `whsec_<base64>` (the form every Standard Webhooks
library takes) and kept only sealed: AES-GCM under a key derived from the server secret
(TIHUO_SECRET_KEY, core.keys, one key per version), the version stored beside it. It cannot be
hashed like a password: tihuo must sign with it at every delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.keys import WEBHOOK_KEY_VERSION, Keys

PREFIX = "whsec_"
SECRET_BYTES = 24
NONCE_BYTES = 12
# what a sealed secret is for, bound into its tag: a sealed card code cannot pass for one
PURPOSE = b"tihuo webhook signing secret"


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def shown(secret: bytes) -> str:
    """The secret as the admin copies it into the receiver."""
    return PREFIX + base64.b64encode(secret).decode()


def seal(keys: Keys, secret: bytes) -> tuple[int, bytes]:
    """(key version, nonce + ciphertext)."""
    nonce = os.urandom(NONCE_BYTES)
    key = keys.webhook_encryption[WEBHOOK_KEY_VERSION]
    return WEBHOOK_KEY_VERSION, nonce + AESGCM(key).encrypt(nonce, secret, PURPOSE)


def unseal(keys: Keys, version: int, sealed: bytes) -> bytes:
    aead = AESGCM(keys.webhook_encryption[version])
    return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], PURPOSE)


def signature(secrets_in_use: list[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` for
    each secret in use (two, space separated, during a rotation's overlap)."""
    content = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(key, content, hashlib.sha256)).decode() for key in secrets_in_use
    )
