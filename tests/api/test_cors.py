"""Cross-origin access (RULES-v2 §6): the origins in TIHUO_CORS_ORIGINS alone get preflights
answered and their answers readable; any other origin, or every origin when the setting is unset,
gets no Access-Control-Allow-* header at all. (A real browser obeying this: test_cors_browser.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from core.settings import SettingsError, load_settings
from tests.conftest import CLIENT_ADDRESS
from tihuo.app import create_app

PORTAL = "https://portal.example.com"
APP = "http://localhost:5173"
ELSEWHERE = "https://evil.example"
ME = "query { me { username } }"


def _preflight(origin: str, method: str = "POST", headers: str = "authorization,content-type") -> dict:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.fixture
async def cors_client(rt) -> AsyncIterator[httpx.AsyncClient]:
    rt.settings = rt.settings.model_copy(update={"cors_origins": f"{PORTAL}, {APP}"})
    transport = httpx.ASGITransport(app=create_app(runtime=rt), client=(CLIENT_ADDRESS, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.mark.parametrize("origin", [PORTAL, APP])
async def test_a_preflight_from_an_allowed_origin_is_answered(cors_client, origin):
    response = await cors_client.options(
        "/graphql",
        headers=_preflight(origin, headers="authorization,content-type,accept-language,x-request-id"),
    )

    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == origin
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert response.headers["access-control-allow-headers"] == (
        "Accept, Accept-Language, Authorization, Content-Language, Content-Type, X-Request-ID"
    )
    assert response.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(
    ("headers", "what"),
    [
        (_preflight(ELSEWHERE), "another origin"),
        (_preflight(PORTAL + ":8443"), "another port of an allowed host"),
        (_preflight(PORTAL.replace("https", "http")), "another scheme of an allowed host"),
        (_preflight(PORTAL, method="PUT"), "a method other than GET and POST"),
        (_preflight(PORTAL, headers="authorization,x-api-key"), "a header not in the list"),
    ],
    ids=["origin", "port", "scheme", "method", "header"],
)
async def test_a_preflight_outside_the_list_is_refused_as_json(cors_client, headers, what):
    response = await cors_client.options("/graphql", headers={**headers, "Accept-Language": "en"})

    assert response.status_code == 403, what
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "errors": [
            {
                "message": "This origin (or method, or header) may not call the API across origins.",
                "extensions": {"code": "CORS_NOT_ALLOWED"},
            }
        ]
    }
    # the refusal itself is no permission either: a browser reads only the allow-origin header
    if headers["Origin"] != PORTAL:
        assert "access-control-allow-origin" not in response.headers


async def test_a_request_from_an_allowed_origin_can_be_read_there(cors_client, member):
    response = await cors_client.post(
        "/graphql", json={"query": ME}, headers={**member.headers, "Origin": PORTAL}
    )

    assert response.status_code == 200
    assert response.json() == {"data": {"me": {"username": "member"}}}
    assert response.headers["access-control-allow-origin"] == PORTAL
    assert response.headers["access-control-expose-headers"] == "X-Request-ID"
    assert "Origin" in response.headers["vary"]
    assert "access-control-allow-credentials" not in response.headers


async def test_a_refusal_of_the_edge_is_readable_by_an_allowed_origin_too(cors_client, rt):
    response = await cors_client.post(
        "/graphql",
        content=b"{" + b" " * rt.settings.max_body_bytes + b"}",
        headers={"Origin": PORTAL, "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert response.headers["access-control-allow-origin"] == PORTAL


async def test_a_request_from_another_origin_gets_no_permission_to_read_it(cors_client, member):
    response = await cors_client.post(
        "/graphql", json={"query": ME}, headers={**member.headers, "Origin": ELSEWHERE}
    )

    # a browser would have stopped at the refused preflight (the Authorization header needs one);
    # a script outside a browser gets the answer, which a browser keeps from the page for want of
    # the allow-origin header
    assert response.json() == {"data": {"me": {"username": "member"}}}
    assert "access-control-allow-origin" not in response.headers
    assert "Origin" in response.headers["vary"]


async def test_unset_no_origin_gets_cross_origin_access(client, member):
    preflight = await client.options("/graphql", headers=_preflight(PORTAL))
    request = await client.post("/graphql", json={"query": ME}, headers={**member.headers, "Origin": PORTAL})

    assert preflight.status_code == 405
    assert preflight.headers["content-type"] == "application/json"
    assert preflight.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    assert not [name for name in preflight.headers if name.startswith("access-control-")]
    assert request.json() == {"data": {"me": {"username": "member"}}}
    assert not [name for name in request.headers if name.startswith("access-control-")]


@pytest.mark.parametrize(
    "value", ["https://portal.example.com/", "portal.example.com", "https://portal.example.com/app", "*"]
)
def test_an_origin_setting_that_is_no_origin_is_refused_at_start(monkeypatch, value):
    monkeypatch.setenv("TIHUO_CORS_ORIGINS", f"https://ok.example, {value}")

    with pytest.raises(SettingsError, match=r"TIHUO_CORS_ORIGINS: Value error, .* is not an origin"):
        load_settings(_env_file=None)


def test_origins_are_compared_as_browsers_send_them(monkeypatch):
    monkeypatch.setenv(
        "TIHUO_CORS_ORIGINS",
        "HTTPS://Portal.Example.com, http://[::1]:8080 ,https://a.example:443, http://b.example:80,"
        "http://c.example:8080",
    )

    assert load_settings(_env_file=None).cors_allowed == [
        "https://portal.example.com",
        "http://[::1]:8080",
        "https://a.example",
        "http://b.example",
        "http://c.example:8080",
    ]


def test_a_websocket_from_a_page_follows_the_same_origins(rt):
    # browsers apply no CORS to a WebSocket handshake: the view checks its Origin against the list
    rt.settings = rt.settings.model_copy(update={"cors_origins": f"{PORTAL}, {APP}"})
    view = next(
        route.endpoint for route in create_app(runtime=rt).routes if getattr(route, "path", "") == "/graphql"
    )

    assert view.is_websocket_origin_allowed(None, PORTAL)
    assert view.is_websocket_origin_allowed(None, APP)
    assert not view.is_websocket_origin_allowed(None, ELSEWHERE)
