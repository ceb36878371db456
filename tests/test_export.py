"""Export: the matrix folder round trip, other tools' formats, writes that never leave halves."""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from embedgen import export as export_module
from embedgen.errors import BadConfig, BadRun
from embedgen.export import (
    ExportFormat,
    export,
    export_projector,
    export_word2vec,
    export_zip,
    load_matrix,
    save_matrix,
)
from embedgen.matrix import EmbeddingMatrix

VOCAB = ("[PAD]", "好", "##好", "坏", "▁中国", "国", "\\", "héllo")


def make_matrix(vocab=VOCAB, dims: int = 6, seed: int = 0) -> EmbeddingMatrix:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(vocab), dims)).astype(np.float32)
    return EmbeddingMatrix(vectors=vectors, vocab=tuple(vocab), manifest={"method": "input"})


@pytest.fixture
def matrix() -> EmbeddingMatrix:
    return make_matrix()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- the matrix folder ---------------------------------------------------------------------------


def test_save_then_load_gives_back_the_same_float32_matrix(matrix, tmp_path):
    loaded = load_matrix(save_matrix(matrix, tmp_path / "m"))
    assert loaded.vectors.dtype == np.float32
    np.testing.assert_array_equal(loaded.vectors, matrix.vectors)
    assert loaded.vocab == matrix.vocab
    assert loaded.manifest["method"] == "input"


def test_save_writes_exactly_the_three_files(matrix, tmp_path):
    save_matrix(matrix, tmp_path / "m")
    assert files_in(tmp_path / "m") == ["manifest.json", "matrix.npy", "vocab.txt"]


def test_manifest_records_rows_dims_dtype_and_file_hashes(matrix, tmp_path):
    folder = save_matrix(matrix, tmp_path / "m")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["rows"], manifest["dims"], manifest["dtype"]) == (8, 6, "float32")
    for name in ("matrix.npy", "vocab.txt"):
        assert manifest["files"][name] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert manifest["escaped_tokens"] == 0


def test_vocab_txt_line_i_names_row_i(matrix, tmp_path):
    folder = save_matrix(matrix, tmp_path / "m")
    text = (folder / "vocab.txt").read_bytes().decode("utf-8")
    assert text.split("\n")[:-1] == list(VOCAB)  # backslash token written as it is
    assert "\r" not in text


def test_float16_round_trip_is_close_and_comes_back_as_float32(matrix, tmp_path):
    loaded = load_matrix(save_matrix(matrix, tmp_path / "m", dtype="float16"))
    assert np.load(tmp_path / "m" / "matrix.npy").dtype == np.float16
    assert loaded.vectors.dtype == np.float32
    np.testing.assert_allclose(loaded.vectors, matrix.vectors, rtol=1e-3, atol=1e-3)
    assert loaded.manifest["dtype"] == "float16"


def test_save_rejects_other_dtypes_before_writing(matrix, tmp_path):
    with pytest.raises(BadConfig, match="float64"):
        save_matrix(matrix, tmp_path / "m", dtype="float64")
    assert not (tmp_path / "m").exists()


def test_a_token_with_a_newline_round_trips(tmp_path):
    vocab = ("好", "a\nb", "\\n", "c\r", "\\")
    folder = save_matrix(make_matrix(vocab), tmp_path / "m")
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == len(vocab)
    assert json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["escaped_tokens"] == 2
    assert load_matrix(folder).vocab == vocab


def test_an_empty_token_round_trips(tmp_path):
    vocab = ("", "好", "")
    assert load_matrix(save_matrix(make_matrix(vocab), tmp_path / "m")).vocab == vocab


def test_load_of_a_missing_folder_is_bad_run(tmp_path):
    with pytest.raises(BadRun, match="does not exist"):
        load_matrix(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["matrix.npy", "vocab.txt", "manifest.json"])
def test_load_of_a_folder_missing_a_file_names_the_file(matrix, tmp_path, name):
    folder = save_matrix(matrix, tmp_path / "m")
    (folder / name).unlink()
    with pytest.raises(BadRun, match=f"has no {name}; build one with `embedgen matrix"):
        load_matrix(folder)


def test_load_with_fewer_vocab_lines_than_rows_is_bad_run(matrix, tmp_path):
    folder = save_matrix(matrix, tmp_path / "m")
    (folder / "vocab.txt").write_text("好\n坏\n", encoding="utf-8")
    with pytest.raises(BadRun, match="8 rows but vocab.txt has 2 lines"):
        load_matrix(folder)


def test_load_with_verify_notices_a_changed_file(matrix, tmp_path):
    folder = save_matrix(matrix, tmp_path / "m")
    np.save(folder / "matrix.npy", matrix.vectors + 1)
    load_matrix(folder)  # without verify only the shapes are checked
    with pytest.raises(BadRun, match="sha256"):
        load_matrix(folder, verify=True)


def test_save_interrupted_inside_np_save_leaves_no_file(matrix, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_module.np, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_matrix(matrix, tmp_path / "m")
    assert files_in(tmp_path / "m") == []  # neither matrix.npy nor a stray temporary file


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
    with pytest.raises(BadConfig, match="choose one of: npy, word2vec, projector, zip"):
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
