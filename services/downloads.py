"""Downloading a batch's codes (F5, RULES §6): the admin's own password re-checked, a single-use link
valid for minutes, the codes decrypted and streamed in chunks, and every download recorded."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from core.ids import parse_id
from models import Card, CardBatch, CardBatchDownload
from services import accounts, audit, codes
from services.errors import NotFound
from services.runtime import Caller, Runtime

log = logging.getLogger("tihuo.downloads")
CHUNK = 5000


@dataclass(frozen=True)
class DownloadLink:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class ClaimedDownload:
    download_id: int
    batch_id: int
    batch_no: str

    @property
    def filename(self) -> str:
        return f"cards-{self.batch_no}.txt"


def _token_hash(rt: Runtime, token: str) -> bytes:
    return hmac.new(rt.keys.download, token.encode(), hashlib.sha256).digest()


async def create_download(rt: Runtime, caller: Caller, batch_id: str, password: str) -> DownloadLink:
    """`createCardBatchDownload`: codes are money, so the admin confirms their own password first."""
    caller.require_admin()
    parsed = parse_id(batch_id)
    async with rt.db.read() as session:
        exists = parsed is not None and await session.get(CardBatch, parsed) is not None
    if not exists:
        raise NotFound()
    await accounts.confirm_own_password(rt, caller, password)
    token = secrets.token_urlsafe(32)
    expires_at = (rt.now() + timedelta(seconds=rt.settings.download_ttl_seconds)).replace(microsecond=0)
    async with rt.db.write() as session:
        download = CardBatchDownload(
            batch_id=parsed,
            admin_id=caller.require_admin().id,
            token_hash=_token_hash(rt, token),
            client_address=caller.client_address,
            created_at=rt.now(),
            expires_at=expires_at,
        )
        session.add(download)
        await session.flush()
        await audit.record(session, rt, caller, audit.BatchDownloadCreated(parsed, download.id, expires_at))
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
                .returning(CardBatchDownload.id, CardBatchDownload.batch_id)
            )
        ).one_or_none()
        if claimed is None:
            return None
        download_id, batch_id = claimed
        batch_no = (
            await session.execute(
                update(CardBatch)
                .where(CardBatch.id == batch_id)
                .values(download_count=CardBatch.download_count + 1)
                .returning(CardBatch.batch_no)
            )
        ).scalar_one()
    return ClaimedDownload(download_id=download_id, batch_id=batch_id, batch_no=batch_no)


async def stream_codes(rt: Runtime, claimed: ClaimedDownload) -> AsyncIterator[bytes]:
    """Every code of the batch in card order, XXXX-XXXX-XXXX-XXXX, one per line, a chunk at a time
    (a 100,000-card batch is never held whole). Card count and SHA-256 are recorded at the end,
    or as far as it got when the client went away."""
    sealer = codes.CodeSealer(rt.keys)
    digest = hashlib.sha256()
    count = 0
    last_seq = 0
    try:
        while True:
            async with rt.db.read() as session:
                rows = (
                    await session.execute(
                        select(Card.seq, Card.code_hash, Card.code_cipher, Card.key_version)
                        .where(Card.batch_id == claimed.batch_id, Card.seq > last_seq)
                        .order_by(Card.seq)
                        .limit(CHUNK)
                    )
                ).all()
            if not rows:
                break
            text = "".join(
                codes.display(sealer.open(code_hash, cipher, version)) + "\n"
                for _, code_hash, cipher, version in rows
            ).encode("ascii")
            digest.update(text)
            count += len(rows)
            last_seq = rows[-1][0]
            yield text
    finally:
        async with rt.db.write() as session:
            await session.execute(
                update(CardBatchDownload)
                .where(CardBatchDownload.id == claimed.download_id)
                .values(card_count=count, sha256=digest.hexdigest())
            )
        log.info("batch %s downloaded: %d codes", claimed.batch_no, count, extra={"event": "download"})
