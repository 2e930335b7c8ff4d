"""accounts: user ids never reused (AUTOINCREMENT on SQLite), users.disabled_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:00:00.000000

SQLite cannot ALTER a table into AUTOINCREMENT, so there the users table is rebuilt (copied into a
new table, the old one dropped, the new one renamed). Other tables reference users; `tihuo.migrate`
runs SQLite migrations with foreign keys off and checks them before the commit. PostgreSQL's
sequences never hand an id out twice already: there the column is simply added.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _users_0002() -> sa.Table:
    """The users table as 0001 made it, so the rebuild copies exactly it (not a reflection, which
    would lose the role's CHECK constraint)."""
    return sa.Table(
        "users",
        sa.MetaData(naming_convention=models.base.NAMING),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column(
            "role",
            sa.Enum("ADMIN", "MEMBER", name="role", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )


def _users_0003() -> sa.Table:
    table = _users_0002()
    table.append_column(sa.Column("disabled_at", models.base.UTCDateTime(timezone=True), nullable=True))
    return table


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    if not _is_sqlite():
        op.add_column(
            "users", sa.Column("disabled_at", models.base.UTCDateTime(timezone=True), nullable=True)
        )
        return
    with op.batch_alter_table(
        "users", recreate="always", copy_from=_users_0002(), table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(sa.Column("disabled_at", models.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    if not _is_sqlite():
        op.drop_column("users", "disabled_at")
        return
    with op.batch_alter_table("users", recreate="always", copy_from=_users_0003()) as batch_op:
        batch_op.drop_column("disabled_at")
