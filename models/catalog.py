"""Catalog: regions, lines (with their options and prices), OS images, bare-metal models, hosting plans.

Rows are keyed by their stable `code`; loading the catalog file upserts by it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, ForeignKey, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, OsFamily, str_enum

line_os_images = Table(
    "line_os_images",
    Base.metadata,
    Column("line_id", Id, ForeignKey("lines.id", ondelete="CASCADE"), primary_key=True),
    Column("os_image_id", Id, ForeignKey("os_images.id", ondelete="RESTRICT"), primary_key=True),
)


class Region(Base):
    __tablename__ = "regions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))


class OsImage(Base):
    __tablename__ = "os_images"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    family: Mapped[OsFamily] = mapped_column(str_enum(OsFamily, "os_family"))


class Line(Base):
    __tablename__ = "lines"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    region_id: Mapped[int] = mapped_column(Id, ForeignKey("regions.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(default=0)
    product_types: Mapped[list[str]] = mapped_column(JSON)
    ip_pool: Mapped[str] = mapped_column(String(64))
    windows_monthly_surcharge: Mapped[Decimal]
    # {"1": "1", "12": "0.85"}: months -> multiplier, as decimal strings
    durations: Mapped[dict[str, Any]]
    # cpu_cores, memory_gb, disk_gb{min,max,step}, bandwidth_mbps, defense_gbps, max_ips
    options: Mapped[dict[str, Any]]
    # base, cpu_core, memory_gb, disk_gb, disk_free_gb, extra_ip, bandwidth_tiers, defense
    pricing: Mapped[dict[str, Any]]


class ProductModel(Base):
    """A bare-metal server model: fixed hardware, a monthly price and a stock count."""

    __tablename__ = "product_models"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("included_ips >= 1", name="included_ips_positive"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    line_id: Mapped[int] = mapped_column(Id, ForeignKey("lines.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    cpu: Mapped[str] = mapped_column(String(200))
    memory: Mapped[str] = mapped_column(String(200))
    disks: Mapped[str] = mapped_column(String(200))
    monthly: Mapped[Decimal]
    included_ips: Mapped[int]
    stock: Mapped[int]


class HostingPlan(Base):
    """A virtual-host plan: a name, a description and a monthly price."""

    __tablename__ = "hosting_plans"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    line_id: Mapped[int] = mapped_column(Id, ForeignKey("lines.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500))
    monthly: Mapped[Decimal]
