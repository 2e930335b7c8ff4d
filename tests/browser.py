"""Helpers of the browser tests: Debian's Chromium driven by Playwright (which never downloads a
browser of its own here), and apps served by uvicorn on loopback in the test's own event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def playwright_or_skip() -> Any:
    """Playwright's async entry point; the test is skipped where Chromium or Playwright is missing
    (.ci/run installs both and fails if a browser test did not run)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: pip install -e '.[test]'")
    return async_playwright


def loopback_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1 (its port is known before anything serves it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving(app: Any, *sockets: socket.socket) -> AsyncIterator[None]:
    """`app` served by uvicorn on these sockets, in this event loop (the same loop as the test's
    database), until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=list(sockets)))
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield
    finally:
        server.should_exit = True
        await task
        for sock in sockets:
            sock.close()
