"""Webhook endpoints as admins manage them (RULES-v2 §2): create (the secret shown once), update,
delete, rotate the secret (both sign for 24 hours), the delivery log, and redelivering a message.
Every write is audited; no audit value, log line or answer after creation holds a secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update

from core.ids import parse_id
from models import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookMessage,
    WebhookSubscription,
)
from services import audit
from services import webhook_addresses as addresses
from services import webhook_secrets as signing
from services.errors import FieldProblem, InvalidInput, NotFound
from services.paging import Page, keyset_page, page_request
from services.runtime import Caller, Runtime

DESCRIPTION_MAX = 500
ROTATION_OVERLAP = timedelta(hours=24)


@dataclass(frozen=True)
class EndpointView:
    id: int
    url: str
    description: str
    events: list[WebhookEvent]
    enabled: bool
    disabled_reason: str | None
    created_at: datetime

    def audited(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "description": self.description,
            "events": [e.value for e in self.events],
            "enabled": self.enabled,
        }


@dataclass(frozen=True)
class DeliveryView:
    id: int
    endpoint_id: int
    message_id: str
    event: WebhookEvent
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    payload: str


@dataclass(frozen=True)
class EndpointChange:
    """`updateWebhookEndpoint`'s input: None leaves a field as it is."""

    url: str | None = None
    description: str | None = None
    events: list[WebhookEvent] | None = None
    enabled: bool | None = None


def _ordered(events: Any) -> list[WebhookEvent]:
    """The events in the enum's order, each once."""
    wanted = {WebhookEvent(e) for e in events}
    return [e for e in WebhookEvent if e in wanted]


async def _views(session: Any, endpoints: list[WebhookEndpoint]) -> list[EndpointView]:
    ids = [e.id for e in endpoints]
    subscribed: dict[int, list[WebhookEvent]] = {i: [] for i in ids}
    if ids:
        rows = await session.execute(
            select(WebhookSubscription.endpoint_id, WebhookSubscription.event).where(
                WebhookSubscription.endpoint_id.in_(ids)
            )
        )
        for endpoint_id, event in rows:
            subscribed[endpoint_id].append(event)
    return [
        EndpointView(
            id=e.id,
            url=e.url,
            description=e.description,
            events=_ordered(subscribed[e.id]),
            enabled=e.enabled,
            disabled_reason=e.disabled_reason,
            created_at=e.created_at,
        )
        for e in endpoints
    ]


async def _checked(
    rt: Runtime, url: str | None, description: str | None, events: list[WebhookEvent] | None
) -> tuple[str | None, str | None, list[WebhookEvent] | None]:
    """The inputs cleaned, or InvalidInput naming every bad field (the URL's host is resolved)."""
    problems: list[FieldProblem] = []
    if url is not None:
        url = url.strip()
        try:
            await addresses.resolve(url, allow_private=rt.settings.webhook_allow_private)
        except addresses.Refused as refused:
            problems.append(FieldProblem("url", "field.url_refused", {"reason": str(refused)}))
    if description is not None:
        description = description.strip()
        if len(description) > DESCRIPTION_MAX:
            problems.append(FieldProblem("description", "field.too_long", {"max": DESCRIPTION_MAX}))
    if events is not None:
        events = _ordered(events)
        if not events:
            problems.append(FieldProblem("events", "field.blank"))
    if problems:
        raise InvalidInput(problems)
    return url, description, events


async def _subscribe(session: Any, endpoint_id: int, events: list[WebhookEvent]) -> None:
    await session.execute(delete(WebhookSubscription).where(WebhookSubscription.endpoint_id == endpoint_id))
    await session.execute(
        insert(WebhookSubscription), [{"endpoint_id": endpoint_id, "event": e} for e in events]
    )


async def _locked(session: Any, endpoint_id: str) -> WebhookEndpoint:
    parsed = parse_id(endpoint_id)
    endpoint = None if parsed is None else await session.get(WebhookEndpoint, parsed, with_for_update=True)
    if endpoint is None:
        raise NotFound()
    return endpoint


