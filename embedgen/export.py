"""Files out of (and back into) an embedding matrix.

The matrix folder (``save_matrix`` / ``load_matrix``) is the one this project reads back::

    matrix.npy      float32 (or float16) rows x dims
    vocab.txt       UTF-8, "\\n" line ends, line i is the token of row i
    manifest.json   the matrix manifest, plus rows, dims, dtype, vocab escaping and file sha256s

The other formats are for other tools: word2vec text (gensim, fastText tooling), the TensorBoard
projector's two TSVs, and a zip bundle of everything. Every file is written to a temporary name in
its folder and renamed into place (``embedgen.atomic``), so a crash never leaves a half file under
its final name.

Token rules, one per format:

- ``vocab.txt``: if any token holds a line break (``\\n``, ``\\r`` or another character that
  ``str.splitlines`` breaks on), the whole file is escaped: ``\\`` -> ``\\\\``, ``\\n`` -> ``\\n``,
  ``\\r`` -> ``\\r``, other breaks -> ``\\uXXXX``; the manifest then says
  ``"vocab_escaping": "backslash"`` and ``"escaped_tokens"`` counts the tokens that held a break.
  Otherwise (the usual case) tokens are written as they are, backslashes included, and
  ``"vocab_escaping": "none"``. Spaces and tabs are kept in both cases.
- word2vec: each whitespace character in a token becomes ``▁`` (U+2581) and an empty token
  becomes ``<empty>``, since the format splits lines on spaces. Tokens that then collide get a
  ``#2``, ``#3``, ... suffix so that no row is lost; both are logged.
- projector ``metadata.tsv``: tab, ``\\n`` and ``\\r`` are shown as ``\\t``, ``\\n``, ``\\r``;
  an empty or whitespace-only token (which the projector would skip, shifting every later
  label) is written as ``\\uXXXX`` escapes, or ``<empty>``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embedgen.atomic import atomic_path, write_bytes, write_json, write_text
from embedgen.errors import BadConfig, BadRun
from embedgen.matrix import EmbeddingMatrix

logger = logging.getLogger(__name__)

MATRIX_FILE = "matrix.npy"
VOCAB_FILE = "vocab.txt"
MANIFEST_FILE = "manifest.json"
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

DTYPES = ("float32", "float16")
EMPTY_TOKEN = "<empty>"
_WORD2VEC_SPACE = "\u2581"

# Rows formatted per write, to keep memory flat for large matrices.
_ROWS_PER_CHUNK = 2048
# Every character str.splitlines() breaks on; any of them in vocab.txt would shift the rows.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_UNESCAPE = re.compile(r"\\(\\|n|r|u[0-9a-fA-F]{4})")


class ExportFormat(enum.StrEnum):
    """What ``export`` writes."""

    NPY = "npy"  # the matrix folder: matrix.npy + vocab.txt + manifest.json
    WORD2VEC = "word2vec"  # word2vec text format
    PROJECTOR = "projector"  # TensorBoard projector vectors.tsv + metadata.tsv
    ZIP = "zip"  # all of the above in one zip


# -- helpers -------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, paths, tuples and sets turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _has_line_break(token: str) -> bool:
    return any(ch in _LINE_BREAKS for ch in token)


def _escape_line(token: str) -> str:
    out = token.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    for ch in _LINE_BREAKS[2:]:
        out = out.replace(ch, f"\\u{ord(ch):04x}")
    return out


def _unescape_line(line: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code == "\\":
            return "\\"
        if code == "n":
            return "\n"
        if code == "r":
            return "\r"
        return chr(int(code[1:], 16))

    return _UNESCAPE.sub(one, line)


def _lines(tokens: Sequence[str]) -> str:
    """Tokens as text, one per line, each line ended by "\\n" (so 0 tokens -> "")."""
    return "".join(f"{t}\n" for t in tokens)


def _format_rows(vectors: npt.NDArray[np.float32], sep: str, fmt: str) -> Iterator[list[str]]:
    """Yield chunks of formatted rows (each the row's values joined by ``sep``)."""
    row_format = sep.join([fmt] * vectors.shape[1])
    for start in range(0, vectors.shape[0], _ROWS_PER_CHUNK):
        block = vectors[start : start + _ROWS_PER_CHUNK].tolist()
        yield [row_format % tuple(row) for row in block]


def _float32(matrix: EmbeddingMatrix) -> npt.NDArray[np.float32]:
    return np.asarray(matrix.vectors, dtype=np.float32)


# -- the matrix folder ---------------------------------------------------------------------------


def save_matrix(
    matrix: EmbeddingMatrix, folder: str | os.PathLike[str], *, dtype: str = "float32"
) -> Path:
    """Write ``matrix`` as a matrix folder (matrix.npy, vocab.txt, manifest.json); return it.

    ``dtype`` "float16" halves the file (about 3 significant digits survive); ``load_matrix``
    turns it back into float32. The manifest is written last, so a folder with a manifest is
    complete.
    """
    if dtype not in DTYPES:
        raise BadConfig(f"dtype {dtype!r} is not supported for matrix.npy; choose one of {DTYPES}.")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)

    with atomic_path(out / MATRIX_FILE) as tmp:
        with tmp.open("wb") as f:
            np.save(f, np.asarray(matrix.vectors).astype(dtype, copy=False), allow_pickle=False)
        matrix_sha = _sha256(tmp)

    escaped = sum(_has_line_break(t) for t in matrix.vocab)
    tokens = [_escape_line(t) for t in matrix.vocab] if escaped else list(matrix.vocab)
    vocab_bytes = _lines(tokens).encode("utf-8")
    write_bytes(out / VOCAB_FILE, vocab_bytes)
    if escaped:
        logger.warning(
            "%d tokens hold line breaks; vocab.txt is backslash-escaped (load_matrix undoes it)",
            escaped,
        )

    rows, dims = matrix.shape
    manifest = _jsonable(dict(matrix.manifest))
    manifest.update(
        {
            "rows": rows,
            "dims": dims,
            "dtype": dtype,
            "vocab_escaping": "backslash" if escaped else "none",
            "escaped_tokens": escaped,
            "files": {
                MATRIX_FILE: matrix_sha,
                VOCAB_FILE: hashlib.sha256(vocab_bytes).hexdigest(),
            },
        }
    )
    write_json(out / MANIFEST_FILE, manifest)
    logger.info("Saved a %d x %d %s matrix to %s", rows, dims, dtype, out)
    return out


