"""End to end: the real app under uvicorn, GraphiQL in Debian's headless Chromium (driven by
Playwright, which never downloads a browser of its own here), with every request to another host
blocked. It signs in with the `login` mutation typed into GraphiQL, puts the token in the headers
editor, runs `{ me { username role } }` and reads the answer from the result pane. The screenshot
goes to artifacts/graphiql.png.

Skipped where /usr/bin/chromium or the playwright package is missing; .ci/run installs both and
fails if this test did not run there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import CHROMIUM, CHROMIUM_FLAGS, loopback_socket, playwright_or_skip, serving

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TIMEOUT_MS = 20_000

QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
HEADERS_EDITOR = "section.graphiql-editor-tool[aria-label=Headers] .graphiql-editor:not(.hidden) .CodeMirror"
RESPONSE = ".graphiql-response .CodeMirror"
LOGIN = """mutation SignIn {
  login(input: {username: "admin", password: "correct horse battery"}) {
    ... on LoginSuccess { token viewer { username role } }
    ... on Error { code message }
  }
}"""
ME = "query WhoAmI { me { username role } }"


@pytest.fixture
def async_playwright() -> Any:
    return playwright_or_skip()


@pytest.fixture
async def server_url(app: Any) -> Any:
    """The app served by uvicorn on a free loopback port."""
    sock = loopback_socket()
    async with serving(app, sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def _value(page: Any, selector: str) -> str:
    return await page.eval_on_selector(selector, "element => element.CodeMirror.getValue()")


async def _replace(page: Any, selector: str, text: str) -> None:
    """Select everything in a GraphiQL editor and type `text` over it (as one input, like a paste,
    so CodeMirror's bracket closing and autocompletion stay out of the way)."""
    await page.click(selector)
    await page.keyboard.press("Control+A")
    await page.keyboard.insert_text(text)
    assert await _value(page, selector) == text


async def _run(page: Any, operation: str, expected: str) -> dict[str, Any]:
    """Press GraphiQL's run button once it has read the new document (it parses the query editor
    100 ms after a change, and would otherwise send the previous operation's name), and wait for a
    result containing `expected`."""
    await page.wait_for_function(
        "([selector, name]) => document.querySelector(selector).CodeMirror.operationName === name",
        arg=[QUERY_EDITOR, operation],
    )
    await page.click(".graphiql-execute-button")
    await page.wait_for_function(
        "([selector, expected]) => document.querySelector(selector).CodeMirror.getValue().includes(expected)",
        arg=[RESPONSE, expected],
        timeout=TIMEOUT_MS,
    )
    return json.loads(await _value(page, RESPONSE))


async def test_graphiql_signs_in_and_runs_a_query_without_the_internet(
    async_playwright: Any, server_url: str, admin: Any, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    elsewhere: list[str] = []  # requests to any other host: aborted, and none may be tried
    served: list[str] = []  # requests to this server
    problems: list[str] = []  # console errors (a refused CSP directive shows here) and page errors

    async def only_this_server(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            served.append(urlsplit(route.request.url).path)
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        page = context.pages[0] if context.pages else await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            await context.route("**/*", only_this_server)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            response = await page.goto(f"{server_url}/graphql")
            assert response is not None and response.status == 200
            assert "default-src 'self'" in response.headers["content-security-policy"]
            await page.wait_for_selector(QUERY_EDITOR)
            # the headers editor is open, with the placeholder that says where the token goes
            await page.wait_for_selector(HEADERS_EDITOR, state="visible")
            assert "Bearer <token from the login mutation>" in await _value(page, HEADERS_EDITOR)
            # the schema came through (introspection): the documentation explorer shows the root types
            await page.click('button[aria-label="Show Documentation Explorer"]')
            await page.locator(".graphiql-doc-explorer").get_by_text("Mutation", exact=True).wait_for()

            await _replace(page, QUERY_EDITOR, LOGIN)
            signed_in = (await _run(page, "SignIn", '"token"'))["data"]["login"]
            assert signed_in["viewer"] == {"username": "admin", "role": "ADMIN"}

            await _replace(
                page, HEADERS_EDITOR, json.dumps({"Authorization": f"Bearer {signed_in['token']}"}, indent=2)
            )
            await _replace(page, QUERY_EDITOR, ME)
            result = await _run(page, "WhoAmI", '"me"')
            assert result == {"data": {"me": {"username": "admin", "role": "ADMIN"}}}
            shown = await page.inner_text(".graphiql-response")  # what a person sees in the pane
            assert '"username": "admin"' in shown and '"role": "ADMIN"' in shown

            await page.screenshot(path=str(ARTIFACTS / "graphiql.png"))
        except Exception:
            # what the page showed, for whoever reads the failure
            await page.screenshot(path=str(ARTIFACTS / "graphiql-failed.png"))
            for name, selector in (
                ("query", QUERY_EDITOR),
                ("headers", HEADERS_EDITOR),
                ("result", RESPONSE),
            ):
                if await page.query_selector(selector):
                    print(f"GraphiQL {name} pane:", await _value(page, selector))
            print("blocked:", elsewhere, "problems:", problems)
            raise
        finally:
            await context.close()

    assert elsewhere == []
    assert problems == []
    assert "/static/graphiql/graphiql.min.js" in served  # the blocking did see the page's requests
