"""Live order status (RULES-v2 §4): the streams behind `orderUpdates` and `myOrderUpdates`.

A stream is opened with its permission decided at once (a member watching an order not theirs
gets FORBIDDEN and nothing else), subscribed to the process's hub (core.notify, fed by
services.order_events) before the order is read, so no change falls between the two. Every
notice makes the stream read the order again and pass it on if its status moved: a subscriber
always gets the order as it is now, a burst of changes it was too slow for comes as the latest
one, and one whose queue overflowed (TIHUO_LIVE_QUEUE_LIMIT) or whose process lost its LISTEN
connection reads what it watches again. The token the connection signed in with is checked
again every TIHUO_LIVE_RECHECK_SECONDS and at its expiry: expired, its user disabled or its
password changed, the stream ends with UNAUTHENTICATED.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from core.ids import parse_id
from core.notify import Inbox
from core.security import read_token
from core.sql import Codec, Plan
from models import Order, OrderStatus, Role
from services.accounts import viewer_for_token
from services.errors import Forbidden, Unauthenticated
from services.order_events import OrderNotice
from services.redemption_store import ORDER, ORDER_BY_ID
from services.runtime import Caller, Runtime

FINAL = frozenset({OrderStatus.ACTIVE, OrderStatus.FAILED, OrderStatus.CANCELLED})
# the member's newest orders a myOrderUpdates stream reads again after it missed notices
RECENT = 100


@dataclass
class Signin:
    """Who opened the connection, and the token they did it with (checked again while it lasts)."""

    caller: Caller
    token: str | None
    # when the token's user is next read again (time.monotonic())
    _next_check: float = 0.0
    # the token's expiry, read from it once (`of`)
    _expires_at: datetime | None = None

    @classmethod
    def of(cls, rt: Runtime, caller: Caller, token: str | None) -> Signin:
        claims = None if token is None else read_token(rt.keys.token, token, rt.now())
        return cls(caller, token, _expires_at=None if claims is None else claims.expires_at)

    async def ensure_valid(self, rt: Runtime) -> None:
        """The token's expiry, always (no read); its user (disabled? password changed?) every
        TIHUO_LIVE_RECHECK_SECONDS, so a notice costs no read of the user."""
        if self._expires_at is None or self._expires_at <= rt.now():
            raise Unauthenticated()
        if time.monotonic() < self._next_check:
            return
        viewer = self.caller.viewer
        current = None if self.token is None else await viewer_for_token(rt, self.token)
        if viewer is None or current is None or current.id != viewer.id:
            raise Unauthenticated()
        self._next_check = time.monotonic() + rt.settings.live_recheck_seconds

    def seconds_left(self, rt: Runtime) -> float:
        """Until the next check: the next read of the user, or the token's expiry if sooner."""
        if self._expires_at is None:
            return 0.0
        until_read = self._next_check - time.monotonic()
        return max(0.0, min(until_read, (self._expires_at - rt.now()).total_seconds()))


async def watch_order(rt: Runtime, signin: Signin, order_id: str) -> AsyncIterator[Order]:
    """`orderUpdates`: admins watch any order, a member only their own (FORBIDDEN otherwise, for
    an order that does not exist too, so ids cannot be probed)."""
    viewer = signin.caller.require_signed_in()
    parsed = parse_id(order_id)
    if parsed is None:
        raise Forbidden()
    inbox = rt.db.hub.subscribe([("order", parsed)], rt.settings.live_queue_limit)
    try:
        order = await _read(rt, parsed)
        if order is None or (viewer.role is not Role.ADMIN and order.member_id != viewer.id):
            raise Forbidden()
    except BaseException:
        inbox.close()
        raise
    return _order_stream(rt, signin, inbox, order)


async def _order_stream(rt: Runtime, signin: Signin, inbox: Inbox, order: Order) -> AsyncIterator[Order]:
    with inbox:
        yield order
        last = order.status
        while last not in FINAL:
            await _next_notice(rt, signin, inbox)
            current = await _read(rt, order.id)
            if current is not None and current.status is not last:
                last = current.status
                yield current


async def watch_my_orders(rt: Runtime, signin: Signin) -> AsyncIterator[Order]:
    """`myOrderUpdates`: every status change of the signed-in member's orders (new ones too)."""
    viewer = signin.caller.require_member()
    inbox = rt.db.hub.subscribe([("member", viewer.id)], rt.settings.live_queue_limit)
    try:
        known = {order.id: order.status for order in await _recent(rt, viewer.id)}
    except BaseException:
        inbox.close()
        raise
    return _member_stream(rt, signin, inbox, viewer.id, known)


async def _member_stream(
    rt: Runtime, signin: Signin, inbox: Inbox, member_id: int, known: dict[int, OrderStatus]
) -> AsyncIterator[Order]:
    with inbox:
        while True:
            notice = await _next_notice(rt, signin, inbox)
            if isinstance(notice, OrderNotice):
                order = await _read(rt, notice.order_id)
                orders = [] if order is None else [order]
            else:
                orders = list(reversed(await _recent(rt, member_id)))
            for order in orders:
                if known.get(order.id) is not order.status:
                    known.pop(order.id, None)
                    known[order.id] = order.status
                    yield order
            while len(known) > RECENT:
                # the longest unchanged: should it change, its notice still reads it
                del known[next(iter(known))]


async def _next_notice(rt: Runtime, signin: Signin, inbox: Inbox) -> object:
    """The inbox's next notice (or MISSED), checking the token at least every recheck."""
    while True:
        notice = await inbox.get(within=signin.seconds_left(rt))
        await signin.ensure_valid(rt)
        if notice is not None:
            return notice


async def _read(rt: Runtime, order_id: int) -> Order | None:
    """The order now, through the drivers' own path (core.sql): a read per notice per subscriber,
    so it is kept to the cost of a redemption's look-up, not an ORM session's."""

    def plan(codec: Codec) -> Plan[Order | None]:
        rows = yield ORDER_BY_ID, {"order_id": order_id}
        return ORDER.load(rows[0], codec) if rows else None

    return await rt.db.run_read(plan)


async def _recent(rt: Runtime, member_id: int) -> list[Order]:
    async with rt.db.read() as session:
        rows = await session.scalars(
            select(Order).where(Order.member_id == member_id).order_by(Order.id.desc()).limit(RECENT)
        )
        return list(rows)
