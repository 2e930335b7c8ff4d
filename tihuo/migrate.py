"""Bring a database to the latest schema with Alembic, from inside a running event loop."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine


class MigrationError(Exception):
    """A migration would leave the database inconsistent; nothing of it was committed."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "tihuo:migrations")
    return config


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    config = alembic_config()

    def _upgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    if engine.dialect.name == "sqlite":
        async with engine.connect() as connection:
            await connection.run_sync(_with_sqlite_foreign_keys_off, _upgrade)
        return
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # a migration may rewrite a large table: the servers' statement timeout is not for it
            await connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        await connection.run_sync(_upgrade)


def _with_sqlite_foreign_keys_off(connection: Connection, upgrade) -> None:  # type: ignore[no-untyped-def]
    """Run `upgrade` in one transaction with foreign keys off, and commit only if they all hold.

    SQLite alters a table by rebuilding it, and while foreign keys are enforced it will not drop a
    table other rows reference (or, worse, drops the rows that reference it ON DELETE CASCADE).
    The pragma does nothing inside a transaction, so it is set on the connection before the
    migration's transaction begins and put back after it ends."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("PRAGMA foreign_keys")
        enforced = bool(cursor.fetchone()[0])
        cursor.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                if not connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
                    # an engine without tihuo's BEGIN listener: SQLite's driver would run DDL
                    # outside any transaction, so begin one ourselves
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                if connection.exec_driver_sql("PRAGMA foreign_keys").scalar():
                    raise MigrationError("foreign keys could not be turned off for the migration")
                before = MigrationContext.configure(connection).get_current_heads()
                upgrade(connection)
                if MigrationContext.configure(connection).get_current_heads() == before:
                    return  # nothing to do: spare a start-up the scan of every table
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise MigrationError(
                        "the migration would leave rows whose foreign keys point nowhere "
                        f"(table, rowid, parent, key): {[tuple(row) for row in broken[:10]]}"
                    )
        finally:
            cursor.execute(f"PRAGMA foreign_keys={'ON' if enforced else 'OFF'}")
    finally:
        cursor.close()
