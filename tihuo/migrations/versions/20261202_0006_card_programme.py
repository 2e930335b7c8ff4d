"""card programme: validFrom and perMemberLimit on batches, channels and their shares, a card's
channel, per-day and per-member redemption counters, range downloads, audit log indexes

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02 09:00:00

Existing live redemptions are counted into batch_redemption_days and programme_redemption_days by their day in the business time
zone (TIHUO_TIMEZONE, default Asia/Shanghai, as the server reads it). No batch had a per-member
limit or a channel before, so those counters start empty.
"""

import os
from collections import Counter
from collections.abc import Sequence
from datetime import UTC
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SHARDS = 16  # models.programme.PROGRAMME_SHARDS


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("remark", sa.String(length=500), nullable=True),
        sa.Column("created_by", ID, nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_channels_created_by_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint("name", name=op.f("uq_channels_name")),
    )
    op.create_table(
        "channel_shares",
        sa.Column("batch_id", ID, nullable=False),
        sa.Column("channel_id", ID, nullable=False),
        sa.Column("card_count", sa.Integer(), nullable=False),
        sa.Column("used_count", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "used_count >= 0 AND card_count >= used_count", name=op.f("ck_channel_shares_counts_in_range")
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["card_batches.id"],
            name=op.f("fk_channel_shares_batch_id_card_batches"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_channel_shares_channel_id_channels"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("batch_id", "channel_id", name=op.f("pk_channel_shares")),
    )
    op.create_index("ix_channel_shares_channel", "channel_shares", ["channel_id"], unique=False)
    op.create_table(
        "batch_redemption_days",
        sa.Column("batch_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("redeemed", sa.Integer(), nullable=False),
        sa.CheckConstraint("redeemed >= 0", name=op.f("ck_batch_redemption_days_redeemed_not_negative")),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["card_batches.id"],
            name=op.f("fk_batch_redemption_days_batch_id_card_batches"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("batch_id", "day", name=op.f("pk_batch_redemption_days")),
    )
    op.create_index("ix_batch_redemption_days_day", "batch_redemption_days", ["day"], unique=False)
    op.create_table(
        "programme_redemption_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("redeemed", sa.Integer(), nullable=False),
        sa.Column("redeemed_cents", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "redeemed >= 0 AND redeemed_cents >= 0",
            name=op.f("ck_programme_redemption_days_counts_not_negative"),
        ),
        sa.PrimaryKeyConstraint("day", "shard", name=op.f("pk_programme_redemption_days")),
    )
    op.create_table(
        "member_batch_redemptions",
        sa.Column("member_id", ID, nullable=False),
        sa.Column("batch_id", ID, nullable=False),
        sa.Column("live_count", sa.Integer(), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "live_count >= 0 AND live_count <= cap", name=op.f("ck_member_batch_redemptions_within_limit")
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["card_batches.id"],
            name=op.f("fk_member_batch_redemptions_batch_id_card_batches"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["users.id"],
            name=op.f("fk_member_batch_redemptions_member_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("member_id", "batch_id", name=op.f("pk_member_batch_redemptions")),
    )
    op.add_column("card_batches", sa.Column("valid_from", sa.Date(), nullable=True))
    op.add_column("card_batches", sa.Column("per_member_limit", sa.Integer(), nullable=True))
    op.create_index("ix_card_batches_valid_until", "card_batches", ["valid_until"], unique=False)
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with its REFERENCES clause in place: no rebuild of a million cards.
        # No ON DELETE clause (NO ACTION, as good as RESTRICT here): SQLite's reflection reads no
        # options of a column's own REFERENCES, so the model says none either
        op.execute(
            "ALTER TABLE cards ADD COLUMN channel_id INTEGER"
            " CONSTRAINT fk_cards_channel_id_channels REFERENCES channels (id)"
        )
    else:
        op.add_column("cards", sa.Column("channel_id", ID, nullable=True))
        op.create_foreign_key(
            op.f("fk_cards_channel_id_channels"),
            "cards",
            "channels",
            ["channel_id"],
            ["id"],
        )
    op.add_column("card_batch_downloads", sa.Column("from_seq", sa.Integer(), nullable=True))
    op.add_column("card_batch_downloads", sa.Column("to_seq", sa.Integer(), nullable=True))
    op.add_column(
        "card_batch_downloads",
        sa.Column(
            "format",
            sa.Enum(
                "TXT", "CSV", "PDF", name="card_export_format", native_enum=False, create_constraint=False
            ),
            server_default="TXT",
            nullable=False,
        ),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action", "id"], unique=False)
    op.create_index("ix_audit_log_actor", "audit_log", ["actor_id", "id"], unique=False)
    _count_past_redemptions()


def _count_past_redemptions() -> None:
    zone = ZoneInfo(os.environ.get("TIHUO_TIMEZONE") or "Asia/Shanghai")
    redemptions = sa.table(
        "redemptions",
        sa.column("card_id", ID),
        sa.column("batch_id", ID),
        sa.column("redeemed_at", models.base.UTCDateTime(timezone=True)),
        sa.column("cancelled_at", models.base.UTCDateTime(timezone=True)),
    )
    batches = sa.table("card_batches", sa.column("id", ID), sa.column("reference_price", models.base.Money()))
    days = sa.table(
        "batch_redemption_days", sa.column("batch_id", ID), sa.column("day", sa.Date()), sa.column("redeemed")
    )
    programme = sa.table(
        "programme_redemption_days",
        sa.column("day", sa.Date()),
        sa.column("shard", sa.SmallInteger()),
        sa.column("redeemed"),
        sa.column("redeemed_cents", sa.BigInteger()),
    )
    counted: Counter[tuple[int, object]] = Counter()
    shards: Counter[tuple[object, int]] = Counter()
    cents: Counter[tuple[object, int]] = Counter()
    result = op.get_bind().execute(
        sa.select(
            redemptions.c.card_id,
            redemptions.c.batch_id,
            redemptions.c.redeemed_at,
            batches.c.reference_price,
        )
        .join(batches, batches.c.id == redemptions.c.batch_id)
        .where(redemptions.c.cancelled_at.is_(None))
    )
    for card_id, batch_id, redeemed_at, price in result:
        day = redeemed_at.astimezone(UTC).astimezone(zone).date()
        counted[(batch_id, day)] += 1
        shards[(day, card_id % SHARDS)] += 1
        cents[(day, card_id % SHARDS)] += int(price * 100)
    if counted:
        op.bulk_insert(
            days, [{"batch_id": b, "day": d, "redeemed": n} for (b, d), n in sorted(counted.items())]
        )
        op.bulk_insert(
            programme,
            [
                {"day": d, "shard": s, "redeemed": n, "redeemed_cents": cents[(d, s)]}
                for (d, s), n in sorted(shards.items())
            ],
        )


def downgrade() -> None:
    op.drop_index("ix_audit_log_actor", table_name="audit_log")
    op.drop_index("ix_audit_log_action", table_name="audit_log")
    with op.batch_alter_table("card_batch_downloads") as batch_op:
        batch_op.drop_column("format")
        batch_op.drop_column("to_seq")
        batch_op.drop_column("from_seq")
    with op.batch_alter_table("cards") as batch_op:
        batch_op.drop_column("channel_id")
    op.drop_index("ix_card_batches_valid_until", table_name="card_batches")
    with op.batch_alter_table("card_batches") as batch_op:
        batch_op.drop_column("per_member_limit")
        batch_op.drop_column("valid_from")
    op.drop_table("member_batch_redemptions")
    op.drop_table("programme_redemption_days")
    op.drop_index("ix_batch_redemption_days_day", table_name="batch_redemption_days")
    op.drop_table("batch_redemption_days")
    op.drop_index("ix_channel_shares_channel", table_name="channel_shares")
    op.drop_table("channel_shares")
    op.drop_table("channels")
