"""The matrix folder: what this project writes and reads back.

```
matrix.npy      float32 (or float16) rows x dims
vocab.txt       UTF-8, "\\n" line ends, line i is the token of row i
manifest.json   how the matrix was made, plus rows, dims, dtype, vocab escaping, sha256s
rows.tsv        facts about each row, when the matrix has any (EmbeddingMatrix.columns)
cache.json      only in a matrix built from a plain model into its default folder (cache.py)
```

If any token holds a line break (``\\n``, ``\\r`` or another character that ``str.splitlines``
breaks on), the whole of vocab.txt is escaped: ``\\`` -> ``\\\\``, ``\\n`` -> ``\\n``, ``\\r`` ->
``\\r``, other breaks -> ``\\uXXXX``; the manifest then says ``"vocab_escaping": "backslash"``
and ``"escaped_tokens"`` counts those tokens. Otherwise (the usual case) tokens are written as
they are and ``"vocab_escaping": "none"``. A folder is written in a staging folder and swapped
in whole (``embedgen.atomic``); the manifest is written last.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedgen.atomic import atomic_folder, atomic_path, sha256_file, write_bytes, write_json
from embedgen.budget import Entry, folder_size, remove, touch
from embedgen.cells import spreadsheet_cell
from embedgen.errors import BadConfig, BadRun, NotKept
from embedgen.matrix.cache import (
    CACHE_FILE,
    CACHE_NOTE,
    MatrixCache,
    matrix_name_of,
    not_kept,
    using,
)
from embedgen.matrix.types import EmbeddingMatrix

log = logging.getLogger(__name__)

MATRIX_FILE = "matrix.npy"
VOCAB_FILE = "vocab.txt"
MANIFEST_FILE = "manifest.json"
ROWS_FILE = "rows.tsv"  # facts about each row, when the matrix has any (EmbeddingMatrix.columns)
DTYPES = ("float32", "float16")  # what matrix.npy may hold

# Every character str.splitlines() breaks on; any of them in vocab.txt would shift the rows.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_UNESCAPE = re.compile(r"\\(\\|n|r|u[0-9a-fA-F]{4})")


def save_matrix(
    matrix: EmbeddingMatrix,
    folder: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    rebuildable: bool = False,
) -> Path:
    """Write ``matrix`` as a matrix folder (matrix.npy, vocab.txt, manifest.json); return it.

    ``dtype`` "float16" halves the file (about 3 significant digits survive); ``load_matrix``
    turns it back into float32. The manifest is written last, so a folder with a manifest is
    complete.

    ``rebuildable``: the matrix was built from a plain model into its default folder
    (:func:`folder_for`, under ``$EMBEDGEN_HOME/matrices``), so it can be built again. It joins
    the :class:`MatrixCache`, whose least recently used matrices are then removed to keep it
    within the operator's ``matrix_cache_mb``; one bigger than that whole budget is not saved
    (:class:`NotKept`, nothing else removed). Without it (a run's matrix, a folder the user
    named) the matrix is the user's and never removed.
    """
    if dtype not in DTYPES:
        raise BadConfig(f"dtype {dtype!r} is not supported for matrix.npy; choose one of {DTYPES}.")
    final = Path(folder)
    cache = MatrixCache() if rebuildable else None
    if cache is not None:
        if not cache.holds(final):
            raise ValueError(f"{final} is not a folder of the matrix cache ({cache.root}/*/*)")
        at_least = matrix.vectors.size * np.dtype(dtype).itemsize
        if at_least > cache.budget:
            raise NotKept(not_kept(final, at_least, cache.budget))
    with using(final), atomic_folder(final) as out:
        if cache is not None:
            write_json(out / CACHE_FILE, CACHE_NOTE)
        _write_matrix_files(matrix, out, dtype)
    log.info("Saved a %d x %d %s matrix to %s", *matrix.shape, dtype, final)
    if cache is not None:
        size = folder_size(final)
        if size > cache.budget:  # vocab.txt and the manifest tipped it over
            remove(Entry(final, (final,), size, 0.0))
            raise NotKept(not_kept(final, size, cache.budget))
        cache.make_room(keep=final)
    return final


def _write_matrix_files(matrix: EmbeddingMatrix, out: Path, dtype: str) -> None:

    with atomic_path(out / MATRIX_FILE) as tmp:
        with tmp.open("wb") as f:
            np.save(f, np.asarray(matrix.vectors).astype(dtype, copy=False), allow_pickle=False)
        matrix_sha = sha256_file(tmp)

    escaped = sum(_has_line_break(t) for t in matrix.vocab)
    tokens = [_escape_line(t) for t in matrix.vocab] if escaped else list(matrix.vocab)
    vocab_bytes = text_lines(tokens).encode("utf-8")
    write_bytes(out / VOCAB_FILE, vocab_bytes)
    model = (matrix.manifest.get("model") or {}).get("model_id", "")
    if escaped and (model, escaped) not in _TOLD_LINE_BREAKS:  # once per model, not per save
        _TOLD_LINE_BREAKS.add((model, escaped))
        log.info(
            "%s; vocab.txt escapes them with backslashes (load_matrix undoes it)",
            "1 token holds a line break" if escaped == 1 else f"{escaped} tokens hold line breaks",
        )

    files = {MATRIX_FILE: matrix_sha, VOCAB_FILE: hashlib.sha256(vocab_bytes).hexdigest()}
    if matrix.columns:
        rows_bytes = _rows_table(matrix).encode("utf-8")
        write_bytes(out / ROWS_FILE, rows_bytes)
        files[ROWS_FILE] = hashlib.sha256(rows_bytes).hexdigest()
    rows, dims = matrix.shape
    manifest = _jsonable(dict(matrix.manifest))
    manifest.update(
        {
            "rows": rows,
            "dims": dims,
            "dtype": dtype,
            "vocab_escaping": "backslash" if escaped else "none",
            "escaped_tokens": escaped,
            "columns": list(matrix.columns),
            "files": files,
        }
    )
    write_json(out / MANIFEST_FILE, manifest)


_TOLD_LINE_BREAKS: set[tuple[str, int]] = set()


def saved_matrix(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of the complete matrix saved in ``folder``, or None when there is none.

    What the app and the CLI check before writing, so nothing is replaced without asking.
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return _read_manifest(path)
    except FileNotFoundError:  # removed meanwhile
        return None
    except BadRun:
        return {}  # something is there, but not a readable matrix: still not to be lost


def load_matrix(
    folder: str | os.PathLike[str], *, verify: bool = False, mapped: bool = False
) -> EmbeddingMatrix:
    """Read a matrix folder written by :func:`save_matrix`; vectors come back as float32.

    With ``verify`` the files' sha256 sums are checked against the manifest. With ``mapped`` a
    float32 matrix.npy is mapped read-only instead of read (``np.memmap``): its pages are the
    file's, shared by every process that maps it and given back by the kernel when memory is
    short, which is how the web server holds its visitors' matrices (a float16 one is read).
    """
    src = Path(folder)
    with using(src):
        try:
            return _load_matrix(src, verify=verify, mapped=mapped)
        except FileNotFoundError as exc:  # removed while it was read (by another process)
            raise BadRun(_not_there(src)) from exc


def _not_there(folder: Path) -> str:
    return (
        f"The matrix '{matrix_name_of(folder)}' is not there: it was never saved, or it was "
        "removed (matrices built from a model go when their disk space is full, least recently "
        "used first). Build it again."
    )


def _load_matrix(src: Path, *, verify: bool, mapped: bool = False) -> EmbeddingMatrix:
    if not src.is_dir():
        raise BadRun(_not_there(src))
    if (src / "config.json").is_file() and not (src / MATRIX_FILE).exists():
        raise BadRun(
            f"'{matrix_name_of(src)}' is a model folder (config.json, weights), not a matrix. "
            "Load it on the Model page and build its matrix on the Matrix page (or: embedgen "
            "matrix FOLDER)."
        )
    if (src / "run.json").is_file() and not (src / MATRIX_FILE).exists():
        raise BadRun(
            f"'{matrix_name_of(src)}' is a run folder, not a matrix. Open the run on the Train "
            "page and build its matrix on the Matrix page (or: embedgen matrix FOLDER); the "
            "matrices built from it are in its matrices/ folder."
        )
    if (src / CACHE_FILE).is_file():
        touch(src / CACHE_FILE)  # used: the cache removes it last
    name = matrix_name_of(src)
    matrix_path = _need(src, MATRIX_FILE)
    vocab_path = _need(src, VOCAB_FILE)
    manifest = _read_manifest(_need(src, MANIFEST_FILE))
    if verify:
        for file, expected in manifest.get("files", {}).items():
            if (src / file).is_file() and sha256_file(src / file) != expected:
                raise BadRun(
                    f"The matrix '{name}': {file} does not match the sha256 in "
                    f"{MANIFEST_FILE}; the file was changed or only partly written. Rebuild "
                    "the matrix."
                )
    vectors = _read_vectors(matrix_path, mapped=mapped)
    lines = _read_vocab(vocab_path, escaped=manifest.get("vocab_escaping") == "backslash")
    if vectors.shape[0] != len(lines):
        raise BadRun(
            f"The matrix '{name}': {MATRIX_FILE} has {vectors.shape[0]} rows but {VOCAB_FILE} has "
            f"{len(lines)} lines; they must match one to one. The folder is incomplete or was "
            "edited by hand; rebuild the matrix."
        )
    columns = _read_rows_table(src, manifest, len(lines))
    try:
        return EmbeddingMatrix(
            # A mapped float32 file stays mapped; anything else becomes a plain float32 array.
            vectors=vectors if vectors.dtype == np.float32 else np.asarray(vectors, np.float32),
            vocab=tuple(lines),
            manifest=manifest,
            columns=columns,
        )
    except BadConfig as exc:
        raise BadRun(f"The matrix '{name}': {MANIFEST_FILE}: {exc} Rebuild the matrix.") from exc


def _need(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise BadRun(
            f"The matrix '{matrix_name_of(folder)}' has no {name}: it was only partly written, or "
            "it is being removed. Build it again."
        )
    return path


def _in_matrix(path: Path) -> str:
    """``"The matrix 'NAME': FILE"``, for messages about one of a matrix folder's files."""
    return f"The matrix '{matrix_name_of(path.parent)}': {path.name}"


