"""Card codes (RULES §1): Crockford base32, 15 random symbols + a Luhn mod 32 check symbol,
normalised from what people type, looked up by keyed hash and kept only encrypted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.keys import CODE_KEY_VERSION, Keys

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
VALUE = {symbol: index for index, symbol in enumerate(ALPHABET)}
N = len(ALPHABET)
PAYLOAD_LENGTH = 15
CODE_LENGTH = PAYLOAD_LENGTH + 1
_TYPED_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1", " ": None, "-": None})
NONCE_BYTES = 12
# RFC 4648 base32 symbols, in value order, mapped onto ours: b32encode then does the bit work in C
_FROM_RFC4648 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET)
_RANDOM_BYTES = 10  # 80 bits = 16 base32 symbols, of which the first 15 (75 bits) are used
# Luhn mod N: from the right, every other symbol is doubled and its "digits" in base N summed
_DOUBLED = {symbol: (2 * value) // N + (2 * value) % N for symbol, value in VALUE.items()}


def check_symbol(payload: str) -> str:
    """The Luhn mod N check symbol of `payload` (symbols of ALPHABET)."""
    total = sum(map(_DOUBLED.__getitem__, payload[::-2])) + sum(map(VALUE.__getitem__, payload[-2::-2]))
    return ALPHABET[(N - total % N) % N]


def symbols_of(typed: str) -> str | None:
    """What a person typed as code symbols (any length), or None if anything else is in it."""
    symbols = typed.upper().translate(_TYPED_ALIASES)
    return symbols if all(symbol in VALUE for symbol in symbols) else None


def normalise(typed: str) -> str | None:
    """The canonical 16-symbol code for what a person typed, or None when it cannot be one."""
    code = typed.upper().translate(_TYPED_ALIASES)
    if len(code) != CODE_LENGTH or any(symbol not in VALUE for symbol in code):
        return None
    if check_symbol(code[:PAYLOAD_LENGTH]) != code[PAYLOAD_LENGTH]:
        return None
    return code


def generate_many(count: int) -> list[str]:
    """`count` new random codes: 75 bits each from `secrets`, then the check symbol."""
    symbols = (
        base64.b32encode(secrets.token_bytes(_RANDOM_BYTES * count)).decode("ascii").translate(_FROM_RFC4648)
    )
    payloads = [symbols[i : i + PAYLOAD_LENGTH] for i in range(0, len(symbols), CODE_LENGTH)]
    return [payload + check_symbol(payload) for payload in payloads]


def generate() -> str:
    return generate_many(1)[0]


def display(code: str) -> str:
    """XXXX-XXXX-XXXX-XXXX."""
    # spelt out, not joined in a loop: a download of 100,000 codes calls this 100,000 times
    return f"{code[0:4]}-{code[4:8]}-{code[8:12]}-{code[12:16]}"


def masked(last4: str) -> str:
    return f"****-****-****-{last4}"


class SealedCode(NamedTuple):
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
        return self.seal_many([code])[0]

    def seal_many(self, codes: list[str]) -> list[SealedCode]:
        lookup_key = self.keys.code_lookup
        encrypt = self._aead[CODE_KEY_VERSION].encrypt
        nonces = os.urandom(NONCE_BYTES * len(codes))
        sealed = []
        for index, code in enumerate(codes):
            raw = code.encode("ascii")
            code_hash = hmac.digest(lookup_key, raw, hashlib.sha256)
            nonce = nonces[index * NONCE_BYTES : (index + 1) * NONCE_BYTES]
            sealed.append(
                SealedCode(code_hash, nonce + encrypt(nonce, raw, code_hash), CODE_KEY_VERSION, code[-4:])
            )
        return sealed

    def open(self, code_hash: bytes, code_cipher: bytes, key_version: int) -> str:
        nonce, body = code_cipher[:NONCE_BYTES], code_cipher[NONCE_BYTES:]
        return self._aead[key_version].decrypt(nonce, body, code_hash).decode("ascii")
