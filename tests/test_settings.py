"""Settings: validation names the bad variable; the secret key is generated once, private, unprinted."""

from __future__ import annotations

import stat

import pytest

from core.settings import SettingsError, load_settings
from tihuo import cli


def test_a_bad_value_names_its_variable(monkeypatch):
    monkeypatch.setenv("TIHUO_TIMEZONE", "Mars/Olympus")
    monkeypatch.setenv("TIHUO_PROVISIONER", "carrier-pigeon")

    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)

    message = str(refused.value)
    assert "TIHUO_TIMEZONE: Value error, unknown time zone 'Mars/Olympus'" in message
    assert "TIHUO_PROVISIONER: Input should be 'simulated' or 'http'" in message


def test_an_unsupported_database_url_is_refused(monkeypatch):
    monkeypatch.setenv("TIHUO_DATABASE_URL", "mysql://localhost/tihuo")
    with pytest.raises(SettingsError, match="TIHUO_DATABASE_URL: Value error, must start with"):
        load_settings(_env_file=None)


def test_the_command_line_reports_bad_settings_and_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("TIHUO_FAILED_ATTEMPT_LIMIT", "0")
    assert cli.main(["migrate"]) == 2
    assert "TIHUO_FAILED_ATTEMPT_LIMIT" in capsys.readouterr().err


def test_the_secret_key_is_made_once_with_mode_0600(tmp_path, capsys):
    settings = load_settings(_env_file=None, data_dir=tmp_path / "data")

    first = settings.secret
    again = load_settings(_env_file=None, data_dir=tmp_path / "data").secret

    key_file = tmp_path / "data" / "secret.key"
    assert first == again == key_file.read_bytes().strip()
    assert len(first) == 64
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.decode() not in capsys.readouterr().out


def test_the_default_database_is_a_sqlite_file_in_the_data_folder(tmp_path):
    settings = load_settings(_env_file=None, data_dir=tmp_path / "data")
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'core.db'}"
