"""GraphiQL works without the internet: the page at /graphql loads nothing but this server's own
/static/graphiql/ assets, which ship inside the tihuo package."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

import pytest

HTML = {"Accept": "text/html"}
REFERENCE = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
INTEGRITY = re.compile(r"""\b(?:src|href)="([^"]*)"\s+integrity="sha384-([^"]+)\"""")
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}


async def _page(client) -> str:
    response = await client.get("/graphql", headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def _assets(page: str) -> list[str]:
    # the favicon is an empty data: URL, so the browser does not ask for /favicon.ico
    return [url for url in REFERENCE.findall(page) if not url.startswith("data:")]


async def test_the_page_names_no_other_host(client):
    page = await _page(client)
    assert "http://" not in page and "https://" not in page
    assert "//" not in "".join(_assets(page))  # nor protocol-relative URLs
    for cdn in ("unpkg", "jsdelivr", "googleapis", "cdnjs", "esm.sh"):
        assert cdn not in page


async def test_the_page_loads_react_graphiql_and_its_set_up_from_this_server(client):
    assets = _assets(await _page(client))
    names = sorted(url.removeprefix("/static/graphiql/").split("?")[0] for url in assets)
    assert names == [
        "graphiql.min.css",
        "graphiql.min.js",
        "react-dom.production.min.js",
        "react.production.min.js",
        "tihuo-graphiql.js",
    ]
    assert all(url.startswith("/static/graphiql/") for url in assets)


async def test_every_asset_is_served_with_its_type_and_cached_for_long(client):
    for url in _assets(await _page(client)):
        response = await client.get(url)
        assert response.status_code == 200, url
        suffix = "." + url.split("?")[0].rsplit(".", 1)[-1]
        assert response.headers["content-type"].split(";")[0] == CONTENT_TYPES[suffix], url
        assert "immutable" in response.headers["cache-control"], url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert len(response.content) > 1000, url


async def test_the_served_files_are_the_ones_published_on_npm(client):
    # the integrity hashes in the page are those of the npm files (the same Strawberry's template pins)
    checked = INTEGRITY.findall(await _page(client))
    assert len(checked) == 4
    for url, expected in checked:
        body = (await client.get(url)).content
        assert base64.b64encode(hashlib.sha384(body).digest()).decode() == expected, url


async def test_large_assets_are_compressed(client):
    response = await client.get("/static/graphiql/graphiql.min.js", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.num_bytes_downloaded < 1_000_000  # 3.5 MB unpacked
    assert len(response.content) > 3_000_000


async def test_the_page_sends_a_content_security_policy_that_allows_only_this_origin(client):
    response = await client.get("/graphql", headers=HTML)
    policy = dict(
        part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "<script>" not in response.text


async def test_the_page_turns_on_the_headers_editor_and_no_subscriptions(client):
    page = await _page(client)
    set_up = re.search(r'src="(/static/graphiql/tihuo-graphiql\.js[^"]*)"', page)
    assert set_up
    script = (await client.get(set_up.group(1))).text
    assert "isHeadersEditorEnabled: true" in script
    assert 'defaultEditorToolsVisibility: "headers"' in script
    assert "Bearer <token from the login mutation>" in script
    assert "subscriptionUrl:" not in script


@pytest.mark.parametrize("path", ["/static/graphiql/missing.js", "/static/graphiql/..%2f..%2fgraphiql.html"])
async def test_nothing_else_is_served_from_the_asset_folder(client, path):
    assert (await client.get(path)).status_code == 404


def test_the_assets_are_package_data_listed_in_the_readme():
    folder = resources.files("tihuo") / "static" / "graphiql"
    readme = (folder / "README.md").read_text(encoding="utf-8")
    for name in (
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "graphiql.min.css",
        "tihuo-graphiql.js",
    ):
        assert (folder / name).is_file(), name
        assert name in readme, name
