"""Who may do what (RULES §8), decided here: each operation and each guarded field names one
audience, and `require` is the one place that answers for a caller."""

from __future__ import annotations

import enum

from models.base import Role
from services.errors import AccessDenied
from services.runtime import Caller, Viewer


class Audience(enum.StrEnum):
    ANYONE = "anyone"
    SIGNED_IN = "signed_in"
    MEMBER = "member"
    ADMIN = "admin"


# the line each audience adds to a field's description in the schema (GraphiQL shows it)
NOTES = {
    Audience.ANYONE: "Anyone, signed in or not.",
    Audience.SIGNED_IN: "Anyone signed in.",
    Audience.MEMBER: "Member.",
    Audience.ADMIN: "Admin.",
}


def require(caller: Caller, audience: Audience) -> Viewer | None:
    """The caller's viewer if the caller belongs to `audience`; Unauthenticated or Forbidden if not."""
    if audience is Audience.ANYONE:
        return caller.viewer
    if audience is Audience.SIGNED_IN:
        return caller.require_signed_in()
    if audience is Audience.MEMBER:
        return caller.require_member()
    return caller.require_admin()


def allows(caller: Caller, audience: Audience) -> bool:
    """Whether the caller belongs to `audience`, for what is shown to some and empty for the rest
    (e.g. an order's provisioning attempts: a member reading their order sees none)."""
    try:
        require(caller, audience)
    except AccessDenied:
        return False
    return True


def runs_only_trusted_documents(caller: Caller, only: str) -> bool:
    """Whether the caller may run only the trusted documents (RULES-v2 §6,
    TIHUO_TRUSTED_DOCUMENTS_ONLY): with `members` a caller signed in as a member (whoever holds a
    member's token is one of the public); with `all` everyone, signed in or not, admins too; with
    `off` nobody. Signed out, a caller reaches only `login` and `me` (and the schema), so `members`
    leaves them free: an admin can still sign in from GraphiQL."""
    if only == "all":
        return True
    if only == "members":
        return caller.viewer is not None and caller.viewer.role is Role.MEMBER
    return False
