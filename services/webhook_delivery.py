"""Sending webhooks (RULES-v2 §2): due deliveries claimed under a lease (`claim_deliveries`), one
POST signed per Standard Webhooks and its recorded outcome (`send`), and the worker's loop that
keeps a few in flight (`run_deliveries`).

A delivery is held by one worker at a time: claimed in one statement per batch (on PostgreSQL
`FOR UPDATE SKIP LOCKED`), and its outcome written only by the worker still holding it. A worker
that dies mid-POST leaves the lease to run out; the next worker sends the same message again (same
`webhook-id` and body), which is why receivers drop repeats by `webhook-id`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import and_, or_, select, update

from models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookMessage
from services import metrics
from services import webhook_addresses as addresses
from services import webhook_secrets as signing
from services.runtime import Runtime

log = logging.getLogger("tihuo.webhooks")

# after the first attempt fails, the next ones follow these waits; after the last, FAILED
RETRY_SCHEDULE = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
ERROR_MAX = 500  # webhook_deliveries.last_error is VARCHAR(500)
USER_AGENT = "tihuo-webhooks/1"


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery this worker holds until `lease_until`, with what its POST needs."""

    id: int
    endpoint_id: int
    worker_id: str
    attempts: int
    lease_until: datetime
    url: str
    message_id: str
    payload: str
    created_at: datetime
    # the signing secrets in use (two during a rotation's overlap); never shown in a repr or log
    secrets: tuple[bytes, ...] = field(repr=False)


def _due(now: datetime) -> Any:
    return and_(
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
        WebhookEndpoint.enabled,
    )


async def claim_deliveries(rt: Runtime, worker_id: str, limit: int) -> list[ClaimedDelivery]:
    """Take up to `limit` due deliveries (PENDING, due, not leased or under an expired lease, of an
    enabled endpoint), oldest first, under a lease of TIHUO_WEBHOOK_LEASE_SECONDS."""
    now = rt.now()
    pick = (
        select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(_due(now))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    # an idle poll only reads: on SQLite a write transaction would take the database's one write lock
    async with rt.db.read() as session:
        if await session.scalar(pick.limit(1)) is None:
            return []
    if not rt.db.is_sqlite:
        pick = pick.with_for_update(of=WebhookDelivery, skip_locked=True)
    lease_until = now + timedelta(seconds=rt.settings.webhook_lease_seconds)
    async with rt.db.write() as session:
        ids = list(await session.scalars(pick))
        if not ids:
            return []
        taken = list(
            await session.scalars(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id.in_(ids),
                    WebhookDelivery.status == DeliveryStatus.PENDING,
                    or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
                )
                .values(lease_until=lease_until, worker_id=worker_id, attempts=WebhookDelivery.attempts + 1)
                .returning(WebhookDelivery.id)
                .execution_options(synchronize_session=False)
            )
        )
        rows = (
            await session.execute(
                select(WebhookDelivery, WebhookEndpoint, WebhookMessage)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
                .where(WebhookDelivery.id.in_(taken))
                .order_by(WebhookDelivery.id)
                .execution_options(populate_existing=True)
            )
        ).all()
    return [
        ClaimedDelivery(
            id=delivery.id,
            endpoint_id=endpoint.id,
            worker_id=worker_id,
            attempts=delivery.attempts,
            lease_until=lease_until,
            url=endpoint.url,
            message_id=message.message_id,
            payload=message.payload,
            created_at=delivery.created_at,
            secrets=secrets_in_use(rt, endpoint, now),
        )
        for delivery, endpoint, message in rows
    ]


def secrets_in_use(rt: Runtime, endpoint: WebhookEndpoint, now: datetime) -> tuple[bytes, ...]:
    """The endpoint's secret, and the previous one while its overlap after a rotation lasts."""
    current = signing.unseal(rt.keys, endpoint.secret_key_version, endpoint.secret_sealed)
    previous = endpoint.previous_secret_sealed
    expires = endpoint.previous_secret_expires_at
    if previous is None or expires is None or expires <= now:
        return (current,)
    return (current, signing.unseal(rt.keys, endpoint.secret_key_version, previous))


def signed_headers(claimed: ClaimedDelivery, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": claimed.message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.signature(list(claimed.secrets), claimed.message_id, timestamp, body),
    }


async def send(rt: Runtime, client: httpx.AsyncClient, claimed: ClaimedDelivery) -> str:
    """One attempt: check the URL's address again, POST to that address, record the outcome.
    Returns the outcome (metrics.WEBHOOK_OUTCOMES). If cancelled (the worker stopping) the
    delivery is handed back at once."""
    try:
        target = await addresses.resolve(claimed.url, allow_private=rt.settings.webhook_allow_private)
    except addresses.Refused as refused:
        return await _record(rt, claimed, None, f"refused: {refused}", None, refused=True)
    body = claimed.payload.encode()
    # the receiver compares this with its own clock: wall time, whatever the runtime's clock says
    headers = signed_headers(claimed, body, int(time.time()))
    headers["host"] = target.url.netloc.decode("ascii")
    extensions = {"sni_hostname": target.url.host} if target.url.scheme == "https" else {}
    started = time.perf_counter()
    try:
        response = await client.post(
            target.url.copy_with(host=target.address), content=body, headers=headers, extensions=extensions
        )
    except asyncio.CancelledError:
        await asyncio.shield(_release(rt, claimed))
        raise
    except httpx.TimeoutException:
        return await _record(
            rt, claimed, None, f"no answer within {rt.settings.webhook_timeout_seconds:g} s", started
        )
    except httpx.HTTPError as exc:
        return await _record(rt, claimed, None, f"{type(exc).__name__}: {exc}", started)
    code = response.status_code
    if 200 <= code < 300:
        return await _record(rt, claimed, code, None, started)
    return await _record(rt, claimed, code, f"HTTP {code}", started)


