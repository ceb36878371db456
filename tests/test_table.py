"""embedgen.table: reading the tables Chinese analysts have: encodings, delimiters, headers."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest
from conftest import REVIEWS, csv_text, write

from embedgen.data import DroppedRow, prepare
from embedgen.errors import BadTable
from embedgen.table import Table, read_table, resolve_column

# --- reading: encodings ---------------------------------------------------------------------


def test_utf8_csv_is_read_with_header_and_string_cells(tmp_path):
    table = read_table(write(tmp_path, "reviews.csv", csv_text(REVIEWS)))
    assert isinstance(table, Table)
    assert table.encoding == "utf-8"
    assert table.delimiter == ","
    assert table.has_header
    assert table.columns == ["label", "review"]
    assert table.frame["review"].tolist()[0] == "这家店的菜很好吃"
    assert table.frame["label"].tolist()[:2] == ["1", "0"]


def test_utf8_with_bom_is_read_and_bom_is_not_in_the_first_column_name(tmp_path):
    raw = b"\xef\xbb\xbf" + csv_text(REVIEWS).encode("utf-8")
    table = read_table(write(tmp_path, "bom.csv", raw))
    assert table.encoding == "utf-8-sig"
    assert table.columns == ["label", "review"]


def test_gbk_bytes_from_chinese_excel_are_decoded_as_gb18030(tmp_path):
    raw = csv_text(REVIEWS, header=("标签", "评论")).encode("gbk")
    table = read_table(write(tmp_path, "gbk.csv", raw))
    assert table.encoding == "gb18030"
    assert table.columns == ["标签", "评论"]
    assert table.frame["评论"].tolist()[1] == "送餐太慢了，菜都凉了"


def test_gb18030_only_characters_are_decoded(tmp_path):
    text = csv_text([*REVIEWS, ("罕见字𠀀也能读", "1")])
    with pytest.raises(UnicodeEncodeError):
        text.encode("gbk")
    table = read_table(write(tmp_path, "gb18030.csv", text.encode("gb18030")))
    assert table.encoding == "gb18030"
    assert table.frame["review"].tolist()[-1] == "罕见字𠀀也能读"


TRADITIONAL = [
    ("這家餐廳的菜很好吃，服務也很親切", "1"),
    ("外送太慢了，飯菜都涼了", "0"),
    ("價格合理，環境乾淨，下次還會再來", "1"),
    ("電池續航力太差，充電也很慢", "0"),
    ("球隊在最後一分鐘進球，贏得冠軍", "1"),
    ("份量太少，不值這個價錢", "0"),
]


@pytest.mark.parametrize("codec", ["big5", "cp950"])
def test_big5_from_traditional_chinese_excel_is_read_not_garbled(tmp_path, codec):
    # These bytes also decode as GB18030, into rare characters and private-use code points.
    raw = csv_text(TRADITIONAL, header=("標籤", "評論")).encode(codec)
    assert "這家" not in raw.decode("gb18030")
    table = read_table(write(tmp_path, "big5.csv", raw))
    assert table.encoding == "cp950"
    assert table.columns == ["標籤", "評論"]
    assert table.frame["評論"].tolist() == [text for text, _ in TRADITIONAL]


def test_traditional_characters_saved_as_gbk_stay_gb18030(tmp_path):
    raw = csv_text(TRADITIONAL + REVIEWS).encode("gbk")  # GBK holds traditional characters too
    table = read_table(write(tmp_path, "mixed.csv", raw))
    assert table.encoding == "gb18030"
    assert table.frame["review"].tolist()[0] == TRADITIONAL[0][0]


def test_undecodable_bytes_raise_bad_table_naming_file_offset_and_fix(tmp_path):
    raw = b"label,review\n1,abc\x80\xff\x80\xff\n0,def\n"
    with pytest.raises(BadTable) as error:
        read_table(write(tmp_path, "broken.csv", raw))
    message = str(error.value)
    assert "broken.csv" in message
    assert "offset 18" in message
    assert "CSV UTF-8" in message


def test_excel_unicode_text_utf16_with_tabs_is_read(tmp_path):
    raw = csv_text(REVIEWS, sep="\t", newline="\r\n").encode("utf-16")
    table = read_table(write(tmp_path, "unicode.txt", raw))
    assert table.encoding == "utf-16"
    assert table.delimiter == "\t"
    assert table.columns == ["label", "review"]


LATIN = [
    ("Müller sagt: Grüße aus Köln", "1"),
    ("Ärger mit der Lieferung", "0"),
    ("Très bon café — naïve et déjà vu", "1"),
    ("El señor pagó 5 €", "0"),
    ("Smørrebrød og æbleskiver", "1"),
    ("Œuvre complète – «très» chère", "0"),
]


def test_cp1252_latin_text_that_also_decodes_as_gb18030_is_read_as_cp1252(tmp_path):
    rows = [("Müller", "1"), ("Ärger", "0"), ("Grüße", "1"), ("Köln", "0")]
    raw = csv_text(rows, header=("label", "name")).encode("cp1252")
    assert "M黮ler" in raw.decode("gb18030")  # what was read and trained on silently
    table = read_table(write(tmp_path, "names.csv", raw))
    assert table.encoding == "cp1252"
    assert table.frame["name"].tolist() == [text for text, _ in rows]


def test_cp1252_capitals_that_are_common_big5_bytes_are_still_latin(tmp_path):
    rows = [("Äpfel", "1"), ("Ärger", "0"), ("Àla carte", "1"), ("Åse", "0")]
    raw = csv_text(rows).encode("cp1252")
    assert raw.decode("cp950").startswith("label,review\n1,癥fel")  # common characters
    table = read_table(write(tmp_path, "caps.csv", raw))
    assert table.encoding == "cp1252"
    assert table.frame["review"].tolist() == [text for text, _ in rows]


def test_cp1252_latin_text_with_accents_and_euro_is_read_back_equal(tmp_path):
    table = read_table(write(tmp_path, "latin.csv", csv_text(LATIN).encode("cp1252")))
    assert table.encoding == "cp1252"
    assert table.frame["review"].tolist() == [text for text, _ in LATIN]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_read(tmp_path, codec):
    rows = REVIEWS + [("一二三", "1")]  # '一' is U+4E00: a NUL byte on the other side
    raw = csv_text(rows, sep="\t", newline="\r\n").encode(codec)
    table = read_table(write(tmp_path, "unicode.txt", raw))
    assert table.encoding == codec
    assert table.delimiter == "\t"
    assert table.frame["review"].tolist() == [text for text, _ in rows]


def test_broken_utf16_without_a_byte_order_mark_is_named_with_the_fix(tmp_path):
    raw = csv_text(REVIEWS).encode("utf-16-le")[:-1]  # a byte short: the last one cut off
    with pytest.raises(BadTable) as error:
        read_table(write(tmp_path, "cut.csv", raw))
    message = str(error.value)
    assert message.startswith("cut.csv: cannot read the text; it looks like UTF-16")
    assert "UTF-16-LE" in message
    assert "CSV UTF-8" in message


# --- reading: layout ------------------------------------------------------------------------


def test_crlf_line_ends_are_read(tmp_path):
    table = read_table(write(tmp_path, "crlf.csv", csv_text(REVIEWS, newline="\r\n")))
    assert len(table) == len(REVIEWS)
    assert table.frame["review"].tolist()[-1] == "量太少，不值这个价"


def test_quoted_field_may_hold_newline_and_comma(tmp_path):
    raw = 'label,review\r\n1,"好吃, 真的\r\n下次再来"\r\n0,难吃\r\n'
    table = read_table(write(tmp_path, "quoted.csv", raw))
    assert table.frame["review"].tolist() == ["好吃, 真的\r\n下次再来", "难吃"]
    assert table.row_number(1) == 3


def test_tsv_uses_tab_even_when_texts_hold_commas(tmp_path):
    rows = [("好吃,便宜", "1"), ("难吃,贵", "0"), ("一般,还行", "1")]
    table = read_table(write(tmp_path, "reviews.tsv", csv_text(rows, sep="\t")))
    assert table.delimiter == "\t"
    assert table.frame["review"].tolist()[0] == "好吃,便宜"


def test_semicolon_delimiter_is_sniffed(tmp_path):
    table = read_table(write(tmp_path, "semi.csv", csv_text(REVIEWS, sep=";")))
    assert table.delimiter == ";"
    assert table.columns == ["label", "review"]


def test_tab_delimited_txt_is_sniffed(tmp_path):
    table = read_table(write(tmp_path, "reviews.txt", csv_text(REVIEWS, sep="\t")))
    assert table.delimiter == "\t"


def test_a_text_that_slows_the_csv_sniffer_is_read_in_a_moment():
    import time

    raw = ('a,"' * 11_000).encode()  # csv.Sniffer took 12 s over 32 KB of it
    start = time.perf_counter()
    try:
        read_table(raw, name="slow.csv")
    except BadTable:
        pass
    assert time.perf_counter() - start < 3


def test_first_row_of_data_is_not_taken_as_header(tmp_path):
    table = read_table(write(tmp_path, "noheader.csv", csv_text(REVIEWS, header=None)))
    assert not table.has_header
    assert table.columns == ["column 1", "column 2"]
    assert len(table) == len(REVIEWS)
    assert table.row_number(0) == 1


def test_unknown_header_names_above_numeric_labels_are_taken_as_header(tmp_path):
    table = read_table(write(tmp_path, "h.csv", csv_text(REVIEWS, header=("y", "评价内容"))))
    assert table.has_header
    assert table.columns == ["y", "评价内容"]


def test_explicit_header_false_keeps_the_first_row_as_data(tmp_path):
    table = read_table(write(tmp_path, "h.csv", csv_text(REVIEWS)), header=False)
    assert table.columns == ["column 1", "column 2"]
    assert table.frame.iloc[0].tolist() == ["label", "review"]


def test_blank_line_is_an_empty_row_so_later_row_numbers_match_excel(tmp_path):
    raw = "label,review\n1,好吃\n\n0,难吃\n1,好\n0,差\n"
    data = prepare(read_table(write(tmp_path, "blank.csv", raw)), "review", "label")
    assert data.rows == (2, 4, 5, 6)
    assert data.dropped == (DroppedRow(3, "empty text"),)


def test_missing_cells_are_empty_strings_not_nan(tmp_path):
    table = read_table(write(tmp_path, "gaps.csv", "label,review\n1,\n,好吃\n"))
    assert table.frame.values.tolist() == [["1", ""], ["", "好吃"]]


def test_xlsx_is_read_with_header(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["评论", "标签"])
    for text, label in REVIEWS:
        sheet.append([text, int(label)])
    book.save(tmp_path / "reviews.xlsx")
    table = read_table(tmp_path / "reviews.xlsx")
    assert table.encoding == "xlsx"
    assert table.delimiter is None
    assert table.columns == ["评论", "标签"]
    assert table.frame["标签"].tolist()[:2] == ["1", "0"]


def test_unknown_xlsx_sheet_lists_the_sheets(tmp_path):
    book = openpyxl.Workbook()
    book.active.title = "数据"
    book.active.append(["text", "label"])
    book.save(tmp_path / "book.xlsx")
    with pytest.raises(BadTable, match=r"book.xlsx has no sheet 'Sheet2'; it has 1: 数据"):
        read_table(tmp_path / "book.xlsx", sheet="Sheet2")
    with pytest.raises(BadTable, match=r"no sheet number 3; it has 1: 数据\. .*counting from 1"):
        read_table(tmp_path / "book.xlsx", sheet="3")


def _two_sheet_book(path: Path) -> Path:
    book = openpyxl.Workbook()
    book.active.title = "说明"
    book.active.append(["这个工作表只有说明"])
    data = book.create_sheet("2")  # a sheet whose name is a number
    data.append(["text", "label"])
    for text, label in REVIEWS:
        data.append([text, label])
    third = book.create_sheet("数据")
    third.append(["评论", "标签"])
    for text, label in REVIEWS[:4]:
        third.append([text, label])
    book.save(path)
    return path


def test_xlsx_sheets_are_listed_and_picked_by_name_or_number_from_1(tmp_path):
    from embedgen.table import xlsx_sheets

    path = _two_sheet_book(tmp_path / "book.xlsx")
    assert xlsx_sheets(path) == xlsx_sheets(path.read_bytes()) == ["说明", "2", "数据"]
    first = read_table(path)
    assert first.sheet == "说明" and first.label == "book.xlsx [说明]"
    assert read_table(path, sheet="数据").columns == ["评论", "标签"]
    assert read_table(path, sheet="3").sheet == "数据"  # no sheet is called "3": the third
    assert read_table(path, sheet="2").columns == ["text", "label"]  # the sheet called "2"
    assert read_table(path, sheet=2).sheet == "数据"  # an int is a 0-based position
    data = prepare(read_table(path, sheet="数据"), "评论", "标签")
    assert data.summary()["source"] == "book.xlsx [数据]"
    assert read_table(write(tmp_path, "plain.csv", "text,label\n好,1\n")).sheet is None
    with pytest.raises(BadTable, match=r"book.xlsx: sheets are counted from 1"):
        read_table(path, sheet="0")


def test_a_broken_workbook_is_named_when_its_sheets_are_listed(tmp_path):
    from embedgen.table import xlsx_sheets

    raw = b"PK\x03\x04 not really a workbook"
    with pytest.raises(BadTable, match=r"^报表.xlsx is not a readable .xlsx workbook"):
        xlsx_sheets(raw, name="报表.xlsx")
    with pytest.raises(BadTable, match=r"^broken.xlsx is not a readable"):
        xlsx_sheets(write(tmp_path, "broken.xlsx", raw))


def _xlsx_with(tmp_path: Path, values: list, *, replace: tuple[bytes, bytes] | None = None) -> Path:
    """A workbook: a header, then one row per value (text "第i条" and the value); ``replace``
    edits its XML, to write what openpyxl would not (Excel's own overflowing numbers, cells
    over Excel's 32,767 characters)."""
    import io
    import zipfile

    book = openpyxl.Workbook()
    book.active.title = "数据"
    book.active.append(["text", "value"])
    for i, value in enumerate(values):
        book.active.append([f"第{i}条", value])
    buf = io.BytesIO()
    book.save(buf)
    if replace is None:
        return write(tmp_path, "numbers.xlsx", buf.getvalue())
    out, replaced = io.BytesIO(), 0
    with zipfile.ZipFile(buf) as old, zipfile.ZipFile(out, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            replaced += data.count(replace[0])
            new.writestr(item, data.replace(*replace))
    assert replaced == 1, f"{replace[0]!r} is {replaced} times in the workbook's XML"
    return write(tmp_path, "numbers.xlsx", out.getvalue())


def test_xlsx_number_past_the_float_range_is_text_not_a_crash(tmp_path):
    # Excel writes its smallest number with 15 digits: -1.79769313486232E+308 rounds past
    # the largest float, so Python reads it as -inf.
    path = _xlsx_with(tmp_path, [12345.5, 1], replace=(b"12345.5", b"-1.79769313486232E+308"))
    table = read_table(path)
    assert table.frame["value"].tolist() == ["-inf", "1"]


def test_xlsx_cell_marked_as_a_number_that_is_none_is_named_by_sheet_row_and_column(tmp_path):
    path = _xlsx_with(tmp_path, [1, 12345.5, 3], replace=(b"12345.5", b"NaN"))
    with pytest.raises(BadTable) as error:
        read_table(path)
    assert str(error.value).startswith(
        "numbers.xlsx [数据]: cell B3 (row 3, column 2) is marked as a number but holds 'NaN'."
    )


def test_xlsx_extreme_numbers_and_dates_become_short_text(tmp_path):
    import datetime

    values = [-1.797e308, 2**70, 5e-324, 1e300, 1.5, 3.0, -7, datetime.datetime(2024, 1, 31)]
    table = read_table(_xlsx_with(tmp_path, values))
    assert table.frame["value"].tolist() == [
        "-1.797e+308",
        "1.180591620717411e+21",  # 2**70 as openpyxl writes it: a float, 16 digits
        "5e-324",
        "1e+300",
        "1.5",
        "3",
        "-7",
        "2024-01-31 00:00:00",
    ]


def test_a_huge_cell_names_its_row_column_size_and_the_limit(tmp_path):
    from embedgen.table import MAX_CELL_CHARS

    huge = "长" * (MAX_CELL_CHARS + 1)
    raw = f"label,review\n1,好吃\n0,{huge}\n"
    with pytest.raises(BadTable) as error:
        read_table(write(tmp_path, "big.csv", raw))
    message = str(error.value)
    assert message.startswith("big.csv: row 3, column 2 ('review') holds ")
    assert f"{MAX_CELL_CHARS + 1:,} characters" in message
    assert f"{MAX_CELL_CHARS:,}" in message
    assert "shorten" in message
    assert "CSV UTF-8" not in message
    path = _xlsx_with(tmp_path, ["短", "HUGE"], replace=(b"HUGE", huge.encode()))
    with pytest.raises(
        BadTable, match=r"^numbers.xlsx \[数据\]: row 3, column 2 \('value'\) holds"
    ):
        read_table(path)


def test_a_long_upload_name_is_kept_in_messages_and_folder_names_stay_short(tmp_path):
    from embedgen.paths import new_run_folder, slug

    words = "二〇二四年第三季度华东区外卖平台用户评论情感标注数据（已清洗、去重、人工复核）"
    name = (words * 3)[:90] + ".csv"  # 90 characters
    assert len(name.encode()) > 255  # longer than a file name may be on Linux or macOS
    table = read_table(csv_text(REVIEWS).encode(), name=name)
    data = prepare(table, "review", "label")
    assert data.source_name == table.name == name
    assert len(slug(name).encode()) <= 60
    folder = new_run_folder(data.source_name, "head", root=tmp_path)
    # A matrix name holds a word list's and a corpus's name; with its staging suffix it fits.
    matrix = folder / f"contextual-L12-tuned-words-{slug(name)}-in-{slug(name)}-center.staging"
    matrix.mkdir()


def test_bytes_upload_uses_name_for_format_and_messages():
    raw = csv_text(REVIEWS, sep="\t").encode("utf-8")
    table = read_table(raw, name="upload.tsv")
    assert table.name == "upload.tsv"
    assert table.delimiter == "\t"
    assert len(table.sha256) == 64


def test_empty_file_raises_bad_table_naming_it(tmp_path):
    with pytest.raises(BadTable, match="empty.csv is empty"):
        read_table(write(tmp_path, "empty.csv", b""))


def test_header_without_rows_raises_bad_table(tmp_path):
    with pytest.raises(BadTable, match="only_header.csv has a header row but no data rows"):
        read_table(write(tmp_path, "only_header.csv", "label,review\n"))


def test_ragged_row_raises_bad_table_naming_the_row(tmp_path):
    raw = "label,review\n1,好吃\n0,难吃,还贵\n1,不错\n"
    with pytest.raises(BadTable) as error:
        read_table(write(tmp_path, "ragged.csv", raw))
    message = str(error.value)
    assert "ragged.csv: row 3 has 3 fields but the header has 2" in message
    assert "double quotes" in message


def test_missing_file_raises_bad_table(tmp_path):
    with pytest.raises(BadTable, match="nothere.csv: no such file"):
        read_table(tmp_path / "nothere.csv")


# --- columns --------------------------------------------------------------------------------


def test_resolve_column_accepts_name_or_one_based_number(tmp_path):
    table = read_table(write(tmp_path, "noheader.csv", csv_text(REVIEWS, header=None)))
    assert resolve_column(table, 2) == "column 2"
    assert resolve_column(table, "1") == "column 1"
    assert resolve_column(table, "column 2") == "column 2"


def test_resolve_column_unknown_name_suggests_close_match_and_lists_columns(tmp_path):
    table = read_table(write(tmp_path, "waimai.csv", csv_text(REVIEWS)))
    with pytest.raises(BadTable) as error:
        resolve_column(table, "lable")
    message = str(error.value)
    assert message.startswith("waimai.csv has no column 'lable'")
    assert "did you mean 'label'?" in message
    assert "Columns: label, review." in message


def test_resolve_column_number_out_of_range_raises_bad_table(tmp_path):
    table = read_table(write(tmp_path, "waimai.csv", csv_text(REVIEWS)))
    with pytest.raises(BadTable, match="no column number 3; it has 2"):
        resolve_column(table, 3)


# --- row numbers ------------------------------------------------------------------------------


def test_preview_is_indexed_by_the_row_numbers_messages_use(tmp_path):
    table = read_table(write(tmp_path, "r.csv", csv_text(REVIEWS)))
    preview = table.preview(3)
    assert list(preview.index) == [2, 3, 4] == [table.row_number(i) for i in range(3)]
    assert preview.index.name == "row"
    assert preview.loc[2, "review"] == REVIEWS[0][0]
    assert "the header is row 1" in table.numbering
    no_header = read_table(write(tmp_path, "n.csv", csv_text(REVIEWS, header=None)), header=False)
    assert list(no_header.preview(2).index) == [1, 2]
    assert "from 1" in no_header.numbering


def test_a_text_spanning_lines_is_one_row_in_preview_and_messages(tmp_path):
    raw = 'review,label\n"第一行\n第二行",1\n,0\n好吃,1\n难吃,0\n'
    table = read_table(write(tmp_path, "m.csv", raw))
    data = prepare(table, "review", "label", min_per_class=1)
    assert data.dropped == (DroppedRow(3, "empty text"),)  # file line 4, spreadsheet row 3
    assert table.preview().loc[3, "review"] == ""
