"""A table in: read a CSV/TSV/TXT/XLSX file (bytes or a path) into a :class:`Table`.

``read_table`` finds the encoding (UTF-8 with or without BOM, UTF-16 with or without BOM,
GB18030/GBK, Big5, Windows-1252 for Latin text), the delimiter, whether the first row is a
header, and for workbooks the sheet (``xlsx_sheets`` lists them); every cell comes back a
string. ``resolve_column`` turns a column name or 1-based number
into a column of the table. Every message names the file and the row numbers a user sees in
Excel, and says what to do next.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import logging
import math
import os
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import openpyxl
import pandas as pd
from openpyxl.utils.cell import coordinate_to_tuple

from embedgen.errors import BadTable

log = logging.getLogger(__name__)

DELIMITERS = (",", "\t", ";", "|")
SAVE_AS_UTF8 = "Save it as UTF-8 CSV from Excel: File → Save As → CSV UTF-8."
LABEL_NAMES = ("label", "labels", "class", "category", "sentiment", "标签", "类别", "分类", "情感")
TEXT_NAMES = ("text", "review", "content", "sentence", "title", "comment", "文本", "内容", "评论")
_KNOWN_NAMES = frozenset(LABEL_NAMES + TEXT_NAMES + ("id", "target", "tag", "句子", "标题"))
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
# Encodings charset-normalizer may pick as a last resort; its guesses for other (single-byte)
# encodings on bytes that are not text are too often wrong to trust.
_FALLBACK_ENCODINGS = ("big5", "cp950", "big5hkscs", "shift_jis", "cp932", "euc_jp", "euc_kr")
# The most characters one cell may hold. A model reads the first few hundred tokens of a text,
# so a longer cell is almost always a file gone wrong (an unclosed quote swallowing the rest).
MAX_CELL_CHARS = 1_000_000
# Texts longer than this are segmented in pieces of at most this many characters, cut at a
# space or punctuation where one is near, so that one pasted line costs what its pieces cost:
# issue 20's probe saw jieba take 6.8 s on 32k characters, 25 s on 64k, 230 s on 200k.
SEGMENT_CHARS = 2_000
MAX_FILE_MB = 200  # the largest file read, from a path or an upload: .streamlit's maxUploadSize
# The csv module refuses fields over 131,072 characters with a message that names no row or
# column; it reads any size here and MAX_CELL_CHARS is checked afterwards, with one that does.
# The setting is the process's, so it only ever grows.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


def is_number(value: str) -> bool:
    """Return whether ``value`` (surrounding spaces aside) is a number: "3", "-1.5", "2e3"."""
    return _NUMBER.fullmatch(value.strip()) is not None


def rows_text(rows: Sequence[int], limit: int = 10) -> str:
    """Return "row 5" / "rows 5, 9" / "rows 1, ..., 10 and 3 more"."""
    shown = ", ".join(str(r) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


@dataclass(frozen=True, eq=False)
class Table:
    """A table as read from a file: every cell a string, missing cells ``""``."""

    frame: pd.DataFrame
    name: str
    sha256: str
    encoding: str
    delimiter: str | None
    has_header: bool
    sheet: str | None = None  # the .xlsx sheet read, by name

    @property
    def label(self) -> str:
        """Return the file name, with the sheet for workbooks: "data.xlsx [Sheet2]"."""
        return f"{self.name} [{self.sheet}]" if self.sheet is not None else self.name

    @property
    def columns(self) -> list[str]:
        """Return the column names ("column 1", ... when the file has no header)."""
        return [str(c) for c in self.frame.columns]

    def __len__(self) -> int:
        return len(self.frame)

    def row_number(self, i: int) -> int:
        """Return the spreadsheet row number (as Excel shows it) of frame row ``i``."""
        return i + 2 if self.has_header else i + 1

    @property
    def numbering(self) -> str:
        """Return how rows are numbered, in words: the numbers every message and preview use."""
        first = "the header is row 1, the first text row 2" if self.has_header else "from 1"
        return (
            f"Rows are numbered as a spreadsheet numbers them: {first}. A quoted text that "
            "spans several lines of the file is one row."
        )

    def preview(self, n: int = 20) -> pd.DataFrame:
        """Return the first ``n`` rows, indexed by their row numbers (:meth:`row_number`), the
        numbers messages about rows use."""
        head = self.frame.head(n).copy()
        head.index = pd.Index([self.row_number(i) for i in range(len(head))], name="row")
        return head


def read_table(
    source: str | os.PathLike[str] | bytes,
    *,
    name: str | None = None,
    header: bool | None = None,
    sheet: str | int | None = None,
) -> Table:
    """Return the table in ``source`` (a path, or the bytes of an upload called ``name``).

    ``header=None`` guesses whether the first row holds column names. ``sheet`` picks an
    .xlsx sheet: by name, by 0-based position (an int), or by a string of digits that names
    no sheet, counted from 1 as people count ("2": the second sheet). Default: the first.
    """
    raw, name = read_bytes(source, name)
    sha256 = hashlib.sha256(raw).hexdigest()
    suffix = Path(name).suffix.lower()
    if suffix == ".xls":
        raise BadTable(f"{name} is an old Excel .xls file; save it as .xlsx or as CSV UTF-8.")
    if raw.startswith(b"PK\x03\x04") or suffix in (".xlsx", ".xlsm"):
        grid, sheet_name = _read_xlsx(raw, name, sheet)
        encoding, delimiter, may_hold_huge_cells = "xlsx", None, True
    else:
        text, encoding = _decode(raw, name)
        sheet_name = None
        delimiter = "\t" if suffix == ".tsv" else _sniff_delimiter(text)
        grid = _parse_delimited(text, delimiter, name)
        may_hold_huge_cells = len(text) > MAX_CELL_CHARS  # no cell is longer than the file
    while grid and not any(c.strip() for c in grid[-1]):
        grid.pop()
    if not grid:
        raise BadTable(f"{name} is empty: it holds no rows. Choose a file with labelled texts.")
    has_header = _guess_header(grid) if header is None else header
    if may_hold_huge_cells:
        where = f"{name} [{sheet_name}]" if sheet_name is not None else name
        _check_cell_sizes(grid, has_header, where)
    frame = _frame(grid, has_header, name, delimiter)
    log.info(
        "Read %s: %d rows x %d columns (%s, delimiter %r, %s)",
        name,
        len(frame),
        frame.shape[1],
        encoding,
        delimiter,
        "header row" if has_header else "no header row",
    )
    return Table(frame, name, sha256, encoding, delimiter, has_header, sheet_name)


def read_bytes(
    source: str | os.PathLike[str] | bytes, name: str | None = None
) -> tuple[bytes, str]:
    """The bytes of ``source`` (a path, or an upload's bytes called ``name``) and its name; a
    file that cannot be read is our error, naming it.

    A path is read only when it is a regular file of at most :data:`MAX_FILE_MB` (the app's
    upload limit): ``/dev/zero``, a FIFO or a 20 GB file is refused before anything is read.
    """
    if isinstance(source, bytes | bytearray):
        return bytes(source), name or "upload"
    path = Path(source)
    name = name or path.name
    limit = MAX_FILE_MB * 1_000_000
    try:
        if not path.is_file():  # stat follows links: a link to a file is a file
            if path.exists():
                raise BadTable(
                    f"{name}: not a regular file ({path} is a folder, a device or a pipe). "
                    "Give the path of a CSV, TSV, TXT or XLSX file."
                )
            raise FileNotFoundError
        size = path.stat().st_size
        if size > limit:
            raise BadTable(_too_big(name, size))
        with path.open("rb") as f:
            raw = f.read(limit + 1)  # a file that grows while it is read stops at the limit
    except FileNotFoundError:
        raise BadTable(f"{name}: no such file ({path}). Check the path.") from None
    except OSError as exc:
        raise BadTable(f"{name}: cannot read the file ({exc.strerror}).") from None
    if len(raw) > limit:
        raise BadTable(_too_big(name, len(raw)))
    return raw, name


def _too_big(name: str, size: int) -> str:
    return (
        f"{name}: {size / 1e6:,.0f} MB, more than the {MAX_FILE_MB} MB embedgen reads (the app's "
        "upload limit). Split it into smaller files, or sample its rows."
    )


def xlsx_sheets(source: str | os.PathLike[str] | bytes, *, name: str | None = None) -> list[str]:
    """Return the sheet names of an .xlsx workbook (a path, or the bytes of an upload called
    ``name``), in workbook order."""
    raw, name = read_bytes(source, name)
    book = _open_xlsx(raw, name)
    try:
        return [str(s) for s in book.sheetnames]
    finally:
        book.close()


def _decode(raw: bytes, name: str) -> tuple[str, str]:
    """Return the text and the encoding that decoded it: UTF-8 (BOM or not), GB18030, ..."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode Text" is UTF-16
        try:
            return raw.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            pass
    utf16 = _utf16_without_bom(raw)
    if utf16 is not None:
        try:
            return raw.decode(utf16), utf16
        except UnicodeDecodeError:
            pass
    try:
        if raw.startswith(b"\xef\xbb\xbf"):
            return raw.decode("utf-8")[1:], "utf-8-sig"  # decoded whole so offsets count the BOM
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_error = exc
    if utf16 is not None:  # zero bytes: no 8-bit encoding of text reads this better
        raise BadTable(
            f"{name}: cannot read the text; it looks like UTF-16 without a byte-order mark "
            f"(every other byte is zero) but does not decode as {utf16.upper()}. {SAVE_AS_UTF8}"
        )
    chinese, latin = _chinese(raw), _latin(raw)
    if latin is not None and (chinese is None or _chinese_share(*chinese) < 0.5):
        return latin, "cp1252"
    if chinese is not None:
        if latin is not None:
            log.warning("%s reads as Latin text (cp1252) too; read as %s", name, chinese[1])
        return chinese
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is not None and best.encoding in _FALLBACK_ENCODINGS:
        return str(best), best.encoding
    raise BadTable(
        f"{name}: cannot read the text; the byte at offset {utf8_error.start} "
        f"(0x{raw[utf8_error.start]:02x}) is neither UTF-8 nor GB18030/GBK. {SAVE_AS_UTF8}"
    )


def _utf16_without_bom(raw: bytes, sample: int = 1 << 16) -> str | None:
    """Return "utf-16-le" or "utf-16-be" when ``raw`` looks like UTF-16 without a byte-order
    mark, else ``None``.

    In UTF-16 every ASCII character (digits, delimiters, line ends) has a zero byte, on the
    same side of each byte pair; text in 8-bit encodings has no zero bytes at all.
    """
    head = raw[: sample - sample % 2]
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if max(even, odd) < 2 or 4 * min(even, odd) > max(even, odd):
        return None
    return "utf-16-le" if odd > even else "utf-16-be"


def _chinese(raw: bytes) -> tuple[str, str] | None:
    """Return the text and encoding of ``raw`` read as GB18030 or Big5, or ``None`` when
    neither decodes it."""
    try:
        return _gb18030_or_big5(raw, raw.decode("gb18030"))
    except UnicodeDecodeError:
        pass
    for codec in ("cp950", "big5hkscs"):
        try:
            return raw.decode(codec), codec
        except UnicodeDecodeError:
            continue
    return None


def _chinese_share(text: str, codec: str, sample: int = 20_000) -> float:
    """Share of the first ``sample`` non-ASCII characters of ``text`` that Chinese text is made
    of: the common hanzi of ``codec``'s character set (see :func:`_common_share`), not glued to
    a Latin letter after them, and CJK punctuation.

    Latin text read as GB18030 or Big5 scores near 0: rare hanzi ("M黮ler"), or common ones
    made of an accented capital and the letter after it ("Äpfel" in Big5: "癥fel").
    """
    common = ("gb2312", (0xB0, 0xF7)) if codec == "gb18030" else ("big5", (0xA4, 0xC6))
    seen = hits = 0
    for match in _NON_ASCII.finditer(text):
        ch, after = match.group(), text[match.end() : match.end() + 1]
        seen += 1
        if "\u4e00" <= ch <= "\u9fff":
            try:
                lead = ch.encode(common[0])[0]
            except UnicodeEncodeError:
                lead = 0
            glued = after.isascii() and after.isalpha()
            hits += common[1][0] <= lead <= common[1][1] and not glued
        else:
            hits += ch == "\u00b7" or any(a <= ch <= b for a, b in _CJK_PUNCTUATION)
        if seen >= sample:
            break
    return hits / seen if seen else 1.0


_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_CJK_PUNCTUATION = (("\u2010", "\u2027"), ("\u3000", "\u303f"), ("\uff00", "\uffef"))


def _latin(raw: bytes, sample: int = 20_000) -> str | None:
    """Return ``raw`` read as Windows-1252 (cp1252) when it looks like Latin text, else ``None``.

    In Latin text the bytes over 0x7F, accented letters and signs, stand alone or in pairs
    between ASCII ones ("Müller", "5 €"); Chinese text in GBK or Big5 makes runs of them, two
    bytes for every character. At least 90% of the first ``sample`` such bytes must stand so.
    """
    seen = alone = 0
    for run in re.finditer(rb"[\x80-\xff]+", raw):
        length = run.end() - run.start()
        seen += length
        alone += length if length <= 2 else 0
        if seen >= sample:
            break
    if not seen or alone < 0.9 * seen:
        return None
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:  # five byte values are not Windows-1252
        return None


def _common_share(text: str, codec: str, leads: tuple[int, int], sample: int = 20_000) -> float:
    """Share of the first ``sample`` CJK ideographs whose ``codec`` lead byte is in ``leads``.

    GB2312 (leads 0xB0-0xF7) holds the 6,763 hanzi of everyday simplified Chinese; Big5's
    first level (leads 0xA4-0xC6) the 5,401 most used traditional characters. Real text
    scores near 1 in its own set; bytes decoded with the wrong one score far lower.
    """
    seen = hits = 0
    for ch in text:
        if not "\u4e00" <= ch <= "\u9fff":
            continue
        seen += 1
        try:
            hits += leads[0] <= ch.encode(codec)[0] <= leads[1]
        except UnicodeEncodeError:
            pass
        if seen >= sample:
            break
    return hits / seen if seen else 1.0


def _gb18030_or_big5(raw: bytes, gb_text: str) -> tuple[str, str]:
    """Tell GB18030/GBK from Big5 (Excel on Traditional Chinese Windows), both multi-byte.

    Most Big5 files also decode as GB18030, into nonsense: rare characters and private-use
    code points. So GB18030 stands unless its text looks implausible and Big5 (cp950, the
    variant Windows writes, then Big5-HKSCS) decodes cleanly into more plausible text.
    """
    private = sum(1 for ch in gb_text[:200_000] if "\ue000" <= ch <= "\uf8ff")
    gb_share = _common_share(gb_text, "gb2312", (0xB0, 0xF7))
    if gb_share >= 0.9 and not private:
        return gb_text, "gb18030"
    for codec in ("cp950", "big5hkscs"):
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError:
            continue
        if _common_share(text, "big5", (0xA4, 0xC6)) > gb_share:
            return text, codec
    return gb_text, "gb18030"


def _sniff_delimiter(text: str) -> str:
    """Return the delimiter that splits the first lines into equally many fields."""
    sample = text[:32768]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rindex("\n")]

    def consistency(delimiter: str) -> tuple[float, int]:
        counts = [len(r) for r in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)]
        counts = [c for c in counts if c] or [1]
        mode, hits = Counter(counts).most_common(1)[0]
        return (hits / len(counts) if mode > 1 else 0.0), mode

    # The Sniffer's regular expressions take time growing with the square of the sample on
    # some texts (12 s for 32 KB of 'a,"a,"...'), so it sees the first 4 KB; its choice is then
    # checked on the whole sample.
    head = sample[:4096]
    if len(sample) > len(head) and "\n" in head:
        head = head[: head.rindex("\n")]
    try:
        sniffed = csv.Sniffer().sniff(head, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        sniffed = None
    if sniffed in DELIMITERS and consistency(sniffed)[0] >= 0.9:
        return sniffed
    scores = {d: consistency(d)[0] for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: scores[d])  # ties go to the earlier, commoner one
    return best if scores[best] > 0 else ","


def _parse_delimited(text: str, delimiter: str, name: str) -> list[list[str]]:
    """Return the records of ``text``; quoted fields may hold delimiters and newlines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return [list(record) for record in reader]
    except csv.Error as exc:
        raise BadTable(
            f"{name}: cannot split line {reader.line_num} into fields ({exc}). {SAVE_AS_UTF8}"
        ) from None


def _open_xlsx(raw: bytes, name: str) -> Any:
    """Return the workbook in ``raw`` (an openpyxl read-only workbook, values not formulas)."""
    try:
        return openpyxl.load_workbook(
            io.BytesIO(raw), read_only=True, data_only=True, keep_links=False
        )
    except Exception as exc:  # openpyxl raises several unrelated types for a broken file
        raise BadTable(f"{name} is not a readable .xlsx workbook ({exc}). {SAVE_AS_UTF8}") from None


def _read_xlsx(raw: bytes, name: str, sheet: str | int | None) -> tuple[list[list[str]], str]:
    """Return the cells of one sheet of an .xlsx workbook as strings, and the sheet's name."""
    book = _open_xlsx(raw, name)
    sheets = [str(s) for s in book.sheetnames]
    chosen: str | int = 0 if sheet is None else sheet
    number = _counted(chosen) if isinstance(chosen, str) and chosen not in sheets else None
    if number is not None:
        chosen = number - 1  # "2" names no sheet: the second one
        if chosen < 0:
            raise BadTable(f"{name}: sheets are counted from 1. Sheets: {', '.join(sheets)}.")
    if (isinstance(chosen, int) and not 0 <= chosen < len(sheets)) or (
        isinstance(chosen, str) and chosen not in sheets
    ):
        shown = f"number {chosen + 1}" if isinstance(chosen, int) else repr(chosen)
        raise BadTable(
            f"{name} has no sheet {shown}; it has {len(sheets)}: {', '.join(sheets)}. "
            "Give a sheet's name or its number, counting from 1."
        )
    sheet_name = sheets[chosen] if isinstance(chosen, int) else chosen
    if sheet is None and len(sheets) > 1:
        log.info("%s has %d sheets; reading the first, %r", name, len(sheets), sheets[0])
    worksheet = book[sheet_name]
    if not hasattr(worksheet, "iter_rows"):
        raise BadTable(
            f"{name}: sheet '{sheet_name}' is a chart, not a table. Choose another sheet: "
            f"{', '.join(sheets)}."
        )
    grid: list[list[str]] = []
    try:
        worksheet.reset_dimensions()  # some writers record a wrong size; read what is there
        for row in worksheet.iter_rows():
            grid.append([_cell_text(cell.value, cell.data_type) for cell in row])
            while grid[-1] and not grid[-1][-1]:
                grid[-1].pop()
    except Exception as exc:  # a sheet's XML that openpyxl cannot parse, in many ways
        bad = _not_a_number(worksheet)
        if bad is not None:
            ref, row, column, value = bad
            raise BadTable(
                f"{name} [{sheet_name}]: cell {ref} (row {row}, column {column}) is marked as a "
                f"number but holds {value[:40]!r}. Type that number again in Excel, or clear the "
                f"cell, and save the workbook; or save the sheet as CSV UTF-8."
            ) from None
        raise BadTable(
            f"{name} [{sheet_name}]: cannot read the sheet from row {len(grid) + 1} on ({exc}). "
            f"Open the workbook in Excel and save it again, or save that sheet as CSV UTF-8."
        ) from None
    finally:
        book.close()
    width = max(map(len, grid), default=0)
    return [row + [""] * (width - len(row)) for row in grid], sheet_name


def _not_a_number(worksheet: Any) -> tuple[str, int, int, str] | None:
    """Return the reference, row, column and text of the first cell of ``worksheet`` marked as
    a number that openpyxl cannot read as one ("NaN", "12abc"), from the sheet's XML; else
    ``None``. openpyxl stops at such a cell without saying which; this finds it for the message.
    """
    try:
        with worksheet._get_source() as source:  # the sheet's XML, as openpyxl reads it
            for _, element in ElementTree.iterparse(source):
                if element.tag.endswith("}c") and element.get("t", "n") == "n":
                    value = next((c.text for c in element if c.tag.endswith("}v")), None)
                    if value is not None and not _reads_as_number(value):
                        ref = element.get("r", "")
                        return (ref, *coordinate_to_tuple(ref), value)
                    element.clear()
    except Exception:  # the XML itself is broken, or the cell has no reference: none to name
        return None
    return None


def _reads_as_number(value: str) -> bool:
    """Return whether openpyxl reads ``value`` as a number: float() when it holds a "." or
    an exponent, int() when not."""
    try:
        float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        return False
    return True


def _cell_text(value: object, data_type: str) -> str:
    """Return a workbook cell's value as text: whole numbers as digits up to 16 of them ("3"),
    other numbers as the shortest text that reads back the same float ("1.5", "1e+300"),
    dates as ISO text; errors (#N/A) and blanks as ``""``."""
    if value is None or data_type == "e":
        return ""
    if isinstance(value, bool | str | int | date | time | timedelta):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)  # also "inf": an Excel number past a float's range, like -1.8E+308
    return str(value)


