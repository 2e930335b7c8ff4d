"""Recording admin writes (RULES §8): who, when, from where, and the values before and after.

Each kind of write is one small event type: its action and entity names are written once, here,
and its values are typed where the write is made. No event carries a code, a password or a hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models import AuditEntry, BatchStatus, CardExportFormat, CardStatus, OrderStatus, Role
from services.runtime import Caller, Runtime


@dataclass(frozen=True)
class AuditEvent:
    """One admin write. Subclasses name their `action` and `entity` and say what changed."""

    action: ClassVar[str]
    entity: ClassVar[str]

    @property
    def entity_id(self) -> object:
        raise NotImplementedError

    def old(self) -> dict[str, Any] | None:
        return None

    def new(self) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True)
class BatchCreated(AuditEvent):
    action = "batch.create"
    entity = "batch"
    batch_id: int
    view: dict[str, Any]

    @property
    def entity_id(self) -> object:
        return self.batch_id

    def new(self) -> dict[str, Any]:
        return self.view


@dataclass(frozen=True)
class BatchStatusSet(AuditEvent):
    action = "batch.set_status"
    entity = "batch"
    batch_id: int
    before: BatchStatus
    after: BatchStatus

    @property
    def entity_id(self) -> object:
        return self.batch_id

    def old(self) -> dict[str, Any]:
        return {"status": self.before.value}

    def new(self) -> dict[str, Any]:
        return {"status": self.after.value}


@dataclass(frozen=True)
class BatchDownloadCreated(AuditEvent):
    """A download link: of the whole batch as TXT (as before), or of a range in a format."""

    action = "batch.create_download"
    entity = "batch"
    batch_id: int
    download_id: int
    expires_at: datetime
    from_seq: int | None = None
    to_seq: int | None = None
    format: CardExportFormat = CardExportFormat.TXT

    @property
    def entity_id(self) -> object:
        return self.batch_id

    def new(self) -> dict[str, Any]:
        view: dict[str, Any] = {"downloadId": self.download_id, "expiresAt": self.expires_at.isoformat()}
        if self.from_seq is not None:
            view.update(fromSeq=self.from_seq, toSeq=self.to_seq, format=self.format.value)
        return view


@dataclass(frozen=True)
class BatchExtended(AuditEvent):
    action = "batch.extend"
    entity = "batch"
    batch_id: int
    before: date
    after: date

    @property
    def entity_id(self) -> object:
        return self.batch_id

    def old(self) -> dict[str, Any]:
        return {"validUntil": self.before.isoformat()}

    def new(self) -> dict[str, Any]:
        return {"validUntil": self.after.isoformat()}


@dataclass(frozen=True)
class CardRangeStatusSet(AuditEvent):
    """`setCardRangeStatus`: one entry for the whole range, with how many cards changed."""

    action = "card.set_range_status"
    entity = "batch"
    batch_id: int
    from_seq: int
    to_seq: int
    before: CardStatus
    after: CardStatus
    changed: int

    @property
    def entity_id(self) -> object:
        return self.batch_id

    def old(self) -> dict[str, Any]:
        return {"status": self.before.value}

    def new(self) -> dict[str, Any]:
        return {
            "fromSeq": self.from_seq,
            "toSeq": self.to_seq,
            "status": self.after.value,
            "changed": self.changed,
        }


@dataclass(frozen=True)
class CardsAssigned(AuditEvent):
    """`assignCardsToChannel`: one entry for the whole range, with how many cards moved from where
    (`from` maps a channel id, or "none", to the cards taken from it)."""

    action = "card.assign_channel"
    entity = "batch"
    batch_id: int
    from_seq: int
    to_seq: int
    channel_id: int | None
    assigned: int
    taken_from: dict[str, int]

    @property
    def entity_id(self) -> object:
        return self.batch_id

    def old(self) -> dict[str, Any]:
        return {"channels": self.taken_from}

    def new(self) -> dict[str, Any]:
        return {
            "fromSeq": self.from_seq,
            "toSeq": self.to_seq,
            "channelId": None if self.channel_id is None else str(self.channel_id),
            "assigned": self.assigned,
        }


@dataclass(frozen=True)
class ChannelCreated(AuditEvent):
    action = "channel.create"
    entity = "channel"
    channel_id: int
    name: str
    remark: str | None

    @property
    def entity_id(self) -> object:
        return self.channel_id

    def new(self) -> dict[str, Any]:
        return {"name": self.name, "remark": self.remark}


@dataclass(frozen=True)
class ChannelUpdated(AuditEvent):
    """`updateChannel`: the fields that changed, before and after."""

    action = "channel.update"
    entity = "channel"
    channel_id: int
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def entity_id(self) -> object:
        return self.channel_id

    def old(self) -> dict[str, Any]:
        return self.before

    def new(self) -> dict[str, Any]:
        return self.after


@dataclass(frozen=True)
class CardStatusSet(AuditEvent):
    action = "card.set_status"
    entity = "card"
    card_id: int
    before: CardStatus
    after: CardStatus

    @property
    def entity_id(self) -> object:
        return self.card_id

    def old(self) -> dict[str, Any]:
        return {"status": self.before.value}

    def new(self) -> dict[str, Any]:
        return {"status": self.after.value}


@dataclass(frozen=True)
class CardRemarkSet(AuditEvent):
    action = "card.set_remark"
    entity = "card"
    card_id: int
    before: str | None
    after: str | None

    @property
    def entity_id(self) -> object:
        return self.card_id

    def old(self) -> dict[str, Any]:
        return {"remark": self.before}

    def new(self) -> dict[str, Any]:
        return {"remark": self.after}


@dataclass(frozen=True)
class ProvisioningRetried(AuditEvent):
    action = "order.retry_provisioning"
    entity = "order"
    order_id: int
    before: OrderStatus
    failure_reason: str | None

    @property
    def entity_id(self) -> object:
        return self.order_id

    def old(self) -> dict[str, Any]:
        return {"status": self.before.value, "failure_reason": self.failure_reason}

    def new(self) -> dict[str, Any]:
        return {"status": OrderStatus.PENDING.value, "failure_reason": None}


@dataclass(frozen=True)
class OrderCancelled(AuditEvent):
    action = "order.cancel"
    entity = "order"
    order_id: int
    card_id: int

    @property
    def entity_id(self) -> object:
        return self.order_id

    def old(self) -> dict[str, Any]:
        return {
            "status": OrderStatus.FAILED.value,
            "card_id": self.card_id,
            "card_status": CardStatus.USED.value,
        }

    def new(self) -> dict[str, Any]:
        return {
            "status": OrderStatus.CANCELLED.value,
            "card_id": self.card_id,
            "card_status": CardStatus.UNUSED.value,
        }


@dataclass(frozen=True)
class _TokenVersionChange(AuditEvent):
    entity = "user"
    user_id: int
    old_version: int
    new_version: int

    @property
    def entity_id(self) -> object:
        return self.user_id

    def old(self) -> dict[str, Any]:
        return {"token_version": self.old_version}

    def new(self) -> dict[str, Any]:
        return {"token_version": self.new_version}


@dataclass(frozen=True)
class PasswordSet(_TokenVersionChange):
    """`tihuo users passwd`: a password set by the operator."""

    action = "user.set_password"


@dataclass(frozen=True)
class PasswordChanged(_TokenVersionChange):
    """`changePassword`: a user's own new password."""

    action = "user.change_password"