def _need(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise BadRun(
            f"{folder} has no {name}; build one with "
            f"`embedgen matrix RUN_DIR_OR_MODEL --method input --out {folder}`."
        )
    return path


def load_matrix(folder: str | os.PathLike[str], *, verify: bool = False) -> EmbeddingMatrix:
    """Read a matrix folder written by :func:`save_matrix`; vectors come back as float32.

    With ``verify`` the files' sha256 sums are checked against the manifest.
    """
    src = Path(folder)
    if not src.is_dir():
        raise BadRun(
            f"{src} is not a matrix folder (it does not exist or is not a folder); "
            f"build one with `embedgen matrix RUN_DIR_OR_MODEL --method input --out {src}`."
        )
    matrix_path = _need(src, MATRIX_FILE)
    vocab_path = _need(src, VOCAB_FILE)
    manifest_path = _need(src, MANIFEST_FILE)

    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRun(
            f"{manifest_path} is not valid UTF-8 JSON ({exc}); rebuild the matrix."
        ) from exc
    if not isinstance(manifest, dict):
        raise BadRun(f"{manifest_path} does not hold a JSON object; rebuild the matrix.")

    if verify:
        for name, expected in manifest.get("files", {}).items():
            if (src / name).is_file() and _sha256(src / name) != expected:
                raise BadRun(
                    f"{src / name} does not match the sha256 in {MANIFEST_FILE}; the file was "
                    "changed or only partly written. Rebuild the matrix."
                )

    try:
        vectors = np.load(matrix_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadRun(
            f"{matrix_path} cannot be read as a .npy array ({exc}); rebuild the matrix."
        ) from exc
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise BadRun(
            f"{matrix_path} holds a {vectors.dtype} array of shape {vectors.shape}; "
            "a matrix must be 2-D floats. Rebuild the matrix."
        )

    try:
        text = vocab_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRun(f"{vocab_path} is not UTF-8 ({exc}); rebuild the matrix.") from exc
    if text and not text.endswith("\n"):
        text += "\n"  # tolerate a hand-edited file without a final line end
    lines = text[:-1].split("\n") if text else []
    if manifest.get("vocab_escaping") == "backslash":
        lines = [_unescape_line(line) for line in lines]

    if vectors.shape[0] != len(lines):
        raise BadRun(
            f"{src}: {MATRIX_FILE} has {vectors.shape[0]} rows but {VOCAB_FILE} has "
            f"{len(lines)} lines; they must match one to one. The folder is incomplete or was "
            "edited by hand; rebuild the matrix."
        )
    return EmbeddingMatrix(
        vectors=vectors.astype(np.float32, copy=False), vocab=tuple(lines), manifest=manifest
    )


# -- other tools' formats ------------------------------------------------------------------------


def word2vec_tokens(vocab: Sequence[str]) -> list[str]:
    """Return the tokens as written to a word2vec file: no whitespace, none empty, all unique."""
    names = [
        "".join(_WORD2VEC_SPACE if ch.isspace() else ch for ch in t) or EMPTY_TOKEN for t in vocab
    ]
    changed = sum(n != t for n, t in zip(names, vocab, strict=True))
    if changed:
        logger.info(
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
        logger.warning(
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
    logger.info("Wrote %d x %d word2vec text to %s", *vectors.shape, out)
    return out


def projector_label(token: str) -> str:
    """Return ``token`` as shown in the projector's metadata.tsv (one visible line)."""
    label = token.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    if not label.strip():
        return "".join(f"\\u{ord(ch):04x}" for ch in label) or EMPTY_TOKEN
    return label


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
    write_text(metadata_path, _lines([projector_label(t) for t in matrix.vocab]))
    logger.info("Wrote projector files for %d rows to %s", vectors.shape[0], out)
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
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
        staging = Path(work)
        save_matrix(matrix, staging, dtype=dtype)
        export_word2vec(matrix, staging / WORD2VEC_FILE)
        export_projector(matrix, staging)
        with (
            atomic_path(out) as tmp,
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bundle,
        ):
            for name in BUNDLED:
                bundle.write(staging / name, arcname=name)
    logger.info("Wrote %s", out)
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
    with tempfile.TemporaryDirectory(prefix="embedgen-download-") as work:
        folder = Path(work)
        if name in (MATRIX_FILE, VOCAB_FILE, MANIFEST_FILE):
            save_matrix(matrix, folder, dtype=dtype)
        elif name == WORD2VEC_FILE:
            export_word2vec(matrix, folder / name)
        elif name == PROJECTOR_METADATA_FILE:  # the tokens alone, without vectors.tsv
            write_text(folder / name, _lines([projector_label(t) for t in matrix.vocab]))
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
    try:
        chosen = ExportFormat(fmt)
    except ValueError:
        choices = ", ".join(f.value for f in ExportFormat)
        raise BadConfig(f"Unknown export format {fmt!r}; choose one of: {choices}.") from None
    if chosen is ExportFormat.NPY:
        return save_matrix(matrix, path, dtype=dtype)
    if chosen is ExportFormat.WORD2VEC:
        return export_word2vec(matrix, path)
    if chosen is ExportFormat.PROJECTOR:
        return export_projector(matrix, path)[0].parent
    return export_zip(matrix, path, dtype=dtype)
