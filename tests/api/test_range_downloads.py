"""createCardRangeDownload (RULES-v2 §5, RULES §6): TXT, CSV and a printable PDF of a run of cards,
single-use, recorded with SHA-256 and audited; the TXT of a whole batch is today's download byte
for byte; the PDF opens and its QR codes read back as the cards' codes."""

from __future__ import annotations

import csv
import hashlib
import io

import pypdf
import pypdfium2
import zxingcpp
from sqlalchemy import select

from models import CardBatchDownload
from tests.factories import audit_rows, create_batch, download_link, snapshot

RANGE_DOWNLOAD = """mutation ($range: CardRange!, $password: String!, $format: CardExportFormat) {
  createCardRangeDownload(range: $range, password: $password, format: $format) {
    __typename ... on CardBatchDownload { url expiresAt }
    ... on InvalidInputError { code fieldErrors { field } } ... on Error { code } } }"""
REMARK = "mutation ($id: ID!, $r: String!) { setCardRemark(id: $id, remark: $r) { __typename } }"
CARDS = "query ($id: ID!) { cardBatch(id: $id) { batchNo cards(first: 100) { nodes { id seq } } } }"


async def _range_link(gql, admin, batch_id: str, first: int, last: int, format: str | None = None) -> dict:
    variables = {
        "range": {"batchId": batch_id, "fromSeq": first, "toSeq": last},
        "password": admin.password,
        "format": format,
    }
    return (await gql(RANGE_DOWNLOAD, variables, user=admin))["data"]["createCardRangeDownload"]


async def _records(rt) -> list[CardBatchDownload]:
    async with rt.db.read() as session:
        return list(await session.scalars(select(CardBatchDownload).order_by(CardBatchDownload.id)))


async def test_the_txt_of_a_whole_batch_is_todays_download_byte_for_byte(gql, client, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=12, batch_no="WHOLE-1")
    today = await client.get((await download_link(gql, admin, batch["id"]))["url"])
    link = await _range_link(gql, admin, batch["id"], 1, 12)  # format absent: TXT

    ranged = await client.get(link["url"])

    assert ranged.status_code == 200
    assert ranged.content == today.content
    assert ranged.headers["content-type"] == today.headers["content-type"] == "text/plain; charset=utf-8"
    assert ranged.headers["content-disposition"] == 'attachment; filename="cards-WHOLE-1.txt"'
    # and a part of it is those lines
    part = await client.get((await _range_link(gql, admin, batch["id"], 4, 6, "TXT"))["url"])
    assert part.text.splitlines() == today.text.splitlines()[3:6]
    assert part.headers["content-disposition"] == 'attachment; filename="cards-WHOLE-1-4-6.txt"'
    records = await _records(rt)
    assert [(r.from_seq, r.to_seq, r.format.value, r.card_count) for r in records] == [
        (None, None, "TXT", 12),
        (1, 12, "TXT", 12),
        (4, 6, "TXT", 3),
    ]
    assert records[2].sha256 == hashlib.sha256(part.content).hexdigest()
    assert [e.new for e in await audit_rows(rt, "batch.create_download")][1:] == [
        {
            "downloadId": records[1].id,
            "expiresAt": link["expiresAt"],
            "fromSeq": 1,
            "toSeq": 12,
            "format": "TXT",
        },
        {
            "downloadId": records[2].id,
            "expiresAt": records[2].expires_at.isoformat(),
            "fromSeq": 4,
            "toSeq": 6,
            "format": "TXT",
        },
    ]


