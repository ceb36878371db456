"""Export: other tools' formats (word2vec, projector, zip, downloads); no half-written files."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import VOCAB, files_in, make_matrix

from embedgen.errors import BadConfig
from embedgen.export import (
    ExportFormat,
    download_bytes,
    export,
    export_projector,
    export_word2vec,
    export_zip,
)
from embedgen.matrix import EmbeddingMatrix, load_matrix

# -- word2vec ------------------------------------------------------------------------------------


def test_word2vec_loads_in_gensim_with_the_same_rows_and_vectors(matrix, tmp_path):
    from gensim.models import KeyedVectors

    path = export_word2vec(matrix, tmp_path / "v.txt")
    kv = KeyedVectors.load_word2vec_format(path, binary=False)
    assert kv.index_to_key == list(VOCAB)
    np.testing.assert_allclose(kv.vectors, matrix.vectors, rtol=0, atol=1e-5)


def test_word2vec_values_reproduce_float32_exactly(matrix, tmp_path):
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(export_word2vec(matrix, tmp_path / "v.txt"))
    np.testing.assert_array_equal(kv.vectors, matrix.vectors)


def test_word2vec_header_says_rows_and_dims(matrix, tmp_path):
    path = export_word2vec(matrix, tmp_path / "v.txt")
    assert path.read_text(encoding="utf-8").split("\n")[0] == "8 6"


def test_word2vec_replaces_whitespace_in_tokens_with_the_word_start_mark(tmp_path):
    from gensim.models import KeyedVectors

    path = export_word2vec(make_matrix(("a b", "c\nd", "好")), tmp_path / "v.txt")
    kv = KeyedVectors.load_word2vec_format(path)
    assert kv.index_to_key == ["a\u2581b", "c\u2581d", "好"]


def test_word2vec_keeps_tokens_that_collide_after_escaping_apart(tmp_path, caplog):
    from gensim.models import KeyedVectors

    matrix = make_matrix(("a b", "a\u2581b", "a\u2581b#2"))
    with caplog.at_level(logging.WARNING, logger="embedgen.export"):
        path = export_word2vec(matrix, tmp_path / "v.txt")
    kv = KeyedVectors.load_word2vec_format(path)
    assert len(kv) == 3
    assert kv.index_to_key == ["a\u2581b", "a\u2581b#3", "a\u2581b#2"]
    np.testing.assert_array_equal(kv.vectors, matrix.vectors)
    assert "#N suffix" in caplog.text


def test_word2vec_interrupted_write_leaves_no_file(tmp_path):
    # a lone surrogate cannot be encoded as UTF-8, so the write fails part way
    matrix = make_matrix(("好", "坏", "\ud800"))
    with pytest.raises(UnicodeEncodeError):
        export_word2vec(matrix, tmp_path / "v.txt")
    assert files_in(tmp_path) == []


# -- projector -----------------------------------------------------------------------------------


def test_projector_files_have_one_line_per_row(matrix, tmp_path):
    vectors_path, metadata_path = export_projector(matrix, tmp_path / "p")
    vector_lines = vectors_path.read_bytes().decode("utf-8").split("\n")[:-1]
    metadata_lines = metadata_path.read_bytes().decode("utf-8").split("\n")[:-1]
    assert len(vector_lines) == len(metadata_lines) == 8
    assert all(len(line.split("\t")) == 6 for line in vector_lines)
    np.testing.assert_allclose(
        np.loadtxt(vectors_path, delimiter="\t"), matrix.vectors, rtol=1e-5, atol=1e-6
    )


def test_projector_metadata_is_one_token_per_line_without_header(matrix, tmp_path):
    _, metadata_path = export_projector(matrix, tmp_path / "p")
    assert metadata_path.read_text(encoding="utf-8").split("\n")[:-1] == list(VOCAB)


def test_projector_metadata_escapes_tabs_and_newlines_and_shows_blank_tokens(tmp_path):
    _, metadata_path = export_projector(make_matrix(("a\tb", "c\nd", " ", "")), tmp_path / "p")
    lines = metadata_path.read_text(encoding="utf-8").split("\n")[:-1]
    assert lines == ["a\\tb", "c\\nd", "\\u0020", "<empty>"]


FORMULAS = ("=cmd|' /C calc'!A0", "+1+1", "@SUM(1)", "-2+3", "好=坏")


def test_projector_metadata_guards_cells_a_spreadsheet_would_read_as_formulas(tmp_path):
    """metadata.tsv opens in Excel: a token that starts with = + - or @ gets a leading ' so it
    shows as text, and every row keeps its line."""
    _, metadata_path = export_projector(make_matrix(FORMULAS), tmp_path / "p")
    lines = metadata_path.read_text(encoding="utf-8").split("\n")[:-1]
    assert lines == ["'=cmd|' /C calc'!A0", "'+1+1", "'@SUM(1)", "'-2+3", "好=坏"]
    assert download_bytes(make_matrix(FORMULAS), "metadata.tsv").decode().split("\n")[:-1] == lines


def test_a_matrix_folder_keeps_raw_tokens_in_vocab_txt_and_guards_rows_tsv(tmp_path):
    """vocab.txt is for programs (line i names row i, tokens as the model spells them), so it
    stays raw; rows.tsv, a table for people, guards its token column like metadata.tsv."""
    matrix = make_matrix(FORMULAS)
    matrix = EmbeddingMatrix(
        vectors=matrix.vectors,
        vocab=matrix.vocab,
        manifest=matrix.manifest,
        columns={"count": tuple(range(len(FORMULAS)))},
    )
    folder = export(matrix, "npy", tmp_path / "m")
    assert (folder / "vocab.txt").read_text("utf-8").split("\n")[:-1] == list(FORMULAS)
    table = (folder / "rows.tsv").read_text("utf-8").split("\n")[1:-1]
    assert [line.split("\t")[0] for line in table] == [
        "'=cmd|' /C calc'!A0",
        "'+1+1",
        "'@SUM(1)",
        "'-2+3",
        "好=坏",
    ]
    loaded = load_matrix(folder)
    assert loaded.vocab == FORMULAS and loaded.columns["count"] == tuple(range(5))


# -- zip and dispatch ----------------------------------------------------------------------------


def test_zip_holds_every_format_and_its_matrix_loads_back(matrix, tmp_path):
    path = export_zip(matrix, tmp_path / "bundle.zip")
    with zipfile.ZipFile(path) as bundle:
        assert sorted(bundle.namelist()) == [
            "manifest.json",
            "matrix.npy",
            "metadata.tsv",
            "vectors.tsv",
            "vectors.word2vec.txt",
            "vocab.txt",
        ]
        bundle.extractall(tmp_path / "out")
    np.testing.assert_array_equal(load_matrix(tmp_path / "out").vectors, matrix.vectors)
    assert files_in(tmp_path) == ["bundle.zip", "out"]  # the staging folder is gone


def test_zip_interrupted_write_leaves_no_file(matrix, tmp_path, monkeypatch):
    real_write = zipfile.ZipFile.write
    calls = []

    def fail_on_third(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "write", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        export_zip(matrix, tmp_path / "bundle.zip")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("fmt", "name", "expected"),
    [
        (ExportFormat.NPY, "m", "matrix.npy"),
        ("word2vec", "v.txt", None),
        ("projector", "p", "metadata.tsv"),
        (ExportFormat.ZIP, "b.zip", None),
    ],
)
def test_export_dispatches_on_the_format(matrix, tmp_path, fmt, name, expected):
    out = export(matrix, fmt, tmp_path / name)
    assert out == tmp_path / name
    assert (out / expected).is_file() if expected else out.is_file()


def test_export_rejects_an_unknown_format(matrix, tmp_path):
    with pytest.raises(
        BadConfig, match="export format .parquet.. Choose one of: npy, word2vec, projector, zip"
    ):
        export(matrix, "parquet", tmp_path / "x")


def test_zip_keeps_the_float16_the_matrix_was_saved_as(tmp_path: Path) -> None:
    import io
    import zipfile

    from embedgen.export import ExportFormat, export

    rng = np.random.default_rng(0)
    m = EmbeddingMatrix(rng.normal(size=(5, 4)).astype(np.float32), ("好", "坏", "美", "丑", "中"))
    path = export(m, ExportFormat.ZIP, tmp_path / "b.zip", dtype="float16")
    with zipfile.ZipFile(path) as bundle:
        array = np.load(io.BytesIO(bundle.read("matrix.npy")))
    assert array.dtype == np.float16 and array.shape == (5, 4)


def test_each_download_is_the_file_the_zip_holds(matrix, tmp_path):
    import io

    from embedgen.export import DOWNLOADS, ZIP_FILE, download_bytes

    with zipfile.ZipFile(export_zip(matrix, tmp_path / "bundle.zip", dtype="float16")) as bundle:
        expected = {name: bundle.read(name) for name in bundle.namelist()}
    for name in DOWNLOADS:
        data = download_bytes(matrix, name, dtype="float16")
        if name == ZIP_FILE:
            with zipfile.ZipFile(io.BytesIO(data)) as got:
                assert sorted(got.namelist()) == sorted(expected)
                assert got.read("vocab.txt") == expected["vocab.txt"]
        elif name == "manifest.json":  # holds its own creation time; the rest must agree
            got, want = json.loads(data), json.loads(expected[name])
            assert got["files"] == want["files"] and got["dtype"] == want["dtype"] == "float16"
        else:
            assert data == expected[name], name
    assert np.load(io.BytesIO(download_bytes(matrix, "matrix.npy"))).dtype == np.float32


def test_an_unknown_download_is_refused(matrix):
    from embedgen.export import download_bytes

    with pytest.raises(BadConfig, match="Unknown download 'matrix.csv'"):
        download_bytes(matrix, "matrix.csv")


def test_downloads_and_zips_are_staged_where_start_up_cleaning_finds_them(
    matrix, tmp_path, monkeypatch
):
    """A server killed in the middle of a 400 MB export leaves its staging folder under
    $EMBEDGEN_HOME/tmp, named as a leftover, not in the system's temp folder."""
    import importlib

    from embedgen.atomic import TEMP_PREFIX
    from embedgen.export import WORD2VEC_FILE, ZIP_FILE, download_bytes

    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    export_module = importlib.import_module("embedgen.export")  # not the export() function
    staged: list[Path] = []
    real = export_module.export_word2vec

    def spy(matrix, path):
        staged.append(Path(path))
        return real(matrix, path)

    monkeypatch.setattr(export_module, "export_word2vec", spy)
    download_bytes(matrix, ZIP_FILE)
    download_bytes(matrix, WORD2VEC_FILE)
    export_zip(matrix, tmp_path / "out" / "b.zip")
    home_tmp = tmp_path / "home" / "tmp"
    assert len(staged) == 3
    for path in staged:
        assert path.parent.parent == home_tmp, path
        assert path.parent.name.startswith(TEMP_PREFIX), path
    assert list(home_tmp.iterdir()) == [], "the staging folders are removed after use"
    assert files_in(tmp_path / "out") == ["b.zip"]
