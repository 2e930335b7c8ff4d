"""The audit trail (RULES §8, RULES-v2 §5): every admin write, newest first, filtered and paged by
keyset. Values are shown as JSON and never hold a code, a password, a token or a hash: the events
carry none (services.audit), and what is shown is scrubbed of such keys all the same."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, select

from core.ids import parse_id
from models import AuditEntry, User
from services.days import day_after_start, day_start
from services.paging import Page, keyset_page, page_request
from services.runtime import Caller, Runtime

# keys that must never be shown, whatever an old row holds
SECRET_KEYS = frozenset(
    {
        "code",
        "codes",
        "password",
        "password_hash",
        "passwordHash",
        "token",
        "secret",
        "code_hash",
        "codeHash",
        "code_cipher",
        "codeCipher",
    }
)
REDACTED = "[redacted]"


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    entity: str | None = None
    entity_id: str | None = None
    actor_id: str | None = None
    from_day: date | None = None
    to_day: date | None = None


@dataclass(frozen=True)
class AuditView:
    id: int
    at: datetime
    actor_id: int | None
    actor_name: str | None
    action: str
    entity: str
    entity_id: str | None
    old_values: str | None
    new_values: str | None
    client_address: str | None
    request_id: str | None


def scrubbed(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: REDACTED if key in SECRET_KEYS else scrubbed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrubbed(item) for item in value]
    return value


def _json(values: dict[str, Any] | None) -> str | None:
    if values is None:
        return None
    return json.dumps(scrubbed(values), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _statement(rt: Runtime, filter: AuditFilter) -> Select[Any] | None:
    statement = select(AuditEntry)
    for value, column in (
        (filter.action, AuditEntry.action),
        (filter.entity, AuditEntry.entity),
        (filter.entity_id, AuditEntry.entity_id),
    ):
        if value is not None and value.strip():
            statement = statement.where(column == value.strip())
    if filter.actor_id is not None:
        actor = parse_id(filter.actor_id)
        if actor is None:
            return None
        statement = statement.where(AuditEntry.actor_id == actor)
    zone = rt.settings.zone
    if filter.from_day is not None and (start := day_start(zone, filter.from_day)) is not None:
        statement = statement.where(AuditEntry.at >= start)
    if filter.to_day is not None and (end := day_after_start(zone, filter.to_day)) is not None:
        statement = statement.where(AuditEntry.at < end)
    return statement


async def list_entries(
    rt: Runtime,
    caller: Caller,
    filter: AuditFilter,
    *,
    first: int | None,
    after: str | None,
    offset: int | None,
) -> Page[AuditView]:
    """`auditLog`: newest first (admin)."""
    caller.require_admin()
    request = page_request("AuditEntry", first, after, offset)
    statement = _statement(rt, filter)
    if statement is None:
        return Page([], 0, has_next=False, has_previous=request.has_previous)
    async with rt.db.read() as session:
        page = await keyset_page(
            session, statement, kind="AuditEntry", key=AuditEntry.id, descending=True, request=request
        )
        actors = {entry.actor_id for _, entry in page.items if entry.actor_id is not None}
        names = (
            dict((await session.execute(select(User.id, User.username).where(User.id.in_(actors)))).all())
            if actors
            else {}
        )
    return page.map(
        lambda entry: AuditView(
            id=entry.id,
            at=entry.at,
            actor_id=entry.actor_id,
            actor_name=names.get(entry.actor_id),
            action=entry.action,
            entity=entry.entity,
            entity_id=entry.entity_id,
            old_values=_json(entry.old),
            new_values=_json(entry.new),
            client_address=entry.client_address,
            request_id=entry.request_id,
        )
    )
