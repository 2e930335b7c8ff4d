"""Helpers for the start-up check tests: files that cannot be written (even by root), PostgreSQL URLs
that cannot work, a database made read-only, and a migrated SQLite file of the test's own."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import POSTGRES_URL
from tihuo.migrate import migrate

# nothing listens on port 1 of this machine
UNREACHABLE_URL = "postgresql+asyncpg://tihuo:s3cret-pw@127.0.0.1:1/tihuo"
UNREACHABLE_SHOWN = "postgresql+asyncpg://tihuo:***@127.0.0.1:1/tihuo"
MISSING_DATABASE = "tihuo_h9_no_such_database"


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` (a file or a folder) cannot be written while inside: made immutable when running as
    root, whom write permissions do not stop, else its write permissions are taken away."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)  # noqa: S603, S607
        if made.returncode != 0:
            pytest.skip(f"cannot make {path} read-only for root here: {made.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)  # noqa: S603, S607
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    path.chmod(mode & ~0o222)
    try:
        yield
    finally:
        path.chmod(mode)


def missing_database_url() -> str:
    """A database that does not exist, on the test PostgreSQL server (127.0.0.1:5432 by default)."""
    server = make_url(POSTGRES_URL or "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    try:
        socket.create_connection((server.host or "127.0.0.1", server.port or 5432), timeout=2).close()
    except OSError:
        pytest.skip(f"no PostgreSQL server at {server.host}:{server.port or 5432}")
    return server.set(database=MISSING_DATABASE).render_as_string(hide_password=False)


async def set_postgres_read_only(on: bool) -> None:
    """The test PostgreSQL database refuses writes in every session begun from now on (as a standby
    does), or no longer."""
    assert POSTGRES_URL
    name = make_url(POSTGRES_URL).database
    change = "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
    engine = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        # this session's own setting wins over the database's, so the change can always be undone
        await connection.execute(text("SET default_transaction_read_only = off"))
        await connection.execute(text(f'ALTER DATABASE "{name}" {change}'))
    await engine.dispose()


@asynccontextmanager
async def postgres_read_only() -> AsyncIterator[None]:
    await set_postgres_read_only(True)
    try:
        yield
    finally:
        await set_postgres_read_only(False)


def migrated_sqlite_file(path: Path, revision: str = "head") -> str:
    """A SQLite file at `path` migrated to `revision` (by a plain engine, as an older tihuo made it);
    its URL. Not async: the tests that use it run the command line, which runs its own event loop."""
    url = f"sqlite+aiosqlite:///{path}"

    async def run() -> None:
        engine = create_async_engine(url)
        await migrate(engine, revision)
        await engine.dispose()

    asyncio.run(run())
    return url


def latest_revision() -> str:
    """The migrations' head, as the start-up checks name it."""
    from alembic.script import ScriptDirectory

    from tihuo.migrate import alembic_config

    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


LATEST = latest_revision()
