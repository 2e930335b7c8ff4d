"""Fixtures for the service tests that talk HTTP: the fake provider, and closing what they open."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.fake_provider import FakeProvider, serve_fake_provider


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    async with serve_fake_provider() as fake:
        yield fake


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """`closing(holder)` returns the provisioner or notifier given, closed when the test ends."""
    holders: list[Any] = []

    def keep(holder: Any) -> Any:
        holders.append(holder)
        return holder

    yield keep
    for holder in holders:
        await holder.aclose()
