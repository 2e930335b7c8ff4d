"""Running a card programme in the schema (RULES-v2 §5): ranges of cards, export formats, and the
results of the writes on them and on channels."""

from __future__ import annotations

from typing import Annotated

import strawberry

from models import CardExportFormat
from schema.cards import CardBatchType
from schema.channels import ChannelType
from schema.common import described_enum
from schema.errors import InvalidInputErrorType, NotFoundErrorType
from services.card_ranges import CardRange

CardExportFormatEnum = described_enum(
    CardExportFormat,
    name="CardExportFormat",
    description="The file a download link gives.",
    values={
        CardExportFormat.TXT: "As before: one code per line, XXXX-XXXX-XXXX-XXXX.",
        CardExportFormat.CSV: "seq, code, status, channel, remark; UTF-8 with a header row.",
        CardExportFormat.PDF: "A printable A4 sheet: each card with its code as text and as a QR code.",
    },
)


@strawberry.input(
    name="CardRange", description="A contiguous run of one batch's cards, by seq (both ends included)."
)
class CardRangeInput:
    batch_id: strawberry.ID = strawberry.field(description="The batch.")
    from_seq: int = strawberry.field(description="The first card's seq, 1 or more.")
    to_seq: int = strawberry.field(description="The last card's seq, up to the batch's quantity.")

    def to_service(self) -> CardRange:
        return CardRange(batch_id=str(self.batch_id), from_seq=self.from_seq, to_seq=self.to_seq)


@strawberry.type(name="ChannelSuccess", description="The channel as saved.")
class ChannelSuccess:
    channel: ChannelType = strawberry.field(description="The channel.")


@strawberry.type(name="AssignCardsSuccess", description="The cards are in the channel.")
class AssignCardsSuccess:
    assigned: int = strawberry.field(
        description="Cards that moved (used ones and those already there are not counted)."
    )
    channel: ChannelType | None = strawberry.field(
        description="The channel; null: the cards are in none now."
    )


@strawberry.type(name="SetCardRangeStatusSuccess", description="The range's cards have the asked status.")
class SetCardRangeStatusSuccess:
    changed: int = strawberry.field(
        description="Cards whose status changed (used ones are left alone and not counted)."
    )
    batch: CardBatchType = strawberry.field(description="The batch, with its counters after the change.")


@strawberry.type(name="ExtendCardBatchSuccess", description="The batch has its new validUntil.")
class ExtendCardBatchSuccess:
    batch: CardBatchType = strawberry.field(description="The batch.")


CreateChannelResult = Annotated[
    ChannelSuccess | InvalidInputErrorType,
    strawberry.union("CreateChannelResult", description="The new channel, or why it was not made."),
]
UpdateChannelResult = Annotated[
    ChannelSuccess | NotFoundErrorType | InvalidInputErrorType,
    strawberry.union("UpdateChannelResult", description="The channel, or why it was not changed."),
]
AssignCardsResult = Annotated[
    AssignCardsSuccess | NotFoundErrorType | InvalidInputErrorType,
    strawberry.union("AssignCardsResult", description="How many cards moved, or why none did."),
]
SetCardRangeStatusResult = Annotated[
    SetCardRangeStatusSuccess | NotFoundErrorType | InvalidInputErrorType,
    strawberry.union("SetCardRangeStatusResult", description="How many cards changed, or why none did."),
]
ExtendCardBatchResult = Annotated[
    ExtendCardBatchSuccess | NotFoundErrorType | InvalidInputErrorType,
    strawberry.union("ExtendCardBatchResult", description="The batch, or why its validity did not move."),
]
