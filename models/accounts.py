"""Accounts: users (admins and members), the portal identities they sign in with, and the counters
behind failed-attempt limits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, Role, str_enum, utcnow


class User(Base):
    __tablename__ = "users"
    # AUTOINCREMENT: SQLite would otherwise hand a deleted user's id (the largest) to the next user
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"))
    phone: Mapped[str | None] = mapped_column(String(32))
    # bumped when the password changes and when the user is disabled, so tokens issued before stop working
    token_version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # set while the user may not sign in
    disabled_at: Mapped[datetime | None]
    # the real-name fields the identity provider vouches for (RULES-v2 §3: `name`, `id_verified`,
    # the claims named by TIHUO_OIDC_REALNAME_CLAIMS), refreshed at each sign-in and passed on to
    # the provisioning platform; None for local accounts and when the provider gives none
    realname_claims: Mapped[dict[str, object] | None] = mapped_column(JSON)


class ExternalIdentity(Base):
    """One portal identity (issuer, `sub`) and the user it signs in (RULES-v2 §1): made at its first
    sign-in, never moved to another user, so the member's id stays the same for good."""

    __tablename__ = "external_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_external_identities_issuer_subject"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="RESTRICT"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AttemptCounter(Base):
    """Failed attempts of one kind by one subject (a username, member or client address).

    Shared through the database so every API process sees the same count.
    """

    __tablename__ = "attempt_counters"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[datetime]
    # how many times the limit was hit in a row; the back-off doubles with it
    strikes: Mapped[int] = mapped_column(default=0)
    blocked_until: Mapped[datetime | None]
