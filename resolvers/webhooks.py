"""Webhook endpoints and their deliveries (RULES-v2 §2): thin calls to services.webhooks."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from schema.webhooks import (
    CreateWebhookEndpointInput,
    DeleteWebhookEndpointSuccess,
    RedeliverWebhookSuccess,
    UpdateWebhookEndpointInput,
    UpdateWebhookEndpointSuccess,
    WebhookDeliveryType,
    WebhookEndpointSecret,
    WebhookEndpointType,
)
from services import webhooks

EndpointId = Annotated[strawberry.ID, strawberry.argument(description="The endpoint.")]


async def webhook_endpoints(info: Info) -> list[WebhookEndpointType]:
    ctx = info.context
    return [WebhookEndpointType.of(view) for view in await webhooks.list_endpoints(ctx.rt, ctx.caller)]


async def webhook_endpoint(info: Info, id: EndpointId) -> WebhookEndpointType | None:
    ctx = info.context
    view = await webhooks.get_endpoint(ctx.rt, ctx.caller, str(id))
    return None if view is None else WebhookEndpointType.of(view)


async def create_webhook_endpoint(
    info: Info, input: Annotated[CreateWebhookEndpointInput, strawberry.argument(description="The endpoint.")]
) -> WebhookEndpointSecret:
    ctx = info.context
    view, secret = await webhooks.create_endpoint(
        ctx.rt, ctx.caller, input.url, input.description or "", list(input.events)
    )
    return WebhookEndpointSecret(endpoint=WebhookEndpointType.of(view), secret=secret)


async def update_webhook_endpoint(
    info: Info,
    id: EndpointId,
    input: Annotated[UpdateWebhookEndpointInput, strawberry.argument(description="What to change.")],
) -> UpdateWebhookEndpointSuccess:
    ctx = info.context
    change = webhooks.EndpointChange(
        url=input.url,
        description=input.description,
        events=None if input.events is None else list(input.events),
        enabled=input.enabled,
    )
    view = await webhooks.update_endpoint(ctx.rt, ctx.caller, str(id), change)
    return UpdateWebhookEndpointSuccess(endpoint=WebhookEndpointType.of(view))


async def delete_webhook_endpoint(info: Info, id: EndpointId) -> DeleteWebhookEndpointSuccess:
    ctx = info.context
    deleted = await webhooks.delete_endpoint(ctx.rt, ctx.caller, str(id))
    return DeleteWebhookEndpointSuccess(id=strawberry.ID(str(deleted)))


async def rotate_webhook_endpoint_secret(info: Info, id: EndpointId) -> WebhookEndpointSecret:
    ctx = info.context
    view, secret = await webhooks.rotate_secret(ctx.rt, ctx.caller, str(id))
    return WebhookEndpointSecret(endpoint=WebhookEndpointType.of(view), secret=secret)


async def redeliver_webhook(
    info: Info,
    delivery_id: Annotated[strawberry.ID, strawberry.argument(description="A delivery of the message.")],
) -> RedeliverWebhookSuccess:
    ctx = info.context
    view = await webhooks.redeliver(ctx.rt, ctx.caller, str(delivery_id))
    return RedeliverWebhookSuccess(delivery=WebhookDeliveryType.of(view))
