"""Enums shared by every part of the schema (the models' enums, exposed under the contract's names)."""

from __future__ import annotations

import strawberry

from models import BatchStatus, CardStatus, OrderStatus, OsFamily, ProductType, Role

ProductTypeEnum = strawberry.enum(
    ProductType,
    name="ProductType",
    description="What a card can give (R1): a cloud server, a cloud virtual host or a bare-metal server.",
)
OsFamilyEnum = strawberry.enum(OsFamily, name="OsFamily", description="Operating system family of an image.")
RoleEnum = strawberry.enum(Role, name="Role", description="ADMIN runs the back office; MEMBER redeems cards.")
CardBatchStatusEnum = strawberry.enum(
    BatchStatus, name="CardBatchStatus", description="A DISABLED batch's cards cannot be redeemed."
)
CardStatusEnum = strawberry.enum(
    CardStatus, name="CardStatus", description="UNUSED cards can be redeemed once; USED and DISABLED cannot."
)
OrderStatusEnum = strawberry.enum(
    OrderStatus,
    name="OrderStatus",
    description="PENDING → PROVISIONING → ACTIVE, or FAILED (then retried, or CANCELLED by an admin).",
)