async def create_endpoint(
    rt: Runtime, caller: Caller, url: str, description: str, events: list[WebhookEvent]
) -> tuple[EndpointView, str]:
    """`createWebhookEndpoint`: the endpoint and its secret as `whsec_…`, the one time it is shown."""
    caller.require_admin()
    checked_url, checked_description, checked_events = await _checked(rt, url, description or "", events)
    assert checked_url is not None and checked_description is not None and checked_events is not None
    secret = signing.new_secret()
    version, sealed = signing.seal(rt.keys, secret)
    now = rt.now()
    async with rt.db.write() as session:
        endpoint = WebhookEndpoint(
            url=checked_url,
            description=checked_description,
            enabled=True,
            secret_key_version=version,
            secret_sealed=sealed,
            created_at=now,
            updated_at=now,
        )
        session.add(endpoint)
        await session.flush()
        await _subscribe(session, endpoint.id, checked_events)
        [view] = await _views(session, [endpoint])
        await audit.record(session, rt, caller, audit.WebhookEndpointCreated(endpoint.id, view.audited()))
    return view, signing.shown(secret)


async def update_endpoint(
    rt: Runtime, caller: Caller, endpoint_id: str, change: EndpointChange
) -> EndpointView:
    """`updateWebhookEndpoint`: the fields given; enabling an endpoint clears its disabledReason."""
    caller.require_admin()
    url, description, events = await _checked(rt, change.url, change.description, change.events)
    async with rt.db.write() as session:
        endpoint = await _locked(session, endpoint_id)
        [before] = await _views(session, [endpoint])
        if url is not None:
            endpoint.url = url
        if description is not None:
            endpoint.description = description
        if change.enabled is not None:
            endpoint.enabled = change.enabled
            if change.enabled:
                endpoint.disabled_reason = None
        if events is not None:
            await _subscribe(session, endpoint.id, events)
        endpoint.updated_at = rt.now()
        await session.flush()
        [after] = await _views(session, [endpoint])
        old, new = before.audited(), after.audited()
        changed = [name for name in old if old[name] != new[name]]
        if changed:
            await audit.record(
                session,
                rt,
                caller,
                audit.WebhookEndpointUpdated(
                    endpoint.id, {n: old[n] for n in changed}, {n: new[n] for n in changed}
                ),
            )
    return after


async def delete_endpoint(rt: Runtime, caller: Caller, endpoint_id: str) -> int:
    """`deleteWebhookEndpoint`: the endpoint, its events and its deliveries go."""
    caller.require_admin()
    async with rt.db.write() as session:
        endpoint = await _locked(session, endpoint_id)
        [view] = await _views(session, [endpoint])
        await session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
        await session.execute(
            delete(WebhookSubscription).where(WebhookSubscription.endpoint_id == endpoint.id)
        )
        await session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id))
        await audit.record(session, rt, caller, audit.WebhookEndpointDeleted(endpoint.id, view.audited()))
    return endpoint.id


async def rotate_secret(rt: Runtime, caller: Caller, endpoint_id: str) -> tuple[EndpointView, str]:
    """`rotateWebhookEndpointSecret`: a new secret, shown once; the one it replaces keeps signing
    beside it for 24 hours (two signatures in the header)."""
    caller.require_admin()
    secret = signing.new_secret()
    now = rt.now()
    async with rt.db.write() as session:
        endpoint = await _locked(session, endpoint_id)
        current = signing.unseal(rt.keys, endpoint.secret_key_version, endpoint.secret_sealed)
        version, sealed = signing.seal(rt.keys, secret)
        # both sealed under one key version, so one column names it
        _, previous = signing.seal(rt.keys, current)
        endpoint.secret_key_version = version
        endpoint.secret_sealed = sealed
        endpoint.previous_secret_sealed = previous
        endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
        endpoint.updated_at = now
        [view] = await _views(session, [endpoint])
        await audit.record(
            session, rt, caller, audit.WebhookSecretRotated(endpoint.id, now + ROTATION_OVERLAP)
        )
    return view, signing.shown(secret)


