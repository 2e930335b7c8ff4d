"""Recording admin writes: who, when, from where, and the values before and after."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models import AuditEntry
from services.runtime import Caller, Runtime


async def record(
    session: AsyncSession,
    rt: Runtime,
    caller: Caller,
    *,
    action: str,
    entity: str,
    entity_id: object | None,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
) -> None:
    """Add an audit row inside the caller's transaction, so the change and its record commit together."""
    await session.execute(
        insert(AuditEntry).values(
            actor_id=caller.viewer.id if caller.viewer else None,
            action=action,
            entity=entity,
            entity_id=None if entity_id is None else str(entity_id),
            old=old,
            new=new,
            client_address=caller.client_address,
            request_id=caller.request_id,
            at=rt.now(),
        )
    )
