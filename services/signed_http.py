"""Signed JSON calls to the provider and the SMS gateway (one kept httpx client per endpoint), the
check of a signed call made to us (the platform's callbacks), and the redaction of the login password
from whatever comes back or is logged.

Every call is signed both ways alike (RULES-v2 §3): `X-Tihuo-Timestamp: <Unix seconds>` and
`X-Tihuo-Signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">` under the endpoint's secret.
The timestamp inside the signed text is what makes a recorded call useless after the window: a
receiver refuses one more than `SKEW_SECONDS` off its own clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

REDACTED = "******"
TIMESTAMP_HEADER = "X-Tihuo-Timestamp"
SIGNATURE_HEADER = "X-Tihuo-Signature"
# a signed call more than this far from the receiver's clock is refused (replays, RULES-v2 §3)
SKEW_SECONDS = 300


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every occurrence of each secret blanked out."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def sign(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float | None = None
) -> bool:
    """Whether a call to us is signed with `secret` within `SKEW_SECONDS` of now. Compared in constant
    time; a missing or malformed header is simply not signed."""
    if not (timestamp and signature) or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > SKEW_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body).encode(), signature.encode())


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class SignedClient:
    """Signed calls under one base URL over one `httpx.AsyncClient`, so calls reuse its connections.

    The client is made at the first call, inside the running event loop its connections belong to,
    and let go by `aclose` (the worker's end); a call after that makes a new one."""

    def __init__(self, url: str, secret: str, timeout_seconds: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout_seconds = timeout_seconds
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient | None:
        """The client in use, if a call has made one."""
        return self._client

    async def post(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        """POST `payload` as JSON to the URL itself."""
        return await self.call("POST", self.url, encode(payload), headers)

    async def call(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """One signed call; a GET or DELETE signs the empty body (with the timestamp)."""
        all_headers = {**signed_headers(self.secret, body), **(headers or {})}
        if body:
            all_headers["Content-Type"] = "application/json"
        if self._client is None:
            # a redirect would carry the signed body and the password somewhere else: never followed
            self._client = httpx.AsyncClient(timeout=self.timeout_seconds, follow_redirects=False)
        return await self._client.request(method, url, content=body, headers=all_headers)

    async def aclose(self) -> None:
        """Close the client and its connections; safe to call again, or before any call."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
