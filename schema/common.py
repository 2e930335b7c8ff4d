"""Enums shared by every part of the schema (the models' enums, exposed under the contract's names),
each value with its description: GraphiQL is where developers learn what a value means."""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable
from functools import cache
from typing import Any

import strawberry

from models import AttemptOutcome, BatchStatus, CardStatus, OrderStatus, OsFamily, ProductType, Role


def described_enum(members: type[enum.Enum], *, name: str, description: str, values: dict[Any, str]) -> Any:
    """`members` as the GraphQL enum `name`, with a description for each of its values (all of them,
    or this fails at import: a new value cannot slip in undescribed)."""
    missing = [member.name for member in members if member not in values]
    if missing:
        raise ValueError(f"{name}: no description for {', '.join(missing)}")
    wrapped = strawberry.enum(members, name=name, description=description)
    for value in wrapped.__strawberry_definition__.values:
        value.description = values[members[value.name]]
    return wrapped


ProductTypeEnum = described_enum(
    ProductType,
    name="ProductType",
    description="What a card can give (R1): a cloud server, a cloud virtual host or a bare-metal server.",
    values={
        ProductType.CLOUD_SERVER: "A cloud server (云服务器): CPU, memory, disk, bandwidth, defense.",
        ProductType.VIRTUAL_HOST: "A cloud virtual host (云虚拟主机): a hosting plan; no OS choice.",
        ProductType.BARE_METAL: "A bare-metal server (裸金属服务器): a product model with fixed hardware and stock.",
    },
)
OsFamilyEnum = described_enum(
    OsFamily,
    name="OsFamily",
    description="Operating system family of an image.",
    values={
        OsFamily.LINUX: "A Linux image; cards are priced at the Linux price.",
        OsFamily.WINDOWS: "A Windows image; a card redeemed with it costs the member nothing extra (R2).",
    },
)
RoleEnum = described_enum(
    Role,
    name="Role",
    description="ADMIN runs the back office; MEMBER redeems cards.",
    values={
        Role.ADMIN: "Runs the back office: catalog quotes, batches, cards, downloads, orders, the usage log.",
        Role.MEMBER: "A customer of the portal: previews and redeems cards, sees their own orders and products.",
    },
)
CardBatchStatusEnum = described_enum(
    BatchStatus,
    name="CardBatchStatus",
    description="A DISABLED batch's cards cannot be redeemed.",
    values={
        BatchStatus.ACTIVE: "正常: its cards can be redeemed (each as its own status allows).",
        BatchStatus.DISABLED: "禁用: none of its cards can be redeemed until it is enabled again.",
    },
)
CardStatusEnum = described_enum(
    CardStatus,
    name="CardStatus",
    description="UNUSED cards can be redeemed once; USED and DISABLED cannot.",
    values={
        CardStatus.UNUSED: "Not redeemed yet; redeemable while its batch is active and valid.",
        CardStatus.USED: "Redeemed: void for ever (R3), unless an admin cancels its failed order.",
        CardStatus.DISABLED: "Disabled by an admin; cannot be redeemed until enabled again.",
    },
)
OrderStatusEnum = described_enum(
    OrderStatus,
    name="OrderStatus",
    description="PENDING → PROVISIONING → ACTIVE, or FAILED (then retried, or CANCELLED by an admin).",
    values={
        OrderStatus.PENDING: "Placed by the redemption; waiting for a provisioning worker.",
        OrderStatus.PROVISIONING: "Being opened on the platform: a worker's call, or the platform's task it accepted.",
        OrderStatus.ACTIVE: "The product is open; the member was sent the login by SMS.",
        OrderStatus.FAILED: "Opening failed (refused, or retries spent); an admin may retry or cancel it.",
        OrderStatus.CANCELLED: "Cancelled by an admin after a failure; its card is UNUSED again.",
    },
)
ProvisioningAttemptOutcomeEnum = described_enum(
    AttemptOutcome,
    name="ProvisioningAttemptOutcome",
    description="How one call to the provisioning platform, or one answer from it, ended.",
    values={
        AttemptOutcome.DONE: "The platform reported the product open.",
        AttemptOutcome.ACCEPTED: "The platform took the request and is working on it (externalTaskId set).",
        AttemptOutcome.REFUSED: "A definite no (4xx, or the task ended in failure).",
        AttemptOutcome.TRANSIENT: "Timeout, connection error, 5xx: retried.",
        AttemptOutcome.LEASE_LOST: "The worker died or lost its lease; another took over.",
        AttemptOutcome.CANCELLED: "An admin cancelled the order and the platform dropped its task (DELETE).",
    },
)


def later(module: str, name: str) -> Callable[[], Any]:
    """The class `name` of `module`, looked up when first called: for the one link from a type to a
    type of a domain above it (a card's order), which an import would turn into a cycle. Its
    annotation says the same lazily, with `strawberry.lazy(module)`."""

    @cache
    def find() -> Any:
        return getattr(importlib.import_module(module), name)

    return find
