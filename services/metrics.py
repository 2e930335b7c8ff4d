"""Prometheus metrics: the metric objects (in one registry of our own), the helpers the services
record through, and the text a scrape of GET /metrics returns.

The registry is not prometheus_client's global one, so several apps in one process (the tests)
never collide; counters are per process, and a scraper sums them over processes."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select

from models import DeliveryStatus, JobStatus, ProvisioningJob, WebhookDelivery
from services.errors import DomainError
from services.runtime import Runtime

log = logging.getLogger("tihuo.metrics")

P = ParamSpec("P")
T = TypeVar("T")

NAMESPACE = "tihuo"
REGISTRY = CollectorRegistry()

# label values: first root fields, named by the schema; still cut and capped, should a schema grow
OPERATION_MAX = 64
OPERATIONS_MAX = 200
UNKNOWN = "unknown"
OTHER = "other"
OUTCOMES = ("ok", "business_error", "error")
ATTEMPT_OUTCOMES = ("active", "accepted", "failed", "retried", "released")
# a scrape must answer even when the database does not
JOB_COUNT_TIMEOUT_SECONDS = 2.0

GRAPHQL_REQUESTS = Counter(
    "graphql_requests",
    "GraphQL operations by their first root field and outcome: ok; business_error (the result holds a union "
    "member implementing Error); error (top-level errors, including malformed documents).",
    ["operation", "outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
GRAPHQL_SECONDS = Histogram(
    "graphql_request_seconds",
    "Time in the GraphQL engine per operation (parse, validate, execute), by its first root field.",
    ["operation"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
REDEMPTIONS = Counter(
    "redemptions",
    "Card previews and redemptions by a member, by result: success or the business error code.",
    ["action", "result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
PROVISIONING_ATTEMPTS = Counter(
    "provisioning_attempts",
    "Provisioning attempts by outcome: active, failed (refused or retries spent), retried "
    "(back in the queue) or released (handed back by a stopping worker).",
    ["outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
PROVISIONING_SECONDS = Histogram(
    "provisioning_seconds",
    "Time of one provisioner call, whatever its answer (a timeout counts at the timeout).",
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60),
)
CARD_BATCH_SECONDS = Histogram(
    "card_batch_generation_seconds",
    "Time to write a new batch: its codes made, sealed and inserted, and the transaction committed.",
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
CARD_BATCH_CARDS = Counter(
    "card_batch_cards",
    "Cards generated in new batches.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed", "disabled", "refused")
WEBHOOK_DELIVERIES = Counter(
    "webhook_deliveries",
    "Webhook delivery attempts by endpoint id and outcome: delivered (2xx), retried (another answer, a "
    "timeout or a connection error, with attempts left), failed (none left), disabled (the receiver "
    "answered 410), refused (the URL's address is not allowed).",
    ["endpoint", "outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
WEBHOOK_SECONDS = Histogram(
    "webhook_delivery_seconds",
    "Time of one webhook POST by endpoint id, whatever its answer (a timeout counts at the timeout).",
    ["endpoint"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOK_LAG_SECONDS = Histogram(
    "webhook_delivery_lag_seconds",
    "Time from a webhook's delivery being queued (with the change that caused it) to the receiver's 2xx, "
    "by endpoint id.",
    ["endpoint"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 36000),
)

# series that exist from the start, so rates and alerts see a zero rather than nothing
for _outcome in ATTEMPT_OUTCOMES:
    PROVISIONING_ATTEMPTS.labels(_outcome)
for _action in ("preview", "redeem"):
    REDEMPTIONS.labels(_action, "success")

_operations: set[str] = set()


def operation_label(name: str | None) -> str:
    """The `operation` label for an operation name: cut to 64 characters; `unknown` for none;
    `other` once 200 distinct names were seen in this process, so a client cannot grow the series."""
    if not name:
        return UNKNOWN
    label = name[:OPERATION_MAX]
    if label not in _operations:
        if len(_operations) >= OPERATIONS_MAX:
            return OTHER
        _operations.add(label)
    return label


def graphql_request(operation: str, outcome: str, seconds: float) -> None:
    GRAPHQL_REQUESTS.labels(operation, outcome).inc()
    GRAPHQL_SECONDS.labels(operation).observe(seconds)


def counts_redemptions(action: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Counts each call of a preview or redemption service by its result: `success`, or the code of
    the business error it raised. Access refusals and bugs are not attempts and are not counted
    here (they show as `graphql_requests_total{outcome="error"}`)."""

    def decorate(service: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(service)
        async def counted(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                answer = await service(*args, **kwargs)
            except DomainError as refused:
                REDEMPTIONS.labels(action, refused.code.value).inc()
                raise
            REDEMPTIONS.labels(action, "success").inc()
            return answer

        return counted

    return decorate


def provisioning_attempt(outcome: str) -> None:
    """One attempt's recorded outcome: one of ATTEMPT_OUTCOMES."""
    PROVISIONING_ATTEMPTS.labels(outcome).inc()


def webhook_attempt(endpoint_id: int, outcome: str, seconds: float | None, lag: float | None) -> None:
    """One delivery attempt's outcome (one of WEBHOOK_OUTCOMES), if a POST was made its time, and
    for a delivered one the time since it was queued."""
    WEBHOOK_DELIVERIES.labels(str(endpoint_id), outcome).inc()
    if seconds is not None:
        WEBHOOK_SECONDS.labels(str(endpoint_id)).observe(seconds)
    if lag is not None:
        WEBHOOK_LAG_SECONDS.labels(str(endpoint_id)).observe(lag)


def card_batch_generated(cards: int, seconds: float) -> None:
    CARD_BATCH_SECONDS.observe(seconds)
    CARD_BATCH_CARDS.inc(cards)


# ---------------------------------------------------------------- the scrape

_JOBS_BY_STATE = select(ProvisioningJob.status, func.count()).group_by(ProvisioningJob.status)
_WEBHOOK_BACKLOG = select(func.count(), func.min(WebhookDelivery.created_at)).where(
    WebhookDelivery.status == DeliveryStatus.PENDING
)


async def job_counts(rt: Runtime) -> dict[str, int] | None:
    """Provisioning jobs by state, every state present (0 when none); None if the database did not
    answer in time (the scrape then leaves the family out rather than fail or wait)."""
    try:
        async with asyncio.timeout(JOB_COUNT_TIMEOUT_SECONDS), rt.db.read() as session:
            rows = (await session.execute(_JOBS_BY_STATE)).all()
    except Exception:
        log.warning("metrics: could not count provisioning jobs", exc_info=True)
        return None
    counts = dict.fromkeys((state.value for state in JobStatus), 0)
    for status, count in rows:
        counts[JobStatus(status).value] = count
    return counts


async def webhook_backlog(rt: Runtime) -> tuple[int, float] | None:
    """The outbox backlog: deliveries still PENDING and the age in seconds of the oldest (0 when
    none); None if the database did not answer in time."""
    try:
        async with asyncio.timeout(JOB_COUNT_TIMEOUT_SECONDS), rt.db.read() as session:
            count, oldest = (await session.execute(_WEBHOOK_BACKLOG)).one()
    except Exception:
        log.warning("metrics: could not count webhook deliveries", exc_info=True)
        return None
    age = 0.0 if oldest is None else max(0.0, (rt.now() - oldest).total_seconds())
    return count, age


class _Scrape:
    """What one scrape exposes: the registry, and families read for this scrape only (they are not
    registered, so two apps in one process never show each other's database)."""

    def __init__(self, extra: Iterable[Metric]) -> None:
        self.extra = list(extra)

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from self.extra


async def exposition(rt: Runtime, accept: str | None) -> tuple[bytes, str]:
    """The body and content type for a scrape: Prometheus text (version 0.0.4) unless the scraper
    asks for OpenMetrics in `accept`."""
    families: list[Metric] = []
    counts = await job_counts(rt)
    if counts is not None:
        jobs = GaugeMetricFamily(
            f"{NAMESPACE}_provisioning_jobs",
            "Provisioning jobs by state, counted in the database at scrape time.",
            labels=["state"],
        )
        for state, count in counts.items():
            jobs.add_metric([state], count)
        families.append(jobs)
    backlog = await webhook_backlog(rt)
    if backlog is not None:
        families.append(
            GaugeMetricFamily(
                f"{NAMESPACE}_webhook_backlog",
                "Webhook deliveries still PENDING (due or waiting to be retried), at scrape time.",
                value=backlog[0],
            )
        )
        families.append(
            GaugeMetricFamily(
                f"{NAMESPACE}_webhook_oldest_pending_seconds",
                "Age of the oldest PENDING webhook delivery (0 when none), at scrape time.",
                value=backlog[1],
            )
        )
    encode, content_type = choose_encoder(accept or "")
    return encode(_Scrape(families)), content_type  # type: ignore[arg-type]
