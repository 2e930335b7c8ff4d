"""Bring a database to the latest schema with Alembic, from inside a running event loop."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "tihuo:migrations")
    return config


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    config = alembic_config()

    def _upgrade(connection) -> None:  # type: ignore[no-untyped-def]
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # a migration may rewrite a large table: the servers' statement timeout is not for it
            await connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        await connection.run_sync(_upgrade)
