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


def test_the_command_line_reports_bad_settings_and_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
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
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert first.decode() not in capsys.readouterr().out


def test_the_default_database_is_a_sqlite_file_in_the_data_folder(tmp_path):
    settings = load_settings(_env_file=None, data_dir=tmp_path / "data")
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'tihuo.db'}"


def test_the_log_level_is_one_of_the_five_names_in_any_case(monkeypatch):
    monkeypatch.setenv("TIHUO_LOG_LEVEL", "LOUD")
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)
    assert str(refused.value) == (
        "TIHUO_LOG_LEVEL: Value error, must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'LOUD'"
    )

    monkeypatch.setenv("TIHUO_LOG_LEVEL", "warning")
    assert load_settings(_env_file=None).log_level == "WARNING"


def test_the_command_line_reports_a_bad_log_level_in_one_line_and_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIHUO_LOG_LEVEL", "LOUD")

    assert cli.main(["worker"]) == 2

    assert capsys.readouterr().err == (
        "tihuo: configuration error: TIHUO_LOG_LEVEL: Value error, must be one of DEBUG, INFO, WARNING, "
        "ERROR, CRITICAL, not 'LOUD'\n"
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("timeout", ["30", "30.0"])
def test_a_provisioner_call_must_end_within_its_lease(monkeypatch, timeout):
    monkeypatch.setenv("TIHUO_PROVISION_LEASE_SECONDS", "30")
    monkeypatch.setenv("TIHUO_PROVISION_TIMEOUT_SECONDS", timeout)

    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)

    assert str(refused.value) == (
        "TIHUO_PROVISION_TIMEOUT_SECONDS (30) must be less than TIHUO_PROVISION_LEASE_SECONDS (30): "
        "a provisioner call still running when its job's lease runs out is taken over and made again"
    )
    monkeypatch.setenv("TIHUO_PROVISION_TIMEOUT_SECONDS", "29.5")
    assert load_settings(_env_file=None).provision_timeout_seconds == 29.5


def test_a_lease_shorter_than_the_default_timeout_needs_a_timeout_of_its_own(monkeypatch):
    monkeypatch.setenv("TIHUO_PROVISION_LEASE_SECONDS", "10")
    with pytest.raises(SettingsError, match=r"TIHUO_PROVISION_TIMEOUT_SECONDS \(20\) must be less than"):
        load_settings(_env_file=None)


def test_an_existing_data_folder_and_key_open_to_others_are_tightened(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    (data / "secret.key").write_text("an-existing-secret\n", encoding="utf-8")
    (data / "secret.key").chmod(0o644)

    assert load_settings(_env_file=None, data_dir=data).secret == b"an-existing-secret"

    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "issuer",
    [
        "http://portal.example.com",
        "ftp://portal.example.com",
        "https://portal.example.com/?tenant=1",
        "portal",
    ],
)
def test_the_portal_issuer_is_https_or_this_machine(monkeypatch, issuer):
    monkeypatch.setenv("TIHUO_OIDC_ISSUER", issuer)
    monkeypatch.setenv("TIHUO_OIDC_AUDIENCE", "urn:tihuo")
    with pytest.raises(SettingsError, match="TIHUO_OIDC_ISSUER: Value error, must be an https:// URL"):
        load_settings(_env_file=None)


def test_portal_sign_in_is_off_by_default_and_its_claims_have_defaults(monkeypatch):
    settings = load_settings(_env_file=None)
    assert (settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url, settings.local_login) == (
        None,
        None,
        None,
        True,
    )
    assert (settings.oidc_phone_claim, settings.oidc_role_claim, settings.oidc_admin_role) == (
        "phone_number",
        "roles",
        "tihuo-admin",
    )
    assert settings.oidc_realname_claim_names == ["name", "id_verified"]

    monkeypatch.setenv("TIHUO_OIDC_ISSUER", "http://127.0.0.1:8080/realms/hosting")
    monkeypatch.setenv("TIHUO_OIDC_AUDIENCE", "urn:tihuo")
    monkeypatch.setenv("TIHUO_OIDC_JWKS_URL", "https://portal.example.com/keys")
    monkeypatch.setenv("TIHUO_OIDC_REALNAME_CLAIMS", " name , , cert_no ")
    monkeypatch.setenv("TIHUO_LOCAL_LOGIN", "false")
    settings = load_settings(_env_file=None)
    assert (settings.oidc_issuer, settings.oidc_jwks_url, settings.local_login) == (
        "http://127.0.0.1:8080/realms/hosting",
        "https://portal.example.com/keys",
        False,
    )
    assert settings.oidc_realname_claim_names == ["name", "cert_no"]


def test_an_issuer_needs_an_audience_and_local_login_off_needs_an_issuer(monkeypatch):
    monkeypatch.setenv("TIHUO_OIDC_ISSUER", "https://portal.example.com")
    with pytest.raises(SettingsError, match="TIHUO_OIDC_ISSUER needs TIHUO_OIDC_AUDIENCE"):
        load_settings(_env_file=None)
    monkeypatch.delenv("TIHUO_OIDC_ISSUER")
    monkeypatch.setenv("TIHUO_LOCAL_LOGIN", "false")
    with pytest.raises(SettingsError, match="TIHUO_LOCAL_LOGIN=false needs TIHUO_OIDC_ISSUER"):
        load_settings(_env_file=None)
