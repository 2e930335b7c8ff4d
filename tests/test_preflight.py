"""Start-up checks through the command line, in-process: a database that cannot be reached, does not
exist, is not migrated or is read-only, and a data folder that is a file or read-only, each give one
line on stderr naming the cause and exit status 2, with nothing changed. The files tihuo makes are
its own alone: the data folder 0700, the database 0600."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core.db import Database
from tests.preflight_helpers import (
    LATEST,
    UNREACHABLE_SHOWN,
    UNREACHABLE_URL,
    migrated_sqlite_file,
    missing_database_url,
    read_only,
    set_postgres_read_only,
)
from tihuo import cli

FIXTURES = Path(__file__).parent / "fixtures"
PASSWORD = "a long enough password"
USERS_CREATE = ["users", "create", "--username", "ops", "--role", "admin", "--password-stdin"]
CATALOG_LOAD = ["catalog", "load", str(FIXTURES / "catalog.toml")]
# the commands that can meet each problem and end at once when they do (`tihuo worker`, which
# would otherwise keep running, is run as a process in tests/test_startup_processes.py)
COMMANDS = {"migrate": ["migrate"], "catalog load": CATALOG_LOAD, "users create": USERS_CREATE}
NEED_MIGRATED = {"catalog load": CATALOG_LOAD, "users create": USERS_CREATE}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with no .env file, a data folder setting and a password on stdin."""
    monkeypatch.setenv("TIHUO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIHUO_PASSWORD_MEMORY_KIB", "64")
    monkeypatch.setenv("TIHUO_PASSWORD_TIME_COST", "1")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def kept_logging() -> Iterator[None]:
    """`tihuo serve` configures the root logger for its process; this one's is put back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    chatty = {name: logging.getLogger(name).level for name in ("aiosqlite", "asyncpg", "sqlalchemy.engine")}
    access = logging.getLogger("uvicorn.access").disabled
    yield
    root.handlers[:], root.level = handlers, level
    for name, chatty_level in chatty.items():
        logging.getLogger(name).setLevel(chatty_level)
    logging.getLogger("uvicorn.access").disabled = access


def tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def users(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT count(*) FROM users").fetchone()[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("command", list(NEED_MIGRATED), ids=list(NEED_MIGRATED))
def test_a_command_on_an_unmigrated_database_says_to_migrate_and_changes_nothing(env, capsys, command):
    database = env / "data" / "tihuo.db"

    assert cli.main(NEED_MIGRATED[command]) == 2

    output = capsys.readouterr()
    assert output.err == (
        f"tihuo: the database at {database} is not migrated (at revision none, latest {LATEST}): "
        "run `tihuo migrate`\n"
    )
    assert output.out == ""
    assert tables(database) == []


def test_a_partly_migrated_database_is_named_by_its_revision(env, monkeypatch, capsys):
    database = env / "elsewhere.db"
    monkeypatch.setenv("TIHUO_DATABASE_URL", migrated_sqlite_file(database, "0001"))

    assert cli.main(USERS_CREATE) == 2

    assert capsys.readouterr().err == (
        f"tihuo: the database at {database} is not migrated (at revision 0001, latest {LATEST}): "
        "run `tihuo migrate`\n"
    )
    assert users(database) == 0


def test_a_database_from_a_newer_version_is_refused(env, monkeypatch, capsys):
    database = env / "newer.db"
    monkeypatch.setenv("TIHUO_DATABASE_URL", migrated_sqlite_file(database))
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099'")

    assert cli.main(CATALOG_LOAD) == 2

    assert capsys.readouterr().err == (
        f"tihuo: the database at {database} is at revision 0099, which this version of tihuo does not "
        f"know (latest {LATEST}): run a newer tihuo\n"
    )


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
def test_an_unreachable_postgresql_is_one_line_without_its_password(env, monkeypatch, capsys, command):
    monkeypatch.setenv("TIHUO_DATABASE_URL", UNREACHABLE_URL)

    assert cli.main(COMMANDS[command]) == 2

    output = capsys.readouterr()
    assert output.err == f"tihuo: cannot reach the database at {UNREACHABLE_SHOWN}: connection refused\n"
    assert "s3cret-pw" not in output.out + output.err


def test_serve_stops_before_serving_on_an_unreachable_postgresql(env, monkeypatch, capsys, kept_logging):
    monkeypatch.setenv("TIHUO_DATABASE_URL", UNREACHABLE_URL)

    assert cli.main(["serve", "--port", "1"]) == 2

    output = capsys.readouterr()
    assert output.err == f"tihuo: cannot reach the database at {UNREACHABLE_SHOWN}: connection refused\n"
    # nothing was announced: the address would have been a lie
    assert output.out == ""


@pytest.mark.parametrize("command", ["migrate", "users create"])
def test_a_missing_postgresql_database_says_to_create_it(env, monkeypatch, capsys, command):
    url = missing_database_url()
    monkeypatch.setenv("TIHUO_DATABASE_URL", url)

    assert cli.main(COMMANDS[command]) == 2

    assert capsys.readouterr().err == (
        f"tihuo: the database at {url} does not exist: create it, then run `tihuo migrate`\n"
    )


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
def test_a_data_folder_that_is_a_file_is_named_and_left_alone(env, monkeypatch, capsys, command):
    in_the_way = env / "data"
    in_the_way.write_text("not a folder", encoding="utf-8")

    assert cli.main(COMMANDS[command]) == 2

    assert capsys.readouterr().err == f"tihuo: TIHUO_DATA_DIR {in_the_way} is not a folder\n"
    assert in_the_way.read_text(encoding="utf-8") == "not a folder"


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
def test_a_read_only_data_folder_is_named(env, capsys, command):
    folder = env / "data"
    folder.mkdir(mode=0o700)

    with read_only(folder):
        assert cli.main(COMMANDS[command]) == 2

    err = capsys.readouterr().err
    assert err.startswith(f"tihuo: TIHUO_DATA_DIR {folder} is not a writable folder (")
    assert err.count("\n") == 1
    assert list(folder.iterdir()) == []


def test_a_data_folder_is_not_made_when_nothing_is_kept_there(env, monkeypatch, capsys):
    database = env / "elsewhere.db"
    monkeypatch.setenv("TIHUO_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    monkeypatch.setenv("TIHUO_SECRET_KEY", "a-secret-from-the-environment")

    assert cli.main(["migrate"]) == 0

    assert not (env / "data").exists()
    assert "alembic_version" in tables(database)


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
def test_a_read_only_sqlite_database_is_named_and_nothing_is_written(env, monkeypatch, capsys, command):
    database = env / "data" / "tihuo.db"
    database.parent.mkdir()
    migrated_sqlite_file(database)

    with read_only(database):
        assert cli.main(COMMANDS[command]) == 2

    assert capsys.readouterr().err == (
        f"tihuo: the database at {database} is read-only: tihuo cannot work without writing to it\n"
    )
    assert users(database) == 0
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM regions").fetchone() == (0,)


@pytest.mark.postgres
@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
def test_a_read_only_postgresql_database_is_named(env, monkeypatch, capsys, database_url, command):
    monkeypatch.setenv("TIHUO_DATABASE_URL", database_url)

    asyncio.run(set_postgres_read_only(True))
    try:
        assert cli.main(COMMANDS[command]) == 2
    finally:
        asyncio.run(set_postgres_read_only(False))

    assert capsys.readouterr().err == (
        f"tihuo: the database at {make_url(database_url).render_as_string(hide_password=True)} is read-only: tihuo cannot work without "
        "writing to it\n"
    )


def test_a_new_data_folder_and_database_are_the_owners_alone(env):
    assert cli.main(["migrate"]) == 0
    data = env / "data"

    assert (mode(data), mode(data / "tihuo.db"), mode(data / "secret.key")) == (0o700, 0o600, 0o600)


def test_the_write_ahead_log_files_take_the_databases_mode(env):
    assert cli.main(["migrate"]) == 0
    database = env / "data" / "tihuo.db"
    wal, shm = (database.with_name(database.name + suffix) for suffix in ("-wal", "-shm"))

    async def modes_while_open() -> tuple[int, int]:
        db = Database(f"sqlite+aiosqlite:///{database}")
        try:
            async with db.write() as session:
                await session.execute(text("UPDATE alembic_version SET version_num = version_num"))
            return mode(wal), mode(shm)
        finally:
            await db.dispose()

    assert asyncio.run(modes_while_open()) == (0o600, 0o600)


def test_an_existing_data_folder_and_database_open_to_others_are_tightened(env):
    data = env / "data"
    data.mkdir()
    data.chmod(0o755)
    database = data / "tihuo.db"
    migrated_sqlite_file(database, "0001")
    database.chmod(0o644)
    secret = data / "secret.key"
    secret.write_text("an-existing-secret", encoding="utf-8")
    secret.chmod(0o644)

    assert cli.main(["migrate"]) == 0

    assert (mode(data), mode(database), mode(secret)) == (0o700, 0o600, 0o600)
    assert secret.read_text(encoding="utf-8") == "an-existing-secret"
    assert "alembic_version" in tables(database)


def test_a_database_outside_the_data_folder_is_0600_and_its_folder_is_left_as_it_is(env, monkeypatch):
    folder = env / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    monkeypatch.setenv("TIHUO_DATABASE_URL", f"sqlite+aiosqlite:///{folder / 'tihuo.db'}")

    assert cli.main(["migrate"]) == 0

    assert (mode(folder), mode(folder / "tihuo.db")) == (0o755, 0o600)


def test_nothing_about_these_checks_is_printed_when_all_is_well(env, capsys):
    assert cli.main(["migrate"]) == 0
    assert cli.main(USERS_CREATE) == 0

    output = capsys.readouterr()
    assert (output.out, output.err) == ("database is at the latest version\nuser ops created (admin)\n", "")


def test_serve_on_a_port_in_use_says_to_pick_another_before_changing_anything(env, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        assert cli.main(["serve", "--demo", "--port", str(port)]) == 2

    output = capsys.readouterr()
    assert output.err == (
        f"tihuo: cannot listen on 127.0.0.1:{port}: address already in use (pick another port with --port)\n"
    )
    assert output.out == ""
    assert not (env / "data" / "tihuo.db").exists()


def test_a_database_whose_folder_is_read_only_is_named_with_the_folder(env, monkeypatch, capsys):
    folder = env / "shared"
    folder.mkdir()
    database = folder / "tihuo.db"
    monkeypatch.setenv("TIHUO_DATABASE_URL", migrated_sqlite_file(database))

    with read_only(folder):
        assert cli.main(USERS_CREATE) == 2

    assert capsys.readouterr().err == (
        f"tihuo: the database at {database} is read-only: its folder cannot be written (SQLite keeps "
        "its -wal and -shm files there)\n"
    )
    assert users(database) == 0
