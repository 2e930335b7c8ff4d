"""Redeeming a card (F8, RULES §4): the checks in the contract's order, the preview, and the
redemption itself, whose look-up and write are services.redemption_store's statements."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import delete

from core.db import DuplicateKey
from core.ids import parse_id
from core.messages import product_name
from models import CardBatch, IdempotencyKey, Order, OsImage, ProductType
from services import codes, metrics, order_events, ratelimit
from services import redemption_store as store
from services.errors import (
    CardCodeRejected,
    CardUnavailable,
    ErrorCode,
    OsSelectionRejected,
    OutOfStock,
    RateLimited,
)
from services.login_passwords import draw_password
from services.redemption_store import Redeemed
from services.runtime import Caller, Runtime, Viewer

log = logging.getLogger("tihuo.redemption")

NOTICES = {
    "zh-CN": {
        "sms": "服务器IP及登录密码将在产品开通后短信发送到您的手机。",
        "sms_host": "登录信息将在产品开通后短信发送到您的手机。",
        "no_refund": "产品开通后不可退回，且提货卡使用后作废！",
    },
    "en": {
        "sms": "The server's IP address and login password are sent to your phone by SMS once it is open.",
        "sms_host": "Login details are sent to your phone by SMS once the product is open.",
        "no_refund": "No refund after the product is open; the card is void once used.",
    },
}
# an order number drawn at random may be drawn twice; the write is then made again with another
ORDER_NO_ATTEMPTS = 3


@dataclass(frozen=True)
class Preview:
    product_type: ProductType
    product_name: str
    config: dict[str, Any]
    months: int
    os_required: bool
    os_images: list[OsImage]
    valid_until: date
    notices: list[str]


@dataclass(frozen=True)
class RedeemRequest:
    code: str
    os_image_id: str | None = None
    idempotency_key: str | None = None


@asynccontextmanager
async def _member_turn(rt: Runtime, member_id: int) -> AsyncIterator[None]:
    """Attempts by one member in one process take turns through look-up and counting, so a request
    packed with aliases cannot get more answers than the failed-attempt limit allows."""
    async with rt.attempt_locks[member_id % len(rt.attempt_locks)]:
        yield


def _normalised(typed: str) -> str:
    code = codes.normalise(typed)
    if code is None:
        raise CardCodeRejected(ErrorCode.INVALID_CODE)
    return code


async def _look_up(rt: Runtime, caller: Caller, viewer: Viewer, code: str, **wanted: Any) -> store.Looked:
    """A kept key's order, or else: rate limit, then the card; an unknown code counts as a failed
    attempt (RULES §4)."""
    keys = tuple(ratelimit.subjects(member=viewer.id, ip=caller.client_address))
    lookup = store.LookUp(
        now=rt.now(), member_id=viewer.id, keys=keys, code_hash=rt.keys.code_hash(code), **wanted
    )
    looked = await rt.db.run_read(lookup.run)
    if looked.kept_order is not None:
        return looked
    if looked.blocked_until is not None:
        raise RateLimited(ratelimit.seconds_until(looked.blocked_until, lookup.now))
    if looked.card is None or looked.batch is None:
        async with rt.db.write() as counting:
            await ratelimit.record_failure(counting, rt, ratelimit.CARD_CODE, keys)
        raise CardCodeRejected(ErrorCode.CARD_NOT_FOUND)
    return looked


@metrics.counts_redemptions("preview")
async def preview_card(rt: Runtime, caller: Caller, typed_code: str) -> Preview:
    """`redemptionPreview`: what the card gives and which images the member may pick."""
    viewer = caller.require_member()
    code = _normalised(typed_code)
    async with _member_turn(rt, viewer.id):
        looked = await _look_up(rt, caller, viewer, code, line_images=True)
    found = looked.found
    store.ensure_redeemable(rt.today(), found.card, found.batch)
    if looked.stock is not None and looked.stock <= 0:
        raise OutOfStock()
    store.ensure_within_limit(found.batch, looked.held)
    takes_os = found.batch.product_type is not ProductType.VIRTUAL_HOST
    images = list(looked.line_images)
    notices = NOTICES.get(caller.locale, NOTICES["zh-CN"])
    return Preview(
        product_type=found.batch.product_type,
        product_name=product_name(found.batch.product_type, caller.locale),
        config=found.batch.config,
        months=found.batch.months,
        os_required=takes_os,
        os_images=images,
        valid_until=found.batch.valid_until,
        notices=[notices["sms" if takes_os else "sms_host"], notices["no_refund"]],
    )


def _chosen_image(batch: CardBatch, os_image_id: str | None, found: OsImage | None) -> OsImage | None:
    """OS_REQUIRED / OS_NOT_ALLOWED (R2, R6): an image of the card's line, or none for a virtual host.
    `found` is the image with that id on the card's line, if there is one."""
    if batch.product_type is ProductType.VIRTUAL_HOST:
        if os_image_id is not None:
            raise OsSelectionRejected(ErrorCode.OS_NOT_ALLOWED)
        return None
    if os_image_id is None:
        raise OsSelectionRejected(ErrorCode.OS_REQUIRED)
    if found is None:
        raise OsSelectionRejected(ErrorCode.OS_NOT_ALLOWED)
    return found


