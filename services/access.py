"""Who may do what (RULES §8), decided here: each operation and each guarded field names one
audience, and `require` is the one place that answers for a caller."""

from __future__ import annotations

import enum

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
