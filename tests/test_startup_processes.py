"""Start-up failures of real processes, where what the operator sees is the point: the uvicorn factory
(`uvicorn --factory tihuo.app:create_app`) and `tihuo worker` end with one line naming the cause and
a non-zero status, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.preflight_helpers import LATEST, UNREACHABLE_SHOWN, UNREACHABLE_URL

UNMIGRATED = f"is not migrated (at revision none, latest {LATEST}): run `tihuo migrate`"
FACTORY = [sys.executable, "-m", "uvicorn", "--factory", "tihuo.app:create_app", "--port", "0"]
WORKER = [sys.executable, "-m", "tihuo.cli", "worker"]


def run(command: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`command` in `tmp_path` (no .env file there) with only these TIHUO_* settings."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("TIHUO_")}
    environment.update(TIHUO_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(  # noqa: S603
        command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_factory_on_an_unmigrated_sqlite_file_fails_start_up_with_one_line(tmp_path):
    ended = run(FACTORY, tmp_path)

    output = ended.stdout + ended.stderr
    assert ended.returncode != 0
    assert f"tihuo: the database at {tmp_path / 'data' / 'tihuo.db'} {UNMIGRATED}" in output
    assert "Traceback" not in output
    assert "Application startup failed" in output


def test_the_factory_on_an_unreachable_postgresql_fails_start_up_with_one_line(tmp_path):
    ended = run(FACTORY, tmp_path, TIHUO_DATABASE_URL=UNREACHABLE_URL)

    output = ended.stdout + ended.stderr
    assert ended.returncode != 0
    assert f"tihuo: cannot reach the database at {UNREACHABLE_SHOWN}: connection refused" in output
    assert "Traceback" not in output
    assert "s3cret-pw" not in output


def test_the_factory_with_a_bad_setting_exits_2_with_one_line(tmp_path):
    ended = run(FACTORY, tmp_path, TIHUO_LOG_LEVEL="LOUD")

    assert (ended.returncode, ended.stderr) == (
        2,
        "tihuo: configuration error: TIHUO_LOG_LEVEL: Value error, must be one of DEBUG, INFO, "
        "WARNING, ERROR, CRITICAL, not 'LOUD'\n",
    )


def test_the_factory_with_a_file_for_a_data_folder_exits_2_with_one_line(tmp_path):
    (tmp_path / "data").write_text("", encoding="utf-8")

    ended = run(FACTORY, tmp_path)

    assert (ended.returncode, ended.stderr) == (
        2,
        f"tihuo: TIHUO_DATA_DIR {tmp_path / 'data'} is not a folder\n",
    )


def test_a_worker_on_an_unmigrated_database_exits_2_with_one_line(tmp_path):
    ended = run(WORKER, tmp_path)

    assert (ended.returncode, ended.stdout, ended.stderr) == (
        2,
        "",
        f"tihuo: the database at {tmp_path / 'data' / 'tihuo.db'} {UNMIGRATED}\n",
    )


def test_a_worker_on_an_unreachable_postgresql_exits_2_with_one_line(tmp_path):
    ended = run(WORKER, tmp_path, TIHUO_DATABASE_URL=UNREACHABLE_URL)

    assert (ended.returncode, ended.stderr) == (
        2,
        f"tihuo: cannot reach the database at {UNREACHABLE_SHOWN}: connection refused\n",
    )


def test_a_worker_whose_metrics_port_is_taken_exits_2_with_one_line(tmp_path, settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        ended = run(
            WORKER,
            tmp_path,
            TIHUO_DATABASE_URL=settings.resolved_database_url,
            TIHUO_SECRET_KEY=settings.secret_key,
            TIHUO_WORKER_METRICS_PORT=str(port),
        )

    assert (ended.returncode, ended.stderr) == (
        2,
        f"tihuo: cannot listen on 127.0.0.1:{port} for the worker's metrics (TIHUO_WORKER_METRICS_HOST, "
        "TIHUO_WORKER_METRICS_PORT): address already in use\n",
    )
