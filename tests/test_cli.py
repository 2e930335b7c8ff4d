"""The command line on a real SQLite file: migrate, users create, catalog load, export-schema."""

from __future__ import annotations

import argparse
import io
import sqlite3
from pathlib import Path

import pytest

from tests.preflight_helpers import UNREACHABLE_URL
from tihuo import cli

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TIHUO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIHUO_PASSWORD_MEMORY_KIB", "64")
    monkeypatch.setenv("TIHUO_PASSWORD_TIME_COST", "1")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["migrate"]) == 0
    return tmp_path


def test_users_create_reads_the_password_from_stdin(env, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))

    assert cli.main(["users", "create", "--username", "ops", "--role", "admin", "--password-stdin"]) == 0

    output = capsys.readouterr()
    assert output.out == "user ops created (admin)\n"
    assert "a long enough password" not in output.out + output.err


def test_users_create_refuses_a_taken_name(env, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    cli.main(["users", "create", "--username", "ops", "--role", "member", "--password-stdin"])
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))

    assert cli.main(["users", "create", "--username", "ops", "--role", "member", "--password-stdin"]) == 1
    assert "username: field.taken" in capsys.readouterr().err


def test_catalog_load_reports_every_problem_with_its_place_and_loads_nothing(env, capsys):
    broken = (FIXTURES / "catalog.toml").read_text(encoding="utf-8")
    broken = broken.replace(
        'defense = { "0" = "0.00", "10" = "100.00"', 'defense = { "0" = "0.00", "15" = "100.00"', 1
    )
    broken = broken.replace('region = "hk"', 'region = "nowhere"', 1)
    (env / "broken.toml").write_text(broken, encoding="utf-8")

    assert cli.main(["catalog", "load", "broken.toml"]) == 1

    err = capsys.readouterr().err
    assert "broken.toml: not loaded; nothing was changed:" in err
    assert 'lines[1].region: unknown region "nowhere"' in err
    assert "lines[0].pricing.defense" in err
    assert cli.main(["catalog", "load", str(FIXTURES / "catalog.toml")]) == 0
    assert "regions: 2 inserted, 0 updated, 0 unchanged" in capsys.readouterr().out


def test_export_schema_prints_the_checked_in_sdl(capsys):
    assert cli.main(["export-schema"]) == 0
    assert capsys.readouterr().out == (Path(__file__).parent.parent / "schema.graphql").read_text(
        encoding="utf-8"
    )


def test_catalog_load_names_the_first_byte_that_is_not_utf_8_and_loads_nothing(env, capsys):
    (env / "latin1.toml").write_bytes("# catalogue café\n".encode("latin-1"))

    assert cli.main(["catalog", "load", "latin1.toml"]) == 1

    assert capsys.readouterr().err == "latin1.toml: not UTF-8 text (byte 0xe9 at position 15)\n"
    with sqlite3.connect(env / "data" / "tihuo.db") as connection:
        assert connection.execute("SELECT count(*) FROM regions").fetchone() == (0,)


@pytest.mark.parametrize("port", ["83786", "0", "-1", "http"])
def test_serve_refuses_a_port_outside_1_to_65535(port, tmp_path, monkeypatch, capsys):
    # were the port taken, serve would stop at once on this database instead of serving
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIHUO_DATABASE_URL", UNREACHABLE_URL)

    with pytest.raises(SystemExit) as refused:
        cli.main(["serve", "--port", port])

    assert refused.value.code == 2
    shown = repr(port) if port == "http" else port
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"tihuo serve: error: argument --port: {shown} is not a port number (1 to 65535)"
    )


def test_every_option_of_every_command_has_a_help_text():
    def commands(parser: argparse.ArgumentParser, name: str = "tihuo"):  # type: ignore[no-untyped-def]
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child_name, child in action.choices.items():
                    yield from commands(child, f"{name} {child_name}")

    undocumented = [
        (name, action.dest)
        for name, parser in commands(cli.parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]

    assert undocumented == []


def test_serve_help_says_the_default_port_and_address(capsys):
    with pytest.raises(SystemExit) as shown:
        cli.main(["serve", "--help"])

    assert shown.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--port PORT TCP port to listen on (default 8000)" in text
    assert "--host HOST address to listen on (default 127.0.0.1" in text


def test_serve_with_a_manifest_it_cannot_trust_exits_2_before_serving(env, monkeypatch, capsys):
    import uvicorn

    from tihuo import observability

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: served.append(args))
    monkeypatch.setattr(observability, "configure_logging", lambda level: None)
    (env / "manifest.json").write_text('{"abc": "query { me { id } }"}')
    monkeypatch.setenv("TIHUO_TRUSTED_DOCUMENTS", str(env / "manifest.json"))

    assert cli.main(["serve"]) == 2

    error = capsys.readouterr().err
    assert "configuration error: TIHUO_TRUSTED_DOCUMENTS:" in error
    assert "'abc' is not the SHA-256 of its document" in error
    assert served == []
