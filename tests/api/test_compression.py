"""Compression (RULES-v2 §6): gzip, or Brotli where asked, for answers over 1 KB; the bytes on the
wire are read raw here (httpx would undo the encoding) and decoded by hand."""

from __future__ import annotations

import gzip
import json

import brotli
import pytest

# the Query type's fields with their descriptions: about 3 KB of JSON, the same for everyone
LARGE = '{ __type(name: "Query") { fields { name description } } }'
SMALL = "{ me { id } }"


async def _raw(client, query: str, accept_encoding: str | None) -> tuple[dict[str, str], bytes]:
    """The answer's headers and its bytes as sent; None sends no Accept-Encoding at all."""
    request = client.build_request("POST", "/graphql", json={"query": query})
    if accept_encoding is None:
        del request.headers["accept-encoding"]  # httpx's own default asks for gzip and br
    else:
        request.headers["accept-encoding"] = accept_encoding
    response = await client.send(request, stream=True)
    try:
        assert response.status_code == 200
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    return dict(response.headers), body


async def _plain(client, query: str) -> bytes:
    headers, body = await _raw(client, query, "identity")
    assert "content-encoding" not in headers
    return body


@pytest.mark.parametrize(
    ("accept_encoding", "encoding", "decode"),
    [
        ("gzip", "gzip", gzip.decompress),
        ("gzip, deflate", "gzip", gzip.decompress),
        ("gzip, deflate, br", "br", brotli.decompress),
        ("br;q=1.0, gzip;q=0.5", "br", brotli.decompress),
    ],
)
async def test_a_large_answer_is_compressed_as_asked(client, accept_encoding, encoding, decode):
    plain = await _plain(client, LARGE)

    headers, body = await _raw(client, LARGE, accept_encoding)

    assert len(plain) > 1024
    assert headers["content-encoding"] == encoding
    assert "Accept-Encoding" in headers["vary"]
    assert int(headers["content-length"]) == len(body) < len(plain) / 2
    assert decode(body) == plain
    assert json.loads(plain)["data"]["__type"]["fields"][0]["name"] == "me"


@pytest.mark.parametrize("accept_encoding", [None, "identity", "deflate", "gzip;q=0"])
async def test_nothing_is_compressed_when_not_asked(client, accept_encoding):
    plain = await _plain(client, LARGE)

    headers, body = await _raw(client, LARGE, accept_encoding)

    assert "content-encoding" not in headers
    assert body == plain


async def test_an_answer_of_a_kilobyte_or_less_is_sent_as_it_is(client):
    headers, body = await _raw(client, SMALL, "gzip, br")

    assert "content-encoding" not in headers
    assert json.loads(body) == {"data": {"me": None}}


async def test_a_refusal_over_a_kilobyte_is_compressed_too(client):
    # GraphQL's own error for an unknown field names the field; a long name makes it large
    name = "x" * 2000
    headers, body = await _raw(client, f"{{ {name} }}", "gzip")

    assert headers["content-encoding"] == "gzip"
    [error] = json.loads(gzip.decompress(body))["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
