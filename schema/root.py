"""Query and Mutation, assembled from each domain's fields, and the executable schema."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import strawberry
from strawberry.extensions.max_aliases import create_validator as alias_limit_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_limit_rule
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionResult

from resolvers import accounts, cards, catalog, live, programme, redemption, webhooks
from resolvers import orders as order_resolvers  # `orders` is also a Query field
from schema.accounts import ChangePasswordResult, LoginResult, ViewerType
from schema.audit import AuditEntryConnection
from schema.caching import catalog_fields
from schema.cards import (
    CardBatchConnection,
    CardBatchType,
    CreateCardBatchDownloadResult,
    CreateCardBatchResult,
    SetCardBatchStatusResult,
    SetCardRemarkResult,
    SetCardStatusResult,
)
from schema.catalog import HostingPlanType, ProductModelType, QuoteResult, RegionType
from schema.channels import ChannelType
from schema.documents import DocumentCache, IntrospectionLane, RequestHooks
from schema.errors import EXCEPTION_HANDLERS, log_unexpected, shape_errors
from schema.figures import CardProgrammeStatsType
from schema.metrics import marking_business_errors
from schema.orders import (
    CancelOrderResult,
    InstanceConnection,
    OrderConnection,
    OrderType,
    RetryProvisioningResult,
)
from schema.permissions import guarded
from schema.programme import (
    AssignCardsResult,
    CreateChannelResult,
    ExtendCardBatchResult,
    SetCardRangeStatusResult,
    UpdateChannelResult,
)
from schema.redemption import RedeemCardResult, RedemptionConnection, RedemptionPreviewResult
from schema.scalars import SCALAR_MAP
from schema.webhooks import (
    CreateWebhookEndpointResult,
    DeleteWebhookEndpointResult,
    RedeliverWebhookResult,
    RotateWebhookEndpointSecretResult,
    UpdateWebhookEndpointResult,
    WebhookEndpointType,
)
from services.access import Audience


@strawberry.type(description="Reads. Catalog reads need a signed-in user; admin and member reads are marked.")
class Query:
    me: ViewerType | None = guarded(
        Audience.ANYONE, resolver=accounts.me, description="The signed-in user; null when signed out."
    )
    regions: list[RegionType] = guarded(
        Audience.SIGNED_IN,
        resolver=catalog.regions,
        description="Regions (and through them lines and images).",
        catalog=True,
    )
    product_models: list[ProductModelType] = guarded(
        Audience.SIGNED_IN,
        resolver=catalog.product_models,
        description="Bare-metal models of a line.",
        catalog=True,
    )
    hosting_plans: list[HostingPlanType] = guarded(
        Audience.SIGNED_IN,
        resolver=catalog.hosting_plans,
        description="Virtual-host plans of a line.",
        catalog=True,
    )
    quote: QuoteResult = guarded(
        Audience.ADMIN, resolver=catalog.quote, description="Price a configuration (Linux and Windows)."
    )
    card_batches: CardBatchConnection = guarded(
        Audience.ADMIN, resolver=cards.card_batches, description="Batches, newest first, with filters."
    )
    card_batch: CardBatchType | None = guarded(
        Audience.ADMIN,
        resolver=cards.card_batch,
        description="One batch with its cards; null if there is none.",
    )
    redemptions: RedemptionConnection = guarded(
        Audience.ADMIN,
        resolver=redemption.redemptions,
        description="The usage log (提货卡使用记录), newest first.",
    )
    orders: OrderConnection = guarded(
        Audience.ADMIN, resolver=order_resolvers.order_list, description="Orders, newest first."
    )
    order: OrderType | None = guarded(
        Audience.SIGNED_IN,
        resolver=order_resolvers.order,
        description="One order.",
        note="Admins see any; a member only their own (else null).",
    )
    redemption_preview: RedemptionPreviewResult = guarded(
        Audience.MEMBER,
        resolver=redemption.redemption_preview,
        description="Step 2 of redeeming: what the card gives and the images to choose from.",
    )
    my_redemptions: RedemptionConnection = guarded(
        Audience.MEMBER,
        resolver=redemption.my_redemptions,
        description="The member's redeemed cards, newest first.",
    )
    my_instances: InstanceConnection = guarded(
        Audience.MEMBER,
        resolver=order_resolvers.my_instances,
        description="The member's products, newest first.",
    )
    channels: list[ChannelType] = guarded(
        Audience.ADMIN,
        resolver=programme.channel_list,
        description="Every channel cards are handed to, oldest first, with its counts.",
    )
    card_programme_stats: CardProgrammeStatsType = guarded(
        Audience.ADMIN,
        resolver=programme.card_programme_stats,
        description="Figures over all batches, for the dashboard's first page.",
    )
    audit_log: AuditEntryConnection = guarded(
        Audience.ADMIN,
        resolver=programme.audit_entries,
        description="Every admin write, newest first, with filters; values never hold a code or a password.",
    )
    webhook_endpoints: list[WebhookEndpointType] = guarded(
        Audience.ADMIN,
        resolver=webhooks.webhook_endpoints,
        description="Every webhook endpoint, oldest first.",
    )
    webhook_endpoint: WebhookEndpointType | None = guarded(
        Audience.ADMIN, resolver=webhooks.webhook_endpoint, description="One webhook endpoint; null if none."
    )


@strawberry.type(description="Writes. Each returns a result union: success, or the business error as data.")
class Mutation:
    login: LoginResult = guarded(
        Audience.ANYONE,
        resolver=accounts.login,
        description="Sign in. Five wrong passwords in 15 minutes (per username and per address) lock it for a while.",
    )
    change_password: ChangePasswordResult = guarded(
        Audience.SIGNED_IN,
        resolver=accounts.change_password,
        description="Change the signed-in user's own password; every older token stops working and a new one "
        "is returned. Wrong current passwords are limited like logins.",
    )
    create_card_batch: CreateCardBatchResult = guarded(
        Audience.ADMIN,
        resolver=cards.create_card_batch,
        description="Price a configuration and generate a batch of one-time cards. Nothing is made on an error.",
    )
    set_card_batch_status: SetCardBatchStatusResult = guarded(
        Audience.ADMIN, resolver=cards.set_card_batch_status, description="Disable or enable a whole batch."
    )
    set_card_status: SetCardStatusResult = guarded(
        Audience.ADMIN,
        resolver=cards.set_card_status,
        description="Disable or enable one card; UNUSED <-> DISABLED only.",
    )
    set_card_remark: SetCardRemarkResult = guarded(
        Audience.ADMIN, resolver=cards.set_card_remark, description="Set a card's remark (备注)."
    )
    redeem_card: RedeemCardResult = guarded(
        Audience.MEMBER,
        resolver=redemption.redeem_card,
        description="Redeem a card: the order is placed and provisioning starts; the card is then void.",
    )
    retry_provisioning: RetryProvisioningResult = guarded(
        Audience.ADMIN,
        resolver=order_resolvers.retry_provisioning,
        description="Queue a FAILED order's provisioning again.",
    )
    cancel_order: CancelOrderResult = guarded(
        Audience.ADMIN,
        resolver=order_resolvers.cancel_order,
        description="Cancel a FAILED order; its card becomes UNUSED again (R7: failures are recoverable).",
    )
    create_card_batch_download: CreateCardBatchDownloadResult = guarded(
        Audience.ADMIN,
        resolver=cards.create_card_batch_download,
        description="After re-checking the admin's own password: a single-use link to the batch's codes.",
    )
    create_channel: CreateChannelResult = guarded(
        Audience.ADMIN, resolver=programme.create_channel, description="Make a channel to hand cards to."
    )
    update_channel: UpdateChannelResult = guarded(
        Audience.ADMIN, resolver=programme.update_channel, description="Rename a channel or set its remark."
    )
    assign_cards_to_channel: AssignCardsResult = guarded(
        Audience.ADMIN,
        resolver=programme.assign_cards_to_channel,
        description="Put a run of cards in a channel (channelId null: take them out). Used cards keep their "
        "channel. One audit entry for the range.",
    )
    set_card_range_status: SetCardRangeStatusResult = guarded(
        Audience.ADMIN,
        resolver=programme.set_card_range_status,
        description="UNUSED <-> DISABLED for a run of cards; used cards are left as they are and not counted. "
        "One audit entry for the range.",
    )
    extend_card_batch: ExtendCardBatchResult = guarded(
        Audience.ADMIN,
        resolver=programme.extend_card_batch,
        description="Move validUntil (later or earlier, not before today); the frozen config and price stay.",
    )
    create_card_range_download: CreateCardBatchDownloadResult = guarded(
        Audience.ADMIN,
        resolver=programme.create_card_range_download,
        description="After re-checking the admin's own password: a single-use link to a run of cards as TXT, "
        "CSV or a printable PDF sheet.",
    )
    create_webhook_endpoint: CreateWebhookEndpointResult = guarded(
        Audience.ADMIN,
        resolver=webhooks.create_webhook_endpoint,
        description="Register a receiver of signed webhooks; its secret is shown once, here.",
    )
    update_webhook_endpoint: UpdateWebhookEndpointResult = guarded(
        Audience.ADMIN,
        resolver=webhooks.update_webhook_endpoint,
        description="Change an endpoint's URL, note, events, or turn it off or on.",
    )
    delete_webhook_endpoint: DeleteWebhookEndpointResult = guarded(
        Audience.ADMIN,
        resolver=webhooks.delete_webhook_endpoint,
        description="Delete an endpoint with its delivery log.",
    )
    rotate_webhook_endpoint_secret: RotateWebhookEndpointSecretResult = guarded(
        Audience.ADMIN,
        resolver=webhooks.rotate_webhook_endpoint_secret,
        description="A new signing secret, shown once; the old one keeps signing beside it for 24 hours.",
    )
    redeliver_webhook: RedeliverWebhookResult = guarded(
        Audience.ADMIN,
        resolver=webhooks.redeliver_webhook,
        description="Send a delivery's message again: the same webhook-id and body, as a new delivery.",
    )


@strawberry.type(description="Live order status over graphql-transport-ws at /graphql (RULES-v2 §4).")
class Subscription:
    order_updates: AsyncGenerator[OrderType, None] = guarded(
        Audience.SIGNED_IN,
        resolver=live.order_updates,
        subscription=True,
        description="The order now, then again every time its status changes; ends after ACTIVE, FAILED "
        "or CANCELLED.",
        note="Member: own orders; admin: any.",
    )
    my_order_updates: AsyncGenerator[OrderType, None] = guarded(
        Audience.MEMBER,
        resolver=live.my_order_updates,
        subscription=True,
        description="Every status change of the signed-in member's orders, as it happens.",
    )


class TihuoSchema(strawberry.Schema):
    documents: DocumentCache
    # the Query fields a GET's answer may let the asker's cache keep (schema.caching)
    catalog_fields: frozenset[str]
    # introspection-only operations run on a thread, one at a time per process (below)
    introspection_lane: IntrospectionLane

    def process_errors(self, errors, execution_context=None):  # type: ignore[no-untyped-def]
        context = execution_context.context if execution_context else None
        log_unexpected(errors, getattr(context, "request_id", None))

    def _get_execute_function(self) -> Callable[..., Any]:
        return self.introspection_lane.wrap(super()._get_execute_function())

    async def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        result = await super().execute(*args, **kwargs)
        if result.errors:
            result.errors = shape_errors(result.errors, kwargs.get("context_value"))
        return result

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:  # type: ignore[override]
        """A subscription's results (graphql-transport-ws), their errors shaped as execute's are."""
        results = await super().stream(*args, **kwargs)
        return _shaped(results, kwargs.get("context_value"))


async def _shaped(results: Any, context: Any) -> AsyncGenerator[Any, None]:
    try:
        async for result in results:
            if getattr(result, "errors", None):
                result.errors = shape_errors(result.errors, context)
            yield result
    finally:
        await results.aclose()


def build_schema(
    *,
    max_depth: int = 12,
    max_aliases: int = 30,
    max_tokens: int = 5000,
    max_cost: int = 60_000,
    introspection_signed_in: bool = False,
) -> TihuoSchema:
    # The depth and alias limits are validation rules made once here: QueryDepthLimiter and
    # MaxAliasesLimiter would make new rule classes per request, and a validation cache keyed by the
    # rules would then never hit (measured: validation was half the CPU of a request).
    documents = DocumentCache(
        extra_rules=[depth_limit_rule(max_depth, None), alias_limit_rule(max_aliases)], max_tokens=max_tokens
    )
    schema = TihuoSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(auto_camel_case=True, scalar_map=SCALAR_MAP),
        exception_handlers=marking_business_errors(EXCEPTION_HANDLERS),
        extensions=[
            lambda: RequestHooks(
                documents, max_cost=max_cost, introspection_signed_in=introspection_signed_in
            )
        ],
    )
    schema.documents = documents
    schema.catalog_fields = catalog_fields(schema._schema)
    schema.introspection_lane = IntrospectionLane()
    return schema
