"""Other tools' formats of an embedding matrix: word2vec text, projector TSVs, a zip bundle.

Our own matrix folder (matrix.npy, vocab.txt, manifest.json) lives beside ``EmbeddingMatrix``
in ``embedgen.matrix``. Every file here is written to a temporary name in its folder and
renamed into place (``embedgen.atomic``), so a crash never leaves a half file under its name.
What a zip or a download is assembled from is staged under ``$EMBEDGEN_HOME/tmp``, where a
crash's leftovers are found and removed at the next start.

Token rules, one per format:

- word2vec: each whitespace character in a token becomes ``▁`` (U+2581) and an empty token
  becomes ``<empty>``, since the format splits lines on spaces. Tokens that then collide get a
  ``#2``, ``#3``, ... suffix so that no row is lost; both are logged.
- projector ``metadata.tsv``: tab, ``\\n`` and ``\\r`` are shown as ``\\t``, ``\\n``, ``\\r``;
  an empty or whitespace-only token (which the projector would skip, shifting every later
  label) is written as ``\\uXXXX`` escapes, or ``<empty>``; a token a spreadsheet would read as
  a formula (a leading ``=``, ``+``, ``-``, ``@``) gets a leading ``'`` (``embedgen.cells``).
"""

from __future__ import annotations

import enum
import logging
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedgen.atomic import atomic_path, temp_folder, write_text
from embedgen.cells import spreadsheet_cell
from embedgen.errors import BadConfig
from embedgen.fields import choice
from embedgen.matrix import (
    MANIFEST_FILE,
    MATRIX_FILE,
    VOCAB_FILE,
    EmbeddingMatrix,
    save_matrix,
    text_lines,
)
from embedgen.paths import tmp_dir

log = logging.getLogger(__name__)

WORD2VEC_FILE = "vectors.word2vec.txt"
PROJECTOR_VECTORS_FILE = "vectors.tsv"
PROJECTOR_METADATA_FILE = "metadata.tsv"
BUNDLED = (  # what export_zip puts in the zip, in this order
    MATRIX_FILE,
    VOCAB_FILE,
    MANIFEST_FILE,
    WORD2VEC_FILE,
    PROJECTOR_VECTORS_FILE,
    PROJECTOR_METADATA_FILE,
)

EMPTY_TOKEN = "<empty>"
_WORD2VEC_SPACE = "\u2581"

# Rows formatted per write, to keep memory flat for large matrices.
_ROWS_PER_CHUNK = 2048


class ExportFormat(enum.StrEnum):
    """What ``export`` writes."""

    NPY = "npy"  # the matrix folder: matrix.npy + vocab.txt + manifest.json
    WORD2VEC = "word2vec"  # word2vec text format
    PROJECTOR = "projector"  # TensorBoard projector vectors.tsv + metadata.tsv
    ZIP = "zip"  # all of the above in one zip


# -- helpers -------------------------------------------------------------------------------------


def _format_rows(vectors: npt.NDArray[np.float32], sep: str, fmt: str) -> Iterator[list[str]]:
    """Yield chunks of formatted rows (each the row's values joined by ``sep``)."""
    row_format = sep.join([fmt] * vectors.shape[1])
    for start in range(0, vectors.shape[0], _ROWS_PER_CHUNK):
        block = vectors[start : start + _ROWS_PER_CHUNK].tolist()
        yield [row_format % tuple(row) for row in block]


def _float32(matrix: EmbeddingMatrix) -> npt.NDArray[np.float32]:
    return np.asarray(matrix.vectors, dtype=np.float32)


# -- other tools' formats ------------------------------------------------------------------------


def word2vec_tokens(vocab: Sequence[str]) -> list[str]:
    """Return the tokens as written to a word2vec file: no whitespace, none empty, all unique."""
    names = [
        "".join(_WORD2VEC_SPACE if ch.isspace() else ch for ch in t) or EMPTY_TOKEN for t in vocab
    ]
    changed = sum(n != t for n, t in zip(names, vocab, strict=True))
    if changed:
        log.info(
            "word2vec: %d tokens had whitespace (now %r) or were empty (now %r)",
            changed,
            _WORD2VEC_SPACE,
            EMPTY_TOKEN,
        )
    taken = set(names)
    seen: set[str] = set()
    renamed: list[tuple[str, str]] = []
    for i, name in enumerate(names):
        if name in seen:
            n = 2
            while f"{name}#{n}" in taken:
                n += 1
            names[i] = f"{name}#{n}"
            taken.add(names[i])
            renamed.append((vocab[i], names[i]))
        seen.add(names[i])
    if renamed:
        original, new = renamed[0]
        log.warning(
            "word2vec: %d tokens would repeat an earlier one and got a #N suffix (e.g. %r -> %r)",
            len(renamed),
            original,
            new,
        )
    return names


