"""Card batches and cards: lists, creation, status changes, remarks, download links."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from schema.cards import (
    DOWNLOAD_PASSWORD,
    CardBatchConnection,
    CardBatchDownloadType,
    CardBatchFilter,
    CardBatchType,
    CardType,
    CreateCardBatchInput,
    CreateCardBatchSuccess,
    SetCardBatchStatusSuccess,
    SetCardRemarkSuccess,
    SetCardStatusSuccess,
    batch_connection,
)
from schema.common import CardBatchStatusEnum, CardStatusEnum
from schema.pagination import After, First, Offset
from services import cards, downloads

ID = Annotated[strawberry.ID, strawberry.argument(description="The object's id.")]


async def card_batches(
    info: Info,
    filter: Annotated[CardBatchFilter | None, strawberry.argument(description="Narrow the list.")] = None,
    first: First = 20,
    after: After = None,
    offset: Offset = None,
) -> CardBatchConnection:
    ctx = info.context
    wanted = filter.to_service() if filter else cards.BatchFilter()
    page = await cards.list_batches(ctx.rt, ctx.caller, wanted, first=first, after=after, offset=offset)
    return batch_connection(page)


async def card_batch(info: Info, id: ID) -> CardBatchType | None:
    ctx = info.context
    batch = await cards.get_batch(ctx.rt, ctx.caller, str(id))
    return None if batch is None else CardBatchType.of(batch)


async def create_card_batch(
    info: Info, input: Annotated[CreateCardBatchInput, strawberry.argument(description="The new batch.")]
) -> CreateCardBatchSuccess:
    ctx = info.context
    batch = await cards.create_batch(ctx.rt, ctx.caller, input.to_service())
    return CreateCardBatchSuccess(batch=CardBatchType.of(batch))


async def set_card_batch_status(
    info: Info,
    id: ID,
    status: Annotated[CardBatchStatusEnum, strawberry.argument(description="ACTIVE or DISABLED.")],
) -> SetCardBatchStatusSuccess:
    ctx = info.context
    batch = await cards.set_batch_status(ctx.rt, ctx.caller, str(id), status)
    return SetCardBatchStatusSuccess(batch=CardBatchType.of(batch))


async def set_card_status(
    info: Info,
    id: ID,
    status: Annotated[CardStatusEnum, strawberry.argument(description="UNUSED or DISABLED.")],
) -> SetCardStatusSuccess:
    ctx = info.context
    return SetCardStatusSuccess(
        card=CardType.of(await cards.set_card_status(ctx.rt, ctx.caller, str(id), status))
    )


async def set_card_remark(
    info: Info,
    id: ID,
    remark: Annotated[str, strawberry.argument(description="At most 500 characters; empty clears it.")],
) -> SetCardRemarkSuccess:
    ctx = info.context
    return SetCardRemarkSuccess(
        card=CardType.of(await cards.set_card_remark(ctx.rt, ctx.caller, str(id), remark))
    )


async def create_card_batch_download(
    info: Info,
    batch_id: Annotated[strawberry.ID, strawberry.argument(description="The batch.")],
    password: Annotated[str, strawberry.argument(description=DOWNLOAD_PASSWORD)],
) -> CardBatchDownloadType:
    ctx = info.context
    link = await downloads.create_download(ctx.rt, ctx.caller, str(batch_id), password)
    # from TIHUO_PUBLIC_URL, never from the request's Host header (which the client chooses)
    base = ctx.rt.settings.public_url or "/"
    return CardBatchDownloadType(url=f"{base}downloads/{link.token}", expires_at=link.expires_at)
