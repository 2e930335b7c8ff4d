"""Running a card programme: channels, work on ranges of cards, figures, the audit trail, range
downloads."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import strawberry
from strawberry.types import Info

from schema.audit import AuditEntryConnection, AuditFilter, audit_connection
from schema.cards import DOWNLOAD_PASSWORD, CardBatchDownloadType, CardBatchType
from schema.channels import ChannelType
from schema.common import CardStatusEnum
from schema.figures import CardProgrammeStatsType
from schema.pagination import After, First, Offset
from schema.programme import (
    AssignCardsSuccess,
    CardExportFormatEnum,
    CardRangeInput,
    ChannelSuccess,
    ExtendCardBatchSuccess,
    SetCardRangeStatusSuccess,
)
from services import audit_log, card_ranges, channels, downloads, figures

Range = Annotated[CardRangeInput, strawberry.argument(description="The cards, by seq.")]


async def channel_list(info: Info) -> list[ChannelType]:
    ctx = info.context
    return [ChannelType.of(view) for view in await channels.list_channels(ctx.rt, ctx.caller)]


async def card_programme_stats(info: Info) -> CardProgrammeStatsType:
    ctx = info.context
    return CardProgrammeStatsType.of(await figures.programme_stats(ctx.rt, ctx.caller))


async def audit_entries(
    info: Info,
    filter: Annotated[AuditFilter | None, strawberry.argument(description="Narrow the trail.")] = None,
    first: First = 20,
    after: After = None,
    offset: Offset = None,
) -> AuditEntryConnection:
    ctx = info.context
    wanted = filter.to_service() if filter else audit_log.AuditFilter()
    page = await audit_log.list_entries(ctx.rt, ctx.caller, wanted, first=first, after=after, offset=offset)
    return audit_connection(page)


async def create_channel(
    info: Info,
    name: Annotated[str, strawberry.argument(description="1–100 characters, unique.")],
    remark: Annotated[str | None, strawberry.argument(description="At most 500 characters.")] = None,
) -> ChannelSuccess:
    ctx = info.context
    return ChannelSuccess(
        channel=ChannelType.of(await channels.create_channel(ctx.rt, ctx.caller, name, remark))
    )


async def update_channel(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(description="The channel.")],
    name: Annotated[str | None, strawberry.argument(description="A new name; unchanged when absent.")] = None,
    remark: Annotated[
        str | None, strawberry.argument(description="A new remark; empty clears it; unchanged when absent.")
    ] = None,
) -> ChannelSuccess:
    ctx = info.context
    view = await channels.update_channel(ctx.rt, ctx.caller, str(id), name, remark)
    return ChannelSuccess(channel=ChannelType.of(view))


async def assign_cards_to_channel(
    info: Info,
    range: Range,
    channel_id: Annotated[
        strawberry.ID | None,
        strawberry.argument(description="The channel; null: take the cards out of theirs."),
    ] = None,
) -> AssignCardsSuccess:
    ctx = info.context
    done = await card_ranges.assign_range(
        ctx.rt, ctx.caller, range.to_service(), None if channel_id is None else str(channel_id)
    )
    channel = None
    if done.channel_id is not None:
        [view] = (await channels.channels_by_ids(ctx.rt, [done.channel_id])).values()
        channel = ChannelType.of(view)
    return AssignCardsSuccess(assigned=done.assigned, channel=channel)


async def set_card_range_status(
    info: Info,
    range: Range,
    status: Annotated[CardStatusEnum, strawberry.argument(description="UNUSED or DISABLED.")],
) -> SetCardRangeStatusSuccess:
    ctx = info.context
    changed, batch = await card_ranges.set_range_status(ctx.rt, ctx.caller, range.to_service(), status)
    return SetCardRangeStatusSuccess(changed=changed, batch=CardBatchType.of(batch))


async def extend_card_batch(
    info: Info,
    id: Annotated[strawberry.ID, strawberry.argument(description="The batch.")],
    valid_until: Annotated[date, strawberry.argument(description="The new last day; today or later.")],
) -> ExtendCardBatchSuccess:
    ctx = info.context
    batch = await card_ranges.extend_batch(ctx.rt, ctx.caller, str(id), valid_until)
    return ExtendCardBatchSuccess(batch=CardBatchType.of(batch))


async def create_card_range_download(
    info: Info,
    range: Range,
    password: Annotated[str, strawberry.argument(description=DOWNLOAD_PASSWORD)],
    format: Annotated[
        CardExportFormatEnum | None, strawberry.argument(description="TXT, CSV or PDF; TXT when null.")
    ] = CardExportFormatEnum.TXT,
) -> CardBatchDownloadType:
    ctx = info.context
    wanted = range.to_service()
    link = await downloads.create_download(
        ctx.rt,
        ctx.caller,
        wanted.batch_id,
        password,
        wanted=wanted,
        format=format or CardExportFormatEnum.TXT,
    )
    base = ctx.rt.settings.public_url or "/"
    return CardBatchDownloadType(url=f"{base}downloads/{link.token}", expires_at=link.expires_at)
