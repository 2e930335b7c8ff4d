"""Engines and units of work for SQLite and PostgreSQL.

SQLite: WAL, synchronous=FULL, foreign keys on; reads from a small pool, and every
write queued in-process onto one connection (BEGIN IMMEDIATE) so writers wait their
turn instead of failing with "database is locked". PostgreSQL: one ordinary pool.

The hot path (a redemption) runs `Plan`s (core/sql.py) through the drivers themselves:
on SQLite a whole transaction per hand-off to a reader or the writer thread, each with its
own sqlite3 connection; on PostgreSQL on an asyncpg pool of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg
from sqlalchemy import Table, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from core.files import private_file, tighten_file
from core.group_commit import GroupCommit
from core.notify import Hub
from core.settings import Settings
from core.sql import POSTGRES, SQLITE, Codec, Plan, Rows, Sql

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# how long the write check waits for another process's write lock before taking it as a sign of life
WRITE_CHECK_BUSY_TIMEOUT_MS = 200
READER_THREADS = 2
# connections of the PostgreSQL hot-path pool, beside SQLAlchemy's (10, up to 20)
HOT_POOL_SIZE = 10
# where a write session keeps its database and the callbacks to run after its commit
DATABASE = "tihuo.database"
AFTER_COMMIT = "tihuo.after_commit"
# a unique or primary-key constraint (sqlite3.IntegrityError.sqlite_errorcode)
_SQLITE_DUPLICATE = {sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY}


class DuplicateKey(Exception):
    """A unique constraint was hit; the transaction (or savepoint) must be rolled back."""


class CheckFailed(Exception):
    """A CHECK constraint was violated; the transaction must be rolled back."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint


