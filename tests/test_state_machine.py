"""A state-machine property test (Hypothesis) of a card's whole life, driven through the services: batches
made, disabled and enabled, cards disabled and remarked, redeemed (with idempotency keys), provisioned to
ACTIVE or FAILED or back to the queue, retried and cancelled, with the clock moving on. After every step the
database must agree with a model kept alongside, and with the rules that hold whatever happened:

- a card is redeemed at most once at any time (one live redemption, one live order);
- a batch's used / disabled counts equal its USED / DISABLED cards;
- live redemptions, live (not cancelled) orders and USED cards match one to one, same card and member;
- stock is never negative and is the initial stock less the live bare-metal orders;
- every admin write that changed something has exactly one audit row, with the right action.

TIHUO_STATE_MACHINE_EXAMPLES (default 30) runs, of up to TIHUO_STATE_MACHINE_STEPS (default 30) steps each,
on a fresh database per run (a copy of the migrated template on SQLite; emptied tables on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import create_async_engine

from core.db import Database
from core.keys import Keys
from core.settings import load_settings
from models import (
    AuditEntry,
    Base,
    BatchStatus,
    Card,
    CardBatch,
    CardStatus,
    HostingPlan,
    Line,
    Order,
    OrderStatus,
    OsImage,
    ProductModel,
    ProductType,
    ProvisioningJob,
    Redemption,
    Role,
)
from services import cards, codes, orders, redemption
from services.catalog_file import parse_catalog
from services.catalog_loading import load_catalog
from services.errors import (
    CardUnavailable,
    DomainError,
    ErrorCode,
    IdempotencyConflict,
    InvalidInput,
    InvalidState,
    OsSelectionRejected,
    OutOfStock,
)
from services.pricing import ConfigInput
from services.provisioners import Active, ProvisionRequest, Refused, TransientFailure
from services.provisioning_jobs import claim_job, run_job
from services.runtime import Caller, Runtime
from tests.conftest import FIXTURES, POSTGRES_URL, Clock, make_user
from tests.provisioning_helpers import RecordingNotifier

# read at import: the suite's autouse fixture removes TIHUO_* variables before each test runs
EXAMPLES = int(os.environ.get("TIHUO_STATE_MACHINE_EXAMPLES", "30"))
STEPS = int(os.environ.get("TIHUO_STATE_MACHINE_STEPS", "30"))

# one, so creating a batch and redeeming run the bare-metal model out of stock (and a cancel refills it)
BARE_METAL_STOCK = 1
# small, so transient failures spend the retries
MAX_ATTEMPTS = 2
BACKOFF_MS = 10
# 10:00 in Shanghai
START = datetime(2027, 5, 1, 2, 0, tzinfo=UTC)
KINDS = {
    "cloud": ProductType.CLOUD_SERVER,
    "bare_metal": ProductType.BARE_METAL,
    "host": ProductType.VIRTUAL_HOST,
}
MEMBERS = 2
KEYS = [None, None, "key-1", "key-2"]
REMARKS = ["", "VIP 客户", "  VIP 客户  ", "x" * 501]

T = TypeVar("T")


# ---------------------------------------------------------------- a fresh database, without fixtures


async def _empty_postgres(url: str) -> None:
    """The same clean slate as conftest's `database_url` gives a test on PostgreSQL."""
    engine = create_async_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


def _runtime(database_url: str, data_dir: Path, clock: Clock) -> Runtime:
    settings = load_settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=database_url,
        secret_key="tests-only-secret-0123456789abcdef",
        password_time_cost=1,
        password_memory_kib=64,
        simulated_delay_ms=0,
        provision_backoff_ms=BACKOFF_MS,
        provision_max_attempts=MAX_ATTEMPTS,
    )
    return Runtime(
        db=Database(settings.resolved_database_url),
        settings=settings,
        keys=Keys.from_secret(settings.secret),
        clock=clock,
    )