def _reason(exc: Exception) -> str:
    """Why reading failed, without the file's server path (which OSError's text carries)."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRun(
            f"{_in_matrix(path)} is not readable UTF-8 JSON ({_reason(exc)}); rebuild the matrix."
        ) from exc
    if not isinstance(manifest, dict):
        raise BadRun(f"{_in_matrix(path)} does not hold a JSON object; rebuild the matrix.")
    return manifest


def _read_vectors(path: Path, *, mapped: bool = False) -> np.ndarray:
    try:
        vectors = np.load(path, allow_pickle=False, mmap_mode="r" if mapped else None)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise BadRun(
            f"{_in_matrix(path)} cannot be read as a .npy array ({_reason(exc)}); rebuild the "
            "matrix."
        ) from exc
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise BadRun(
            f"{_in_matrix(path)} holds a {vectors.dtype} array of shape {vectors.shape}; "
            "a matrix must be 2-D floats. Rebuild the matrix."
        )
    return vectors


def _utf8(path: Path) -> str:
    """The text of one of a matrix folder's files; :class:`BadRun` when it cannot be read (a
    file removed meanwhile raises FileNotFoundError, for the caller to say so)."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRun(
            f"{_in_matrix(path)} is not readable UTF-8 ({_reason(exc)}); rebuild the matrix."
        ) from exc


