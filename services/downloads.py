"""Downloading a batch's codes (F5, RULES §6, RULES-v2 §5): the admin's own password re-checked, a
single-use link valid for minutes, the codes of the batch or of a range of it decrypted and streamed
in chunks as TXT, CSV or a printable PDF sheet, and every download recorded with its SHA-256."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update

from core.ids import parse_id
from core.sql import Codec, Plan, Sql
from models import Card, CardBatch, CardBatchDownload, CardExportFormat, Channel, WebhookEvent
from services import accounts, audit, codes
from services import webhook_outbox as outbox
from services.card_ranges import CardRange, checked_range
from services.card_sheet import SheetCard, SheetWriter
from services.errors import NotFound
from services.runtime import Caller, Runtime

log = logging.getLogger("tihuo.downloads")
CHUNK = 5000


@dataclass(frozen=True)
class DownloadLink:
    token: str
    expires_at: datetime


MEDIA_TYPES = {
    CardExportFormat.TXT: "text/plain; charset=utf-8",
    CardExportFormat.CSV: "text/csv; charset=utf-8; header=present",
    CardExportFormat.PDF: "application/pdf",
}
CSV_HEADER = ("seq", "code", "status", "channel", "remark")
# a spreadsheet would run a cell starting with one of these as a formula (OWASP: CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# PDF: cards drawn per hand-off to a thread (50 pages)
SHEET_CHUNK = 500


@dataclass(frozen=True)
class ClaimedDownload:
    download_id: int
    batch_id: int
    batch_no: str
    from_seq: int | None = None
    to_seq: int | None = None
    format: CardExportFormat = CardExportFormat.TXT
    valid_until: date | None = None
    quantity: int | None = None

    @property
    def whole_batch(self) -> bool:
        return self.from_seq is None or (self.from_seq == 1 and self.to_seq == self.quantity)

    @property
    def filename(self) -> str:
        extension = self.format.value.lower()
        if self.whole_batch:
            return f"cards-{self.batch_no}.{extension}"
        return f"cards-{self.batch_no}-{self.from_seq}-{self.to_seq}.{extension}"

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]


def _token_hash(rt: Runtime, token: str) -> bytes:
    return hmac.new(rt.keys.download, token.encode(), hashlib.sha256).digest()


async def create_download(
    rt: Runtime,
    caller: Caller,
    batch_id: str,
    password: str,
    *,
    wanted: CardRange | None = None,
    format: CardExportFormat = CardExportFormat.TXT,
) -> DownloadLink:
    """`createCardBatchDownload` (the whole batch as TXT) and `createCardRangeDownload` (a range, in
    a format): codes are money, so the admin confirms their own password first."""
    caller.require_admin()
    format = CardExportFormat(format)
    parsed = parse_id(batch_id)
    async with rt.db.read() as session:
        batch = None if parsed is None else await session.get(CardBatch, parsed)
    if batch is None:
        raise NotFound()
    if wanted is not None:
        # a bad range is refused before the password is tried, so a slip costs no attempt
        checked_range(batch, wanted)
    await accounts.confirm_own_password(rt, caller, password)
    token = secrets.token_urlsafe(32)
    expires_at = (rt.now() + timedelta(seconds=rt.settings.download_ttl_seconds)).replace(microsecond=0)
    from_seq, to_seq = (None, None) if wanted is None else (wanted.from_seq, wanted.to_seq)
    async with rt.db.write() as session:
        download = CardBatchDownload(
            batch_id=batch.id,
            admin_id=caller.require_admin().id,
            token_hash=_token_hash(rt, token),
            client_address=caller.client_address,
            created_at=rt.now(),
            expires_at=expires_at,
            from_seq=from_seq,
            to_seq=to_seq,
            format=format,
        )
        session.add(download)
        await session.flush()
        await audit.record(
            session,
            rt,
            caller,
            audit.BatchDownloadCreated(batch.id, download.id, expires_at, from_seq, to_seq, format),
        )
    return DownloadLink(token=token, expires_at=expires_at)


async def claim_download(rt: Runtime, token: str, client_address: str | None) -> ClaimedDownload | None:
    """Use a link: once, before it expires. None for an unknown, used or expired token (a 404)."""
    now = rt.now()
    async with rt.db.write() as session:
        claimed = (
            await session.execute(
                update(CardBatchDownload)
                .where(
                    CardBatchDownload.token_hash == _token_hash(rt, token),
                    CardBatchDownload.used_at.is_(None),
                    CardBatchDownload.expires_at > now,
                )
                .values(used_at=now, downloaded_from=client_address)
                .returning(
                    CardBatchDownload.id,
                    CardBatchDownload.batch_id,
                    CardBatchDownload.from_seq,
                    CardBatchDownload.to_seq,
                    CardBatchDownload.format,
                )
            )
        ).one_or_none()
        if claimed is None:
            return None
        download_id, batch_id, from_seq, to_seq, format = claimed
        batch_no, valid_until, quantity = (
            await session.execute(
                update(CardBatch)
                .where(CardBatch.id == batch_id)
                .values(download_count=CardBatch.download_count + 1)
                .returning(CardBatch.batch_no, CardBatch.valid_until, CardBatch.quantity)
            )
        ).one()
    return ClaimedDownload(
        download_id=download_id,
        batch_id=batch_id,
        batch_no=batch_no,
        from_seq=from_seq,
        to_seq=to_seq,
        format=CardExportFormat(format),
        valid_until=valid_until,
        quantity=quantity,
    )


def stream(rt: Runtime, claimed: ClaimedDownload) -> AsyncIterator[bytes]:
    """The file of a claimed link, in its format."""
    if claimed.format is CardExportFormat.CSV:
        return _recorded(rt, claimed, _csv_chunks(rt, claimed))
    if claimed.format is CardExportFormat.PDF:
        return _recorded(rt, claimed, _sheet_chunks(rt, claimed))
    return stream_codes(rt, claimed)


async def stream_codes(rt: Runtime, claimed: ClaimedDownload) -> AsyncIterator[bytes]:
    """Every code of the batch (or the range) in card order, XXXX-XXXX-XXXX-XXXX, one per line, a
    chunk at a time (a 100,000-card batch is never held whole). Card count and SHA-256 are recorded
    at the end, or as far as it got when the client went away."""

    async def text_chunks(counted: list[int]) -> AsyncIterator[bytes]:
        sealer = codes.CodeSealer(rt.keys)
        async for rows in _card_rows(rt, claimed, CHUNK):
            counted[0] += len(rows)
            yield "".join(
                codes.display(sealer.open(row["code_hash"], row["code_cipher"], row["key_version"])) + "\n"
                for row in rows
            ).encode("ascii")

    async for chunk in _recorded(rt, claimed, text_chunks):
        yield chunk


_c, _ch = Card.__table__, Channel.__table__


def _chunk_statement(*, channels: bool) -> Sql:
    """A chunk of a batch's cards after a seq, up to the last one wanted, in seq order."""
    columns = [_c.c.seq, _c.c.code_hash, _c.c.code_cipher, _c.c.key_version, _c.c.status, _c.c.remark]
    source: Any = _c
    if channels:
        columns.append(_ch.c.name.label("channel"))
        source = _c.outerjoin(_ch, _ch.c.id == _c.c.channel_id)
    return Sql(
        select(*columns)
        .select_from(source)
        .where(
            _c.c.batch_id == bindparam("batch_id"),
            _c.c.seq > bindparam("after"),
            _c.c.seq <= bindparam("last"),
        )
        .order_by(_c.c.seq)
        .limit(bindparam("size"))
    )


