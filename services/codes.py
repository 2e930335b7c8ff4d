"""Card codes (RULES §1): Crockford base32, 15 random symbols + a Luhn mod 32 check symbol,
normalised from what people type, looked up by keyed hash and kept only encrypted."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.keys import CODE_KEY_VERSION, Keys

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
VALUE = {symbol: index for index, symbol in enumerate(ALPHABET)}
N = len(ALPHABET)
PAYLOAD_LENGTH = 15
CODE_LENGTH = PAYLOAD_LENGTH + 1
_TYPED_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1", " ": None, "-": None})
NONCE_BYTES = 12


def check_symbol(payload: str) -> str:
    """The Luhn mod N check symbol of `payload` (symbols of ALPHABET)."""
    total = 0
    factor = 2
    for symbol in reversed(payload):
        addend = factor * VALUE[symbol]
        total += addend // N + addend % N
        factor = 3 - factor
    return ALPHABET[(N - total % N) % N]


def normalise(typed: str) -> str | None:
    """The canonical 16-symbol code for what a person typed, or None when it cannot be one."""
    code = typed.upper().translate(_TYPED_ALIASES)
    if len(code) != CODE_LENGTH or any(symbol not in VALUE for symbol in code):
        return None
    if check_symbol(code[:PAYLOAD_LENGTH]) != code[PAYLOAD_LENGTH]:
        return None
    return code


def generate() -> str:
    """A new random code: 75 bits from `secrets`, then the check symbol."""
    bits = secrets.randbits(5 * PAYLOAD_LENGTH)
    payload = "".join(ALPHABET[(bits >> (5 * i)) & 31] for i in range(PAYLOAD_LENGTH))
    return payload + check_symbol(payload)


def display(code: str) -> str:
    """XXXX-XXXX-XXXX-XXXX."""
    return "-".join(code[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def masked(last4: str) -> str:
    return f"****-****-****-{last4}"


@dataclass(frozen=True)
class SealedCode:
    """What is stored for a code: lookup hash, ciphertext (nonce ‖ ciphertext+tag), key version, last 4."""

    code_hash: bytes
    code_cipher: bytes
    key_version: int
    last4: str


class CodeSealer:
    """Hashes and encrypts codes with the server's keys (AES-256-GCM, the hash as associated data)."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self._aead = {version: AESGCM(key) for version, key in keys.code_encryption.items()}

    def seal(self, code: str) -> SealedCode:
        code_hash = self.keys.code_hash(code)
        nonce = os.urandom(NONCE_BYTES)
        cipher = nonce + self._aead[CODE_KEY_VERSION].encrypt(nonce, code.encode("ascii"), code_hash)
        return SealedCode(
            code_hash=code_hash, code_cipher=cipher, key_version=CODE_KEY_VERSION, last4=code[-4:]
        )

    def open(self, code_hash: bytes, code_cipher: bytes, key_version: int) -> str:
        nonce, body = code_cipher[:NONCE_BYTES], code_cipher[NONCE_BYTES:]
        return self._aead[key_version].decrypt(nonce, body, code_hash).decode("ascii")