def _sqlite_pragmas(engine: AsyncEngine, synchronous: str, begin: str) -> None:
    target = engine.sync_engine

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

    def __init__(
        self, url: str, *, sqlite_synchronous: str = "FULL", echo: bool = False, statement_timeout_ms: int = 0
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = make_url(url).database
            # made on the first connection, not here: a folder or file that cannot be made is then
            # reported by the start-up check (tihuo/preflight.py) like any other connection failure
            self._sqlite_file = Path(path) if path and path != ":memory:" else None
            self._sqlite_file_ready = False
            self.engine = create_async_engine(url, echo=echo, pool_size=4, max_overflow=4)
            _sqlite_pragmas(self.engine, sqlite_synchronous, "BEGIN")
            self.write_engine = create_async_engine(
                url, echo=echo, pool_size=1, max_overflow=0, pool_timeout=3600
            )
            _sqlite_pragmas(self.write_engine, sqlite_synchronous, "BEGIN IMMEDIATE")
            for engine in (self.engine, self.write_engine):
                event.listen(engine.sync_engine, "do_connect", self._before_sqlite_connects)
            self._sqlite_path = path or ":memory:"
            self._sqlite_synchronous = sqlite_synchronous
            self._sqlite_connections: list[sqlite3.Connection] = []
            self._thread_connection = threading.local()
            # plans run whole on one thread with a plain sqlite3 connection: one hand-off per
            # transaction (measured: through aiosqlite, a redemption held the write connection 6 ms)
            self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
            self._reader_threads = ThreadPoolExecutor(
                max_workers=READER_THREADS, thread_name_prefix="sqlite-reader"
            )
        else:
            # no one statement may hold a connection and its locks for ever (RULES-v2 §7)
            self._server_settings = (
                {"statement_timeout": str(statement_timeout_ms)} if statement_timeout_ms else {}
            )
            self.engine = create_async_engine(
                url,
                echo=echo,
                pool_size=10,
                max_overflow=10,
                connect_args={"server_settings": self._server_settings},
            )
            self.write_engine = self.engine
            self._hot_pool: asyncpg.Pool | None = None
            self._hot_pool_made = asyncio.Lock()
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # a write session knows its database, so what it changed can be announced on its hub
        self._write_sessions = async_sessionmaker(
            self.write_engine, expire_on_commit=False, info={DATABASE: self}
        )
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        # change notices inside this process (core.notify); on PostgreSQL fed by a LISTEN connection
        self.hub = Hub()
        self.group = GroupCommit(self.write)

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
        """One transaction that commits on success and rolls back on any exception. What was
        handed to `after_commit` runs once it committed (never after a rollback)."""
        if self._write_lock is None:
            async with self._write_sessions.begin() as session:
                yield session
        else:
            async with self._write_lock, self._write_sessions.begin() as session:
                yield session
        for callback in session.info.pop(AFTER_COMMIT, ()):
            callback()

    async def write_shared(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work(session)` in a `write()` transaction it may share with others handed over at the
        same moment (core/group_commit.py: it must be safe to run again); its result."""
        return await self.group.run(work)

    @staticmethod
    def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
        """Run `callback` after `session`'s transaction commits (a write session of `write()`)."""
        session.info.setdefault(AFTER_COMMIT, []).append(callback)

    @staticmethod
    def of(session: AsyncSession) -> Database:
        """The database a write session of `write()` belongs to."""
        database: Database = session.info[DATABASE]
        return database

    async def connect_asyncpg(self, name: str) -> asyncpg.Connection:
        """PostgreSQL: a connection of its own, outside every pool (core.notify's listener), named
        `name` in pg_stat_activity."""
        return await asyncpg.connect(
            server_settings={**self._server_settings, "application_name": name}, **self._asyncpg_options()
        )

    def _asyncpg_options(self) -> dict[str, object]:
        _, options = self.engine.dialect.create_connect_args(make_url(self.url))
        # SQLAlchemy's own options for its asyncpg adapter, not asyncpg's
        options.pop("prepared_statement_cache_size", None)
        options.pop("prepared_statement_name_func", None)
        return dict(options)

    async def run_write(self, plan: Callable[[Codec], Plan[T]]) -> T:
        """Run `plan(codec)` as one write transaction: committed when the plan returns, rolled back
        when it raises (a violated unique or CHECK constraint is thrown into it as DuplicateKey or
        CheckFailed). SQLite: queued like every write, then run whole on the writer thread;
        PostgreSQL: on the hot-path pool, without BEGIN and COMMIT when the plan starts with a
        standalone statement (core.sql.Sql)."""
        if not self.is_sqlite:
            async with (await self._postgres_pool()).acquire() as connection:
                return await _run_asyncpg(connection, plan(POSTGRES), write=True)
        assert self._write_lock is not None
        async with self._write_lock:
            loop = asyncio.get_running_loop()
            # with the caller's context, so log lines written there carry its request id
            context = contextvars.copy_context()
            return await loop.run_in_executor(self._writer_thread, context.run, self._sqlite_write, plan)

    async def run_read(self, plan: Callable[[Codec], Plan[T]]) -> T:
        """Run `plan(codec)`, reads only. SQLite: one read transaction (one snapshot) on a reader
        thread; PostgreSQL: each statement on its own (READ COMMITTED), on the hot-path pool."""
        if not self.is_sqlite:
            async with (await self._postgres_pool()).acquire() as connection:
                return await _run_asyncpg(connection, plan(POSTGRES), write=False)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._reader_threads, context.run, self._sqlite_read, plan)

    async def fetch(self, statement: Sql, arguments: Mapping[str, object]) -> Rows:
        """One reading statement's rows, as `run_read` runs it (the drivers' own path)."""

        def plan(_: Codec) -> Plan[Rows]:
            return (yield statement, arguments)

        return await self.run_read(plan)

    def _prepare_sqlite_file(self) -> None:
        """Before SQLite first opens the file: create it 0600 ourselves (SQLite would make it 0644;
        its -wal and -shm files take the database file's mode), or tighten an existing one."""
        if self._sqlite_file_ready or self._sqlite_file is None:
            return
        private_file(self._sqlite_file)
        for suffix in ("-wal", "-shm"):
            tighten_file(self._sqlite_file.with_name(self._sqlite_file.name + suffix))
        self._sqlite_file_ready = True

    def _before_sqlite_connects(self, *_: object) -> None:
        # SQLAlchemy's do_connect event: returning None lets the driver connect as usual
        self._prepare_sqlite_file()

    async def writable(self) -> bool:
        """Whether a write could commit now; cheap enough for /healthz. PostgreSQL says so itself
        (`on` on a standby or under default_transaction_read_only). SQLite is asked to write its
        header's user_version back unchanged in a transaction rolled back at once, on the write
        connection: BEGIN IMMEDIATE alone succeeds on a read-only file."""
        if not self.is_sqlite:
            async with self.read() as session:
                return await session.scalar(text("SHOW transaction_read_only")) == "off"
        assert self._write_lock is not None
        if self._write_lock.locked():
            # a write of ours is under way; on a read-only database it would fail at once
            return True
        async with self._write_lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._writer_thread, self._sqlite_writable)

    def _sqlite_writable(self) -> bool:
        try:
            connection = self._sqlite_connection()
            connection.execute(f"PRAGMA busy_timeout={WRITE_CHECK_BUSY_TIMEOUT_MS}")
            try:
                (version,) = connection.execute("PRAGMA user_version").fetchone()
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(f"PRAGMA user_version={int(version)}")
            finally:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        except sqlite3.OperationalError as exc:
            primary = exc.sqlite_errorcode & 0xFF
            if primary == sqlite3.SQLITE_BUSY:
                # another process holds the write lock: it is writing
                return True
            if primary == sqlite3.SQLITE_READONLY or (
                primary == sqlite3.SQLITE_CANTOPEN and self.folder_read_only
            ):
                return False
            raise
        return True

    @property
    def folder_read_only(self) -> bool:
        """SQLite: the database's folder cannot be written, so its -wal and -shm files cannot be made."""
        return self._sqlite_file is not None and not os.access(self._sqlite_file.parent, os.W_OK)

    def _sqlite_connection(self) -> sqlite3.Connection:
        """This thread's own connection (each reader thread and the writer thread keep one)."""
        connection: sqlite3.Connection | None = getattr(self._thread_connection, "connection", None)
        if connection is None:
            self._prepare_sqlite_file()
            # autocommit mode: transactions are begun and ended explicitly below
            connection = sqlite3.connect(self._sqlite_path, isolation_level=None, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            for pragma in (
                "journal_mode=WAL",
                f"synchronous={self._sqlite_synchronous}",
                "foreign_keys=ON",
                f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            ):
                connection.execute(f"PRAGMA {pragma}")
            self._thread_connection.connection = connection
            self._sqlite_connections.append(connection)
        return connection

    def _sqlite_write(self, plan: Callable[[Codec], Plan[T]]) -> T:
        connection = self._sqlite_connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = _drive_sqlite(connection, plan(SQLITE))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return result

    def _sqlite_read(self, plan: Callable[[Codec], Plan[T]]) -> T:
        connection = self._sqlite_connection()
        connection.execute("BEGIN")
        try:
            return _drive_sqlite(connection, plan(SQLITE))
        finally:
            connection.execute("ROLLBACK")

    async def _postgres_pool(self) -> asyncpg.Pool:
        if self._hot_pool is None:
            async with self._hot_pool_made:
                if self._hot_pool is None:
                    self._hot_pool = await asyncpg.create_pool(
                        min_size=1,
                        max_size=HOT_POOL_SIZE,
                        reset=_keep_session,
                        server_settings=self._server_settings,
                        **self._asyncpg_options(),
                    )
        return self._hot_pool

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
        if self.is_sqlite:
            loop = asyncio.get_running_loop()
            for threads in (self._writer_thread, self._reader_threads):
                await loop.run_in_executor(None, threads.shutdown)
            for connection in self._sqlite_connections:
                connection.close()
            self._sqlite_connections.clear()
        elif self._hot_pool is not None:
            await self._hot_pool.close()
            self._hot_pool = None


async def _keep_session(_: asyncpg.Connection) -> None:
    """Pool release: asyncpg rolls back an open transaction itself; the plans change no session
    state, so the default reset (a round trip of RESET ALL, UNLISTEN, ...) is not needed."""


def _sqlite_violation(exc: sqlite3.IntegrityError) -> Exception:
    if exc.sqlite_errorcode in _SQLITE_DUPLICATE:
        return DuplicateKey(str(exc))
    if exc.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_CHECK:
        # "CHECK constraint failed: <name>"
        return CheckFailed(str(exc).rpartition(":")[2].strip())
    return exc


def _drive_sqlite(connection: sqlite3.Connection, plan: Plan[T]) -> T:
    """Run a plan's statements on `connection`; a violated constraint is thrown into the plan."""
    codec = SQLITE
    try:
        step = next(plan)
        while True:
            statement, args = step
            try:
                values = [codec.encode(value) for value in statement.arguments("sqlite", args)]
                rows = connection.execute(statement.sqlite, values).fetchall()
            except sqlite3.IntegrityError as exc:
                step = plan.throw(_sqlite_violation(exc))
                continue
            step = plan.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        plan.close()


async def _run_asyncpg(connection: asyncpg.Connection, plan: Plan[T], *, write: bool) -> T:
    """A write plan in a transaction, unless it starts with a standalone statement; a read plan
    statement by statement."""
    try:
        first = next(plan)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    if write and not first[0].standalone:
        async with connection.transaction():
            return await _drive_asyncpg(connection, plan, first, only_reads_after=False)
    return await _drive_asyncpg(connection, plan, first, only_reads_after=write)


async def _drive_asyncpg(
    connection: asyncpg.Connection,
    plan: Plan[T],
    step: tuple[Sql, Mapping[str, object]],
    *,
    only_reads_after: bool,
) -> T:
    """Run a plan's statements on `connection`; a violated constraint is thrown into the plan."""
    codec = POSTGRES
    try:
        while True:
            statement, args = step
            try:
                values = [codec.encode(value) for value in statement.arguments("postgresql", args)]
                rows = await connection.fetch(statement.postgres, *values)
            except asyncpg.UniqueViolationError as exc:
                step = plan.throw(DuplicateKey(str(exc)))
            except asyncpg.CheckViolationError as exc:
                step = plan.throw(CheckFailed(exc.constraint_name or ""))
            else:
                step = plan.send(rows)
            if only_reads_after and not step[0].reads_only:
                raise RuntimeError(
                    f"{step[0]!r} would write after a standalone statement, outside its transaction"
                )
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        plan.close()


def database_from_settings(settings: Settings) -> Database:
    return Database(
        settings.resolved_database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        statement_timeout_ms=settings.statement_timeout_ms,
    )