class ScriptedProvisioner:
    """Opens the product (at an address of its own), refuses it or fails transiently, as the rule says."""

    def __init__(self, outcome: str, address: str) -> None:
        self.outcome = outcome
        self.address = address

    async def provision(self, request: ProvisionRequest) -> Active:
        if self.outcome == "refused":
            raise Refused("scripted refusal")
        if self.outcome == "transient":
            raise TransientFailure("scripted transient failure")
        return Active(self.address, f"scripted-{request.order_no}")


# ---------------------------------------------------------------- the model


@dataclass
class ModelBatch:
    id: int
    kind: str
    status: BatchStatus
    valid_until: date


@dataclass
class ModelCard:
    id: int
    batch_id: int
    code: str
    status: CardStatus = CardStatus.UNUSED
    member_id: int | None = None
    remark: str | None = None


@dataclass
class ModelOrder:
    id: int
    card_id: int
    member_id: int
    bare_metal: bool
    run_after: datetime
    status: OrderStatus = OrderStatus.PENDING
    attempts: int = 0


@dataclass(frozen=True)
class KeptKey:
    """An idempotency key that made an order: the normalised code and image it was sent with."""

    code: str
    os_image_id: str | None
    order_id: int


@dataclass(frozen=True)
class Stored:
    """What the database holds, read in one snapshot after a step."""

    batches: list[CardBatch]
    cards: list[Card]
    orders: list[Order]
    redemptions: list[Redemption]
    jobs: list[ProvisioningJob]
    stock: int
    audit: list[AuditEntry]