def _held(claimed: ClaimedDelivery) -> Any:
    """Only the worker still holding the delivery may write its outcome."""
    return and_(
        WebhookDelivery.id == claimed.id,
        WebhookDelivery.worker_id == claimed.worker_id,
        WebhookDelivery.lease_until == claimed.lease_until,
        WebhookDelivery.status == DeliveryStatus.PENDING,
    )


async def _record(
    rt: Runtime,
    claimed: ClaimedDelivery,
    code: int | None,
    error: str | None,
    started: float | None,
    *,
    refused: bool = False,
) -> str:
    seconds = None if started is None else time.perf_counter() - started
    now = rt.now()
    values: dict[str, Any] = {"lease_until": None, "last_status_code": code, "last_error": error}
    if error is None:
        outcome = "delivered"
        values.update(status=DeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif code == 410:
        outcome = "disabled"
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    elif claimed.attempts >= MAX_ATTEMPTS:
        outcome = "failed"
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        outcome = "refused" if refused else "retried"
        values.update(next_attempt_at=now + RETRY_SCHEDULE[claimed.attempts - 1])
    if error is not None:
        values["last_error"] = error[:ERROR_MAX]
    async with rt.db.write() as session:
        held = await session.execute(
            update(WebhookDelivery)
            .where(_held(claimed))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if held.rowcount != 1:
            log.warning(
                "webhook delivery %d: lease lost before the outcome was recorded",
                claimed.id,
                extra=_log_extra(claimed, "webhook.lease_lost"),
            )
            return "lease_lost"
        if outcome == "disabled":
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == claimed.endpoint_id)
                .values(
                    enabled=False,
                    disabled_reason=f"the receiver answered 410 Gone on {now.isoformat()}",
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
    metrics.webhook_attempt(claimed.endpoint_id, outcome, seconds)
    level = logging.INFO if outcome == "delivered" else logging.WARNING
    log.log(
        level,
        "webhook %s to endpoint %d: %s (attempt %d%s)",
        claimed.message_id,
        claimed.endpoint_id,
        outcome,
        claimed.attempts,
        "" if error is None else f": {error[:ERROR_MAX]}",
        extra=_log_extra(claimed, f"webhook.{outcome}"),
    )
    return outcome


async def _release(rt: Runtime, claimed: ClaimedDelivery) -> None:
    """The worker is stopping mid-POST: hand the delivery back now rather than after the lease."""
    try:
        async with rt.db.write() as session:
            await session.execute(
                update(WebhookDelivery)
                .where(_held(claimed))
                .values(lease_until=None, attempts=WebhookDelivery.attempts - 1)
                .execution_options(synchronize_session=False)
            )
    except Exception:
        log.exception("webhook delivery %d: could not hand it back; it waits for its lease", claimed.id)


def _log_extra(claimed: ClaimedDelivery, event: str) -> dict[str, Any]:
    return {
        "event": event,
        "webhook_id": claimed.message_id,
        "endpoint_id": claimed.endpoint_id,
        "delivery_id": claimed.id,
        "worker": claimed.worker_id,
    }


def new_client(rt: Runtime) -> httpx.AsyncClient:
    """One client for every endpoint (its connections are kept per address). Redirects are never
    followed: they would take the signed body somewhere never checked."""
    return httpx.AsyncClient(
        timeout=rt.settings.webhook_timeout_seconds,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=rt.settings.webhook_concurrency),
    )


async def run_deliveries(rt: Runtime, *, worker_id: str, stop: asyncio.Event, poll_seconds: float) -> None:
    """Claim and send due deliveries, up to TIHUO_WEBHOOK_CONCURRENCY at once, until `stop` is set;
    when none is due, wait for `rt.webhooks_ready`, a send to finish, or `poll_seconds`."""
    limit = rt.settings.webhook_concurrency
    running: set[asyncio.Task[Any]] = set()
    async with new_client(rt) as client:
        try:
            while not stop.is_set():
                rt.webhooks_ready.clear()
                if len(running) < limit:
                    try:
                        claimed = await claim_deliveries(rt, worker_id, limit - len(running))
                    except Exception:
                        log.exception(
                            "worker %s: claiming webhook deliveries failed",
                            worker_id,
                            extra={"event": "webhook.claim_error", "worker": worker_id},
                        )
                        claimed = []
                    for delivery in claimed:
                        task = asyncio.create_task(_send_logged(rt, client, delivery))
                        running.add(task)
                        task.add_done_callback(running.discard)
                await _wait_for_any([rt.webhooks_ready.wait(), stop.wait()], running, poll_seconds)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)


async def _send_logged(rt: Runtime, client: httpx.AsyncClient, claimed: ClaimedDelivery) -> None:
    try:
        await send(rt, client, claimed)
    except Exception:
        # recording the outcome failed (the database went away): the lease brings it back
        log.exception(
            "webhook delivery %d: outcome not recorded",
            claimed.id,
            extra=_log_extra(claimed, "webhook.error"),
        )


async def _wait_for_any(waits: list[Any], running: set[asyncio.Task[Any]], seconds: float) -> None:
    waiters = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait([*waiters, *running], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