async def test_the_csv_has_a_header_and_each_cards_seq_code_status_channel_and_remark(
    gql, client, rt, catalog, admin
):
    batch = await create_batch(gql, admin, quantity=5, batch_no="CSV-1")
    codes = (await client.get((await download_link(gql, admin, batch["id"]))["url"])).text.splitlines()
    cards = (await gql(CARDS, {"id": batch["id"]}, user=admin))["data"]["cardBatch"]["cards"]["nodes"]
    await gql(REMARK, {"id": cards[1]["id"], "r": "给王经理, 备用"}, user=admin)
    await gql(REMARK, {"id": cards[2]["id"], "r": "=HYPERLINK(1)"}, user=admin)
    channel = (
        await gql(
            'mutation { createChannel(name: "淘宝店") { ... on ChannelSuccess { channel { id } } } }',
            user=admin,
        )
    )["data"]["createChannel"]["channel"]["id"]
    await gql(
        "mutation ($r: CardRange!, $c: ID) { assignCardsToChannel(range: $r, channelId: $c) { __typename } }",
        {"r": {"batchId": batch["id"], "fromSeq": 2, "toSeq": 3}, "c": channel},
        user=admin,
    )
    await gql(
        "mutation ($r: CardRange!) { setCardRangeStatus(range: $r, status: DISABLED) { __typename } }",
        {"r": {"batchId": batch["id"], "fromSeq": 3, "toSeq": 3}},
        user=admin,
    )

    response = await client.get((await _range_link(gql, admin, batch["id"], 2, 4, "CSV"))["url"])

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    assert response.headers["content-disposition"] == 'attachment; filename="cards-CSV-1-2-4.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))
    assert rows == [
        ["seq", "code", "status", "channel", "remark"],
        ["2", codes[1], "UNUSED", "淘宝店", "给王经理, 备用"],
        ["3", codes[2], "DISABLED", "淘宝店", "'=HYPERLINK(1)"],
        ["4", codes[3], "UNUSED", "", ""],
    ]
    [*_, record] = await _records(rt)
    assert (record.format.value, record.card_count, record.sha256) == (
        "CSV",
        3,
        hashlib.sha256(response.content).hexdigest(),
    )


async def test_the_pdf_is_a_sheet_of_pages_whose_qr_codes_are_the_cards_codes(
    gql, client, rt, catalog, admin
):
    batch = await create_batch(gql, admin, quantity=23, batch_no="PDF-1")
    codes = (await client.get((await download_link(gql, admin, batch["id"]))["url"])).text.splitlines()
    link = await _range_link(gql, admin, batch["id"], 2, 23, "PDF")

    response = await client.get(link["url"])

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'attachment; filename="cards-PDF-1-2-23.pdf"'
    # 22 cards, ten to a page
    assert len(pypdf.PdfReader(io.BytesIO(response.content)).pages) == 3
    text = pypdf.PdfReader(io.BytesIO(response.content)).pages[2].extract_text()
    assert codes[21] in text and codes[22] in text and "No. 23" in text
    page = pypdfium2.PdfDocument(response.content)[0].render(scale=3).to_pil()
    assert sorted(found.text for found in zxingcpp.read_barcodes(page)) == sorted(codes[1:11])
    [*_, record] = await _records(rt)
    assert (record.format.value, record.card_count, record.sha256) == (
        "PDF",
        22,
        hashlib.sha256(response.content).hexdigest(),
    )
    # single-use, like every link
    assert (await client.get(link["url"])).status_code == 404


async def test_a_range_outside_the_batch_or_a_wrong_password_makes_no_link(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=3)
    before = await snapshot(rt, batch["id"])

    outside = await _range_link(gql, admin, batch["id"], 2, 4, "CSV")
    wrong = (
        await gql(
            RANGE_DOWNLOAD,
            {
                "range": {"batchId": batch["id"], "fromSeq": 1, "toSeq": 3},
                "password": "nope",
                "format": "PDF",
            },
            user=admin,
        )
    )["data"]["createCardRangeDownload"]
    missing = await _range_link(gql, admin, "999999", 1, 1)

    assert outside == {
        "__typename": "InvalidInputError",
        "code": "INVALID_INPUT",
        "fieldErrors": [{"field": "range.toSeq"}],
    }
    assert wrong == {"__typename": "WrongPasswordError", "code": "WRONG_PASSWORD"}
    assert missing == {"__typename": "NotFoundError", "code": "NOT_FOUND"}
    assert await snapshot(rt, batch["id"]) == before