class CardLifeCycle(RuleBasedStateMachine):
    """One run: a fresh database, an admin, two members, the example catalog with a bare-metal stock of 1,
    and (first step) a batch of each product type. The async services run on one event loop owned by
    the run, which closes it in `teardown`."""

    def __init__(self, template: str, work_dir: Path) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = Clock()
        self.clock.set(START)
        if POSTGRES_URL:
            self.runner.run(_empty_postgres(POSTGRES_URL))
            url = POSTGRES_URL
        else:
            path = work_dir / "tihuo.db"
            shutil.copyfile(template, path)
            url = f"sqlite+aiosqlite:///{path}"
        self.rt = _runtime(url, work_dir / "data", self.clock)
        self.batches: dict[int, ModelBatch] = {}
        self.cards: dict[int, ModelCard] = {}
        self.orders: dict[int, ModelOrder] = {}
        self.keys: dict[tuple[int, str], KeptKey] = {}
        self.audit: list[tuple[str, str, str]] = []
        self.run(self._seed())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    def teardown(self) -> None:
        try:
            self.run(self.rt.db.dispose())
        finally:
            self.runner.close()

    async def _seed(self) -> None:
        rt = self.rt
        await load_catalog(rt.db, parse_catalog((FIXTURES / "catalog.toml").read_text(encoding="utf-8")))
        admin = await make_user(rt, "admin", Role.ADMIN)
        self.admin = Caller(viewer=admin.viewer, client_address="203.0.113.1")
        self.members = [
            Caller(
                viewer=(await make_user(rt, f"member{i}", Role.MEMBER)).viewer,
                client_address=f"203.0.113.{10 + i}",
            )
            for i in range(MEMBERS)
        ]
        async with rt.db.write() as session:
            line = await session.scalar(select(Line).where(Line.code == "sh-bgp"))
            model = await session.scalar(select(ProductModel).where(ProductModel.code == "bm-e5-2650"))
            plan = await session.scalar(select(HostingPlan).where(HostingPlan.code == "vh-basic"))
            image = await session.scalar(select(OsImage.id).where(OsImage.code == "ubuntu-22.04"))
            assert line is not None and model is not None and plan is not None and image is not None
            await session.execute(
                update(ProductModel).where(ProductModel.id == model.id).values(stock=BARE_METAL_STOCK)
            )
        self.model_id = model.id
        self.image_id = str(image)
        self.configs = {
            "cloud": ConfigInput(
                ProductType.CLOUD_SERVER,
                str(line.id),
                1,
                cpu_cores=1,
                memory_gb=1,
                disk_gb=10,
                bandwidth_mbps=10,
                defense_gbps=0,
            ),
            "bare_metal": ConfigInput(
                ProductType.BARE_METAL,
                str(line.id),
                3,
                bandwidth_mbps=10,
                defense_gbps=0,
                product_model_id=str(model.id),
            ),
            "host": ConfigInput(ProductType.VIRTUAL_HOST, str(line.id), 1, plan_id=str(plan.id)),
        }

    # ------------------------------------------------------------ what the model expects

    def stock(self) -> int:
        live = [o for o in self.orders.values() if o.bare_metal and o.status is not OrderStatus.CANCELLED]
        return BARE_METAL_STOCK - len(live)

    def expect(self, call: Coroutine[Any, Any, T], refusal: DomainError | None) -> T | None:
        """Run a service call; it must be refused exactly as `refusal` says (class and code), or succeed."""
        name = call.__qualname__
        try:
            result = self.run(call)
        except DomainError as refused:
            assert refusal is not None, f"{name} refused with {refused!r}, expected success"
            assert (type(refused), refused.code) == (type(refusal), refusal.code), (name, refused, refusal)
            return None
        assert refusal is None, f"{name} succeeded, expected {refusal!r}"
        return result

    def pick(self, data: st.DataObject, label: str, everything: dict[int, T], likely: list[int]) -> T:
        """One of `everything`, often one of the `likely` ids (those a step can do something with), so
        that runs reach deep states rather than repeating refusals."""
        ids = likely if likely and data.draw(st.booleans(), label=f"likely {label}") else sorted(everything)
        return everything[data.draw(st.sampled_from(ids), label=label)]

    def redeemable(self) -> list[int]:
        today = self.rt.today()
        return [
            card.id
            for card in self.cards.values()
            if card.status is CardStatus.UNUSED
            and self.batches[card.batch_id].status is BatchStatus.ACTIVE
            and self.batches[card.batch_id].valid_until >= today
        ]

    def failed(self) -> list[int]:
        return [order.id for order in self.orders.values() if order.status is OrderStatus.FAILED]

    def _redeem_refusal(
        self, card: ModelCard, member: int, code: str, os_image_id: str | None, key: str | None
    ) -> DomainError | KeptKey | None:
        """RULES §4 in order, after the idempotency key: the refusal, the kept key to replay, or None."""
        if key is not None and (kept := self.keys.get((member, key))) is not None:
            return kept if (kept.code, kept.os_image_id) == (code, os_image_id) else IdempotencyConflict()
        batch = self.batches[card.batch_id]
        if batch.status is BatchStatus.DISABLED:
            return CardUnavailable(ErrorCode.BATCH_DISABLED)
        if card.status is CardStatus.DISABLED:
            return CardUnavailable(ErrorCode.CARD_DISABLED)
        if card.status is CardStatus.USED:
            return CardUnavailable(ErrorCode.CARD_USED)
        if self.rt.today() > batch.valid_until:
            return CardUnavailable(ErrorCode.CARD_EXPIRED)
        if batch.kind == "host" and os_image_id is not None:
            return OsSelectionRejected(ErrorCode.OS_NOT_ALLOWED)
        if batch.kind != "host" and os_image_id is None:
            return OsSelectionRejected(ErrorCode.OS_REQUIRED)
        if batch.kind != "host" and os_image_id != self.image_id:
            return OsSelectionRejected(ErrorCode.OS_NOT_ALLOWED)
        if batch.kind == "bare_metal" and self.stock() <= 0:
            return OutOfStock()
        return None

    # ------------------------------------------------------------ admin: batches and cards

    @initialize(quantity=st.integers(min_value=2, max_value=3))
    def first_batches(self, quantity: int) -> None:
        for kind in sorted(KINDS):
            self.create_batch(kind, quantity, 3, BatchStatus.ACTIVE)

    @rule(
        kind=st.sampled_from(sorted(KINDS)),
        quantity=st.integers(min_value=1, max_value=3),
        days=st.integers(min_value=0, max_value=4),
        status=st.sampled_from(
            [BatchStatus.ACTIVE, BatchStatus.ACTIVE, BatchStatus.ACTIVE, BatchStatus.DISABLED]
        ),
    )
    def create_batch(self, kind: str, quantity: int, days: int, status: BatchStatus) -> None:
        valid_until = self.rt.today() + timedelta(days=days)
        new = cards.NewBatch("状态机提货卡", None, self.configs[kind], quantity, valid_until, status)
        out_of_stock = kind == "bare_metal" and self.stock() <= 0
        batch = self.expect(
            cards.create_batch(self.rt, self.admin, new), OutOfStock() if out_of_stock else None
        )
        if batch is None:
            return
        self.batches[batch.id] = ModelBatch(batch.id, kind, status, valid_until)
        sealer = codes.CodeSealer(self.rt.keys)
        for card in self.run(self._cards_of(batch.id)):
            code = sealer.open(card.code_hash, card.code_cipher, card.key_version)
            self.cards[card.id] = ModelCard(card.id, batch.id, code)
        self.audit.append(("batch.create", "batch", str(batch.id)))

    async def _cards_of(self, batch_id: int) -> list[Card]:
        async with self.rt.db.read() as session:
            return list(
                await session.scalars(select(Card).where(Card.batch_id == batch_id).order_by(Card.seq))
            )

    @precondition(lambda self: self.batches)
    @rule(data=st.data(), status=st.sampled_from(list(BatchStatus)))
    def set_batch_status(self, data: st.DataObject, status: BatchStatus) -> None:
        batch = self.pick(
            data, "batch", self.batches, [b.id for b in self.batches.values() if b.status is not status]
        )

        changed = self.expect(cards.set_batch_status(self.rt, self.admin, str(batch.id), status), None)

        assert changed is not None and changed.status is status
        if batch.status is not status:
            batch.status = status
            self.audit.append(("batch.set_status", "batch", str(batch.id)))

    @precondition(lambda self: self.cards)
    @rule(data=st.data(), status=st.sampled_from(list(CardStatus)))
    def set_card_status(self, data: st.DataObject, status: CardStatus) -> None:
        card = self.pick(
            data, "card", self.cards, [c.id for c in self.cards.values() if c.status is not status]
        )
        refusal = InvalidState() if CardStatus.USED in (card.status, status) else None

        changed = self.expect(cards.set_card_status(self.rt, self.admin, str(card.id), status), refusal)

        if changed is None:
            return
        assert changed.status is status
        if card.status is not status:
            card.status = status
            self.audit.append(("card.set_status", "card", str(card.id)))

    @precondition(lambda self: self.cards)
    @rule(data=st.data(), remark=st.sampled_from(REMARKS))
    def set_card_remark(self, data: st.DataObject, remark: str) -> None:
        card = self.cards[data.draw(st.sampled_from(sorted(self.cards)), label="card")]
        too_long = len(remark.strip()) > cards.REMARK_MAX
        wanted = remark.strip() or None

        changed = self.expect(
            cards.set_card_remark(self.rt, self.admin, str(card.id), remark),
            InvalidInput([]) if too_long else None,
        )

        if changed is None:
            return
        assert changed.remark == wanted
        if card.remark != wanted:
            card.remark = wanted
            self.audit.append(("card.set_remark", "card", str(card.id)))

    # ------------------------------------------------------------ members: redeeming

    @precondition(lambda self: self.cards)
    @rule(
        data=st.data(),
        member=st.integers(min_value=0, max_value=MEMBERS - 1),
        os_choice=st.sampled_from(["right", "right", "right", "none", "wrong"]),
        typed=st.sampled_from(["plain", "dashed", "lower"]),
        key=st.sampled_from(KEYS),
    )
    def redeem(self, data: st.DataObject, member: int, os_choice: str, typed: str, key: str | None) -> None:
        card = self.pick(data, "card", self.cards, self.redeemable())
        kind = self.batches[card.batch_id].kind
        os_image_id = {
            "right": None if kind == "host" else self.image_id,
            "none": None,
            "wrong": self.image_id if kind == "host" else "999999",
        }[os_choice]
        sent = {"plain": card.code, "dashed": codes.display(card.code), "lower": card.code.lower()}[typed]
        caller = self.members[member]
        expected = self._redeem_refusal(card, member, card.code, os_image_id, key)
        request = redemption.RedeemRequest(sent, os_image_id, key)

        redeemed = self.expect(
            redemption.redeem_card(self.rt, caller, request),
            expected if isinstance(expected, DomainError) else None,
        )

        if redeemed is None:
            return
        if isinstance(expected, KeptKey):
            # the same key and input: the first answer again, nothing redeemed
            assert (redeemed.order.id, redeemed.card) == (expected.order_id, None)
            return
        order = redeemed.order
        assert (order.card_id, order.member_id, order.status) == (
            card.id,
            caller.viewer.id,
            OrderStatus.PENDING,
        )
        assert order.id not in self.orders
        card.status, card.member_id = CardStatus.USED, caller.viewer.id
        self.orders[order.id] = ModelOrder(
            order.id, card.id, caller.viewer.id, bare_metal=kind == "bare_metal", run_after=self.clock()
        )
        if key is not None:
            self.keys[(member, key)] = KeptKey(card.code, os_image_id, order.id)

    # ------------------------------------------------------------ the worker and the admin's recovery

    @precondition(lambda self: self.orders)
    @rule(outcome=st.sampled_from(["active", "refused", "transient"]))
    def provision(self, outcome: str) -> None:
        # past every back-off (10 and 20 ms): each PENDING order is due
        self.clock.advance(seconds=1)
        due = [o for o in self.orders.values() if o.status is OrderStatus.PENDING]

        job = self.run(claim_job(self.rt, "state-machine"))

        if not due:
            assert job is None, "no order is PENDING, yet a job was claimed"
            return
        assert job is not None
        order = min(due, key=lambda o: (o.run_after, o.id))
        assert job.order_id == order.id, "the oldest due job is taken first"
        order.attempts += 1
        assert job.attempts == order.attempts
        # an order opens once, so its id makes its address unique on the line
        address = f"10.0.{order.id // 256}.{order.id % 256}"
        self.run(run_job(self.rt, ScriptedProvisioner(outcome, address), RecordingNotifier(), job))
        if outcome == "active":
            order.status = OrderStatus.ACTIVE
        elif outcome == "refused" or order.attempts >= MAX_ATTEMPTS:
            order.status = OrderStatus.FAILED
        else:
            order.run_after = self.clock() + timedelta(milliseconds=BACKOFF_MS * 2 ** (order.attempts - 1))

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def retry_provisioning(self, data: st.DataObject) -> None:
        order = self.pick(data, "order", self.orders, self.failed())
        failed = order.status is OrderStatus.FAILED

        retried = self.expect(
            orders.retry_provisioning(self.rt, self.admin, str(order.id)), None if failed else InvalidState()
        )

        if retried is None:
            return
        assert retried.status is OrderStatus.PENDING
        order.status, order.attempts, order.run_after = OrderStatus.PENDING, 0, self.clock()
        self.audit.append(("order.retry_provisioning", "order", str(order.id)))

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def cancel_order(self, data: st.DataObject) -> None:
        order = self.pick(data, "order", self.orders, self.failed())
        failed = order.status is OrderStatus.FAILED

        cancelled = self.expect(
            orders.cancel_order(self.rt, self.admin, str(order.id)), None if failed else InvalidState()
        )

        if cancelled is None:
            return
        assert cancelled.status is OrderStatus.CANCELLED
        order.status = OrderStatus.CANCELLED
        card = self.cards[order.card_id]
        card.status, card.member_id = CardStatus.UNUSED, None
        self.audit.append(("order.cancel", "order", str(order.id)))

    @rule(hours=st.integers(min_value=1, max_value=30))
    def time_passes(self, hours: int) -> None:
        self.clock.advance(hours=hours)

    # ------------------------------------------------------------ after every step

    async def _stored(self) -> Stored:
        async with self.rt.db.read() as session:

            async def rows(model: Any) -> list[Any]:
                return list(await session.scalars(select(model).order_by(model.id)))

            return Stored(
                batches=await rows(CardBatch),
                cards=await rows(Card),
                orders=await rows(Order),
                redemptions=await rows(Redemption),
                jobs=await rows(ProvisioningJob),
                stock=await session.scalar(
                    select(ProductModel.stock).where(ProductModel.id == self.model_id)
                ),
                audit=await rows(AuditEntry),
            )

    @invariant()
    def every_rule_holds_and_the_database_matches_the_model(self) -> None:
        stored = self.run(self._stored())
        live_orders = [o for o in stored.orders if o.status is not OrderStatus.CANCELLED]
        live_redemptions = [r for r in stored.redemptions if r.cancelled_at is None]
        used = [c for c in stored.cards if c.status is CardStatus.USED]

        # a card is redeemed at most once at any time
        assert max(Counter(r.card_id for r in live_redemptions).values(), default=0) <= 1
        assert max(Counter(o.card_id for o in live_orders).values(), default=0) <= 1
        # the batches' counters count their cards
        for batch in stored.batches:
            statuses = Counter(c.status for c in stored.cards if c.batch_id == batch.id)
            assert (batch.used_count, batch.disabled_count) == (
                statuses[CardStatus.USED],
                statuses[CardStatus.DISABLED],
            ), batch.id
        # live redemptions, live orders and USED cards match one to one
        assert sorted((r.card_id, r.member_id, r.order_id) for r in live_redemptions) == sorted(
            (o.card_id, o.member_id, o.id) for o in live_orders
        )
        assert sorted((c.id, c.member_id) for c in used) == sorted(
            (o.card_id, o.member_id) for o in live_orders
        )
        # and a cancelled order's redemption is cancelled with it: one redemption per order, always
        assert sorted(r.order_id for r in stored.redemptions) == [o.id for o in stored.orders]
        assert sorted(r.order_id for r in stored.redemptions if r.cancelled_at is not None) == sorted(
            o.id for o in stored.orders if o.status is OrderStatus.CANCELLED
        )
        # stock is never negative and is what the live bare-metal orders left
        live_bare_metal = [o for o in live_orders if o.product_type is ProductType.BARE_METAL]
        assert stored.stock >= 0
        assert stored.stock == BARE_METAL_STOCK - len(live_bare_metal)
        # every admin write that changed something has exactly one audit row, with the right action
        assert Counter((a.action, a.entity, a.entity_id) for a in stored.audit) == Counter(self.audit)
        assert {a.actor_id for a in stored.audit} <= {self.admin.viewer.id}
        # and it is what the model says each step did
        assert {b.id: b.status for b in stored.batches} == {b.id: b.status for b in self.batches.values()}
        assert {c.id: (c.status, c.member_id, c.remark) for c in stored.cards} == {
            c.id: (c.status, c.member_id, c.remark) for c in self.cards.values()
        }
        assert {o.id: o.status for o in stored.orders} == {o.id: o.status for o in self.orders.values()}
        assert {j.order_id: j.attempts for j in stored.jobs} == {
            o.id: o.attempts for o in self.orders.values()
        }


MACHINE_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_cards_life_keeps_every_invariant(migrated_template: str, tmp_path: Path) -> None:
    runs = itertools.count()

    def machine() -> CardLifeCycle:
        work_dir = tmp_path / f"run{next(runs)}"
        work_dir.mkdir()
        return CardLifeCycle(migrated_template, work_dir)

    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)
