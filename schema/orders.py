"""Orders and instances in the schema, with their connections, filter and the admin results."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry
from strawberry.types import Info

from models import Instance, Order, ProvisioningAttempt
from schema.cards import CardType
from schema.catalog import OsImageType, ProductConfigType
from schema.common import OrderStatusEnum, ProductTypeEnum, ProvisioningAttemptOutcomeEnum
from schema.errors import InvalidStateErrorType, NotFoundErrorType
from schema.pagination import PageInfo, build_connection
from schema.permissions import admin_field, admin_list_field
from services import orders as order_service
from services.paging import Page


def _id(value: int) -> strawberry.ID:
    return strawberry.ID(str(value))


async def _os_image(info: Info, image_id: int | None) -> OsImageType | None:
    if image_id is None:
        return None
    image = await info.context.loaders.os_image.load(image_id)
    return None if image is None else OsImageType.of(image)


@strawberry.type(
    name="Instance", description="A product opened for a member (its login password went by SMS)."
)
class InstanceType:
    id: strawberry.ID = strawberry.field(description="The instance's id.")
    name: str = strawberry.field(description="Its name.")
    product_type: ProductTypeEnum = strawberry.field(description="What it is.")
    region_name: str = strawberry.field(description="Region.")
    line_name: str = strawberry.field(description="Line.")
    ip_address: str | None = strawberry.field(description="Its public address, once known.")
    status: str = strawberry.field(description="As the provider reports it, e.g. RUNNING.")
    config: ProductConfigType = strawberry.field(description="The configuration it was opened with.")
    created_at: datetime = strawberry.field(description="When it was opened (activation).")
    expires_at: datetime = strawberry.field(description="Activation + months, in calendar months (包年包月).")
    os_image_id: strawberry.Private[int | None]

    @classmethod
    def of(cls, row: Instance) -> InstanceType:
        return cls(
            id=_id(row.id),
            name=row.name,
            product_type=row.product_type,
            region_name=row.region_name,
            line_name=row.line_name,
            ip_address=row.ip_address,
            status=row.status,
            config=ProductConfigType.of(row.config),
            created_at=row.created_at,
            expires_at=row.expires_at,
            os_image_id=row.os_image_id,
        )

    @strawberry.field(description="The image installed; null for a virtual host.")
    async def os_image(self, info: Info) -> OsImageType | None:
        return await _os_image(info, self.os_image_id)


@strawberry.type(
    name="ProvisioningAttempt",
    description="One call to the provisioning platform, or one answer from it (RULES-v2 §3).",
)
class ProvisioningAttemptType:
    number: int = strawberry.field(description="1, 2, … in the order they began.")
    started_at: datetime = strawberry.field(description="When the call began (or the answer came).")
    finished_at: datetime | None = strawberry.field(description="When its answer was recorded.")
    outcome: ProvisioningAttemptOutcomeEnum | None = strawberry.field(
        description="How it ended; null while it runs."
    )
    detail: str | None = strawberry.field(
        description="The platform's answer, cut and with any password removed."
    )

    @classmethod
    def of(cls, row: ProvisioningAttempt) -> ProvisioningAttemptType:
        return cls(
            number=row.number,
            started_at=row.started_at,
            finished_at=row.finished_at,
            outcome=row.outcome,
            detail=row.detail,
        )


@strawberry.type(name="Order", description="The order a redemption made; paid by the card.")
class OrderType:
    id: strawberry.ID = strawberry.field(description="The order's id.")
    order_no: str = strawberry.field(description="Order number; also the provisioner's idempotency key.")
    member_id: strawberry.ID = strawberry.field(description="The member who redeemed.")
    product_type: ProductTypeEnum = strawberry.field(description="What was ordered.")
    config: ProductConfigType = strawberry.field(description="The card's configuration.")
    list_price: Decimal = strawberry.field(description="What the product would have cost with the chosen OS.")
    status: OrderStatusEnum = strawberry.field(description="Where provisioning stands.")
    failure_reason: str | None = strawberry.field(description="Why provisioning failed (FAILED orders).")
    created_at: datetime = strawberry.field(description="When the card was redeemed.")
    activated_at: datetime | None = strawberry.field(description="When the product was opened.")
    external_task_id: str | None = admin_field(
        description="The platform's task id while it works on the order (and after)."
    )
    row: strawberry.Private[Order]

    @classmethod
    def of(cls, row: Order) -> OrderType:
        return cls(
            id=_id(row.id),
            order_no=row.order_no,
            member_id=_id(row.member_id),
            product_type=row.product_type,
            config=ProductConfigType.of(row.config),
            list_price=row.list_price,
            status=row.status,
            failure_reason=row.failure_reason,
            created_at=row.created_at,
            activated_at=row.activated_at,
            external_task_id=row.external_task_id,
            row=row,
        )

    @strawberry.field(description="The image the member chose; null for a virtual host.")
    async def os_image(self, info: Info) -> OsImageType | None:
        return await _os_image(info, self.row.os_image_id)

    @strawberry.field(description="The card that paid for it.")
    async def card(self, info: Info) -> CardType:
        return CardType.of(await info.context.loaders.card.load(self.row.card_id))

    @admin_list_field(description="Every call to the platform and every answer, in order.")
    async def provisioning_attempts(self, info: Info) -> list[ProvisioningAttemptType]:
        rows = await info.context.loaders.attempts_by_order.load(self.row.id)
        return [ProvisioningAttemptType.of(row) for row in rows]

    @strawberry.field(description="The instance, once the product is open.")
    async def instance(self, info: Info) -> InstanceType | None:
        row = await info.context.loaders.instance_by_order.load(self.row.id)
        return None if row is None else InstanceType.of(row)


@strawberry.type(name="OrderEdge", description="An order in a list, with its cursor.")
class OrderEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this order.")
    node: OrderType = strawberry.field(description="The order.")


@strawberry.type(name="OrderConnection", description="A page of orders.")
class OrderConnection:
    edges: list[OrderEdge] = strawberry.field(description="The orders with their cursors.")
    nodes: list[OrderType] = strawberry.field(description="The orders.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
    total_count: int = strawberry.field(description="Orders in the whole filtered list.")


@strawberry.type(name="InstanceEdge", description="An instance in a list, with its cursor.")
class InstanceEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this instance.")
    node: InstanceType = strawberry.field(description="The instance.")


@strawberry.type(name="InstanceConnection", description="A page of instances.")
class InstanceConnection:
    edges: list[InstanceEdge] = strawberry.field(description="The instances with their cursors.")
    nodes: list[InstanceType] = strawberry.field(description="The instances.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
    total_count: int = strawberry.field(description="Instances in the whole list.")


def order_connection(page: Page[Order]) -> OrderConnection:
    return build_connection(OrderConnection, OrderEdge, page, OrderType.of)


def instance_connection(page: Page[Instance]) -> InstanceConnection:
    return build_connection(InstanceConnection, InstanceEdge, page, InstanceType.of)


@strawberry.input(name="OrderFilter", description="Narrow the order list; all given filters apply.")
class OrderFilter:
    status: OrderStatusEnum | None = strawberry.field(default=None, description="Only orders in this state.")
    member_id: strawberry.ID | None = strawberry.field(default=None, description="Only this member's orders.")
    product_type: ProductTypeEnum | None = strawberry.field(default=None, description="Only this product.")

    def to_service(self) -> order_service.OrderFilter:
        return order_service.OrderFilter(
            status=self.status,
            member_id=None if self.member_id is None else str(self.member_id),
            product_type=self.product_type,
        )


@strawberry.type(name="RetryProvisioningSuccess", description="The order is queued for provisioning again.")
class RetryProvisioningSuccess:
    order: OrderType = strawberry.field(description="The order, PENDING again.")


@strawberry.type(
    name="CancelOrderSuccess", description="The order is cancelled and its card is UNUSED again."
)
class CancelOrderSuccess:
    order: OrderType = strawberry.field(description="The cancelled order.")


RetryProvisioningResult = Annotated[
    RetryProvisioningSuccess | NotFoundErrorType | InvalidStateErrorType,
    strawberry.union("RetryProvisioningResult", description="The re-queued order, or why it cannot be."),
]
CancelOrderResult = Annotated[
    CancelOrderSuccess | NotFoundErrorType | InvalidStateErrorType,
    strawberry.union("CancelOrderResult", description="The cancelled order, or why it cannot be."),
]
