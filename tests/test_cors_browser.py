"""CORS as a browser obeys it (RULES-v2 §6): Debian's headless Chromium opens a portal page served
from another origin on loopback, whose script calls the API with fetch() and a bearer token. From
the origin in TIHUO_CORS_ORIGINS the call works (preflight, then the request, whose answer and
X-Request-ID the page reads); from another origin (the same page on another port) Chromium stops at
the refused preflight and the request itself never reaches the API.

Skipped where /usr/bin/chromium or the playwright package is missing; .ci/run installs both."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.browser import CHROMIUM, CHROMIUM_FLAGS, loopback_socket, playwright_or_skip, serving
from tihuo.app import create_app

TIMEOUT_MS = 20_000
# the portal's page: what its script does with the API, reported back to the test
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>portal</title></head><body>
<script>
window.callApi = async (api, token) => {
  try {
    const response = await fetch(api + "/graphql", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "Authorization": "Bearer " + token,
        "Accept-Language": "en",
      },
      body: JSON.stringify({query: "query Portal { me { username role } }"}),
    });
    return {
      status: response.status,
      body: await response.json(),
      requestId: response.headers.get("X-Request-ID"),
    };
  } catch (error) {
    return {error: String(error)};
  }
};
</script></body></html>"""


async def _page(_: Any) -> HTMLResponse:
    return HTMLResponse(PAGE)


class Recorder:
    """The API app, noting the method and Origin of every request that reaches it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str | None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = dict(scope["headers"]).get(b"origin")
            self.seen.append((scope["method"], origin.decode() if origin else None))
        await self.app(scope, receive, send)


@pytest.fixture
def async_playwright() -> Any:
    return playwright_or_skip()


async def test_a_page_on_an_allowed_origin_calls_the_api_and_another_is_blocked(
    async_playwright: Any, rt: Any, member: Any
) -> None:
    allowed_socket, other_socket, api_socket = loopback_socket(), loopback_socket(), loopback_socket()
    allowed = f"http://127.0.0.1:{allowed_socket.getsockname()[1]}"
    other = f"http://127.0.0.1:{other_socket.getsockname()[1]}"
    api = f"http://127.0.0.1:{api_socket.getsockname()[1]}"
    rt.settings = rt.settings.model_copy(update={"cors_origins": allowed})
    recorder = Recorder(create_app(runtime=rt))
    portal = Starlette(routes=[Route("/", _page)])
    console: list[str] = []

    async with (
        serving(recorder, api_socket),
        serving(portal, allowed_socket, other_socket),
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("console", lambda message: console.append(message.text))

            await page.goto(allowed + "/")
            from_allowed = await page.evaluate("([api, token]) => callApi(api, token)", [api, member.token])
            seen_from_allowed = list(recorder.seen)

            await page.goto(other + "/")
            from_other = await page.evaluate("([api, token]) => callApi(api, token)", [api, member.token])
            seen_from_other = recorder.seen[len(seen_from_allowed) :]
        finally:
            await browser.close()

    assert from_allowed["status"] == 200, from_allowed
    assert from_allowed["body"] == {"data": {"me": {"username": "member", "role": "MEMBER"}}}
    assert len(from_allowed["requestId"]) == 32  # exposed to the page (Access-Control-Expose-Headers)
    assert seen_from_allowed == [("OPTIONS", allowed), ("POST", allowed)]

    assert from_other == {"error": "TypeError: Failed to fetch"}
    # the browser asked, was refused, and never sent the request itself
    assert seen_from_other == [("OPTIONS", other)]
    assert any("blocked by CORS policy" in line for line in console), console
