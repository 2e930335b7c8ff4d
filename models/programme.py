"""What running a card programme adds beside the cards: channels the cards are handed to, and the
counters that keep its figures exact without counting cards (per channel and batch, per day, per
member and batch)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, utcnow


class Channel(Base):
    """A place cards are handed to: a reseller, a partner, a campaign, a shop."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    remark: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChannelShare(Base):
    """How many of a batch's cards sit in a channel, and how many of those are used; changed in the
    same transaction as the cards (assignments, redemptions, cancellations). Cards in no channel
    are the batch's counters less the sum of its shares."""

    __tablename__ = "channel_shares"
    __table_args__ = (
        CheckConstraint("used_count >= 0 AND card_count >= used_count", name="counts_in_range"),
        Index("ix_channel_shares_channel", "channel_id"),
    )

    batch_id: Mapped[int] = mapped_column(
        Id, ForeignKey("card_batches.id", ondelete="RESTRICT"), primary_key=True
    )
    channel_id: Mapped[int] = mapped_column(
        Id, ForeignKey("channels.id", ondelete="RESTRICT"), primary_key=True
    )
    card_count: Mapped[int] = mapped_column(default=0)
    used_count: Mapped[int] = mapped_column(default=0)


class BatchRedemptionDay(Base):
    """A batch's live redemptions on one day of the business time zone (a cancelled order's leaves
    its day), written by the redemption itself: redemptionsByDay reads at most 366 of these."""

    __tablename__ = "batch_redemption_days"
    __table_args__ = (
        CheckConstraint("redeemed >= 0", name="redeemed_not_negative"),
        Index("ix_batch_redemption_days_day", "day"),
    )

    batch_id: Mapped[int] = mapped_column(
        Id, ForeignKey("card_batches.id", ondelete="RESTRICT"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    redeemed: Mapped[int] = mapped_column(default=0)


class ProgrammeRedemptionDay(Base):
    """Every batch's live redemptions on one day, and their reference value in cents, spread over
    PROGRAMME_SHARDS rows a day (by card id) so that concurrent redemptions of different batches
    seldom wait for the same row: cardProgrammeStats reads at most 16 rows a day, however many
    batches there are."""

    __tablename__ = "programme_redemption_days"
    __table_args__ = (CheckConstraint("redeemed >= 0 AND redeemed_cents >= 0", name="counts_not_negative"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    redeemed: Mapped[int] = mapped_column(default=0)
    redeemed_cents: Mapped[int] = mapped_column(BigInteger, default=0)


PROGRAMME_SHARDS = 16


class MemberBatchRedemptions(Base):
    """A member's live redemptions of a batch that has a per-member limit, with that limit: the
    redemption's write adds one and the CHECK refuses the one too many, so concurrent redemptions
    by one member never pass it (the row lock of the upsert orders them)."""

    __tablename__ = "member_batch_redemptions"
    __table_args__ = (CheckConstraint("live_count >= 0 AND live_count <= cap", name="within_limit"),)

    member_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="RESTRICT"), primary_key=True)
    batch_id: Mapped[int] = mapped_column(
        Id, ForeignKey("card_batches.id", ondelete="RESTRICT"), primary_key=True
    )
    live_count: Mapped[int] = mapped_column(default=0)
    cap: Mapped[int]
