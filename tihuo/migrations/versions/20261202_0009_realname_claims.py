"""users.realname_claims: the real-name fields an identity provider vouches for

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 02:05:00

Filled at portal sign-in (RULES-v2 §1) and sent to the provisioning platform (§3). Existing users
have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("realname_claims", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("realname_claims")
