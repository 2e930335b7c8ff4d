"""provisioning attempts: CANCELLED, the DELETE of a platform task when an admin cancels its order

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 14:00:00

RULES-v2 §3. Only the outcome's CHECK constraint changes (the column, VARCHAR(10), holds the new
value). Downgrading keeps those rows as REFUSED, their detail saying what was asked.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("DONE", "ACCEPTED", "REFUSED", "TRANSIENT", "LEASE_LOST")
AFTER = (*BEFORE, "CANCELLED")
CONSTRAINT = "ck_provisioning_attempts_attempt_outcome"


def _allow(outcomes: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{outcome}'" for outcome in outcomes)
    # SQLite rebuilds the table (it cannot alter a constraint); PostgreSQL alters it in place
    with op.batch_alter_table("provisioning_attempts") as batch_op:
        batch_op.drop_constraint(op.f(CONSTRAINT), type_="check")
        batch_op.create_check_constraint(op.f(CONSTRAINT), f"outcome IN ({listed})")


def upgrade() -> None:
    _allow(AFTER)


def downgrade() -> None:
    op.execute("UPDATE provisioning_attempts SET outcome = 'REFUSED' WHERE outcome = 'CANCELLED'")
    _allow(BEFORE)
