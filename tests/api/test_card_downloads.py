"""Downloading a batch's codes (RULES §6): the password re-check, the single-use link, the TXT file
and its record; and that no code is ever kept in clear, in the database or in the logs."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from models import CardBatchDownload, Role
from services import codes
from tests.conftest import CLIENT_ADDRESS, make_user
from tests.factories import (
    CREATE_DOWNLOAD,
    audit_rows,
    create_batch,
    download_codes,
    download_link,
    snapshot,
)

NOW = datetime(2026, 11, 26, 8, 0, 0, tzinfo=UTC)
CODE_LINE = re.compile(
    r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$"
)
DOWNLOAD_PATH = re.compile(r"^https://cards\.example\.com/downloads/[A-Za-z0-9_-]{40,}$")

BATCH = """
query ($id: ID!) {
  cardBatch(id: $id) { downloadCount cards(first: 100) { nodes { id maskedCode } } }
}
"""


async def _downloads(rt) -> list[CardBatchDownload]:
    async with rt.db.read() as session:
        return list(await session.scalars(select(CardBatchDownload).order_by(CardBatchDownload.id)))


async def _download_count(gql, admin, batch_id: str) -> int:
    return (await gql(BATCH, {"id": batch_id}, user=admin))["data"]["cardBatch"]["downloadCount"]


async def test_a_download_link_gives_every_code_once_and_is_recorded(gql, client, rt, clock, catalog, admin):
    # given a batch of 45 cards, at a known moment
    clock.set(NOW)
    batch = await create_batch(gql, admin, quantity=45, batch_no="SPRING-2026")

    # when the admin asks for a link with their own password
    link = await download_link(gql, admin, batch["id"])

    # then they get a URL good for 5 minutes
    assert link["__typename"] == "CardBatchDownload", link
    assert DOWNLOAD_PATH.match(link["url"]), link["url"]
    assert link["expiresAt"] == "2026-11-26T08:05:00+00:00"
    [pending] = await _downloads(rt)
    assert (pending.used_at, pending.card_count, pending.sha256) == (None, None, None)

    # when they fetch it
    response = await client.get(link["url"])

    # then the file is every code of the batch, one per line, in card order
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="cards-SPRING-2026.txt"'
    assert response.headers["cache-control"] == "no-store"
    body = response.content
    assert body.endswith(b"\n")
    lines = body.decode("ascii").split("\n")[:-1]
    assert len(lines) == 45
    for line in lines:
        assert CODE_LINE.match(line), line
        assert codes.normalise(line) == line.replace("-", ""), line  # a valid check symbol
    assert len(set(lines)) == 45
    cards = (await gql(BATCH, {"id": batch["id"]}, user=admin))["data"]["cardBatch"]["cards"]["nodes"]
    assert [line[-4:] for line in lines] == [card["maskedCode"][-4:] for card in cards]

    # and the download is recorded: who, from where, when, how many, the file's hash
    [record] = await _downloads(rt)
    assert record.batch_id == int(batch["id"])
    assert record.admin_id == admin.id
    assert record.client_address == CLIENT_ADDRESS
    assert record.downloaded_from == CLIENT_ADDRESS
    assert (record.created_at, record.expires_at, record.used_at) == (NOW, NOW + timedelta(seconds=300), NOW)
    assert record.card_count == 45
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert await _download_count(gql, admin, batch["id"]) == 1
    [entry] = await audit_rows(rt, "batch.create_download")
    assert (entry.entity, entry.entity_id, entry.actor_id, entry.client_address, entry.at) == (
        "batch",
        batch["id"],
        admin.id,
        CLIENT_ADDRESS,
        NOW,
    )
    assert (entry.old, entry.new) == (
        None,
        {"downloadId": record.id, "expiresAt": "2026-11-26T08:05:00+00:00"},
    )


async def test_a_link_works_once(gql, client, rt, clock, catalog, admin):
    clock.set(NOW)
    batch = await create_batch(gql, admin, quantity=3)
    link = await download_link(gql, admin, batch["id"])
    first = await client.get(link["url"])
    assert first.status_code == 200
    before = await snapshot(rt, batch["id"])

    second = await client.get(link["url"])

    assert second.status_code == 404
    assert "-" not in second.text
    assert await snapshot(rt, batch["id"]) == before
    assert await _download_count(gql, admin, batch["id"]) == 1


async def test_a_link_expires_after_5_minutes(gql, client, rt, clock, catalog, admin):
    # given a link, 301 seconds later
    clock.set(NOW)
    batch = await create_batch(gql, admin, quantity=3)
    link = await download_link(gql, admin, batch["id"])
    clock.advance(seconds=301)
    before = await snapshot(rt, batch["id"])

    # when it is fetched for the first time
    response = await client.get(link["url"])

    # then it is gone, and nothing was downloaded
    assert response.status_code == 404
    assert await snapshot(rt, batch["id"]) == before
    assert await _download_count(gql, admin, batch["id"]) == 0
    [record] = await _downloads(rt)
    assert (record.used_at, record.downloaded_from, record.card_count) == (None, None, None)


async def test_a_link_still_works_just_before_it_expires(gql, client, clock, catalog, admin):
    clock.set(NOW)
    batch = await create_batch(gql, admin, quantity=3)
    link = await download_link(gql, admin, batch["id"])
    clock.advance(seconds=299)

    response = await client.get(link["url"])

    assert response.status_code == 200
    assert len(response.text.splitlines()) == 3


async def test_an_unknown_token_is_not_found(gql, client, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=3)
    link = await download_link(gql, admin, batch["id"])
    altered = link["url"][:-1] + ("x" if link["url"][-1] != "x" else "y")  # one symbol off
    before = await snapshot(rt, batch["id"])

    for path in ("/downloads/nope", "/downloads/" + "A" * 43, altered, "/downloads/"):
        assert (await client.get(path)).status_code == 404, path

    assert await snapshot(rt, batch["id"]) == before
    assert (await client.get(link["url"])).status_code == 200


async def test_a_wrong_password_makes_no_link(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=3)
    before = await snapshot(rt, batch["id"])

    result = await gql(CREATE_DOWNLOAD, {"batchId": batch["id"], "password": "not my password"}, user=admin)

    assert result == {
        "data": {
            "createCardBatchDownload": {
                "__typename": "WrongPasswordError",
                "code": "WRONG_PASSWORD",
                "message": "密码错误。",
            }
        }
    }
    assert await snapshot(rt, batch["id"]) == before


async def test_another_admins_password_is_wrong(gql, rt, catalog, admin):
    other = await make_user(rt, "other-admin", Role.ADMIN, password="another admin password")
    batch = await create_batch(gql, admin, quantity=3)
    before = await snapshot(rt, batch["id"])

    result = await gql(CREATE_DOWNLOAD, {"batchId": batch["id"], "password": other.password}, user=admin)

    assert result["data"]["createCardBatchDownload"]["code"] == "WRONG_PASSWORD"
    assert await snapshot(rt, batch["id"]) == before


async def test_five_wrong_passwords_block_even_the_right_one(gql, rt, clock, catalog, admin):
    # given five wrong passwords in a row
    clock.set(NOW)
    batch = await create_batch(gql, admin, quantity=3)
    before = await snapshot(rt, batch["id"])
    for _ in range(5):
        wrong = await gql(CREATE_DOWNLOAD, {"batchId": batch["id"], "password": "guess"}, user=admin)
        assert wrong["data"]["createCardBatchDownload"]["code"] == "WRONG_PASSWORD"

    # when the right password comes next
    result = await gql(CREATE_DOWNLOAD, {"batchId": batch["id"], "password": admin.password}, user=admin)

    # then it is refused for the whole window, and no link was ever made
    assert result == {
        "data": {
            "createCardBatchDownload": {
                "__typename": "RateLimitedError",
                "code": "RATE_LIMITED",
                "message": "尝试次数过多，请 900 秒后再试。",
                "retryAfterSeconds": 900,
            }
        }
    }
    assert await snapshot(rt, batch["id"]) == before
    # and once the block is over the right password works
    clock.advance(seconds=901)
    assert (await download_link(gql, admin, batch["id"]))["__typename"] == "CardBatchDownload"


async def test_an_unknown_batch_is_not_found(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=3)
    before = await snapshot(rt, batch["id"])

    for unknown in ("999999", "abc"):
        result = await gql(CREATE_DOWNLOAD, {"batchId": unknown, "password": admin.password}, user=admin)
        assert result == {
            "data": {
                "createCardBatchDownload": {
                    "__typename": "NotFoundError",
                    "code": "NOT_FOUND",
                    "message": "对象不存在。",
                }
            }
        }, unknown

    assert await snapshot(rt, batch["id"]) == before


async def test_a_member_may_not_download(gql, rt, catalog, admin, member):
    batch = await create_batch(gql, admin, quantity=3)
    before = await snapshot(rt, batch["id"])

    result = await gql(CREATE_DOWNLOAD, {"batchId": batch["id"], "password": member.password}, user=member)

    assert result["data"] is None
    assert [(e["path"], e["extensions"]["code"]) for e in result["errors"]] == [
        (["createCardBatchDownload"], "FORBIDDEN")
    ]
    assert await snapshot(rt, batch["id"]) == before


async def test_each_download_counts(gql, client, catalog, admin):
    batch = await create_batch(gql, admin, quantity=2)

    first = await download_codes(gql, client, admin, batch["id"])
    second = await download_codes(gql, client, admin, batch["id"])

    assert first == second
    assert await _download_count(gql, admin, batch["id"]) == 2


# ---------------------------------------------------------------- secrecy


def _forms(code: str) -> list[str]:
    """Every way a code (16 symbols, normalised) could be written down, upper-case; its last 4
    symbols alone are allowed to be stored, so everything longer that is not only those is checked."""
    dashed = codes.display(code)
    return [code, dashed, code[:15], code[:12], dashed[:14], code[4:], dashed[5:]]


def _leaks(value: Any, forms: list[str]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes | bytearray):
        value = bytes(value)
        haystacks = [value.upper(), value.hex().upper().encode()]
        return [form for form in forms for hay in haystacks if form.encode() in hay]
    textual = str(value).upper()
    return [form for form in forms if form in textual]


async def _every_row(rt) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read straight from the database, bypassing the models."""
    if rt.db.is_sqlite:
        path = make_url(rt.settings.resolved_database_url).database
        connection = sqlite3.connect(path)
        try:
            tables = [
                name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            return {table: connection.execute(f'SELECT * FROM "{table}"').fetchall() for table in tables}  # noqa: S608
        finally:
            connection.close()
    async with rt.db.read() as session:
        tables = list(
            await session.scalars(
                text("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'public'")
            )
        )
        return {
            table: [tuple(row) for row in await session.execute(text(f'SELECT * FROM "{table}"'))]  # noqa: S608
            for table in tables
        }


async def test_no_code_is_stored_or_logged_in_clear(gql, client, rt, catalog, admin, member, caplog):
    # given logging at its most talkative, SQL statements and their parameters included
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    # and a batch of 50 cards whose codes were downloaded, and some admin writes on it
    batch = await create_batch(gql, admin, quantity=50)
    lines = await download_codes(gql, client, admin, batch["id"])
    assert len(lines) == 50
    codes_made = [line.replace("-", "") for line in lines]
    assert all(codes.normalise(code) == code for code in codes_made)

    # when every value of every row of every table is read back from the database itself
    rows = await _every_row(rt)

    # then no code appears in any form; only the last 4 symbols are kept, in the cards table
    assert len(rows["cards"]) == 50
    assert len(rows["card_batch_downloads"]) == 1
    leaks = [
        (table, code, leak)
        for table, table_rows in rows.items()
        for row in table_rows
        for value in row
        for code in codes_made
        for leak in _leaks(value, _forms(code))
    ]
    assert leaks == []
    stored_last4 = {
        value for row in rows["cards"] for value in row if isinstance(value, str) and len(value) == 4
    }
    assert {code[-4:] for code in codes_made} <= stored_last4
    # and not in the database's files either (pages, WAL), where an old value could linger
    if rt.db.is_sqlite:
        path = Path(make_url(rt.settings.resolved_database_url).database)
        for file in (path, path.with_name(path.name + "-wal")):
            if file.exists():
                content = file.read_bytes().upper()
                assert [
                    code for code in codes_made for form in _forms(code) if form.encode() in content
                ] == []
    # and not in any log line
    assert any("downloaded" in record.getMessage() for record in caplog.records)
    logged = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.__dict__!r}" for record in caplog.records
    )
    assert [code for code in codes_made for leak in _leaks(logged, _forms(code))] == []


def test_the_leak_check_finds_a_code_in_each_form():
    # guards the secrecy test: each way a code could be written is caught
    code = codes.generate()
    forms = _forms(code)

    assert _leaks(code, forms)
    assert _leaks(codes.display(code).lower(), forms)
    assert _leaks(f"note: {code[:15]}", forms)
    assert _leaks(code.encode(), forms)
    assert _leaks(code.lower().encode(), forms)
    assert _leaks(memoryview(b"\x00" + code.encode()), forms)
    assert _leaks({"code": codes.display(code)}, forms)
    assert not _leaks(f"****-****-****-{code[-4:]}", forms)
    assert not _leaks(code[-4:], forms)
    # a code made only of hex digits shows in the hex of bytes that hold it as nibbles
    assert _leaks(bytes.fromhex("00" + "0123456789ABCDEF"), ["0123456789ABCDEF"])
