"""Settings from TIHUO_* environment variables (or a .env file), validated once at start.

A missing secret key is generated into the data folder (mode 0700; the key 0600) and never printed.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.files import private_folder, tighten_file

SECRET_FILE = "secret.key"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# what a browser sends as Origin: scheme, host and an optional port, nothing after
_ORIGIN = re.compile(r"https?://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?", re.IGNORECASE)

# where the portal's keys come from: https, or http to this machine alone (a portal beside tihuo, tests)
_KEY_SOURCE = re.compile(
    r"(https://[^\s?#]+|http://(127\.0\.0\.1|\[::1\]|localhost)(:[0-9]{1,5})?(/[^\s?#]*)?)", re.IGNORECASE
)


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIHUO_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str | None = None
    secret_key: str | None = Field(default=None, repr=False)
    timezone: str = "Asia/Shanghai"

    provisioner: Literal["simulated", "http"] = "simulated"
    provisioner_url: str | None = None
    notifier: Literal["log", "http"] = "log"
    notifier_url: str | None = None
    simulated_delay_ms: int = Field(default=200, ge=0)
    simulated_failure: Literal["none", "refuse", "transient"] = "none"
    provision_max_attempts: int = Field(default=5, ge=1)
    provision_backoff_ms: int = Field(default=500, ge=0)
    # HMAC-SHA256 keys for signing the requests sent to the http provisioner and notifier
    provisioner_secret: str | None = Field(default=None, repr=False)
    notifier_secret: str | None = Field(default=None, repr=False)
    # a worker holds a job this long; a job still RUNNING after it belonged to a dead worker
    provision_lease_seconds: int = Field(default=60, ge=5)
    # one provisioner call may take this long before it counts as a transient failure;
    # keep it below the lease, or a slow call is repeated (harmless, by the idempotency key)
    provision_timeout_seconds: float = Field(default=20, gt=0)
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    # a platform task that has not ended this long after it was accepted makes the order FAILED
    provision_deadline_seconds: int = Field(default=6 * 3600, ge=1)
    # >0: the simulated provisioner answers "accepted" and finishes the task this long after
    simulated_accept_seconds: float = Field(default=0, ge=0)
    # keys of the login passwords waiting for their SMS: `version:base64 of 32 bytes`, comma
    # separated, the highest encrypting (unset: one derived from the server secret)
    login_password_keys: str | None = Field(default=None, repr=False)
    # creates (calls to the provisioner) one worker has in flight at once: a platform that accepts
    # at once answers in milliseconds, so the slots are the worker's pace through a burst
    worker_concurrency: int = Field(default=16, ge=1)
    # checks of accepted platform tasks (short GETs) one worker runs at once, besides the creates
    worker_check_concurrency: int = Field(default=32, ge=1)

    token_ttl_seconds: int = Field(default=12 * 3600, ge=60)
    # how long a checked token is trusted without reading its user again (0: never)
    token_cache_seconds: int = Field(default=5, ge=0)
    # live order status (services/live.py): a subscriber's queue of notices before it falls back to
    # reading its orders again; how often a subscription's token is checked again; the keep-alive
    # ping every idle WebSocket is sent (0: none)
    live_queue_limit: int = Field(default=16, ge=1)
    live_recheck_seconds: float = Field(default=30, gt=0)
    ws_ping_seconds: float = Field(default=15, ge=0)
    # how long redeemCard's idempotency keys are kept (RULES §4: at least 24 hours)
    idempotency_key_hours: int = Field(default=48, ge=24)
    # argon2id cost; the defaults follow RFC 9106's second recommendation (64 MiB, 3 passes)
    password_time_cost: int = Field(default=3, ge=1)
    password_memory_kib: int = Field(default=65536, ge=8)
    max_batch_quantity: int = Field(default=100_000, ge=1)
    failed_attempt_limit: int = Field(default=5, ge=1)
    failed_attempt_window_seconds: int = Field(default=15 * 60, ge=1)
    download_ttl_seconds: int = Field(default=300, ge=1)

    # links tihuo builds (downloads) start with this, never with the request's Host header; unset:
    # `tihuo serve` uses its own --host and --port, other servers give links relative to the host
    public_url: str | None = None
    # a request body above this is refused with 413 before it is read
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # addresses or networks of the reverse proxies whose X-Forwarded-For / -Proto are believed
    # (comma separated, "*" for any); none by default, not even loopback
    forwarded_allow_ips: str = ""
    # every document's cost (fields, times the `first` of the lists they are in) must stay below
    query_max_cost: int = Field(default=60_000, ge=100)
    # `all`: anyone may introspect the schema (GraphiQL); `signed-in`: only a signed-in user
    introspection: Literal["all", "signed-in"] = "all"
    # one request's work is stopped after this long (its transaction rolls back)
    request_timeout_seconds: float = Field(default=30, gt=0)
    # PostgreSQL stops any one statement after this long (0: no limit)
    statement_timeout_ms: int = Field(default=20_000, ge=0)
    query_max_depth: int = Field(default=12, ge=2)
    query_max_aliases: int = Field(default=30, ge=1)
    query_max_tokens: int = Field(default=5000, ge=100)
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    log_level: str = "INFO"
    # `tihuo worker` serves its own /metrics here when set (API processes serve theirs at /metrics)
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    # GET /metrics (Prometheus), unauthenticated: turn it off where the port is reachable from outside
    metrics_enabled: bool = True
    # origins (`scheme://host[:port]`, comma separated) whose pages may call the API from a browser;
    # none by default: no cross-origin access
    cors_origins: str = ""
    # a GET query made only of catalog reads may be kept this long by the asker's own cache (0: never)
    catalog_cache_seconds: int = Field(default=60, ge=0)
    # a JSON manifest of trusted documents (SHA-256 of the text -> the text), as client builds emit it
    trusted_documents: Path | None = None
    # who may run only the manifest's documents: `members` (everyone but admins) or `all`
    trusted_documents_only: Literal["off", "members", "all"] = "off"
    # webhooks (RULES-v2 §2): endpoints whose host resolves to a loopback, private, link-local or
    # metadata address are refused unless this is true (a private network, tests)
    webhook_allow_private: bool = False
    # one delivery's POST may take this long; it must end within the delivery's lease
    webhook_timeout_seconds: float = Field(default=10, gt=0)
    webhook_lease_seconds: int = Field(default=60, ge=2)
    # deliveries one worker sends at once
    webhook_concurrency: int = Field(default=16, ge=1)

    # the portal's sign-in (RULES-v2 §1); unset: off, only local accounts
    oidc_issuer: str | None = None
    # the `aud` the portal's tokens must carry for tihuo (needed with TIHUO_OIDC_ISSUER)
    oidc_audience: str | None = None
    # the issuer's key set; unset: found through {issuer}/.well-known/openid-configuration
    oidc_jwks_url: str | None = None
    # the claim holding the member's phone number for the SMS, refreshed at each sign-in
    oidc_phone_claim: str = "phone_number"
    # the claims (comma separated) kept as the member's real-name fields for the provisioning platform
    oidc_realname_claims: str = "name,id_verified"
    # a token whose claim TIHUO_OIDC_ROLE_CLAIM (a list or a space separated string) holds
    # TIHUO_OIDC_ADMIN_ROLE signs in an admin
    oidc_role_claim: str = "roles"
    oidc_admin_role: str = "tihuo-admin"
    # false: the `login` mutation (local accounts and passwords) is off; only portal tokens sign in
    local_login: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")) or "?" in value or "#" in value:
            raise ValueError("must be an absolute http:// or https:// URL without query or fragment")
        return value.rstrip("/") + "/"

    @field_validator("oidc_issuer", "oidc_jwks_url")
    @classmethod
    def _key_source(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _KEY_SOURCE.fullmatch(value):
            raise ValueError(
                "must be an https:// URL (http:// only on this machine: 127.0.0.1, [::1] or localhost), "
                "without query or fragment: the keys that sign members in may not travel in clear"
            )
        return value

    @field_validator("oidc_phone_claim", "oidc_role_claim", "oidc_admin_role")
    @classmethod
    def _claim_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @property
    def oidc_realname_claim_names(self) -> list[str]:
        return [part.strip() for part in self.oidc_realname_claims.split(",") if part.strip()]

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in (part.strip() for part in value.split(",")):
            if origin and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], without path or slash"
                )
        return value

    @property
    def cors_allowed(self) -> list[str]:
        return [_as_browsers_send(part.strip()) for part in self.cors_origins.split(",") if part.strip()]

    @property
    def trusted_proxies(self) -> list[str]:
        return [part.strip() for part in self.forwarded_allow_ips.split(",") if part.strip()]

    @field_validator("login_password_keys")
    @classmethod
    def _password_keys(cls, value: str | None) -> str | None:
        password_key_map(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
        return value.upper()

    @field_validator("database_url")
    @classmethod
    def _supported_driver(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @model_validator(mode="after")
    def _http_endpoints_configured(self) -> Settings:
        if self.provisioner == "http" and not (self.provisioner_url and self.provisioner_secret):
            raise ValueError(
                "TIHUO_PROVISIONER=http needs TIHUO_PROVISIONER_URL and TIHUO_PROVISIONER_SECRET"
            )
        if self.notifier == "http" and not (self.notifier_url and self.notifier_secret):
            raise ValueError("TIHUO_NOTIFIER=http needs TIHUO_NOTIFIER_URL and TIHUO_NOTIFIER_SECRET")
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError(
                "TIHUO_OIDC_ISSUER needs TIHUO_OIDC_AUDIENCE (the `aud` of the portal's tokens for tihuo)"
            )
        if not self.local_login and not self.oidc_issuer:
            raise ValueError("TIHUO_LOCAL_LOGIN=false needs TIHUO_OIDC_ISSUER: else nobody could sign in")
        if self.trusted_documents_only != "off" and self.trusted_documents is None:
            raise ValueError("TIHUO_TRUSTED_DOCUMENTS_ONLY needs TIHUO_TRUSTED_DOCUMENTS (the manifest file)")
        return self

    @model_validator(mode="after")
    def _calls_end_within_their_lease(self) -> Settings:
        # a call still running when its lease runs out is taken over and made a second time
        if self.provision_timeout_seconds >= self.provision_lease_seconds:
            raise ValueError(
                f"TIHUO_PROVISION_TIMEOUT_SECONDS ({self.provision_timeout_seconds:g}) must be less than "
                f"TIHUO_PROVISION_LEASE_SECONDS ({self.provision_lease_seconds}): a provisioner call "
                "still running when its job's lease runs out is taken over and made again"
            )
        if self.webhook_timeout_seconds >= self.webhook_lease_seconds:
            raise ValueError(
                f"TIHUO_WEBHOOK_TIMEOUT_SECONDS ({self.webhook_timeout_seconds:g}) must be less than "
                f"TIHUO_WEBHOOK_LEASE_SECONDS ({self.webhook_lease_seconds}): a delivery still being "
                "sent when its lease runs out is taken over and sent again"
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tihuo.db').resolve()}"

    @property
    def uses_data_dir(self) -> bool:
        """Whether anything is kept in the data folder: the default SQLite file or the generated key."""
        return self.database_url is None or not self.secret_key

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @cached_property
    def secret(self) -> bytes:
        """The server secret: from TIHUO_SECRET_KEY, else the data folder's key file, made on first use."""
        if self.secret_key:
            return self.secret_key.encode()
        private_folder(self.data_dir)
        path = self.data_dir / SECRET_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            tighten_file(path)
            return path.read_bytes().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        return path.read_bytes().strip()


def _as_browsers_send(origin: str) -> str:
    """An origin as browsers write it in an Origin header: lower case, without a default port."""
    origin = origin.lower()
    for scheme, port in (("https://", ":443"), ("http://", ":80")):
        if origin.startswith(scheme) and origin.endswith(port):
            return origin.removesuffix(port)
    return origin


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; a bad value raises SettingsError naming its variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:
                # a rule across several settings: its message names them
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            name = "TIHUO_" + "_".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("; ".join(problems)) from None


def password_key_map(value: str | None) -> dict[int, bytes]:
    """TIHUO_LOGIN_PASSWORD_KEYS, `1:base64,2:base64`, as {1: key, 2: key}; ValueError unless each
    key is 32 bytes under a whole-number version."""
    keys: dict[int, bytes] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        version, _, encoded = item.strip().partition(":")
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError:
            key = b""
        if not version.isdigit() or len(key) != 32:
            raise ValueError("each key is `version:base64 of 32 bytes`, comma separated")
        keys[int(version)] = key
    return keys
