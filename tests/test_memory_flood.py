"""A signed-out client flooding a real server with large distinct documents cannot fill its memory
(RULES-v2 §7): bodies over the limit are refused unread, and documents of the largest accepted size
are not kept. The server's resident memory is read from /proc before and after."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tests.processes import UVICORN, clean_env, free_port, healthy, rss_mib, spawn, stop

FLOOD = 60
# growth a flood may cause: the allocator keeps some of what a request used (measured: +9 MiB)
ALLOWED_GROWTH_MIB = 40


@pytest.fixture
async def server(settings, tmp_path: Path):
    port = free_port()
    env = clean_env(
        TIHUO_DATABASE_URL=settings.resolved_database_url,
        TIHUO_SECRET_KEY=settings.secret_key,
        TIHUO_DATA_DIR=str(tmp_path / "server-data"),
        TIHUO_LOG_LEVEL="WARNING",
    )
    process = spawn([sys.executable, *UVICORN, "--port", str(port)], env, tmp_path / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        await healthy(url, process)
        yield url, process
    finally:
        stop([process])


def _document(n: int, size: int) -> str:
    """A valid document of about `size` bytes, different for each `n` (the bulk is a comment)."""
    head = f"query Flood{n} {{ __typename }}\n#"
    return head + "x" * (size - len(head) - 64) + "\n"


async def test_a_flood_of_large_distinct_documents_leaves_memory_where_it_was(server, settings):
    url, process = server
    limit = settings.max_body_bytes
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for n in range(20):  # warm-up: every code path touched once
            await http.post("/graphql", json={"query": _document(n, 2048)})
        before = rss_mib(process.pid)

        # 60 distinct 4 MB documents: refused with 413, unread
        too_large = [
            (await http.post("/graphql", json={"query": _document(n, 4 * 1024 * 1024)})).status_code
            for n in range(FLOOD)
        ]
        # 60 distinct documents of the largest size accepted: answered, not kept
        largest = [
            (await http.post("/graphql", json={"query": _document(n, limit - 100)})).json()
            for n in range(FLOOD)
        ]
        after = rss_mib(process.pid)

    assert too_large == [413] * FLOOD
    assert largest == [{"data": {"__typename": "Query"}}] * FLOOD
    assert after - before < ALLOWED_GROWTH_MIB, (before, after)