def export_word2vec(matrix: EmbeddingMatrix, path: str | os.PathLike[str]) -> Path:
    """Write ``matrix`` in word2vec text format; return the path.

    A "rows dims" header, then "token v1 v2 ..." per row, UTF-8. Values are written with 9
    significant digits, which reproduces every float32 exactly. Token rule: see the module
    docstring (whitespace -> "▁", duplicates get "#N").
    """
    out = Path(path)
    vectors = _float32(matrix)
    names = word2vec_tokens(matrix.vocab)
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as f:
        f.write(f"{vectors.shape[0]} {vectors.shape[1]}\n")
        row = 0
        for chunk in _format_rows(vectors, " ", "%.9g"):
            f.write("".join(f"{names[row + i]} {line}\n" for i, line in enumerate(chunk)))
            row += len(chunk)
    log.info("Wrote %d x %d word2vec text to %s", *vectors.shape, out)
    return out


def projector_label(token: str) -> str:
    """Return ``token`` as shown in the projector's metadata.tsv (one visible line, never a
    formula when the file is opened in a spreadsheet)."""
    label = token.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    if not label.strip():
        return "".join(f"\\u{ord(ch):04x}" for ch in label) or EMPTY_TOKEN
    return spreadsheet_cell(label)


def export_projector(matrix: EmbeddingMatrix, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write TensorBoard projector files; return (vectors.tsv, metadata.tsv) in ``folder``.

    vectors.tsv: one row per line, tab-separated, 6 significant digits (plenty for a picture,
    and the browser has less to load); metadata.tsv: one token per line and, being a single
    column, no header (the projector's rule).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    vectors = _float32(matrix)
    vectors_path = out / PROJECTOR_VECTORS_FILE
    metadata_path = out / PROJECTOR_METADATA_FILE
    with atomic_path(vectors_path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as f:
        for chunk in _format_rows(vectors, "\t", "%.6g"):
            f.write("".join(f"{line}\n" for line in chunk))
    write_text(metadata_path, text_lines([projector_label(t) for t in matrix.vocab]))
    log.info("Wrote projector files for %d rows to %s", vectors.shape[0], out)
    return vectors_path, metadata_path


def export_zip(
    matrix: EmbeddingMatrix, path: str | os.PathLike[str], *, dtype: str = "float32"
) -> Path:
    """Write one zip holding the matrix folder, word2vec and projector files; return its path.

    ``dtype`` is that of matrix.npy inside; the text formats always carry float32 values.
    Deflate runs at level 1: at bert-base size the zip takes 19 s and 225 MB against 52 s and
    209 MB at the default level 6 (bench/bench_export.py).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with temp_folder(tmp_dir(), out.name) as staging:
        save_matrix(matrix, staging, dtype=dtype)
        export_word2vec(matrix, staging / WORD2VEC_FILE)
        export_projector(matrix, staging)
        with (
            atomic_path(out) as tmp,
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bundle,
        ):
            for name in BUNDLED:
                bundle.write(staging / name, arcname=name)
    log.info("Wrote %s", out)
    return out


ZIP_FILE = "bundle.zip"
DOWNLOADS = (*BUNDLED, ZIP_FILE)


def download_bytes(matrix: EmbeddingMatrix, name: str, *, dtype: str = "float32") -> bytes:
    """Return the bytes of one export file, ``name`` from ``DOWNLOADS``, written only for it.

    For the app's download buttons, which call this when clicked: a 21,128 x 768 matrix
    makes about 200 MB of word2vec text, and a 250,000-token one over 1 GB, so nothing is
    written before someone asks for it, and only the file asked for.
    """
    if name not in DOWNLOADS:
        raise BadConfig(f"Unknown download {name!r}; choose one of: {', '.join(DOWNLOADS)}.")
    with temp_folder(tmp_dir(), "download") as folder:
        if name in (MATRIX_FILE, VOCAB_FILE, MANIFEST_FILE):
            save_matrix(matrix, folder, dtype=dtype)
        elif name == WORD2VEC_FILE:
            export_word2vec(matrix, folder / name)
        elif name == PROJECTOR_METADATA_FILE:  # the tokens alone, without vectors.tsv
            write_text(folder / name, text_lines([projector_label(t) for t in matrix.vocab]))
        elif name == PROJECTOR_VECTORS_FILE:
            export_projector(matrix, folder)
        else:
            export_zip(matrix, folder / name, dtype=dtype)
        return (folder / name).read_bytes()


def export(
    matrix: EmbeddingMatrix,
    fmt: ExportFormat | str,
    path: str | os.PathLike[str],
    *,
    dtype: str = "float32",
) -> Path:
    """Write ``matrix`` as ``fmt`` at ``path`` (a folder for npy and projector); return it.

    ``dtype`` (float32 or float16) applies to matrix.npy, in the npy and zip formats.
    """
    chosen = choice(ExportFormat, fmt, "export format")
    if chosen is ExportFormat.NPY:
        return save_matrix(matrix, path, dtype=dtype)
    if chosen is ExportFormat.WORD2VEC:
        return export_word2vec(matrix, path)
    if chosen is ExportFormat.PROJECTOR:
        return export_projector(matrix, path)[0].parent
    return export_zip(matrix, path, dtype=dtype)
