"""Declarative base, the naming convention, ids, and the enums the models share (their column types:
core/columns.py)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Enum, Integer, MetaData
from sqlalchemy.orm import DeclarativeBase

# the column types every model shares, from the bottom floor (the driver layer uses them too);
# migrations name them as models.base.UTCDateTime and models.base.Money
from core.columns import Money, UTCDateTime

__all__ = ["Base", "Id", "Money", "UTCDateTime", "str_enum", "utcnow"]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite wants INTEGER PRIMARY KEY for rowid aliasing; PostgreSQL gets BIGINT identities.
Id = BigInteger().with_variant(Integer(), "sqlite")


def str_enum(enum_cls: type[enum.Enum], name: str) -> Enum:
    """An enum stored as its value in a VARCHAR with a CHECK constraint, the same on both back-ends."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(m.value) for m in enum_cls),
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), Decimal: Money(), dict[str, Any]: JSON()}  # noqa: RUF012 (read once by SQLAlchemy)


class ProductType(enum.StrEnum):
    CLOUD_SERVER = "CLOUD_SERVER"
    VIRTUAL_HOST = "VIRTUAL_HOST"
    BARE_METAL = "BARE_METAL"


class OsFamily(enum.StrEnum):
    LINUX = "LINUX"
    WINDOWS = "WINDOWS"


class Role(enum.StrEnum):
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"


class BatchStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    DISABLED = "DISABLED"


class CardStatus(enum.StrEnum):
    UNUSED = "UNUSED"
    USED = "USED"
    DISABLED = "DISABLED"


class OrderStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class CardExportFormat(enum.StrEnum):
    TXT = "TXT"
    CSV = "CSV"
    PDF = "PDF"


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"


class AttemptOutcome(enum.StrEnum):
    """How one call to the platform (or one answer from it) ended (v2/provisioning.graphql)."""

    DONE = "DONE"
    ACCEPTED = "ACCEPTED"
    REFUSED = "REFUSED"
    TRANSIENT = "TRANSIENT"
    LEASE_LOST = "LEASE_LOST"
    CANCELLED = "CANCELLED"
