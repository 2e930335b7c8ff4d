"""The audit log: every admin write, with who, when, from where, and the old and new values."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_entity", "entity", "entity_id"),
        # auditLog's filters, newest first
        Index("ix_audit_log_action", "action", "id"),
        Index("ix_audit_log_actor", "actor_id", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(Id, ForeignKey("users.id", ondelete="RESTRICT"))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    old: Mapped[dict[str, Any] | None]
    new: Mapped[dict[str, Any] | None]
    client_address: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