@dataclass(frozen=True)
class UserDisabled(_TokenVersionChange):
    action = "user.disable"

    def old(self) -> dict[str, Any]:
        return {"disabled": False, **super().old()}

    def new(self) -> dict[str, Any]:
        return {"disabled": True, **super().new()}


@dataclass(frozen=True)
class UserEnabled(AuditEvent):
    action = "user.enable"
    entity = "user"
    user_id: int

    @property
    def entity_id(self) -> object:
        return self.user_id

    def old(self) -> dict[str, Any]:
        return {"disabled": True}

    def new(self) -> dict[str, Any]:
        return {"disabled": False}


@dataclass(frozen=True)
class PortalRoleSet(AuditEvent):
    """A portal sign-in whose role claim made a user an admin, or stopped doing so (RULES-v2 §1):
    who holds admin rights is an admin matter even when the portal decides it. `before` is None
    for a user made by this sign-in."""

    action = "user.set_role_from_portal"
    entity = "user"
    user_id: int
    before: Role | None
    after: Role

    @property
    def entity_id(self) -> object:
        return self.user_id

    def old(self) -> dict[str, Any] | None:
        return None if self.before is None else {"role": self.before.value}

    def new(self) -> dict[str, Any]:
        return {"role": self.after.value}


@dataclass(frozen=True)
class WebhookEndpointCreated(AuditEvent):
    """`createWebhookEndpoint`: the endpoint as saved (never its secret)."""

    action = "webhook.create"
    entity = "webhook_endpoint"
    endpoint_id: int
    view: dict[str, Any]

    @property
    def entity_id(self) -> object:
        return self.endpoint_id

    def new(self) -> dict[str, Any]:
        return self.view


@dataclass(frozen=True)
class WebhookEndpointUpdated(AuditEvent):
    """`updateWebhookEndpoint`: the fields that changed, before and after."""

    action = "webhook.update"
    entity = "webhook_endpoint"
    endpoint_id: int
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def entity_id(self) -> object:
        return self.endpoint_id

    def old(self) -> dict[str, Any]:
        return self.before

    def new(self) -> dict[str, Any]:
        return self.after


@dataclass(frozen=True)
class WebhookEndpointDeleted(AuditEvent):
    action = "webhook.delete"
    entity = "webhook_endpoint"
    endpoint_id: int
    view: dict[str, Any]

    @property
    def entity_id(self) -> object:
        return self.endpoint_id

    def old(self) -> dict[str, Any]:
        return self.view


@dataclass(frozen=True)
class WebhookSecretRotated(AuditEvent):
    """`rotateWebhookEndpointSecret`: when the previous secret stops signing (the secrets are never
    recorded)."""

    action = "webhook.rotate_secret"
    entity = "webhook_endpoint"
    endpoint_id: int
    previous_until: datetime

    @property
    def entity_id(self) -> object:
        return self.endpoint_id

    def new(self) -> dict[str, Any]:
        return {"previousSecretSignsUntil": self.previous_until.isoformat()}


@dataclass(frozen=True)
class WebhookRedelivered(AuditEvent):
    """`redeliverWebhook`: the same message queued again as a new delivery."""

    action = "webhook.redeliver"
    entity = "webhook_delivery"
    delivery_id: int
    new_delivery_id: int
    message_id: str

    @property
    def entity_id(self) -> object:
        return self.delivery_id

    def new(self) -> dict[str, Any]:
        return {"deliveryId": str(self.new_delivery_id), "messageId": self.message_id}


async def record(session: AsyncSession, rt: Runtime, caller: Caller, event: AuditEvent) -> None:
    """Add the event's row inside the caller's transaction, so the change and its record commit
    together."""
    entity_id = event.entity_id
    await session.execute(
        insert(AuditEntry).values(
            actor_id=caller.viewer.id if caller.viewer else None,
            action=event.action,
            entity=event.entity,
            entity_id=None if entity_id is None else str(entity_id),
            old=event.old(),
            new=event.new(),
            client_address=caller.client_address,
            request_id=caller.request_id,
            at=rt.now(),
        )
    )
