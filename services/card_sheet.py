"""The printable sheet of cards (RULES-v2 §5): A4 pages of ten cards the size of a bank card (85.6 ×
54 mm, 2 × 5, with cut marks), each with its code as text and as a QR code (segno draws the matrix).

Written page by page: each page's objects leave as soon as it is drawn, and only the offsets stay
until the cross-reference table closes the file, so 100,000 cards never sit in memory. (reportlab
was weighed: its canvas keeps every page until save(), so it cannot stream a sheet like this.)
The fonts are PDF's standard ones (Helvetica, Courier), which every reader has: nothing embedded.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date

import segno

MM = 72 / 25.4
PAGE_WIDTH, PAGE_HEIGHT = 210 * MM, 297 * MM
CARD_WIDTH, CARD_HEIGHT = 85.6 * MM, 54 * MM
COLUMNS, ROWS = 2, 5
PER_PAGE = COLUMNS * ROWS
LEFT = (PAGE_WIDTH - COLUMNS * CARD_WIDTH) / 2
BOTTOM = (PAGE_HEIGHT - ROWS * CARD_HEIGHT) / 2
MODULE = 3.0  # points per QR module: a version-1 code (21 modules) is 22 mm wide
QUIET = 4  # modules of white around it, as the standard asks
# one mask for every code: choosing the best of eight costs five times the whole code (measured),
# and any mask reads back the same (tests decode the codes from the rendered sheet)
QR_MASK = 0


@dataclass(frozen=True)
class SheetCard:
    seq: int
    code: str  # as people see it, XXXX-XXXX-XXXX-XXXX
    batch_no: str
    valid_until: date


def _text(value: str) -> str:
    return "(" + value.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _qr(code: str, x: float, y: float) -> str:
    """The code's QR matrix as filled rectangles, one per run of dark modules in a row, drawn in
    module units (a scaled coordinate system: whole numbers, cheap to write)."""
    matrix = segno.make_qr(code, error="m", boost_error=False, mask=QR_MASK).matrix
    size = len(matrix)
    parts = [f"q {_num(MODULE)} 0 0 {_num(MODULE)} {_num(x)} {_num(y)} cm"]
    for row_index, row in enumerate(matrix):
        top = size - 1 - row_index
        column = 0
        while column < size:
            if row[column]:
                start = column
                while column < size and row[column]:
                    column += 1
                parts.append(f"{start} {top} {column - start} 1 re")
            else:
                column += 1
    parts.append("f Q")
    return "\n".join(parts)


def _card(card: SheetCard, slot: int) -> str:
    column, row = slot % COLUMNS, slot // COLUMNS
    x = LEFT + column * CARD_WIDTH
    y = PAGE_HEIGHT - BOTTOM - (row + 1) * CARD_HEIGHT
    qr_side = 21 * MODULE
    qr_x = x + 6 * MM + QUIET * MODULE / 2
    qr_y = y + (CARD_HEIGHT - qr_side) / 2
    text_x = qr_x + qr_side + QUIET * MODULE
    middle = y + CARD_HEIGHT / 2
    return "\n".join(
        [
            # the cut mark: a thin grey frame
            f"0.75 G 0.3 w [2 2] 0 d {_num(x)} {_num(y)} {_num(CARD_WIDTH)} {_num(CARD_HEIGHT)} re S [] 0 d",
            "0 g",
            _qr(card.code, qr_x, qr_y),
            f"BT /F1 7 Tf {_num(text_x)} {_num(middle + 24)} Td {_text(card.batch_no)} Tj ET",
            f"BT /F1 7 Tf {_num(text_x)} {_num(middle + 14)} Td {_text(f'No. {card.seq}')} Tj ET",
            f"BT /F2 10.5 Tf {_num(text_x)} {_num(middle - 4)} Td {_text(card.code)} Tj ET",
            f"BT /F1 6.5 Tf {_num(text_x)} {_num(middle - 20)} Td {_text(f'Valid until {card.valid_until.isoformat()}')} Tj ET",
        ]
    )


class SheetWriter:
    """A PDF written as it goes: `start()`, then `pages(cards)` for any number of cards, then
    `finish()`; each returns the bytes to send next."""

    # 1 catalog, 2 page tree (written last), 3 and 4 the fonts, 5 the document's information
    FIRST_FREE = 6

    def __init__(self, title: str) -> None:
        self.title = title
        self.position = 0
        self.offsets: dict[int, int] = {}
        self.pages: list[int] = []
        self.next_number = self.FIRST_FREE
        self._pending: list[SheetCard] = []

    def _object(self, number: int, body: bytes) -> bytes:
        self.offsets[number] = self.position
        chunk = b"%d 0 obj\n" % number + body + b"\nendobj\n"
        self.position += len(chunk)
        return chunk

    def _raw(self, chunk: bytes) -> bytes:
        self.position += len(chunk)
        return chunk

    def start(self) -> bytes:
        fonts = (
            (3, b"Helvetica"),
            (4, b"Courier-Bold"),
        )
        out = [self._raw(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")]
        out.append(self._object(1, b"<< /Type /Catalog /Pages 2 0 R >>"))
        for number, name in fonts:
            out.append(
                self._object(
                    number,
                    b"<< /Type /Font /Subtype /Type1 /BaseFont /" + name + b" /Encoding /WinAnsiEncoding >>",
                )
            )
        out.append(
            self._object(5, b"<< /Title " + _text(self.title).encode("latin-1") + b" /Producer (tihuo) >>")
        )
        return b"".join(out)

    def pages_of(self, cards: list[SheetCard]) -> bytes:
        """The full pages these cards (after any left over from before) make; a part page waits."""
        self._pending.extend(cards)
        out = []
        while len(self._pending) >= PER_PAGE:
            out.append(self._page(self._pending[:PER_PAGE]))
            del self._pending[:PER_PAGE]
        return b"".join(out)

    def _page(self, cards: list[SheetCard]) -> bytes:
        content = zlib.compress(
            "\n".join(_card(card, slot) for slot, card in enumerate(cards)).encode("latin-1"), 6
        )
        contents, page = self.next_number, self.next_number + 1
        self.next_number += 2
        self.pages.append(page)
        return self._object(
            contents,
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream",
        ) + self._object(
            page,
            (
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_num(PAGE_WIDTH)} {_num(PAGE_HEIGHT)}]"
                f" /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {contents} 0 R >>"
            ).encode(),
        )

    def finish(self) -> bytes:
        out = [self._page(self._pending)] if self._pending else []
        self._pending = []
        kids = " ".join(f"{page} 0 R" for page in self.pages)
        out.append(self._object(2, f"<< /Type /Pages /Kids [{kids}] /Count {len(self.pages)} >>".encode()))
        size = self.next_number
        xref_at = self.position
        table = [b"xref\n0 %d\n" % size, b"0000000000 65535 f \n"]
        table.extend(b"%010d 00000 n \n" % self.offsets[number] for number in range(1, size))
        table.append(
            b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref_at)
        )
        out.append(self._raw(b"".join(table)))
        return b"".join(out)
