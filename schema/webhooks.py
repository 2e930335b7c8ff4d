"""Signed webhooks in the schema (RULES-v2 §2, the add-on v2/webhooks.graphql): endpoints, their
delivery log, and the results of the writes on them. Admin only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from models import DeliveryStatus, WebhookEvent
from schema.common import described_enum
from schema.errors import InvalidInputErrorType, NotFoundErrorType
from schema.pagination import (
    AFTER_DESCRIPTION,
    FIRST_DESCRIPTION,
    OFFSET_DESCRIPTION,
    PageInfo,
    build_connection,
)
from services import webhooks
from services.paging import Page
from services.webhooks import DeliveryView, EndpointView

WebhookEventEnum = described_enum(
    WebhookEvent,
    name="WebhookEvent",
    description="What a webhook tells; the body's `type` is its dotted lower-case name (card.redeemed).",
    values={
        WebhookEvent.BATCH_CREATED: "batch.created: the batch (never its codes).",
        WebhookEvent.BATCH_STATUS_CHANGED: "batch.status_changed: the batch and its previous status.",
        WebhookEvent.BATCH_DOWNLOADED: "batch.downloaded: batch, admin, card count, SHA-256 of the file.",
        WebhookEvent.CARD_STATUS_CHANGED: "card.status_changed: one card, or a range of a batch in one event.",
        WebhookEvent.CARD_REDEEMED: "card.redeemed: card (masked), batch, member, order.",
        WebhookEvent.ORDER_ACTIVE: "order.active: the order and its instance (never its password).",
        WebhookEvent.ORDER_FAILED: "order.failed: the order and why.",
        WebhookEvent.ORDER_CANCELLED: "order.cancelled: the order.",
    },
)
WebhookDeliveryStatusEnum = described_enum(
    DeliveryStatus,
    name="WebhookDeliveryStatus",
    description="Where a delivery stands.",
    values={
        DeliveryStatus.PENDING: "Not yet delivered: due now or at nextAttemptAt.",
        DeliveryStatus.DELIVERED: "The receiver answered 2xx.",
        DeliveryStatus.FAILED: "Retries spent, or the receiver answered 410 (the endpoint is then disabled).",
    },
)


@strawberry.type(name="WebhookDelivery", description="One message on its way to one endpoint.")
class WebhookDeliveryType:
    id: strawberry.ID = strawberry.field(description="The delivery's id (for redeliverWebhook).")
    message_id: str = strawberry.field(
        description="The webhook-id header: the same on every attempt of one message."
    )
    event: WebhookEventEnum = strawberry.field(description="What the message tells.")
    status: WebhookDeliveryStatusEnum = strawberry.field(description="Where it stands.")
    attempts: int = strawberry.field(description="POSTs made so far.")
    last_status_code: int | None = strawberry.field(description="The last answer's HTTP status, if any.")
    last_error: str | None = strawberry.field(description="Why the last attempt did not deliver.")
    created_at: datetime = strawberry.field(description="When it was queued.")
    delivered_at: datetime | None = strawberry.field(description="When the receiver answered 2xx.")
    next_attempt_at: datetime | None = strawberry.field(description="When it is tried next, while PENDING.")
    payload: str = strawberry.field(description="The JSON body as sent.")

    @classmethod
    def of(cls, view: DeliveryView) -> WebhookDeliveryType:
        return cls(
            id=strawberry.ID(str(view.id)),
            message_id=view.message_id,
            event=view.event,
            status=view.status,
            attempts=view.attempts,
            last_status_code=view.last_status_code,
            last_error=view.last_error,
            created_at=view.created_at,
            delivered_at=view.delivered_at,
            next_attempt_at=view.next_attempt_at,
            payload=view.payload,
        )


@strawberry.type(name="WebhookDeliveryEdge", description="A delivery and its cursor.")
class WebhookDeliveryEdge:
    cursor: str = strawberry.field(description="Pass it as `after` to read on.")
    node: WebhookDeliveryType = strawberry.field(description="The delivery.")


@strawberry.type(
    name="WebhookDeliveryConnection", description="A page of an endpoint's deliveries, newest first."
)
class WebhookDeliveryConnection:
    edges: list[WebhookDeliveryEdge] = strawberry.field(description="The deliveries with their cursors.")
    nodes: list[WebhookDeliveryType] = strawberry.field(description="The deliveries.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
    total_count: int = strawberry.field(description="Deliveries matching, over every page.")


def delivery_connection(page: Page[DeliveryView]) -> WebhookDeliveryConnection:
    return build_connection(WebhookDeliveryConnection, WebhookDeliveryEdge, page, WebhookDeliveryType.of)


@strawberry.type(name="WebhookEndpoint", description="A receiver of signed webhooks.")
class WebhookEndpointType:
    id: strawberry.ID = strawberry.field(description="The endpoint's id.")
    url: str = strawberry.field(description="Where the POSTs go: http:// or https://, never redirected.")
    description: str = strawberry.field(description="The admin's note.")
    events: list[WebhookEventEnum] = strawberry.field(description="The events it receives.")
    enabled: bool = strawberry.field(description="Whether it receives anything.")
    disabled_reason: str | None = strawberry.field(
        description="Why it was disabled, e.g. the receiver answered 410."
    )
    created_at: datetime = strawberry.field(description="When it was made.")

    @classmethod
    def of(cls, view: EndpointView) -> WebhookEndpointType:
        return cls(
            id=strawberry.ID(str(view.id)),
            url=view.url,
            description=view.description,
            events=list(view.events),
            enabled=view.enabled,
            disabled_reason=view.disabled_reason,
            created_at=view.created_at,
        )

    @strawberry.field(description="Its delivery log, newest first.")
    async def deliveries(
        self,
        info: Info,
        status: Annotated[
            WebhookDeliveryStatusEnum | None,
            strawberry.argument(description="Only deliveries in this state."),
        ] = None,
        first: Annotated[int | None, strawberry.argument(description=FIRST_DESCRIPTION)] = 20,
        after: Annotated[str | None, strawberry.argument(description=AFTER_DESCRIPTION)] = None,
        offset: Annotated[int | None, strawberry.argument(description=OFFSET_DESCRIPTION)] = None,
    ) -> WebhookDeliveryConnection:
        ctx = info.context
        page = await webhooks.list_deliveries(
            ctx.rt, ctx.caller, int(self.id), status, first=first, after=after, offset=offset
        )
        return delivery_connection(page)


@strawberry.input(name="CreateWebhookEndpointInput", description="A new endpoint.")
class CreateWebhookEndpointInput:
    url: str = strawberry.field(description="http:// or https://; its host must resolve to public addresses.")
    description: str | None = strawberry.field(default="", description="A note, at most 500 characters.")
    events: list[WebhookEventEnum] = strawberry.field(description="The events it receives; at least one.")


@strawberry.input(name="UpdateWebhookEndpointInput", description="What to change; absent fields stay.")
class UpdateWebhookEndpointInput:
    url: str | None = strawberry.field(default=None, description="A new URL, checked like a new one.")
    description: str | None = strawberry.field(default=None, description="A new note.")
    events: list[WebhookEventEnum] | None = strawberry.field(
        default=None, description="The new set of events."
    )
    enabled: bool | None = strawberry.field(
        default=None, description="Turn it off or on; on clears disabledReason."
    )


@strawberry.type(
    name="WebhookEndpointSecret",
    description="The signing secret (whsec_…) is shown here once and never again.",
)
class WebhookEndpointSecret:
    endpoint: WebhookEndpointType = strawberry.field(description="The endpoint.")
    secret: str = strawberry.field(
        description="whsec_ and the base64 key, as Standard Webhooks libraries take it."
    )


@strawberry.type(name="UpdateWebhookEndpointSuccess", description="The endpoint as saved.")
class UpdateWebhookEndpointSuccess:
    endpoint: WebhookEndpointType = strawberry.field(description="The endpoint.")


@strawberry.type(name="DeleteWebhookEndpointSuccess", description="The endpoint and its deliveries are gone.")
class DeleteWebhookEndpointSuccess:
    id: strawberry.ID = strawberry.field(description="The id it had.")


@strawberry.type(
    name="RedeliverWebhookSuccess", description="The same message (id and body) is queued again."
)
class RedeliverWebhookSuccess:
    delivery: WebhookDeliveryType = strawberry.field(description="The new delivery.")


CreateWebhookEndpointResult = Annotated[
    WebhookEndpointSecret | InvalidInputErrorType,
    strawberry.union("CreateWebhookEndpointResult", description="The endpoint and its secret, or why not."),
]
RotateWebhookEndpointSecretResult = Annotated[
    WebhookEndpointSecret | NotFoundErrorType,
    strawberry.union("RotateWebhookEndpointSecretResult", description="The new secret, or no such endpoint."),
]
UpdateWebhookEndpointResult = Annotated[
    UpdateWebhookEndpointSuccess | NotFoundErrorType | InvalidInputErrorType,
    strawberry.union("UpdateWebhookEndpointResult", description="The endpoint, or why it was not changed."),
]
DeleteWebhookEndpointResult = Annotated[
    DeleteWebhookEndpointSuccess | NotFoundErrorType,
    strawberry.union("DeleteWebhookEndpointResult", description="The id it had, or no such endpoint."),
]
RedeliverWebhookResult = Annotated[
    RedeliverWebhookSuccess | NotFoundErrorType,
    strawberry.union("RedeliverWebhookResult", description="The new delivery, or no such delivery."),
]
