"""SQLAlchemy 2 mapped classes, one module per domain; importing this package registers them all."""

from models.accounts import AttemptCounter, ExternalIdentity, User
from models.audit import AuditEntry
from models.base import (
    AttemptOutcome,
    Base,
    BatchStatus,
    CardExportFormat,
    CardStatus,
    JobStatus,
    OrderStatus,
    OsFamily,
    ProductType,
    Role,
)
from models.cards import Card, CardBatch, CardBatchDownload
from models.catalog import HostingPlan, Line, OsImage, ProductModel, Region, line_os_images
from models.orders import Instance, Order, ProvisioningAttempt, ProvisioningJob
from models.programme import (
    PROGRAMME_SHARDS,
    BatchRedemptionDay,
    Channel,
    ChannelShare,
    MemberBatchRedemptions,
    ProgrammeRedemptionDay,
)
from models.redemption import IdempotencyKey, Redemption
from models.simulated import SimulatedServer
from models.webhooks import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookMessage,
    WebhookSubscription,
)

__all__ = [
    "PROGRAMME_SHARDS",
    "AttemptCounter",
    "AttemptOutcome",
    "AuditEntry",
    "Base",
    "BatchRedemptionDay",
    "BatchStatus",
    "Card",
    "CardBatch",
    "CardBatchDownload",
    "CardExportFormat",
    "CardStatus",
    "Channel",
    "ChannelShare",
    "DeliveryStatus",
    "ExternalIdentity",
    "HostingPlan",
    "IdempotencyKey",
    "Instance",
    "JobStatus",
    "Line",
    "MemberBatchRedemptions",
    "Order",
    "OrderStatus",
    "OsFamily",
    "OsImage",
    "ProductModel",
    "ProductType",
    "ProgrammeRedemptionDay",
    "ProvisioningAttempt",
    "ProvisioningJob",
    "Redemption",
    "Region",
    "Role",
    "SimulatedServer",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookMessage",
    "WebhookSubscription",
    "line_os_images",
]
