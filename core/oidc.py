"""The portal's tokens (RULES-v2 §1): JWTs verified against the issuer's published keys.

The keys are found through the issuer's discovery document (or a configured JWKS URL), fetched with
httpx on the event loop, kept, and fetched again when a token names a `kid` they lack: a rotation.
A refetch happens at most once a minute, so tokens with made-up `kid`s cannot make tihuo hammer the
issuer. PyJWT checks the signature (only RS256, ES256 and EdDSA, the key's own algorithm, never
`none` nor HMAC), `iss`, `aud`, `exp` and `nbf` with 60 s leeway. Keys that cannot be had fail
closed: no token is accepted without a key, and `health()` says so for /healthz.

This module knows nothing of members: it answers "these claims are the issuer's" or "no".
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

ALGORITHMS = ("RS256", "ES256", "EdDSA")
LEEWAY_SECONDS = 60
REFETCH_SECONDS = 60.0
FETCH_TIMEOUT_SECONDS = 5.0
# what every accepted token must carry
REQUIRED_CLAIMS = ("iss", "aud", "exp", "sub")

log = logging.getLogger("tihuo.oidc")


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A JWT's header and claims, unverified: only to choose the key and to refuse another issuer's
    token early; PyJWT then checks everything. (PyJWT's own unverified read validates every base64
    character in Python, which had doubled the cost of a check.)"""
    try:
        header_part, payload_part, _ = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(header_part + "=" * (-len(header_part) % 4)))
        payload = json.loads(base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4)))
    except (ValueError, TypeError):
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return None
    return header, payload


class KeysUnavailable(Exception):
    """The issuer's discovery document or key set could not be fetched or read."""


class PortalTokens:
    """Verifies the bearer JWTs of one issuer for one audience, with the issuer's keys kept in memory.

    `monotonic` is the clock of the once-a-minute refetch rule (tests move it)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_url: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self._jwks_url = jwks_url
        self._monotonic = monotonic
        self._client: httpx.AsyncClient | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._reachable: bool | None = None
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The token's claims when the issuer signed it for us and it is current; None otherwise
        (why is logged at DEBUG, never the token)."""
        peeked = _peek(token)
        if peeked is None:
            return None
        header, unverified = peeked
        # a foreign issuer's token is refused before any fetch it could cause
        if unverified.get("iss") != self.issuer or header.get("alg") not in ALGORITHMS:
            return None
        kid = header.get("kid")
        if not isinstance(kid, str):
            return None
        key = await self._key(kid)
        if key is None:
            return None
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidTokenError as exc:
            log.debug("portal token refused: %s", type(exc).__name__)
            return None

    async def health(self) -> str:
        """Whether keys are held: "ok" when the last fetch worked, "unreachable" when it failed. A
        fetch is tried when none was, or when the last failed and a minute has passed, so /healthz
        costs the issuer at most one request a minute."""
        if self._reachable is not True:
            await self._refresh()
        return "ok" if self._reachable else "unreachable"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is None:
            await self._refresh()
            key = self._keys.get(kid)
        return key

    async def _refresh(self) -> None:
        """Fetch the key set, unless the last fetch (or failed try) was under a minute ago."""
        async with self._lock:
            # requests that queued here behind a fetch find it done and do not fetch again
            now = self._monotonic()
            if self._fetched_at is not None and now - self._fetched_at < REFETCH_SECONDS:
                return
            self._fetched_at = now
            try:
                self._keys = await self._fetch_keys()
                self._reachable = True
            except KeysUnavailable as exc:
                # the keys held stay usable: only tokens naming a key not held fail
                self._reachable = False
                log.warning("the portal's signing keys could not be fetched: %s", exc)

    async def _fetch_keys(self) -> dict[str, jwt.PyJWK]:
        client = self._http()
        try:
            url = self._jwks_url or await self._discovered_jwks_url(client)
            response = await client.get(url)
            if response.status_code != 200:
                raise KeysUnavailable(f"the key set answered HTTP {response.status_code}")
            keys = response.json().get("keys")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise KeysUnavailable(type(exc).__name__) from None
        if not isinstance(keys, list):
            raise KeysUnavailable("the key set has no `keys` list")
        usable: dict[str, jwt.PyJWK] = {}
        for data in keys:
            if not isinstance(data, dict) or data.get("use", "sig") != "sig" or "kid" not in data:
                continue
            try:
                key = jwt.PyJWK(data)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key of a kind we do not take (e.g. an encryption key) is no key for us
            if key.algorithm_name in ALGORITHMS:
                usable[str(data["kid"])] = key
        return usable

    async def _discovered_jwks_url(self, client: httpx.AsyncClient) -> str:
        response = await client.get(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if response.status_code != 200:
            raise KeysUnavailable(f"the discovery document answered HTTP {response.status_code}")
        document = response.json()
        # OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for
        if document.get("issuer") != self.issuer or not isinstance(document.get("jwks_uri"), str):
            raise KeysUnavailable("the discovery document names another issuer or no jwks_uri")
        return str(document["jwks_uri"])

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False)
        return self._client