def _request_hash(code: str, os_image_id: str | None) -> bytes:
    return hashlib.sha256(f"{code}\n{os_image_id or ''}".encode()).digest()


async def _replay_afresh(rt: Runtime, viewer: Viewer, key: str, request_hash: bytes) -> Order | None:
    return await rt.db.run_read(lambda codec: store.kept_order(codec, viewer.id, key, request_hash))


def _new_order_no(rt: Runtime) -> str:
    # the business date, like batch numbers (P20261202-… at 19:53 UTC on Dec 1 in Asia/Shanghai)
    return f"T{rt.today():%Y%m%d}{secrets.randbelow(10**10):010d}"


@metrics.counts_redemptions("redeem")
async def redeem_card(rt: Runtime, caller: Caller, request: RedeemRequest) -> Redeemed:
    """`redeemCard`: one transaction claims the card (a conditional update: exactly one of any number
    of concurrent redemptions wins), takes a bare-metal model's stock, and writes the PENDING order,
    the redemption row and the provisioning job. Provisioning starts after the commit."""
    viewer = caller.require_member()
    code = _normalised(request.code)
    key = request.idempotency_key
    request_hash = _request_hash(code, request.os_image_id)
    image_id = None if request.os_image_id is None else parse_id(request.os_image_id)
    async with _member_turn(rt, viewer.id):
        looked = await _look_up(
            rt, caller, viewer, code, idempotency_key=key, request_hash=request_hash, image_id=image_id
        )
    if looked.kept_order is not None:
        return Redeemed(looked.kept_order)
    found = looked.found
    try:
        store.ensure_redeemable(rt.today(), found.card, found.batch)
    except CardUnavailable:
        # a concurrent request with this key may have used the card since the key was read
        if key is not None and (order := await _replay_afresh(rt, viewer, key, request_hash)) is not None:
            return Redeemed(order)
        raise
    image = _chosen_image(found.batch, request.os_image_id, looked.chosen_image)
    if looked.stock is not None and looked.stock <= 0:
        raise OutOfStock()
    store.ensure_within_limit(found.batch, looked.held)
    for attempt in range(1, ORDER_NO_ATTEMPTS + 1):
        try:
            redeemed = await _redeem_once(rt, viewer, found, image, key, request_hash)
            break
        except DuplicateKey:
            # only the order number, drawn at random, can collide here: the transaction rolled
            # back whole, so draw again
            if attempt == ORDER_NO_ATTEMPTS:
                raise
    if redeemed.card is not None:
        # a new PENDING order (not a replay): on PostgreSQL the write's statement announced it
        order_events.order_placed(rt.db, redeemed.order)
    rt.jobs_ready.set()
    rt.webhooks_ready.set()
    order = redeemed.order
    log.info(
        "card of batch %s redeemed: order %s",
        order.batch_id,
        order.order_no,
        extra={"event": "redeem", "order_no": order.order_no},
    )
    return redeemed


async def _redeem_once(
    rt: Runtime,
    viewer: Viewer,
    found: store.Found,
    image: OsImage | None,
    key: str | None,
    request_hash: bytes,
) -> Redeemed:
    order_no = _new_order_no(rt)
    write = store.Write(
        now=rt.now(),
        today=rt.today(),
        member_id=viewer.id,
        card_id=found.card.id,
        batch=found.batch,
        image=image,
        key=key,
        request_hash=request_hash,
        order_no=order_no,
        # the login password, drawn now and kept only sealed until its SMS went (RULES-v2 §3)
        password=rt.password_keys.seal(draw_password(), order_no),
    )
    return await rt.db.run_write(write.run)


async def purge_idempotency_keys(rt: Runtime) -> int:
    """Forget keys older than `idempotency_key_hours` (at least 24, RULES §4); returns how many."""
    cutoff = rt.now() - timedelta(hours=rt.settings.idempotency_key_hours)
    async with rt.db.write() as session:
        result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return result.rowcount or 0