def _check_cell_sizes(grid: list[list[str]], has_header: bool, name: str) -> None:
    """Refuse a cell longer than MAX_CELL_CHARS, naming its row, column and size."""
    for i, record in enumerate(grid):
        for j, cell in enumerate(record):
            if len(cell) > MAX_CELL_CHARS:
                column = f"column {j + 1}"
                if has_header and i > 0 and j < len(grid[0]) and grid[0][j].strip():
                    column += f" ('{grid[0][j].strip()}')"
                raise BadTable(
                    f"{name}: row {i + 1}, {column} holds {len(cell):,} characters; a cell may "
                    f"hold at most {MAX_CELL_CHARS:,}. A model reads only the first few hundred "
                    f"words of a text, so shorten that text or split it over several rows. (A "
                    f"quote that is never closed also makes one huge cell of the rest of the file.)"
                )


def _guess_header(grid: list[list[str]]) -> bool:
    """Return whether the first row looks like column names rather than data."""
    first, body = [c.strip() for c in grid[0]], grid[1:]
    if not any(first):
        return False
    if any(c.lower() in _KNOWN_NAMES for c in first):
        return True
    if any(is_number(c) for c in first if c):
        return False
    columns = [
        [r[j].strip() for r in body if j < len(r) and r[j].strip()] for j in range(len(first))
    ]
    if any(c and c in set(values) for c, values in zip(first, columns, strict=True)):
        return False  # a first-row value that recurs below it is data, e.g. a label
    for c, values in zip(first, columns, strict=True):
        if c and values and sum(map(is_number, values)) >= 0.8 * len(values):
            return True  # a word above a numeric column
    if not all(first) or len(set(first)) < len(first) or max(map(len, first)) > 30:
        return False
    # short names above long texts
    return any(
        values and 2 * len(c) < statistics.median(map(len, values))
        for c, values in zip(first, columns, strict=True)
    )