async def list_endpoints(rt: Runtime, caller: Caller) -> list[EndpointView]:
    """`webhookEndpoints`: oldest first."""
    caller.require_admin()
    async with rt.db.read() as session:
        endpoints = list(await session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))
        return await _views(session, endpoints)


async def get_endpoint(rt: Runtime, caller: Caller, endpoint_id: str) -> EndpointView | None:
    caller.require_admin()
    parsed = parse_id(endpoint_id)
    if parsed is None:
        return None
    async with rt.db.read() as session:
        endpoint = await session.get(WebhookEndpoint, parsed)
        return None if endpoint is None else (await _views(session, [endpoint]))[0]


def _delivery_view(delivery: WebhookDelivery, message: WebhookMessage) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        message_id=message.message_id,
        event=message.event,
        status=delivery.status,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
        next_attempt_at=delivery.next_attempt_at,
        payload=message.payload,
    )


async def list_deliveries(
    rt: Runtime,
    caller: Caller,
    endpoint_id: int,
    status: DeliveryStatus | None,
    *,
    first: int | None,
    after: str | None,
    offset: int | None,
) -> Page[DeliveryView]:
    """An endpoint's delivery log, newest first."""
    caller.require_admin()
    request = page_request("WebhookDelivery", first, after, offset)
    statement = (
        select(WebhookDelivery, WebhookMessage)
        .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
    )
    if status is not None:
        statement = statement.where(WebhookDelivery.status == DeliveryStatus(status))
    async with rt.db.read() as session:
        page = await _pairs_page(session, statement, request)
    return page


async def _pairs_page(session: Any, statement: Any, request: Any) -> Page[DeliveryView]:
    # keyset_page reads scalars: page the deliveries' ids, then read each with its message
    ids_page = await keyset_page(
        session,
        statement.with_only_columns(WebhookDelivery.id),
        kind="WebhookDelivery",
        key=WebhookDelivery.id,
        descending=True,
        request=request,
        cursor_key=lambda row: row,
    )
    ids = [item for _, item in ids_page.items]
    rows = (await session.execute(statement.where(WebhookDelivery.id.in_(ids)))).all() if ids else []
    views = {delivery.id: _delivery_view(delivery, message) for delivery, message in rows}
    return ids_page.map(lambda delivery_id: views[delivery_id])


async def redeliver(rt: Runtime, caller: Caller, delivery_id: str) -> DeliveryView:
    """`redeliverWebhook`: the delivery's message (same id, same body) queued again to its endpoint
    as a new delivery, due now."""
    caller.require_admin()
    parsed = parse_id(delivery_id)
    now = rt.now()
    async with rt.db.write() as session:
        found = (
            None
            if parsed is None
            else (
                await session.execute(
                    select(WebhookDelivery, WebhookMessage)
                    .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
                    .where(WebhookDelivery.id == parsed)
                )
            ).one_or_none()
        )
        if found is None:
            raise NotFound()
        original, message = found
        again = WebhookDelivery(
            endpoint_id=original.endpoint_id,
            message_id=message.id,
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        session.add(again)
        await session.flush()
        await audit.record(
            session, rt, caller, audit.WebhookRedelivered(original.id, again.id, message.message_id)
        )
        view = _delivery_view(again, message)
    rt.webhooks_ready.set()
    return view


async def clear_previous_secrets(rt: Runtime) -> int:
    """Forget previous secrets whose overlap has ended (worker housekeeping); returns how many."""
    async with rt.db.write() as session:
        result = await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.previous_secret_expires_at <= rt.now())
            .values(previous_secret_sealed=None, previous_secret_expires_at=None)
        )
    return result.rowcount or 0
