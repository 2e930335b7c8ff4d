"""A real OpenID provider for the portal sign-in tests: tests/oidc/provider.mjs (the npm package
`oidc-provider`) run with Node.js on a free loopback port, and what the tests ask of it.

The tests skip, saying why, when `tests/oidc/node_modules` is missing (`npm ci` there installs it);
.ci/run installs it and fails when they were skipped."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).parent / "oidc"
AUDIENCE = "urn:tihuo"
CLIENT_ID = "tihuo-tests"
CLIENT_SECRET = "tests-only-client-secret"

needs_provider = pytest.mark.skipif(
    not (HERE / "node_modules" / "oidc-provider").is_dir() or shutil.which("node") is None,
    reason="the real OpenID provider is not installed: run `npm ci` in tests/oidc (needs Node.js >= 20.19)",
)


class OpenIdProvider:
    """The running provider: tokens for any member, its private keys, rotation, and its JWKS count."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    async def token(self, sub: str, **claims: Any) -> str:
        """A JWT access token for tihuo (client credentials, resource `urn:tihuo`) standing for the
        portal user `sub`, with `claims` added (phone_number, roles, name, id_verified, auth_time)."""
        async with httpx.AsyncClient(base_url=self.issuer) as http:
            response = await http.post(
                "/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "resource": AUDIENCE,
                    "scope": "tihuo",
                    "tihuo_claims": json.dumps({"sub": sub, **claims}),
                },
            )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def rotate(self, alg: str = "RS256") -> str:
        """A new signing key, published first; the older ones stay in the JWKS. Its `kid`."""
        async with httpx.AsyncClient(base_url=self.issuer) as http:
            response = await http.post("/control/rotate", params={"alg": alg})
        return str(response.json()["kid"])

    async def signing_key(self) -> dict[str, Any]:
        """The private JWK the provider signs with now (to craft tokens it would never issue)."""
        async with httpx.AsyncClient(base_url=self.issuer) as http:
            return dict((await http.get("/control/keys")).json()["keys"][0])

    async def jwks_requests(self) -> int:
        async with httpx.AsyncClient(base_url=self.issuer) as http:
            return int((await http.get("/control/stats")).json()["jwksRequests"])


@contextmanager
def running_provider(log: Path) -> Iterator[OpenIdProvider]:
    """The provider started (its warnings to `log`), and stopped on leaving."""
    node = shutil.which("node")
    assert node is not None
    with log.open("wb") as errors:
        process = subprocess.Popen(  # noqa: S603 (our own script, under the node found on PATH)
            [node, "provider.mjs"], cwd=HERE, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the OpenID provider did not start: {log.read_text(errors='replace')}")
        started = json.loads(line)
        _wait_for(started["issuer"])
        yield OpenIdProvider(started["issuer"])
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for(issuer: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(issuer + "/.well-known/openid-configuration").status_code == 200:
                return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)
