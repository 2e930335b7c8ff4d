"""Orders made by redemptions, the instances they open, and the durable provisioning jobs between."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import AttemptOutcome, Base, Id, JobStatus, OrderStatus, ProductType, str_enum, utcnow


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        # a card backs at most one order that is not cancelled
        Index(
            "uq_orders_live_card",
            "card_id",
            unique=True,
            sqlite_where=text("status <> 'CANCELLED'"),
            postgresql_where=text("status <> 'CANCELLED'"),
        ),
        Index("ix_orders_created", "created_at", "id"),
        Index("ix_orders_member", "member_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_no: Mapped[str] = mapped_column(String(32), unique=True)
    member_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="RESTRICT"))
    card_id: Mapped[int] = mapped_column(Id, ForeignKey("cards.id", ondelete="RESTRICT"))
    batch_id: Mapped[int] = mapped_column(Id, ForeignKey("card_batches.id", ondelete="RESTRICT"), index=True)
    product_type: Mapped[ProductType] = mapped_column(str_enum(ProductType, "product_type"))
    config: Mapped[dict[str, Any]]
    os_image_id: Mapped[int | None] = mapped_column(Id, ForeignKey("os_images.id", ondelete="RESTRICT"))
    list_price: Mapped[Decimal]
    status: Mapped[OrderStatus] = mapped_column(str_enum(OrderStatus, "order_status"))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None]
    # the platform's task while it works on the order (RULES-v2 §3), kept once it ends
    external_task_id: Mapped[str | None] = mapped_column(String(200))


class Instance(Base):
    """A product opened for a member; its login password is sent once and never stored."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("line_id", "ip_address", name="uq_instances_line_ip"),
        Index("ix_instances_member", "member_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_id: Mapped[int] = mapped_column(Id, ForeignKey("orders.id", ondelete="RESTRICT"), unique=True)
    member_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="RESTRICT"))
    line_id: Mapped[int] = mapped_column(Id, ForeignKey("lines.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(100))
    product_type: Mapped[ProductType] = mapped_column(str_enum(ProductType, "product_type"))
    region_name: Mapped[str] = mapped_column(String(100))
    line_name: Mapped[str] = mapped_column(String(100))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]]
    os_image_id: Mapped[int | None] = mapped_column(Id, ForeignKey("os_images.id", ondelete="RESTRICT"))
    provider_ref: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class ProvisioningJob(Base):
    """The durable promise to open an order's product; claimed by one worker at a time under a lease."""

    __tablename__ = "provisioning_jobs"
    __table_args__ = (
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        Index("ix_provisioning_jobs_due", "status", "run_after"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_id: Mapped[int] = mapped_column(Id, ForeignKey("orders.id", ondelete="RESTRICT"), unique=True)
    status: Mapped[JobStatus] = mapped_column(str_enum(JobStatus, "job_status"))
    attempts: Mapped[int] = mapped_column(default=0)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the order's login password, AES-GCM under the key `password_key_version` names; erased once
    # the SMS gateway took it (services/login_passwords.py)
    password_cipher: Mapped[bytes | None] = mapped_column(LargeBinary(128))
    password_key_version: Mapped[int | None]
    # waiting on a platform task: when it was accepted, how often it was asked about, when it is
    # given up, and the end a signed callback reported (taken up by the next claim)
    accepted_at: Mapped[datetime | None]
    polls: Mapped[int] = mapped_column(default=0)
    deadline_at: Mapped[datetime | None]
    reported: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ProvisioningAttempt(Base):
    """One call to the platform or one answer from it, for the admin (v2/provisioning.graphql)."""

    __tablename__ = "provisioning_attempts"
    __table_args__ = (UniqueConstraint("order_id", "number", name="uq_provisioning_attempts_number"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_id: Mapped[int] = mapped_column(Id, ForeignKey("orders.id", ondelete="RESTRICT"))
    number: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[AttemptOutcome | None] = mapped_column(str_enum(AttemptOutcome, "attempt_outcome"))
    # the platform's answer, cut and with any password removed
    detail: Mapped[str | None] = mapped_column(String(500))