def _frame(
    grid: list[list[str]], has_header: bool, name: str, delimiter: str | None
) -> pd.DataFrame:
    """Return the grid as a string DataFrame; rows with the wrong number of fields are an error."""
    if has_header:
        names = [c.strip() for c in grid[0]]
        while len(names) > 1 and not names[-1]:
            names.pop()
        body, first_row = grid[1:], 2
        if not body:
            raise BadTable(f"{name} has a header row but no data rows. Add rows of labelled texts.")
    else:
        body, first_row = grid, 1
        names = [""] * Counter(len(r) for r in body if r).most_common(1)[0][0]
    width, rows, bad = len(names), [], []
    for i, record in enumerate(body):
        record = list(record) or [""] * width  # a blank line is an empty row, as in Excel
        while len(record) > width and not record[-1].strip():
            record.pop()
        if len(record) != width:
            bad.append((first_row + i, len(record)))
        rows.append(record + [""] * (width - len(record)))
    if bad:
        where = "the header has" if has_header else "most rows have"
        quoted = f"A text containing {delimiter!r} must be in double quotes; " if delimiter else ""
        raise BadTable(
            f"{name}: {rows_text([r for r, _ in bad])} {'has' if len(bad) == 1 else 'have'} "
            f"{bad[0][1]} fields but {where} {width}. {quoted}fix "
            f"{'that row' if len(bad) == 1 else 'those rows'} or save the file again from Excel "
            f"as CSV UTF-8."
        )
    seen: Counter[str] = Counter()
    columns = []
    for j, column in enumerate(names):
        column = column or f"column {j + 1}"
        seen[column] += 1
        columns.append(column if seen[column] == 1 else f"{column} ({seen[column]})")
    return pd.DataFrame(rows, columns=columns, dtype=str)


def resolve_column(table: Table, spec: str | int) -> str:
    """Return the column name that ``spec`` means: a name, or a 1-based column number."""
    columns = table.columns
    listing = f"Columns: {', '.join(columns)}."
    if isinstance(spec, str):
        if spec in columns:
            return spec
        matches = [c for c in columns if c.strip().lower() == spec.strip().lower()]
        if len(matches) == 1:
            return matches[0]
    number = _counted(spec) if isinstance(spec, str) else int(spec)
    if number is None:
        close = difflib.get_close_matches(str(spec), columns, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BadTable(f"{table.name} has no column '{spec}'{hint}. {listing}")
    if not 1 <= number <= len(columns):
        raise BadTable(
            f"{table.name} has no column number {number}; it has {len(columns)}. {listing}"
        )
    return columns[number - 1]


def _counted(text: str) -> int | None:
    """Return the number ``text`` writes in decimal digits ("2", " 2 ", "２"), else ``None``:
    also for "²", a digit to ``str.isdigit`` that ``int`` refuses, and for more digits than
    ``int`` reads."""
    digits = text.strip()
    if not digits.isdecimal():
        return None
    try:
        return int(digits)
    except ValueError:  # over 4,300 digits
        return None