CARD_CHUNK = _chunk_statement(channels=False)
CARD_CHUNK_WITH_CHANNEL = _chunk_statement(channels=True)


async def _card_rows(
    rt: Runtime, claimed: ClaimedDownload, size: int, *, channels: bool = False
) -> AsyncIterator[list[Any]]:
    """The claimed cards in seq order, `size` at a time, each chunk one statement through the driver
    (core.sql: a download of 100,000 cards is mostly reading and decrypting); the next chunk is
    read while the caller works on this one."""
    statement = CARD_CHUNK_WITH_CHANNEL if channels else CARD_CHUNK
    last = claimed.to_seq if claimed.to_seq is not None else (claimed.quantity or 0)

    def chunk_after(after_seq: int) -> Callable[[Codec], Plan[list[Any]]]:
        def plan(codec: Codec) -> Plan[list[Any]]:
            rows = yield (
                statement,
                {"batch_id": claimed.batch_id, "after": after_seq, "last": last, "size": size},
            )
            return list(rows)

        return plan

    pending = asyncio.ensure_future(
        rt.db.run_read(chunk_after(0 if claimed.from_seq is None else claimed.from_seq - 1))
    )
    try:
        while True:
            rows = await pending
            if not rows:
                return
            pending = asyncio.ensure_future(rt.db.run_read(chunk_after(rows[-1]["seq"])))
            yield rows
    finally:
        if not pending.done():
            pending.cancel()


