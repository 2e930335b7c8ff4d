"""The webhook outbox (RULES-v2 §2): each event's payload, and the message with one delivery per
enabled endpoint that asked for it, written inside the transaction of the change that caused it
(a rolled-back change leaves no message). Nothing is written when no endpoint wants the event.

The payloads are documented per event in docs/webhooks/<type>.schema.json. None holds a card
code, a password, a token or a phone number; amounts are decimal strings, times ISO 8601 with
an offset. The redemption's own write builds its message with the statements here
(services/redemption_store.py), inside its one statement on PostgreSQL.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, exists, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import (
    Card,
    CardBatch,
    CardStatus,
    DeliveryStatus,
    Instance,
    Order,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookMessage,
    WebhookSubscription,
)
from services import codes

ENDPOINTS = WebhookEndpoint.__table__
SUBSCRIPTIONS = WebhookSubscription.__table__
MESSAGES = WebhookMessage.__table__
DELIVERIES = WebhookDelivery.__table__


def new_message_id() -> str:
    """`msg_` and 128 random bits (base32-like text: safe in a header, unique by chance)."""
    return "msg_" + secrets.token_urlsafe(16)


def receivers(event: Any) -> Any:
    """The enabled endpoints subscribed to `event` (a value or a bind parameter), as a SELECT of
    their ids: the write that causes an event sends it to exactly these."""
    return (
        select(SUBSCRIPTIONS.c.endpoint_id)
        .join(ENDPOINTS, ENDPOINTS.c.id == SUBSCRIPTIONS.c.endpoint_id)
        .where(and_(SUBSCRIPTIONS.c.event == event, ENDPOINTS.c.enabled))
    )


def anyone_wants(event: Any) -> Any:
    return exists(receivers(event))


def body(event: WebhookEvent, at: datetime, data: dict[str, Any]) -> str:
    """The JSON body as sent and kept: `{"type", "timestamp", "data"}`, compact."""
    return json.dumps(
        {"type": event.type_name, "timestamp": at.isoformat(), "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
    )


async def emit(session: AsyncSession, event: WebhookEvent, at: datetime, data: dict[str, Any]) -> None:
    """Queue `event` for every enabled endpoint that wants it, in the caller's transaction."""
    wanted = list(await session.scalars(receivers(event)))
    if not wanted:
        return
    message = await session.scalar(
        insert(WebhookMessage)
        .values(message_id=new_message_id(), event=event, payload=body(event, at, data), created_at=at)
        .returning(WebhookMessage.id)
    )
    await session.execute(
        insert(WebhookDelivery),
        [
            {
                "endpoint_id": endpoint_id,
                "message_id": message,
                "status": DeliveryStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": at,
                "created_at": at,
            }
            for endpoint_id in wanted
        ],
    )


# ---------------------------------------------------------------- the payloads' parts


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def batch_data(batch: CardBatch) -> dict[str, Any]:
    """A batch, never its codes."""
    return {
        "id": str(batch.id),
        "batchNo": batch.batch_no,
        "name": batch.name,
        "productType": batch.product_type.value,
        "quantity": batch.quantity,
        "status": batch.status.value,
        "months": batch.months,
        "referencePrice": _money(batch.reference_price),
        "windowsPrice": _money(batch.windows_price),
        "validFrom": _day(batch.valid_from),
        "validUntil": _day(batch.valid_until),
        "createdAt": _time(batch.created_at),
    }


def batch_ref(batch_id: int, batch_no: str) -> dict[str, Any]:
    return {"id": str(batch_id), "batchNo": batch_no}


def card_data(card: Card) -> dict[str, Any]:
    """A card, masked: its last four symbols only."""
    return {
        "id": str(card.id),
        "batchId": str(card.batch_id),
        "seq": card.seq,
        "maskedCode": codes.masked(card.last4),
        "status": card.status.value,
    }


def card_status_data(
    batch_id: int,
    from_seq: int,
    to_seq: int,
    before: CardStatus,
    after: CardStatus,
    changed: int,
    *,
    card: Card | None = None,
) -> dict[str, Any]:
    """card.status_changed: one card (`card`, from_seq = to_seq = its seq), or a range of a batch in
    one event, with how many of its cards changed (used cards are never touched)."""
    return {
        "batchId": str(batch_id),
        "fromSeq": from_seq,
        "toSeq": to_seq,
        "previousStatus": before.value,
        "status": after.value,
        "changed": changed,
        "card": None if card is None else card_data(card),
    }


def order_data(order: Order) -> dict[str, Any]:
    return {
        "id": None if order.id is None else str(order.id),
        "orderNo": order.order_no,
        "memberId": str(order.member_id),
        "batchId": str(order.batch_id),
        "cardId": str(order.card_id),
        "productType": order.product_type.value,
        "status": order.status.value,
        "listPrice": _money(order.list_price),
        "failureReason": order.failure_reason,
        "createdAt": _time(order.created_at),
        "activatedAt": _time(order.activated_at),
    }


def instance_data(instance: Instance) -> dict[str, Any]:
    """The opened product: where it is and until when, never its login password."""
    return {
        "id": str(instance.id),
        "name": instance.name,
        "productType": instance.product_type.value,
        "regionName": instance.region_name,
        "lineName": instance.line_name,
        "ipAddress": instance.ip_address,
        "status": instance.status,
        "createdAt": _time(instance.created_at),
        "expiresAt": _time(instance.expires_at),
    }


def redeemed_data(
    card: Mapping[str, Any], batch: CardBatch, order: Order, redeemed_at: datetime
) -> dict[str, Any]:
    """card.redeemed, made by the redemption's write (`card`: its id, batch_id, seq and last4; on
    PostgreSQL the seq, the masked code and the order's id are set inside the one statement)."""
    last4 = card["last4"]
    return {
        "card": {
            "id": str(card["id"]),
            "batchId": str(card["batch_id"]),
            "seq": card["seq"],
            "maskedCode": None if last4 is None else codes.masked(last4),
            "status": "USED",
        },
        "batch": batch_ref(batch.id, batch.batch_no),
        "member": {"id": str(order.member_id)},
        "order": order_data(order),
        "redeemedAt": redeemed_at.isoformat(),
    }
