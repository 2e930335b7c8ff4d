"""Start-up checks: the data folder and the database are usable, or one line says why not.

Used by every command (tihuo/cli.py) and by the app's lifespan (tihuo/app.py), so `tihuo serve`,
`tihuo worker` and `uvicorn --factory tihuo.app:create_app` refuse a bad set-up the same way.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.db import Database
from core.files import private_folder
from core.settings import Settings, SettingsError
from tihuo.migrate import alembic_config

log = logging.getLogger("tihuo.preflight")
# a server that does not answer within this long counts as unreachable
CONNECT_TIMEOUT_SECONDS = 10
# PostgreSQL SQLSTATEs met when connecting
_NO_SUCH_DATABASE = "3D000"
_LOGIN_REFUSED = {"28000", "28P01"}


class StartupError(Exception):
    """The set-up cannot work; the message names the cause and, where there is one, the fix."""


def one_line(exc: SettingsError | StartupError) -> str:
    """What the operator is told, on standard error."""
    if isinstance(exc, SettingsError):
        return f"tihuo: configuration error: {exc}"
    return f"tihuo: {exc}"


@contextmanager
def exit_on_startup_error() -> Iterator[None]:
    """For code with nobody to hand a failure to (the uvicorn factory): the one line, then exit 2."""
    try:
        yield
    except (SettingsError, StartupError) as exc:
        print(one_line(exc), file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def check_port_free(host: str, port: int) -> None:
    """`tihuo serve` can listen at --host and --port now; else a StartupError saying which to change."""
    try:
        # SO_REUSEADDR and the address family as uvicorn picks them: only a socket listening there stops this
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        change = "pick another port with --port" if exc.errno == errno.EADDRINUSE else "check --host"
        # create_server adds where it tried to bind, which the line already says
        reason = os_reason(exc).split(" (while attempting to bind")[0]
        raise StartupError(f"cannot listen on {host}:{port}: {reason} ({change})") from None


def check_data_dir(settings: Settings) -> None:
    """The data folder, when anything is kept there, exists as a writable folder of mode 0700."""
    if not settings.uses_data_dir:
        return
    path = settings.data_dir
    if path.exists() and not path.is_dir():
        raise StartupError(f"TIHUO_DATA_DIR {path} is not a folder")
    try:
        private_folder(path)
        # tried, not inferred from the mode bits: root ignores them, a read-only mount does not
        fd, probe = tempfile.mkstemp(dir=path, prefix=".tihuo-write-check-")
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        raise StartupError(f"TIHUO_DATA_DIR {path} is not a folder (a file is in its way)") from None
    except OSError as exc:
        raise StartupError(f"TIHUO_DATA_DIR {path} is not a writable folder ({os_reason(exc)})") from None


async def check_database(db: Database, *, need_migrated: bool) -> None:
    """The database answers, can be written, and (with `need_migrated`) is at the latest revision."""
    where = describe(db.url)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            if not await db.writable():
                raise StartupError(_read_only(db, where))
            async with db.engine.connect() as connection:
                current = await connection.run_sync(_current_revision)
    except TimeoutError:
        raise StartupError(
            f"cannot reach the database at {where}: no answer within {CONNECT_TIMEOUT_SECONDS} s"
        ) from None
    except OSError as exc:
        verb = "open" if db.is_sqlite else "reach"
        raise StartupError(f"cannot {verb} the database at {where}: {os_reason(exc)}") from None
    except (DBAPIError, sqlite3.Error) as exc:
        raise StartupError(_refusal(db, where, exc)) from None
    if need_migrated:
        scripts = ScriptDirectory.from_config(alembic_config())
        latest = scripts.get_current_head()
        if current != latest:
            if current is not None and current not in {
                script.revision for script in scripts.walk_revisions()
            }:
                raise StartupError(
                    f"the database at {where} is at revision {current}, which this version of tihuo "
                    f"does not know (latest {latest}): run a newer tihuo"
                )
            raise StartupError(
                f"the database at {where} is not migrated (at revision {current or 'none'}, "
                f"latest {latest}): run `tihuo migrate`"
            )


async def database_health(db: Database) -> str:
    """For /healthz: "ok", "read-only" or "unreachable" (logged with its cause)."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            writable = await db.writable()
    except Exception:
        log.exception("health check: database unreachable")
        return "unreachable"
    return "ok" if writable else "read-only"


def _current_revision(connection: Connection) -> str | None:
    # read here rather than through Alembic's MigrationContext, which logs at INFO on every look
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def describe(url: str) -> str:
    """The database for a message: the SQLite file, or the URL without password or options."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return parsed.set(query={}).render_as_string(hide_password=True)


def os_reason(exc: OSError) -> str:
    """An OSError's cause in a few words: "connection refused", "address already in use"."""
    if exc.errno and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    if exc.strerror:
        # getaddrinfo's errors ("Name or service not known") have negative numbers of their own
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _read_only(db: Database, where: str) -> str:
    if db.is_sqlite and db.folder_read_only:
        return (
            f"the database at {where} is read-only: its folder cannot be written "
            "(SQLite keeps its -wal and -shm files there)"
        )
    return f"the database at {where} is read-only: tihuo cannot work without writing to it"


def _refusal(db: Database, where: str, exc: DBAPIError | sqlite3.Error) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    sqlite_code = getattr(cause, "sqlite_errorcode", 0) & 0xFF
    if sqlite_code == sqlite3.SQLITE_READONLY or (
        sqlite_code == sqlite3.SQLITE_CANTOPEN and db.folder_read_only
    ):
        return _read_only(db, where)
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate == _NO_SUCH_DATABASE:
        return f"the database at {where} does not exist: create it, then run `tihuo migrate`"
    if sqlstate in _LOGIN_REFUSED:
        return f"the database at {where} refused the login: {detail}"
    return f"cannot use the database at {where}: {detail}"


class ReportStartupFailure:
    """ASGI middleware: a StartupError from the lifespan reaches the server as `lifespan.startup.failed`
    with its one line. Starlette would send the whole traceback as the message, and uvicorn prints it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def send_held(message: Message) -> None:
            # Starlette sends this before it re-raises the failure: only then is the cause known
            if message["type"] == "lifespan.startup.failed":
                held.append(message)
                return
            await send(message)

        try:
            await self.app(scope, receive, send_held)
        except StartupError as exc:
            await send({"type": "lifespan.startup.failed", "message": one_line(exc)})
        except BaseException:
            for message in held:
                await send(message)
            raise
        else:
            for message in held:
                await send(message)
