"""Who may read or call a field, declared once, on the field: `guarded(Audience.ADMIN, ...)` gives it
both its check (decided by services.access) and the audience line of its description ("Admin.",
"Member.", ...), so the two cannot drift apart. The services check again for their own callers."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.permission import BasePermission

from schema.caching import CATALOG
from services.access import NOTES, Audience, require

AUDIENCE = "audience"  # where the declared audience is kept in a field's metadata


def _permission(audience: Audience) -> type[BasePermission]:
    class Check(BasePermission):
        def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
            # raises the domain's Unauthenticated or Forbidden, shaped into its code
            require(info.context.caller, audience)
            return True

    Check.__name__ = f"{audience.name.title().replace('_', '')}Only"
    return Check


_CHECKS = {audience: _permission(audience) for audience in Audience if audience is not Audience.ANYONE}


def guarded(
    audience: Audience,
    *,
    description: str,
    note: str | None = None,
    catalog: bool = False,
    subscription: bool = False,
    **kwargs: Any,
) -> Any:
    """A field for `audience`; `note` replaces the audience line where the rule needs more words
    (e.g. "Admins see any; a member only their own"). `catalog`: a read whose answer is the same
    for everyone in the audience and changes rarely, which a GET's answer may let a cache keep
    (schema.caching). `subscription`: a Subscription field (its resolver gives a stream)."""
    checks = [] if audience is Audience.ANYONE else [_CHECKS[audience]]
    return strawberry.field(
        description=f"{description} {note or NOTES[audience]}",
        permission_classes=checks,
        metadata={AUDIENCE: audience, CATALOG: catalog},
        is_subscription=subscription,
        **kwargs,
    )


def admin_field(*, description: str, **kwargs: Any) -> Any:
    """A field only admins may read (a member asking for it gets FORBIDDEN on it)."""
    return guarded(Audience.ADMIN, description=description, **kwargs)


def admin_list_field(*, description: str, **kwargs: Any) -> Any:
    """A list only admins see filled; anyone else who may read its object gets it empty, not an
    error (an order's provisioning attempts, read by the member whose order it is). No check is
    attached: the service behind the field's loader decides (services.access.allows)."""
    return strawberry.field(
        description=f"{description} Admin; empty for anyone else.",
        metadata={AUDIENCE: Audience.ADMIN, CATALOG: False},
        **kwargs,
    )
