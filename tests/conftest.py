"""Fixtures for the whole suite: a fresh, migrated database per test (a temp SQLite file by default,
PostgreSQL when TIHUO_TEST_POSTGRES_URL is set), the runtime, the ASGI app and signed-in users.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.db import Database
from core.keys import Keys
from core.security import TokenClaims, issue_token
from core.settings import Settings, load_settings
from models import Base, Role
from services.runtime import Runtime, Viewer
from tihuo.migrate import migrate

POSTGRES_URL = os.environ.get("TIHUO_TEST_POSTGRES_URL")
FIXTURES = Path(__file__).parent / "fixtures"
CLIENT_ADDRESS = "203.0.113.9"
# where the tests' server says it is (TIHUO_PUBLIC_URL): links it makes start with this
PUBLIC_URL = "https://cards.example.com"


def pytest_report_header(config: pytest.Config) -> str:
    return f"tihuo database backend: {'postgresql' if POSTGRES_URL else 'sqlite'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tests marked `postgres` need the PostgreSQL run; on SQLite they are skipped, never silently passed
    skip = pytest.mark.skip(reason="PostgreSQL only; runs when TIHUO_TEST_POSTGRES_URL is set")
    for item in items:
        if "postgres" in item.keywords and not POSTGRES_URL:
            item.add_marker(skip)


class Clock:
    """A clock tests can stop and move; it follows real time until told otherwise."""

    def __init__(self) -> None:
        self._fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self._fixed or datetime.now(UTC)

    def set(self, moment: datetime) -> None:
        self._fixed = moment

    def advance(self, **delta: float) -> None:
        self._fixed = self() + timedelta(**delta)


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await migrate(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database made once per run: a SQLite file to copy, or the PostgreSQL schema."""
    if POSTGRES_URL:
        asyncio.run(_reset_postgres(POSTGRES_URL))
        return POSTGRES_URL
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    asyncio.run(migrate(engine))
    asyncio.run(engine.dispose())
    return str(path)


@pytest.fixture
async def database_url(migrated_template: str, tmp_path: Path) -> AsyncIterator[str]:
    if POSTGRES_URL:
        engine = create_async_engine(POSTGRES_URL)
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await engine.dispose()
        yield POSTGRES_URL
        return
    path = tmp_path / "tihuo.db"
    shutil.copyfile(migrated_template, path)
    yield f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="tests-only-secret-0123456789abcdef",
        password_time_cost=1,
        password_memory_kib=64,
        simulated_delay_ms=0,
        provision_backoff_ms=10,
        public_url=PUBLIC_URL,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.resolved_database_url)
    yield database
    await database.dispose()


@pytest.fixture
def rt(db: Database, settings: Settings, clock: Clock) -> Runtime:
    return Runtime(db=db, settings=settings, keys=Keys.from_secret(settings.secret), clock=clock)


@dataclass(frozen=True)
class SignedInUser:
    viewer: Viewer
    password: str
    token: str

    @property
    def id(self) -> int:
        return self.viewer.id

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_user(
    rt: Runtime,
    username: str,
    role: Role,
    password: str = "correct horse battery",
    phone: str = "13800000000",
) -> SignedInUser:
    from services.accounts import create_user

    viewer = await create_user(rt, username=username, password=password, role=role, phone=phone)
    # long-lived, so tests that move the clock far ahead stay signed in
    token = issue_token(rt.keys.token, TokenClaims(viewer.id, 1, rt.now() + timedelta(days=3650)))
    return SignedInUser(viewer=viewer, password=password, token=token)


@pytest.fixture
async def admin(rt: Runtime) -> SignedInUser:
    return await make_user(rt, "admin", Role.ADMIN)


@pytest.fixture
async def member(rt: Runtime) -> SignedInUser:
    return await make_user(rt, "member", Role.MEMBER)


@pytest.fixture
async def catalog(rt: Runtime) -> None:
    """The example catalog of the format description, loaded."""
    from services.catalog_file import parse_catalog
    from services.catalog_loading import load_catalog

    await load_catalog(rt.db, parse_catalog((FIXTURES / "catalog.toml").read_text(encoding="utf-8")))


@pytest.fixture
def app(rt: Runtime) -> Any:
    from tihuo.app import create_app

    return create_app(runtime=rt)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(CLIENT_ADDRESS, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


class GraphQLClient:
    """Posts GraphQL documents to the app the way a client would and returns the decoded body."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def __call__(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        user: SignedInUser | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        all_headers = dict(user.headers if user else {})
        all_headers.update(headers or {})
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=all_headers
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def gql(client: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(client)


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # a developer's own TIHUO_* variables must not change what the tests see
    for name in list(os.environ):
        if name.startswith("TIHUO_") and name != "TIHUO_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    yield
