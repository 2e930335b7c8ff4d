"""/healthz says "unavailable" (503) when the database cannot be written or reached, not only when it
does not answer: on a read-only database every sign-in would fail while the check said ok."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from core.db import Database
from core.keys import Keys
from core.settings import Settings
from services.runtime import Runtime
from tests.conftest import POSTGRES_URL
from tests.preflight_helpers import UNREACHABLE_URL, migrated_sqlite_file, postgres_read_only, read_only
from tihuo.app import create_app


async def health_of(url: str, settings: Settings) -> tuple[int, object]:
    """GET /healthz of an app on a new Database at `url` (its first connections are made here)."""
    db = Database(url)
    try:
        app = create_app(runtime=Runtime(db=db, settings=settings, keys=Keys.from_secret(settings.secret)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/healthz")
    finally:
        await db.dispose()
    return response.status_code, response.json()


@pytest.mark.parametrize("what", ["file", "folder"])
async def test_healthz_is_unavailable_when_the_sqlite_database_or_its_folder_is_read_only(
    tmp_path: Path, settings, what
):
    path = tmp_path / "folder" / "tihuo.db"
    path.parent.mkdir()
    url = await asyncio.to_thread(migrated_sqlite_file, path)
    assert await health_of(url, settings) == (200, {"status": "ok", "database": "ok"})

    with read_only(path if what == "file" else path.parent):
        assert await health_of(url, settings) == (503, {"status": "unavailable", "database": "read-only"})


@pytest.mark.postgres
async def test_healthz_is_unavailable_when_postgresql_refuses_writes(settings):
    assert POSTGRES_URL
    async with postgres_read_only():
        assert await health_of(POSTGRES_URL, settings) == (
            503,
            {"status": "unavailable", "database": "read-only"},
        )
    assert await health_of(POSTGRES_URL, settings) == (200, {"status": "ok", "database": "ok"})


async def test_healthz_is_unavailable_when_the_database_does_not_answer(settings):
    assert await health_of(UNREACHABLE_URL, settings) == (
        503,
        {"status": "unavailable", "database": "unreachable"},
    )
