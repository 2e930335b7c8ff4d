"""The audit trail in the schema: entries, their connection and the filter."""

from __future__ import annotations

from datetime import date, datetime

import strawberry

from schema.pagination import PageInfo, build_connection
from services import audit_log
from services.paging import Page


@strawberry.type(
    name="AuditEntry", description="One admin write: who, when, from where, and the values before and after."
)
class AuditEntryType:
    id: strawberry.ID = strawberry.field(description="The entry's id.")
    at: datetime = strawberry.field(description="When.")
    actor_id: strawberry.ID | None = strawberry.field(description="Who (null: the operator's command line).")
    actor_name: str | None = strawberry.field(description="Their username.")
    action: str = strawberry.field(
        description='What, e.g. "batch.create", "card.set_status", "channel.update".'
    )
    entity: str = strawberry.field(description='The kind of object, e.g. "batch", "card", "channel".')
    entity_id: str | None = strawberry.field(description="Its id.")
    old_values: str | None = strawberry.field(
        description="The values before, as JSON; never a code or a password."
    )
    new_values: str | None = strawberry.field(
        description="The values after, as JSON; never a code or a password."
    )
    client_address: str | None = strawberry.field(description="The address the request came from.")
    request_id: str | None = strawberry.field(description="The request's id, as in the logs.")

    @classmethod
    def of(cls, view: audit_log.AuditView) -> AuditEntryType:
        return cls(
            id=strawberry.ID(str(view.id)),
            at=view.at,
            actor_id=None if view.actor_id is None else strawberry.ID(str(view.actor_id)),
            actor_name=view.actor_name,
            action=view.action,
            entity=view.entity,
            entity_id=view.entity_id,
            old_values=view.old_values,
            new_values=view.new_values,
            client_address=view.client_address,
            request_id=view.request_id,
        )


@strawberry.type(name="AuditEntryEdge", description="An entry in a list, with its cursor.")
class AuditEntryEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this entry.")
    node: AuditEntryType = strawberry.field(description="The entry.")


@strawberry.type(name="AuditEntryConnection", description="A page of audit entries.")
class AuditEntryConnection:
    edges: list[AuditEntryEdge] = strawberry.field(description="The entries with their cursors.")
    nodes: list[AuditEntryType] = strawberry.field(description="The entries.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
    total_count: int = strawberry.field(description="Entries in the whole filtered list.")


def audit_connection(page: Page[audit_log.AuditView]) -> AuditEntryConnection:
    return build_connection(AuditEntryConnection, AuditEntryEdge, page, AuditEntryType.of)


@strawberry.input(name="AuditFilter", description="Narrow the audit trail; all given filters apply.")
class AuditFilter:
    action: str | None = strawberry.field(
        default=None, description='Exactly this action, e.g. "batch.create".'
    )
    entity: str | None = strawberry.field(
        default=None, description='Exactly this kind of object, e.g. "batch".'
    )
    entity_id: str | None = strawberry.field(default=None, description="Exactly this object's id.")
    actor_id: strawberry.ID | None = strawberry.field(default=None, description="Only this admin's writes.")
    from_: date | None = strawberry.field(
        default=None, name="from", description="From this day (business time zone), inclusive."
    )
    to: date | None = strawberry.field(
        default=None, description="To this day (business time zone), inclusive."
    )

    def to_service(self) -> audit_log.AuditFilter:
        return audit_log.AuditFilter(
            action=self.action,
            entity=self.entity,
            entity_id=self.entity_id,
            actor_id=None if self.actor_id is None else str(self.actor_id),
            from_day=self.from_,
            to_day=self.to,
        )
