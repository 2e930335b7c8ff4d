"""Card batches, their cards (never the code in clear) and the audited downloads of their codes."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BatchStatus, CardExportFormat, CardStatus, Id, ProductType, str_enum, utcnow


class CardBatch(Base):
    __tablename__ = "card_batches"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        CheckConstraint(
            "used_count >= 0 AND disabled_count >= 0 AND used_count + disabled_count <= quantity",
            name="counts_in_range",
        ),
        CheckConstraint("download_count >= 0", name="download_count_not_negative"),
        Index("ix_card_batches_created", "created_at", "id"),
        # expiringWithinDays: the batches whose last day falls in a window
        Index("ix_card_batches_valid_until", "valid_until"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    batch_no: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    product_type: Mapped[ProductType] = mapped_column(str_enum(ProductType, "product_type"))
    line_id: Mapped[int] = mapped_column(Id, ForeignKey("lines.id", ondelete="RESTRICT"), index=True)
    product_model_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("product_models.id", ondelete="RESTRICT"), index=True
    )
    hosting_plan_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("hosting_plans.id", ondelete="RESTRICT"), index=True
    )
    months: Mapped[int]
    # the configuration as priced, names included, so catalog edits never change a batch
    config: Mapped[dict[str, Any]]
    reference_price: Mapped[Decimal]
    windows_price: Mapped[Decimal | None]
    quantity: Mapped[int]
    used_count: Mapped[int] = mapped_column(default=0)
    disabled_count: Mapped[int] = mapped_column(default=0)
    download_count: Mapped[int] = mapped_column(default=0)
    valid_until: Mapped[date] = mapped_column(Date)
    # before this day (business time zone) its cards answer CARD_NOT_YET_VALID; null: from creation
    valid_from: Mapped[date | None] = mapped_column(Date)
    # live redemptions one member may hold of this batch (1..1000); null: no limit
    per_member_limit: Mapped[int | None]
    status: Mapped[BatchStatus] = mapped_column(str_enum(BatchStatus, "batch_status"))
    created_by: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Card(Base):
    """One code: found by its keyed hash, decrypted only for a download, last 4 symbols in clear."""

    __tablename__ = "cards"
    __table_args__ = (
        CheckConstraint(
            "(status = 'USED' AND used_at IS NOT NULL AND member_id IS NOT NULL)"
            " OR (status <> 'USED' AND used_at IS NULL AND member_id IS NULL)",
            name="used_has_member",
        ),
        # seq numbers a batch's cards 1..quantity: page jumps become index seeks, not OFFSET scans
        UniqueConstraint("batch_id", "seq", name="uq_cards_batch_seq"),
        # a batch's used cards, in seq order. No index names `status`: PostgreSQL then changes a
        # card's status or channel in place (a HOT update, no index written), which is what makes
        # a range of 100,000 cards take under a second (setCardRangeStatus); UNUSED and DISABLED
        # lists walk uq_cards_batch_seq. New cards are unused, so generating a batch never writes here
        Index(
            "ix_cards_batch_used",
            "batch_id",
            "seq",
            sqlite_where=text("used_at IS NOT NULL"),
            postgresql_where=text("used_at IS NOT NULL"),
        ),
        Index("ix_cards_batch_last4", "batch_id", "last4"),
        # room on every page for a new version of each of its cards, so a range update stays on its
        # pages (HOT); the price is cards taking twice the space of a packed table
        {"postgresql_with": {"fillfactor": "50"}},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    batch_id: Mapped[int] = mapped_column(Id, ForeignKey("card_batches.id", ondelete="RESTRICT"))
    seq: Mapped[int]
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    code_cipher: Mapped[bytes] = mapped_column(LargeBinary(64))
    key_version: Mapped[int] = mapped_column(SmallInteger)
    last4: Mapped[str] = mapped_column(String(4))
    status: Mapped[CardStatus] = mapped_column(str_enum(CardStatus, "card_status"))
    remark: Mapped[str | None] = mapped_column(String(500))
    used_at: Mapped[datetime | None]
    member_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="RESTRICT"))
    # the channel the card was handed to; no index: nothing looks cards up by channel (the counts
    # are channel_shares), and range writes stay cheaper without one
    # (no ON DELETE: see migration 0006; channels are never deleted)
    channel_id: Mapped[int | None] = mapped_column(Id, ForeignKey("channels.id"))


class CardBatchDownload(Base):
    """A single-use download link (its token hashed) and, once used, the record of what left."""

    __tablename__ = "card_batch_downloads"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    batch_id: Mapped[int] = mapped_column(Id, ForeignKey("card_batches.id", ondelete="RESTRICT"), index=True)
    admin_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="RESTRICT"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    client_address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    downloaded_from: Mapped[str | None] = mapped_column(String(64))
    card_count: Mapped[int | None]
    sha256: Mapped[str | None] = mapped_column(String(64))
    # the run of cards (by seq, both ends included; null: the whole batch) and the file's format
    from_seq: Mapped[int | None]
    to_seq: Mapped[int | None]
    format: Mapped[CardExportFormat] = mapped_column(
        str_enum(CardExportFormat, "card_export_format"), server_default=CardExportFormat.TXT.value
    )
