"""Signed webhooks (RULES-v2 §2): the endpoints admins register, the events each asked for, the
outbox of messages written with the change that caused them, and one delivery per message and
endpoint, which the worker claims under a lease and sends until it is delivered or has failed."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, str_enum, utcnow


class WebhookEvent(enum.StrEnum):
    BATCH_CREATED = "BATCH_CREATED"
    BATCH_STATUS_CHANGED = "BATCH_STATUS_CHANGED"
    BATCH_DOWNLOADED = "BATCH_DOWNLOADED"
    CARD_STATUS_CHANGED = "CARD_STATUS_CHANGED"
    CARD_REDEEMED = "CARD_REDEEMED"
    ORDER_ACTIVE = "ORDER_ACTIVE"
    ORDER_FAILED = "ORDER_FAILED"
    ORDER_CANCELLED = "ORDER_CANCELLED"

    @property
    def type_name(self) -> str:
        """The body's `type`: dotted lower case (`card.redeemed`), as Standard Webhooks names them."""
        noun, _, verb = self.value.lower().partition("_")
        return f"{noun}.{verb}"


class DeliveryStatus(enum.StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class WebhookEndpoint(Base):
    """A receiver. Its signing key is kept only encrypted (AES-GCM under a key derived from the
    server secret, `secret_key_version` naming which); after a rotation the previous one keeps
    signing beside the new one until `previous_secret_expires_at`."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(500), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    secret_key_version: Mapped[int] = mapped_column(SmallInteger)
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookSubscription(Base):
    """One event an endpoint asked for: the write that causes an event finds its receivers here."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (Index("ix_webhook_subscriptions_event", "event"),)

    endpoint_id: Mapped[int] = mapped_column(
        Id, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    event: Mapped[WebhookEvent] = mapped_column(str_enum(WebhookEvent, "webhook_event"), primary_key=True)


class WebhookMessage(Base):
    """One event as sent: its id (the `webhook-id` header, the same on every attempt and every
    redelivery) and the exact JSON body."""

    __tablename__ = "webhook_messages"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    event: Mapped[WebhookEvent] = mapped_column(str_enum(WebhookEvent, "webhook_message_event"))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """A message on its way to one endpoint. PENDING and due at `next_attempt_at`; a worker holds it
    until `lease_until` while it sends (a dead worker's delivery is taken again after that)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_message", "message_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(Id, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(Id, ForeignKey("webhook_messages.id", ondelete="CASCADE"))
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus, "webhook_delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    lease_until: Mapped[datetime | None] = mapped_column()
    worker_id: Mapped[str | None] = mapped_column(String(200))
    last_status_code: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
