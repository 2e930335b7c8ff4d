"""The redemption log (one live row per card) and members' idempotency keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, ProductType, str_enum, utcnow


class Redemption(Base):
    __tablename__ = "redemptions"
    __table_args__ = (
        # a card is redeemed at most once until an admin cancels that redemption's order
        Index(
            "uq_redemptions_live_card",
            "card_id",
            unique=True,
            sqlite_where=text("cancelled_at IS NULL"),
            postgresql_where=text("cancelled_at IS NULL"),
        ),
        Index("ix_redemptions_redeemed", "redeemed_at", "id"),
        Index("ix_redemptions_batch", "batch_id", "redeemed_at", "id"),
        Index("ix_redemptions_member", "member_id", "redeemed_at", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    card_id: Mapped[int] = mapped_column(Id, ForeignKey("cards.id", ondelete="RESTRICT"))
    batch_id: Mapped[int] = mapped_column(Id, ForeignKey("card_batches.id", ondelete="RESTRICT"))
    member_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="RESTRICT"))
    order_id: Mapped[int] = mapped_column(Id, ForeignKey("orders.id", ondelete="RESTRICT"), unique=True)
    product_type: Mapped[ProductType] = mapped_column(str_enum(ProductType, "product_type"))
    card_name: Mapped[str] = mapped_column(String(100))
    card_last4: Mapped[str] = mapped_column(String(4))
    redeemed_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[datetime | None]


class IdempotencyKey(Base):
    """A member's redeem request key: the same key and input give the first answer again."""

    __tablename__ = "idempotency_keys"

    member_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    order_id: Mapped[int | None] = mapped_column(Id, ForeignKey("orders.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
