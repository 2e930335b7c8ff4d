"""Engines and units of work for SQLite and PostgreSQL.

SQLite: WAL, synchronous=FULL, foreign keys on; reads from a small pool, and every
write queued in-process onto one connection (BEGIN IMMEDIATE) so writers wait their
turn instead of failing with "database is locked". PostgreSQL: one ordinary pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from tihuo.settings import Settings

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 30_000
READER_THREADS = 2


class DuplicateKey(Exception):
    """A bulk insert hit a unique constraint; the transaction (or savepoint) must be rolled back."""


def _sqlite_pragmas(engine: AsyncEngine | Engine, synchronous: str, begin: str) -> None:
    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(target, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy (not the driver) decide when a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(target, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql(begin)


class Database:
    """The application's handle on its database: `read()` and `write()` units of work."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_async_engine(url, echo=echo, pool_size=4, max_overflow=4)
            _sqlite_pragmas(self.engine, sqlite_synchronous, "BEGIN")
            self.write_engine = create_async_engine(
                url, echo=echo, pool_size=1, max_overflow=0, pool_timeout=3600
            )
            _sqlite_pragmas(self.write_engine, sqlite_synchronous, "BEGIN IMMEDIATE")
            # the hot write transactions (a redemption) run whole on one thread with a plain sqlite3
            # connection: one hand-off per transaction instead of one per statement (measured: a
            # redemption held the write connection 6 ms through aiosqlite)
            self.sync_write_engine: Engine | None = create_engine(
                url.replace("sqlite+aiosqlite://", "sqlite+pysqlite://", 1),
                echo=echo,
                pool_size=1,
                max_overflow=0,
                connect_args={"check_same_thread": False},
            )
            _sqlite_pragmas(self.sync_write_engine, sqlite_synchronous, "BEGIN IMMEDIATE")
            self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
            # and the hot reads (a redemption's look-up) likewise, a whole transaction per hand-off
            self.sync_read_engine: Engine | None = create_engine(
                url.replace("sqlite+aiosqlite://", "sqlite+pysqlite://", 1),
                echo=echo,
                pool_size=READER_THREADS,
                max_overflow=0,
                connect_args={"check_same_thread": False},
            )
            _sqlite_pragmas(self.sync_read_engine, sqlite_synchronous, "BEGIN")
            self._reader_threads = ThreadPoolExecutor(
                max_workers=READER_THREADS, thread_name_prefix="sqlite-reader"
            )
        else:
            self.engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=10)
            self.write_engine = self.engine
            self.sync_write_engine = None
            self.sync_read_engine = None
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only session (one consistent snapshot); never shared between concurrent tasks."""
        async with self._read_sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One transaction that commits on success and rolls back on any exception."""
        if self._write_lock is None:
            async with self._write_sessions.begin() as session:
                yield session
            return
        async with self._write_lock, self._write_sessions.begin() as session:
            yield session

    async def run_write(self, work: Callable[[Connection], T]) -> T:
        """Run `work(connection)`, synchronous Core statements, as one write transaction (committed
        when it returns, rolled back when it raises). SQLite: queued like every write, then run
        whole on the writer thread; PostgreSQL: on a pooled connection through `run_sync`."""
        if self.sync_write_engine is None:
            async with self.engine.begin() as connection:
                return await connection.run_sync(work)
        assert self._write_lock is not None
        async with self._write_lock:
            loop = asyncio.get_running_loop()
            # with the caller's context, so log lines written there carry its request id
            context = contextvars.copy_context()
            return await loop.run_in_executor(
                self._writer_thread, context.run, self._run_in_transaction, work
            )

    async def run_read(self, work: Callable[[Connection], T]) -> T:
        """Run `work(connection)`, synchronous Core reads, in one read transaction (one snapshot).
        SQLite: on a reader thread, one hand-off for the whole of it; PostgreSQL: `run_sync`."""
        if self.sync_read_engine is None:
            async with self.engine.connect() as connection, connection.begin():
                return await connection.run_sync(work)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._reader_threads, context.run, self._read_in_transaction, work)

    def _run_in_transaction(self, work: Callable[[Connection], T]) -> T:
        assert self.sync_write_engine is not None
        with self.sync_write_engine.begin() as connection:
            return work(connection)

    def _read_in_transaction(self, work: Callable[[Connection], T]) -> T:
        assert self.sync_read_engine is not None
        with self.sync_read_engine.connect() as connection, connection.begin():
            return work(connection)

    async def bulk_insert(
        self, session: AsyncSession, table: Table, columns: Sequence[str], rows: list[tuple[object, ...]]
    ) -> None:
        """Insert many rows through the driver's own fast path, inside the session's transaction:
        sqlite3 executemany, or COPY on PostgreSQL. Values must already be in storage form."""
        connection = await session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        try:
            if self.is_sqlite:
                # names come from our own Table and column tuple, never from input
                statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"  # noqa: S608
                await raw.executemany(statement, rows)
            else:
                await raw.copy_records_to_table(table.name, records=rows, columns=list(columns))
        except (sqlite3.IntegrityError, asyncpg.UniqueViolationError) as exc:
            raise DuplicateKey(str(exc)) from exc

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()
        if self.sync_write_engine is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._writer_thread, self.sync_write_engine.dispose
            )
            self._writer_thread.shutdown(wait=False)
        if self.sync_read_engine is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._reader_threads, self.sync_read_engine.dispose
            )
            self._reader_threads.shutdown(wait=False)


def database_from_settings(settings: Settings) -> Database:
    return Database(settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous)
