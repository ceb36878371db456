"""embedgen.table and embedgen.data under generated input: whatever a user uploads, reading
it ends in a Table (then LabelledData) or in our error, never in any other exception.

Bounded and derandomized, so CI runs the same examples every time in well under a minute.
Where a round trip can be stated, it is: text written as UTF-8, UTF-8 with BOM or UTF-16 with
BOM reads back cell for cell, and so does Latin text written in Windows-1252.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import os
import zipfile

import openpyxl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from embedgen.data import guess_columns, prepare, split
from embedgen.errors import EmbedgenError
from embedgen.table import Table, read_table, resolve_column

FUZZ = settings(
    # EMBEDGEN_FUZZ_EXAMPLES=5000 searches longer, with fresh random examples.
    max_examples=int(os.environ.get("EMBEDGEN_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize="EMBEDGEN_FUZZ_EXAMPLES" not in os.environ,  # the same examples in CI
    database=None,  # no example database: the seed alone decides the examples
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CJK = "这家店的菜很好吃送餐太慢了味道不错難吃價格環境乾淨標籤評論𠀀一丁七"
LATIN_ACCENTS = "àáâäçèéêëíîïñòóôöùúûüßæøœÀÄÅÆÇÉÖÜ"
EMOJI = "😀👍🎉❤️"
AWKWARD = "\",;|\t\r\n '"
CELL_CHARS = st.sampled_from(
    list(CJK + LATIN_ACCENTS + EMOJI + AWKWARD + "abcxyz019.-，。！？ \u3000\u2028")
)
CELLS = st.text(CELL_CHARS, max_size=12)
# Digits of other scripts: "１" and "١" are numbers to int(), "²" and "①" only to isdigit().
ODD_SPECS = ["1", "2", "0", "-1", "+1", "²", "①", "١", "１", " 2 ", "2.0", "LABEL ", "review", ""]
ODD_SPECS += ["9" * 5000]  # more digits than int() reads
CODECS = ["utf-8", "utf-8-sig", "gb18030", "big5", "cp1252", "utf-16", "utf-16-le", "utf-16-be"]


def read_or_refuse(source: bytes, **kwargs) -> Table | None:
    """The table read from ``source``, or None when it was refused with our error."""
    try:
        table = read_table(source, **kwargs)
    except EmbedgenError:
        return None
    assert all(isinstance(c, str) for c in table.frame.to_numpy().ravel()), "a cell is no str"
    return table


def delimited(grid: list[list[str]], delimiter: str = "\t", newline: str = "\r\n") -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator=newline).writerows(grid)
    return buf.getvalue()


def _short(spec: object) -> str:
    return repr(spec) if len(repr(spec)) < 20 else f"{len(str(spec))} characters"


@st.composite
def grids(draw, cells=CELLS, max_rows: int = 8) -> list[list[str]]:
    width = draw(st.integers(1, 5))
    return draw(st.lists(st.lists(cells, min_size=width, max_size=width), max_size=max_rows))


# --- any bytes --------------------------------------------------------------------------------


@FUZZ
@given(
    prefix=st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"PK\x03\x04"]),
    body=st.binary(max_size=600),
    name=st.sampled_from(["f.csv", "f.tsv", "f.txt", "f.xlsx", "f.xls", "f", "数据.CSV"]),
    header=st.sampled_from([None, True, False]),
)
def test_any_bytes_end_in_a_table_or_our_error(prefix, body, name, header):
    read_or_refuse(prefix + body, name=name, header=header)


# --- delimited text in every encoding -------------------------------------------------------


@FUZZ
@given(
    grid=grids(),
    codec=st.sampled_from(CODECS),
    delimiter=st.sampled_from([",", "\t", ";", "|"]),
    newline=st.sampled_from(["\n", "\r\n"]),
    name=st.sampled_from(["f.csv", "f.txt", "f.tsv"]),
)
def test_delimited_text_in_any_encoding_ends_in_a_table_or_our_error(
    grid, codec, delimiter, newline, name
):
    raw = delimited(grid, delimiter, newline).encode(codec, errors="replace")
    table = read_or_refuse(raw, name=name)
    if table is not None:
        guess_columns(table)


def _last_row_has_text(grid: list[list[str]]) -> bool:
    """Trailing rows of blanks are not rows of a table: a round trip needs a last row with text."""
    return bool(grid) and any(c.strip() for c in grid[-1])


@FUZZ
@given(grid=grids(), codec=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_unicode_text_reads_back_cell_for_cell(grid, codec):
    assume(_last_row_has_text(grid))
    raw = delimited(grid).encode(codec)
    table = read_table(raw, name="round.tsv", header=False)
    assert table.frame.to_numpy().tolist() == grid


LOWER = "abcdefghijklmnopqrstuvwxyz"
# Latin words as Windows-1252 text has them: an accented letter inside a word ("Müller"), an
# accented capital starting one ("Ärger"). A capital and one letter ("Åt") is also two bytes of
# a common Big5 character: that file is truly ambiguous, and is read as Big5.
LATIN_WORDS = st.one_of(
    st.builds(
        lambda head, accent, tail: head + accent + tail,
        st.text(LOWER + LOWER.upper(), min_size=1, max_size=6),
        st.sampled_from(["", *LATIN_ACCENTS.lower(), "€"]),
        st.text(LOWER, min_size=1, max_size=6),
    ),
    st.builds(
        lambda capital, tail: capital + tail,
        st.sampled_from(list("ÀÄÅÆÇÉÖÜ")),
        st.text(LOWER, min_size=2, max_size=6),
    ),
)
LATIN_CELLS = st.lists(LATIN_WORDS, min_size=1, max_size=4).map(" ".join)


@FUZZ
@given(grid=grids(LATIN_CELLS))
def test_latin_text_in_cp1252_reads_back_equal(grid):
    assume(grid)
    table = read_table(delimited(grid).encode("cp1252"), name="latin.tsv", header=False)
    assert table.frame.to_numpy().tolist() == grid
    assert table.encoding in ("utf-8", "cp1252")


# --- workbooks --------------------------------------------------------------------------------

EXTREMES = [
    -1.797e308,
    1.797e308,
    math.inf,
    -math.inf,
    math.nan,
    2**70,
    -(2**70),
    5e-324,
    -1e-300,
    0.1 + 0.2,
    -0.0,
    10**16,
]
# Numbers as other writers put them in a sheet's XML: Excel's 15 digits overflow a float.
XML_NUMBERS = [
    b"-1.79769313486232E+308",
    b"1.79769313486232E+308",
    b"1E+400",
    b"1e-400",
    b"123456789012345678901234567890",
    b"NaN",
    b"-INF",
    b"12abc",
]
SAFE_TEXT = st.text(st.sampled_from(list(CJK + LATIN_ACCENTS + EMOJI + "abc ,;\"'\n")), max_size=10)
VALUES = st.one_of(
    st.none(),
    SAFE_TEXT,
    st.sampled_from(EXTREMES),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.booleans(),
    st.datetimes(datetime.datetime(1900, 3, 1), datetime.datetime(9999, 12, 31)),
    st.dates(datetime.date(1900, 3, 1), datetime.date(9999, 12, 31)),
)


@st.composite
def workbooks(draw) -> tuple[bytes, list[str]]:
    book = openpyxl.Workbook()
    titles = draw(
        st.lists(
            st.sampled_from(["Sheet", "数据", "2", "说明", "Sheet 3", "1"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    book.active.title = titles[0]
    for title in titles[1:]:
        book.create_sheet(title)
    for sheet in book.worksheets:
        rows = draw(st.lists(st.lists(VALUES, max_size=4), max_size=6))  # may be empty
        for row in rows:
            sheet.append(row)
    buf = io.BytesIO()
    book.save(buf)
    raw = buf.getvalue()
    marker = draw(st.sampled_from([None, *XML_NUMBERS]))
    if marker is not None:  # one number cell rewritten, as openpyxl would not write it
        book = openpyxl.Workbook()
        book.active.title = titles[0]
        book.active.append(["text", "value"])
        book.active.append(["第一条", 12345.5])
        buf = io.BytesIO()
        book.save(buf)
        out = io.BytesIO()
        with zipfile.ZipFile(buf) as old, zipfile.ZipFile(out, "w") as new:
            for item in old.infolist():
                data = old.read(item.filename)
                if item.filename.endswith("sheet1.xml"):
                    data = data.replace(b"12345.5", marker)
                new.writestr(item, data)
        raw, titles = out.getvalue(), titles[:1]
    return raw, titles


SHEET_SPECS = st.one_of(
    st.none(),
    st.sampled_from(["数据", "2", "1", "0", "-1", "99", " 2", "Sheet", "nope", ""]),
    st.sampled_from(ODD_SPECS),
    st.integers(-2, 4),
)


# openpyxl warns of a date cell out of range, and then reads it as an error: an empty cell.
@pytest.mark.filterwarnings("ignore:Cell .* is marked as a date:UserWarning")
@FUZZ
@given(book=workbooks(), sheet=SHEET_SPECS, header=st.sampled_from([None, True, False]))
def test_any_workbook_ends_in_a_table_or_our_error(book, sheet, header):
    raw, _ = book
    table = read_or_refuse(raw, name="book.xlsx", sheet=sheet, header=header)
    if table is not None:
        assert table.sheet is not None
        guess_columns(table)


@pytest.mark.parametrize("spec", [*ODD_SPECS, "数据", "Sheet2", 0, 1, -1, 2**70], ids=_short)
def test_every_odd_sheet_spec_picks_a_sheet_or_is_our_error(spec):
    book = openpyxl.Workbook()
    book.active.title = "数据"
    book.active.append(["text", "label"])
    book.active.append(["好", "1"])
    book.create_sheet("review").append(["好", "1"])
    buf = io.BytesIO()
    book.save(buf)
    try:
        assert read_table(buf.getvalue(), name="b.xlsx", sheet=spec).sheet in ("数据", "review")
    except EmbedgenError as error:
        assert str(error).startswith("b.xlsx") and "数据, review" in str(error)


@FUZZ
@given(value=st.one_of(st.sampled_from(EXTREMES), st.floats(), st.integers(-(2**70), 2**70)))
def test_every_number_cell_becomes_text(value):
    book = openpyxl.Workbook()
    book.active.append(["text", "value"])
    book.active.append(["第一条", value])
    buf = io.BytesIO()
    book.save(buf)
    table = read_table(buf.getvalue(), name="n.xlsx", header=True)
    text = table.frame["value"].tolist()[0]
    if isinstance(value, float) and math.isnan(value):
        assert text == ""
    elif isinstance(value, float) and math.isinf(value):
        assert text in ("", "inf", "-inf")  # openpyxl may leave an infinity out of the file
    elif text in ("inf", "-inf"):  # openpyxl writes 16 digits: the largest floats round past
        assert abs(value) > 1.797693134862315e308
    else:
        assert math.isclose(float(text), float(value), rel_tol=1e-15), (value, text)


# --- columns and labelled data --------------------------------------------------------------

COLUMN_SPECS = st.one_of(st.sampled_from(ODD_SPECS), st.integers(-3, 8), st.text(max_size=6))


@pytest.mark.parametrize("spec", [*ODD_SPECS, 0, -1, 3, 2**70], ids=_short)
def test_every_odd_column_spec_names_a_column_or_is_our_error(spec):
    table = read_table(b"label,review\n1,good\n0,bad\n", name="c.csv")
    try:
        assert resolve_column(table, spec) in table.columns
    except EmbedgenError as error:
        assert "c.csv" in str(error) and "Columns: label, review." in str(error)


LABEL_CELLS = st.text(st.sampled_from(list("好差中12 ab,")), max_size=4)
COLUMN_NAMES = st.sampled_from(["label", "review", "text", "标签", "评论", "", "1", "column 2"])


@st.composite
def labelled_tables(draw) -> bytes:
    width = draw(st.integers(1, 4))
    header = draw(st.lists(COLUMN_NAMES, min_size=width, max_size=width))
    rows = draw(st.lists(st.lists(LABEL_CELLS, min_size=width, max_size=width), max_size=12))
    return delimited([header, *rows], ",", "\n").encode()


@FUZZ
@given(
    raw=labelled_tables(),
    text_spec=COLUMN_SPECS,
    label_spec=COLUMN_SPECS,
    header=st.sampled_from([None, True, False]),
    min_per_class=st.integers(-1, 4),
    val_fraction=st.sampled_from([0.1, 0.5, 0.0, 0.7, math.nan]),
)
def test_any_column_choice_ends_in_labelled_data_or_our_error(
    raw, text_spec, label_spec, header, min_per_class, val_fraction
):
    table = read_or_refuse(raw, name="c.csv", header=header)
    if table is None:
        return
    guess_columns(table)
    try:
        assert resolve_column(table, text_spec) in table.columns
    except EmbedgenError:
        pass
    try:
        data = prepare(table, text_spec, label_spec, min_per_class=min_per_class)
    except EmbedgenError:
        return
    data.notes()
    data.summary()
    try:
        train, val = split(data, val_fraction=val_fraction)
    except EmbedgenError:
        return
    assert sorted(train.rows + val.rows) == sorted(data.rows)
