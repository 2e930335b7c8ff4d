"""provisioning on real platforms: orders.external_task_id, the waiting job's columns and its
sealed login password, provisioning_attempts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 03:00:00

RULES-v2 §3. A job still to send its SMS (every job not DONE) gets a login password drawn at random
and sealed under the configured key, replacing the one derived from the server secret: the member
of an order that is still to open receives the new one, and nothing computes it any more. Jobs that
are DONE sent theirs already; nothing is kept for them. Downgrading drops the sealed passwords.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OUTCOMES = ("DONE", "ACCEPTED", "REFUSED", "TRANSIENT", "LEASE_LOST")


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("external_task_id", sa.String(length=200), nullable=True))
    with op.batch_alter_table("provisioning_jobs") as batch_op:
        batch_op.add_column(sa.Column("password_cipher", sa.LargeBinary(length=128), nullable=True))
        batch_op.add_column(sa.Column("password_key_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("accepted_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("polls", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("deadline_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reported", sa.JSON(), nullable=True))
    with op.batch_alter_table("provisioning_jobs") as batch_op:
        batch_op.alter_column("polls", server_default=None)
    op.create_table(
        "provisioning_attempts",
        sa.Column("id", ID, nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "outcome",
            sa.Enum(*OUTCOMES, name="attempt_outcome", native_enum=False, create_constraint=True),
            nullable=True,
        ),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_provisioning_attempts_order_id_orders"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provisioning_attempts")),
        sa.UniqueConstraint("order_id", "number", name="uq_provisioning_attempts_number"),
    )
    _seal_waiting_passwords()


def _seal_waiting_passwords() -> None:
    """A random sealed password for each job not DONE; the keys are read only when there is one."""
    bind = op.get_bind()
    waiting = bind.execute(
        sa.text(
            "SELECT j.id, o.order_no FROM provisioning_jobs j JOIN orders o ON o.id = j.order_id "
            "WHERE j.status <> 'DONE' AND j.password_cipher IS NULL"
        )
    ).all()
    if not waiting:
        return
    from core.settings import Settings
    from services.login_passwords import PasswordKeys, draw_password

    keys = PasswordKeys.from_settings(Settings())
    for job_id, order_no in waiting:
        sealed = keys.seal(draw_password(), order_no)
        bind.execute(
            sa.text(
                "UPDATE provisioning_jobs SET password_cipher = :cipher, password_key_version = :version WHERE id = :id"
            ),
            {"cipher": sealed.cipher, "version": sealed.key_version, "id": job_id},
        )


def downgrade() -> None:
    op.drop_table("provisioning_attempts")
    with op.batch_alter_table("provisioning_jobs") as batch_op:
        batch_op.drop_column("reported")
        batch_op.drop_column("deadline_at")
        batch_op.drop_column("polls")
        batch_op.drop_column("accepted_at")
        batch_op.drop_column("password_key_version")
        batch_op.drop_column("password_cipher")
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_column("external_task_id")