def _read_vocab(path: Path, *, escaped: bool) -> list[str]:
    text = _utf8(path)
    if text and not text.endswith("\n"):
        text += "\n"  # tolerate a hand-edited file without a final line end
    lines = text[:-1].split("\n") if text else []
    return [_unescape_line(line) for line in lines] if escaped else lines


def _rows_table(matrix: EmbeddingMatrix) -> str:
    """rows.tsv: a header, then per row its token (tabs and line breaks shown escaped, guarded
    against spreadsheet formulas; vocab.txt is the one that counts) and its facts."""
    names = list(matrix.columns)
    lines = ["\t".join(["token", *names])]
    for i, token in enumerate(matrix.vocab):
        shown = spreadsheet_cell(_escape_line(token).replace("\t", "\\t"))
        lines.append("\t".join([shown, *(str(matrix.columns[n][i]) for n in names)]))
    return text_lines(lines)


def _read_rows_table(
    folder: Path, manifest: dict[str, Any], rows: int
) -> dict[str, tuple[Any, ...]]:
    """The row facts of rows.tsv (numbers back as ints), or none when the matrix has none."""
    names = manifest.get("columns") or []
    if not names:
        return {}
    path = _need(folder, ROWS_FILE)
    lines = _utf8(path).splitlines()
    table = [line.split("\t") for line in lines[1:]]
    if len(table) != rows or any(len(r) != len(names) + 1 for r in table):
        raise BadRun(
            f"{_in_matrix(path)} does not hold one line of {len(names) + 1} fields per row "
            f"({rows} rows); "
            "rebuild the matrix."
        )
    columns = {}
    for k, name in enumerate(names, start=1):
        values = [r[k] for r in table]
        if all(v.lstrip("-").isdigit() for v in values):
            columns[name] = tuple(int(v) for v in values)
        else:
            columns[name] = tuple(values)
    return columns


def text_lines(tokens: Sequence[str]) -> str:
    """Tokens as text, one per line, each line ended by "\\n" (so 0 tokens -> "")."""
    return "".join(f"{t}\n" for t in tokens)


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


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, paths, enums, tuples and sets as JSON types."""
    if isinstance(value, enum.Enum):
        return value.value
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