Chunks = Callable[[list[int]], AsyncIterator[bytes]]


async def _recorded(rt: Runtime, claimed: ClaimedDownload, chunks: Chunks) -> AsyncIterator[bytes]:
    """Send `chunks`, hashing them; record the card count and SHA-256 at the end (or as far as it got)."""
    digest = hashlib.sha256()
    counted = [0]
    try:
        async for chunk in chunks(counted):
            digest.update(chunk)
            yield chunk
    finally:
        async with rt.db.write() as session:
            admin_id = await session.scalar(
                update(CardBatchDownload)
                .where(CardBatchDownload.id == claimed.download_id)
                .values(card_count=counted[0], sha256=digest.hexdigest())
                .returning(CardBatchDownload.admin_id)
            )
            await outbox.emit(
                session,
                WebhookEvent.BATCH_DOWNLOADED,
                rt.now(),
                {
                    "batch": outbox.batch_ref(claimed.batch_id, claimed.batch_no),
                    "admin": {"id": str(admin_id)},
                    "format": claimed.format.value,
                    "fromSeq": claimed.from_seq,
                    "toSeq": claimed.to_seq,
                    "cardCount": counted[0],
                    "sha256": digest.hexdigest(),
                },
            )
        log.info(
            "batch %s downloaded (%s): %d codes",
            claimed.batch_no,
            claimed.format.value,
            counted[0],
            extra={"event": "download"},
        )


def _cell(value: str | None) -> str:
    if value is None:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _csv_chunks(rt: Runtime, claimed: ClaimedDownload) -> Chunks:
    """UTF-8, a header row, then seq, code, status, channel, remark per card (RFC 4180 quoting)."""

    async def chunks(counted: list[int]) -> AsyncIterator[bytes]:
        sealer = codes.CodeSealer(rt.keys)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_HEADER)
        async for rows in _card_rows(rt, claimed, CHUNK, channels=True):
            for row in rows:
                code = codes.display(sealer.open(row["code_hash"], row["code_cipher"], row["key_version"]))
                writer.writerow(
                    (row["seq"], code, row["status"], _cell(row["channel"]), _cell(row["remark"]))
                )
            counted[0] += len(rows)
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
        if counted[0] == 0:
            yield buffer.getvalue().encode("utf-8")

    return chunks


def _sheet_chunks(rt: Runtime, claimed: ClaimedDownload) -> Chunks:
    """The printable sheet, a chunk of pages at a time, drawn on a thread (the loop stays free)."""

    async def chunks(counted: list[int]) -> AsyncIterator[bytes]:
        sealer = codes.CodeSealer(rt.keys)
        sheet = SheetWriter(f"cards {claimed.batch_no}")
        yield sheet.start()
        valid_until = claimed.valid_until or date.max

        def draw(rows: list[Any]) -> bytes:
            return sheet.pages_of(
                [
                    SheetCard(
                        seq=row["seq"],
                        code=codes.display(
                            sealer.open(row["code_hash"], row["code_cipher"], row["key_version"])
                        ),
                        batch_no=claimed.batch_no,
                        valid_until=valid_until,
                    )
                    for row in rows
                ]
            )

        async for rows in _card_rows(rt, claimed, SHEET_CHUNK):
            counted[0] += len(rows)
            yield await asyncio.to_thread(draw, rows)
        yield sheet.finish()

    return chunks
