"""audit names: batch writes are `batch.*` on entity `batch` (they were `card_batch.*`)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RENAMED = {
    "card_batch.create": "batch.create",
    "card_batch.set_status": "batch.set_status",
    "card_batch.create_download": "batch.create_download",
}


def _rename(names: dict[str, str], entity: str) -> None:
    for old, new in names.items():
        op.execute(
            f"UPDATE audit_log SET action = '{new}', entity = '{entity}' WHERE action = '{old}'"  # noqa: S608 (constants)
        )


def upgrade() -> None:
    _rename(RENAMED, "batch")


def downgrade() -> None:
    _rename({new: old for old, new in RENAMED.items()}, "card_batch")
