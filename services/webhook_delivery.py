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
from sqlalchemy import and_, bindparam, or_, select, update

from core.sql import Sql
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
RECORD_WINDOW_SECONDS = 0.01


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


def _due(now: Any) -> Any:
    """Due at `now` (a time, or the bind parameter of the idle look)."""
    return and_(
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
        WebhookEndpoint.enabled,
    )


def _pick(now: Any, limit: int) -> Any:
    return (
        select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(_due(now))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )


# The idle poll's look (is any delivery due?). An idle worker makes it every
# TIHUO_WORKER_POLL_SECONDS, so it goes through the drivers' own path (core.sql) and only reads: on
# SQLite a write transaction would take the database's one write lock.
_LOOK = Sql(_pick(bindparam("now", type_=WebhookDelivery.next_attempt_at.type), 1))


async def claim_deliveries(rt: Runtime, worker_id: str, limit: int) -> list[ClaimedDelivery]:
    """Take up to `limit` due deliveries (PENDING, due, not leased or under an expired lease, of an
    enabled endpoint), oldest first, under a lease of TIHUO_WEBHOOK_LEASE_SECONDS."""
    now = rt.now()
    if not await rt.db.fetch(_LOOK, {"now": now}):
        return []
    pick = _pick(now, limit)
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


@dataclass(frozen=True)
class Attempt:
    """One POST's result, before it is recorded: the status code, or why there was none."""

    claimed: ClaimedDelivery
    code: int | None
    error: str | None
    seconds: float | None
    refused: bool = False


async def attempt(rt: Runtime, client: httpx.AsyncClient, claimed: ClaimedDelivery) -> Attempt:
    """One attempt, not yet recorded: check the URL's address again, POST to that address. If
    cancelled (the worker stopping) the delivery is handed back at once."""
    try:
        target = await addresses.resolve(claimed.url, allow_private=rt.settings.webhook_allow_private)
    except addresses.Refused as refused:
        return Attempt(claimed, None, f"refused: {refused}", None, refused=True)
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
        error = f"no answer within {rt.settings.webhook_timeout_seconds:g} s"
        return Attempt(claimed, None, error, time.perf_counter() - started)
    except httpx.HTTPError as exc:
        return Attempt(claimed, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
    code = response.status_code
    error = None if 200 <= code < 300 else f"HTTP {code}"
    return Attempt(claimed, code, error, time.perf_counter() - started)


def _held(claimed: ClaimedDelivery) -> Any:
    """Only the worker still holding the delivery may write its outcome."""
    return and_(
        WebhookDelivery.id == claimed.id,
        WebhookDelivery.worker_id == claimed.worker_id,
        WebhookDelivery.lease_until == claimed.lease_until,
        WebhookDelivery.status == DeliveryStatus.PENDING,
    )


def _outcome(done: Attempt, now: datetime) -> tuple[str, dict[str, Any]]:
    """The outcome's name (metrics.WEBHOOK_OUTCOMES) and the delivery's new values."""
    values: dict[str, Any] = {"lease_until": None, "last_status_code": done.code, "last_error": None}
    if done.error is None:
        values.update(status=DeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
        return "delivered", values
    values["last_error"] = done.error[:ERROR_MAX]
    if done.code == 410:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
        return "disabled", values
    if done.claimed.attempts >= MAX_ATTEMPTS:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
        return "failed", values
    values["next_attempt_at"] = now + RETRY_SCHEDULE[done.claimed.attempts - 1]
    return "refused" if done.refused else "retried", values


async def record(rt: Runtime, attempts: list[Attempt]) -> list[str]:
    """Record attempts' outcomes, in one transaction (one commit for many deliveries); a 410
    disables its endpoint. Returns each outcome, `lease_lost` for one another worker holds now."""
    now = rt.now()
    outcomes = []
    async with rt.db.write() as session:
        for done in attempts:
            outcome, values = _outcome(done, now)
            held = await session.execute(
                update(WebhookDelivery)
                .where(_held(done.claimed))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if held.rowcount != 1:
                outcome = "lease_lost"
            elif outcome == "disabled":
                await session.execute(
                    update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == done.claimed.endpoint_id)
                    .values(
                        enabled=False,
                        disabled_reason=f"the receiver answered 410 Gone on {now.isoformat()}",
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
            outcomes.append(outcome)
    for done, outcome in zip(attempts, outcomes, strict=True):
        _log(done, outcome, now)
    return outcomes


def _log(done: Attempt, outcome: str, now: datetime) -> None:
    claimed = done.claimed
    if outcome == "lease_lost":
        log.warning(
            "webhook delivery %d: lease lost before the outcome was recorded",
            claimed.id,
            extra=_log_extra(claimed, "webhook.lease_lost"),
        )
        return
    lag = (now - claimed.created_at).total_seconds() if outcome == "delivered" else None
    metrics.webhook_attempt(claimed.endpoint_id, outcome, done.seconds, lag)
    log.log(
        logging.INFO if outcome == "delivered" else logging.WARNING,
        "webhook %s to endpoint %d: %s (attempt %d%s)",
        claimed.message_id,
        claimed.endpoint_id,
        outcome,
        claimed.attempts,
        "" if done.error is None else f": {done.error[:ERROR_MAX]}",
        extra=_log_extra(claimed, f"webhook.{outcome}"),
    )


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
    when none is due, wait for `rt.webhooks_ready`, a send to finish, or `poll_seconds`. The
    outcomes of the sends that finished meanwhile are recorded together, in one transaction."""
    limit = rt.settings.webhook_concurrency
    running: set[asyncio.Task[Attempt]] = set()
    finished: list[Attempt] = []

    def collect(task: asyncio.Task[Attempt]) -> None:
        running.discard(task)
        if not task.cancelled() and task.exception() is None:
            finished.append(task.result())
        elif not task.cancelled():
            log.error("webhook send failed", exc_info=task.exception(), extra={"event": "webhook.error"})

    async with new_client(rt) as client:
        try:
            while not stop.is_set():
                rt.webhooks_ready.clear()
                if finished:
                    done, finished[:] = list(finished), []
                    await _record_logged(rt, done)
                # claimed in batches (half the limit at least): a claim is a write transaction
                if len(running) <= limit // 2:
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
                        task = asyncio.create_task(attempt(rt, client, delivery))
                        running.add(task)
                        task.add_done_callback(collect)
                if not finished:
                    await _wait_for_any([rt.webhooks_ready.wait(), stop.wait()], running, poll_seconds)
                if finished and running:
                    # a short window for the sends still out, so one commit records several
                    await asyncio.wait(running, timeout=RECORD_WINDOW_SECONDS)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            if finished:
                await _record_logged(rt, finished)


async def _record_logged(rt: Runtime, done: list[Attempt]) -> None:
    try:
        await record(rt, done)
    except Exception:
        # recording the outcomes failed (the database went away): the leases bring them back
        log.exception("%d webhook outcomes not recorded", len(done), extra={"event": "webhook.error"})


async def _wait_for_any(waits: list[Any], running: set[asyncio.Task[Any]], seconds: float) -> None:
    waiters = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait([*waiters, *running], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
