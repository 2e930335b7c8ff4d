"""The order's login password (RULES-v2 §3): drawn at random when the job is made (or the platform's
own, when its answer carries one), kept only AES-GCM encrypted with the key's version beside it, and
erased once the SMS gateway took the message.

The keys come from TIHUO_LOGIN_PASSWORD_KEYS (`version:base64 key`, comma separated; the highest
version encrypts, every listed one decrypts, so a key is rotated by adding a newer one). Unset, one
key (version 0) is derived from the server secret for the embedded demo: it only opens passwords
that were drawn at random and are still waiting for their SMS, so unlike the old derived password
it computes nothing. The order number is the associated data, so a cipher moved to another order
does not open.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.settings import Settings, password_key_map

PASSWORD_LENGTH = 16
# no quotes, backslash, space or look-alikes: the password is typed from an SMS into a login prompt
PASSWORD_SYMBOLS = "!@#$%^&*-_=+"
PASSWORD_ALPHABET = string.ascii_letters + string.digits + PASSWORD_SYMBOLS
NONCE_BYTES = 12
DERIVED_VERSION = 0


def draw_password() -> str:
    """16 characters from the OS's random source with at least one lower-case and one upper-case
    letter, digit and symbol (drawn again until so: uniform over the passwords that qualify)."""
    while True:
        password = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))
        if (
            any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
            and any(c in PASSWORD_SYMBOLS for c in password)
        ):
            return password


@dataclass(frozen=True)
class Sealed:
    cipher: bytes = field(repr=False)
    key_version: int


class PasswordKeys:
    """Seals and opens login passwords under the configured keys."""

    def __init__(self, keys: dict[int, bytes]) -> None:
        if not keys:
            raise ValueError("no login password key")
        self.keys = {version: AESGCM(key) for version, key in keys.items()}
        self.current = max(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordKeys:
        return cls(
            password_key_map(settings.login_password_keys) or {DERIVED_VERSION: _derived(settings.secret)}
        )

    def seal(self, password: str, order_no: str) -> Sealed:
        nonce = secrets.token_bytes(NONCE_BYTES)
        cipher = self.keys[self.current].encrypt(nonce, password.encode(), order_no.encode())
        return Sealed(nonce + cipher, self.current)

    def open(self, sealed: Sealed, order_no: str) -> str:
        """The password; KeyError for a key no longer configured, InvalidTag for a cipher that is not
        this order's."""
        nonce, cipher = sealed.cipher[:NONCE_BYTES], sealed.cipher[NONCE_BYTES:]
        return self.keys[sealed.key_version].decrypt(nonce, cipher, order_no.encode()).decode()


def _derived(secret: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"tihuo", info=b"login-password-encryption-v0"
    ).derive(secret)
