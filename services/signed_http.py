"""Signed JSON POSTs to the provider and the SMS gateway (one kept httpx client per endpoint), and the
redaction of the login password from whatever comes back or is logged.

A request's body is signed with HMAC-SHA256 under the endpoint's secret (`X-Tihuo-Signature`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

REDACTED = "******"


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` blanked out."""
    return text.replace(secret, REDACTED) if secret else text


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class SignedPoster:
    """POSTs signed JSON to one URL over one `httpx.AsyncClient`, so calls reuse its connections.

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
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        all_headers = {
            "Content-Type": "application/json",
            "X-Tihuo-Signature": sign(self.secret, body),
            **(headers or {}),
        }
        if self._client is None:
            # a redirect would carry the signed body and the password somewhere else: never followed
            self._client = httpx.AsyncClient(timeout=self.timeout_seconds, follow_redirects=False)
        return await self._client.post(self.url, content=body, headers=all_headers)

    async def aclose(self) -> None:
        """Close the client and its connections; safe to call again, or before any call."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
