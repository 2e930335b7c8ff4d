"""Fields only admins may read, declared once: `admin_field(...)` gives the field both its check and
the "Admin." of its description. The decision itself is the service layer's (Caller.require_admin),
so a member asking for an admin's field gets the same FORBIDDEN as for an admin's operation."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.permission import BasePermission


class AdminOnly(BasePermission):
    """Lets the field resolve for an admin; anyone else gets FORBIDDEN (UNAUTHENTICATED signed out)."""

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        info.context.caller.require_admin()  # raises the domain's AccessDenied, shaped into the code
        return True


ADMIN_NOTE = "Admin."


def admin_field(*, description: str, **kwargs: Any) -> Any:
    """A field only admins may read (a member asking for it gets FORBIDDEN on it)."""
    return strawberry.field(
        description=f"{description} {ADMIN_NOTE}", permission_classes=[AdminOnly], **kwargs
    )
