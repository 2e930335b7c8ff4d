"""The simulated provisioner's own record of the servers it "opened": one address per order, never
the same address twice on a line. Development and tests only; a real provider keeps its own."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, utcnow


class SimulatedServer(Base):
    __tablename__ = "simulated_servers"
    __table_args__ = (
        # two workers racing for one address: the database lets one win, the other takes the next
        UniqueConstraint("line_code", "ip_address", name="uq_simulated_servers_line_ip"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # the idempotency key: asking again for the same order gives the same server
    order_no: Mapped[str] = mapped_column(String(32), unique=True)
    line_code: Mapped[str] = mapped_column(String(64))
    ip_address: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
