"""The embedding matrix: what it is, how each method builds it, and its folder on disk.

Methods (:class:`Method`), each named in the manifest:

- ``input``: the model's token-embedding table as it is (the baseline; fine-tuning never
  changes it).
- ``projected``: each token's input vector through the run's trained projection (vocab x d).
- ``contextual``: each token run alone through the (possibly tuned) encoder and read at a
  layer; from a run, then through the projection unless switched off.

The matrix folder (:func:`save_matrix` / :func:`load_matrix`) is what this project reads back::

    matrix.npy      float32 (or float16) rows x dims
    vocab.txt       UTF-8, "\\n" line ends, line i is the token of row i
    manifest.json   how the matrix was made, plus rows, dims, dtype, vocab escaping, sha256s

If any token holds a line break (``\\n``, ``\\r`` or another character that ``str.splitlines``
breaks on), the whole of vocab.txt is escaped: ``\\`` -> ``\\\\``, ``\\n`` -> ``\\n``, ``\\r`` ->
``\\r``, other breaks -> ``\\uXXXX``; the manifest then says ``"vocab_escaping": "backslash"``
and ``"escaped_tokens"`` counts those tokens. Otherwise (the usual case) tokens are written as
they are and ``"vocab_escaping": "none"``. Every file is written under a temporary name and
renamed into place (``embedgen.atomic``); the manifest is written last.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from embedgen import __version__
from embedgen.atomic import atomic_path, sha256_file, write_bytes, write_json
from embedgen.device import DeviceChoice, autocast, resolve_device
from embedgen.errors import BadConfig, BadRun
from embedgen.fields import Choice, check, choice, setting
from embedgen.models import Encoder
from embedgen.paths import matrix_folder, matrix_name
from embedgen.postprocess import PostProcess
from embedgen.postprocess import apply as apply_postprocess
from embedgen.progress import ProgressFn, check_cancel
from embedgen.tokens import describe_removed, select_tokens, special_frame
from embedgen.train import Head, Run
from embedgen.train.batches import iter_batches

log = logging.getLogger(__name__)

MATRIX_FILE = "matrix.npy"
VOCAB_FILE = "vocab.txt"
MANIFEST_FILE = "manifest.json"
DTYPES = ("float32", "float16")  # what matrix.npy may hold


class Method(Choice):
    """How the matrix rows were made; recorded in every manifest."""

    INPUT = (
        "input",
        "The model's token-embedding matrix as it is; fine-tuning does not change it.",
    )
    PROJECTED = (
        "projected",
        "Each token's input embedding passed through the trained projection "
        "Linear(hidden -> d) of the fine-tuned head.",
    )
    CONTEXTUAL = (
        "contextual",
        "Each token run alone through the encoder (the tuned one when built from a run) and "
        "read at the chosen layer; from a run, then through the trained projection unless "
        "switched off.",
    )

    @property
    def needs_run(self) -> bool:
        """Whether only a fine-tuning run (its trained projection) can build it."""
        return self is Method.PROJECTED

    @property
    def reflects_tuning(self) -> bool:
        """Whether a matrix built this way from a run carries what the training learned."""
        return self is not Method.INPUT


def methods_for(from_run: bool) -> list[Method]:
    """The methods that can be built from a run (all) or from a plain model."""
    return [m for m in Method if from_run or not m.needs_run]


def default_method(from_run: bool) -> Method:
    """From a run, the method that carries the tuning and gave sensible neighbours on a real
    model (contextual); from a plain model, the embedding table itself."""
    return Method.CONTEXTUAL if from_run else Method.INPUT


@dataclass(frozen=True)
class EmbeddingMatrix:
    """Row ``i`` of ``vectors`` is the vector of ``vocab[i]``; ``manifest`` says how it was made."""

    vectors: npt.NDArray[np.float32]
    vocab: tuple[str, ...]
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D, got shape {self.vectors.shape}")
        if self.vectors.shape[0] != len(self.vocab):
            raise ValueError(
                f"{self.vectors.shape[0]} rows but {len(self.vocab)} vocabulary entries"
            )
        if self.manifest.get("method") is not None:  # an enum, also when read back from disk
            method = choice(Method, self.manifest["method"], "method")
            object.__setattr__(self, "manifest", {**self.manifest, "method": method})

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, dims)."""
        return (int(self.vectors.shape[0]), int(self.vectors.shape[1]))

    @property
    def method(self) -> Method | None:
        """The method that made the matrix, or None for one made by hand."""
        return self.manifest.get("method")


@dataclass(frozen=True)
class MatrixOptions:
    """Which rows to keep and how to build them."""

    method: Method = setting(
        Method.INPUT,
        "method",
        choices=Method,
        help=" ".join(f"{m}: {m.description}" for m in Method),
    )
    layer: int | None = setting(
        None,
        "layer",
        low=-1000,
        high=1000,
        whole=True,
        help="contextual: 0 = the embedding output, N = the last layer (the default); "
        "negative counts back from the last",
    )
    through_projection: bool = setting(
        True,
        "through the trained projection",
        flag="--no-projection",
        negated_flag=True,
        help="contextual from a run: pass the vectors through the projection",
    )
    drop_special: bool = setting(
        True,
        "drop special tokens",
        flag="--keep-special",
        negated_flag=True,
        help="[CLS], [SEP], [PAD], [MASK], [UNK] and [unusedN]",
    )
    cjk_only: bool = setting(False, "CJK tokens only", help="tokens made of CJK characters only")
    drop_continuation: bool = setting(
        False, "drop ## pieces", help='"##x" pieces (their "x" twins stay)'
    )
    postprocess: PostProcess = field(default_factory=PostProcess)
    batch_size: int = setting(256, "batch size", low=1, high=65_536)
    device: DeviceChoice = setting(DeviceChoice.AUTO, "device", choices=DeviceChoice)

    def __post_init__(self) -> None:
        check(self)


def resolve_layer(layer: int | None, num_layers: int, model_id: str = "the model") -> int:
    """The layer ``layer`` means for a model with ``num_layers``: None is the last, -1 too."""
    chosen = num_layers if layer is None else layer
    if chosen < 0:
        chosen += num_layers + 1
    if not 0 <= chosen <= num_layers:
        raise BadConfig(
            f"Layer {layer} does not exist: {model_id} has layers 0 (embeddings) to {num_layers}."
        )
    return chosen


def reflects_run(options: MatrixOptions, run: Run | None) -> bool:
    """Whether a matrix built by ``options`` from ``run`` carries what its training learned:
    ``projected``; ``contextual`` through the projection or from a tuned encoder."""
    if run is None:
        return False
    if options.method is Method.CONTEXTUAL:
        return options.through_projection or run.encoder_changed
    return options.method.reflects_tuning


def name_for(source: Encoder | Run, options: MatrixOptions) -> str:
    """The matrix's name by the one naming rule (``embedgen.paths.matrix_name``)."""
    run = source if isinstance(source, Run) else None
    info = (run.encoder if run is not None else source).info
    layer = None
    if options.method is Method.CONTEXTUAL:
        layer = resolve_layer(options.layer, info.num_layers, info.model_id)
    return matrix_name(options, tuned=reflects_run(options, run), layer=layer)


def folder_for(source: Encoder | Run, options: MatrixOptions) -> Path:
    """Where the matrix goes unless told otherwise: its run's ``matrices/<name>``, or
    ``$EMBEDGEN_HOME/matrices/<model>/<name>`` for a plain model."""
    run = source if isinstance(source, Run) else None
    info = (run.encoder if run is not None else source).info
    return matrix_folder(
        name_for(source, options),
        run_folder=run.folder if run is not None else None,
        model_id=info.model_id,
    )


# --------------------------------------------------------------------------------------------
# Building a matrix
# --------------------------------------------------------------------------------------------


def build_matrix(
    source: Encoder | Run,
    options: MatrixOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> EmbeddingMatrix:
    """Build the embedding matrix of ``source`` (a model, or a fine-tuning run) by ``options``.

    ``input`` needs only a model; ``projected`` needs a run; ``contextual`` uses the run's
    (possibly tuned) encoder and, unless ``through_projection`` is off, its projection.
    """
    options = options or MatrixOptions()
    run = source if isinstance(source, Run) else None
    encoder = run.encoder if run is not None else source
    head = run.head if run is not None else None
    if options.method.needs_run and run is None:
        raise BadConfig(
            f"The '{options.method}' method needs a fine-tuning run (it uses the trained "
            "projection). Train first, or choose "
            + " or ".join(f"'{m}'" for m in methods_for(from_run=False))
            + "."
        )
    ids, removed = select_tokens(
        encoder.tokenizer,
        encoder.info.vocab_size,
        drop_special=options.drop_special,
        cjk_only=options.cjk_only,
        drop_continuation=options.drop_continuation,
    )
    layer = None
    if options.method is Method.CONTEXTUAL:
        info = encoder.info
        layer = resolve_layer(options.layer, info.num_layers, info.model_id)
        project = head is not None and options.through_projection
        vectors = _contextual_rows(
            encoder, head if project else None, ids, layer, options, progress, cancel
        )
    else:
        vectors = _embedding_rows(encoder, head if options.method.needs_run else None, ids)
        if progress is not None:
            progress(1, 1)
    vectors, steps = apply_postprocess(vectors, options.postprocess)
    log.info(
        "Built %s matrix: %d rows x %d dims (%s removed)",
        options.method,
        vectors.shape[0],
        vectors.shape[1],
        describe_removed(removed),
    )
    return EmbeddingMatrix(
        vectors=np.ascontiguousarray(vectors),
        vocab=tuple(encoder.tokenizer.convert_ids_to_tokens(ids)),
        manifest=_manifest(encoder, run, options, layer, removed, steps, vectors.shape),
    )


def _embedding_rows(encoder: Encoder, head: Head | None, ids: list[int]) -> np.ndarray:
    """Rows of the input-embedding table (``input``), through ``head``'s projection when given
    (``projected``)."""
    weight = encoder.model.get_input_embeddings().weight.detach()
    rows = weight[torch.tensor(ids, dtype=torch.long, device=weight.device)].float()
    if head is not None:
        at = next(head.parameters()).device
        with torch.no_grad():
            rows = torch.cat(
                [head.project(rows[r].to(at)).float().cpu() for r in iter_batches(len(ids), 4096)]
            )
    return rows.cpu().numpy().astype(np.float32, copy=False)


def _contextual_rows(
    encoder: Encoder,
    head: Head | None,
    ids: list[int],
    layer: int,
    options: MatrixOptions,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> np.ndarray:
    """Each token alone in its special-token frame ([CLS] x [SEP]) through the encoder, read at
    ``layer``, through ``head``'s projection when given; batches of ``options.batch_size``."""
    frame, pos = special_frame(encoder.tokenizer)
    device = resolve_device(options.device)
    model = encoder.model
    batches = list(iter_batches(len(ids), options.batch_size))
    out_rows: list[np.ndarray] = []
    with _on_device([model, head], device), _evaluating(model), torch.no_grad():
        for b, rng in enumerate(batches):
            check_cancel(cancel, "Matrix building")
            chunk = torch.tensor([ids[i] for i in rng], dtype=torch.long)
            seq = torch.tensor(frame, dtype=torch.long).repeat(len(chunk), 1)
            seq = torch.cat([seq[:, :pos], chunk[:, None], seq[:, pos:]], dim=1).to(device)
            with autocast(device):
                out = model(
                    input_ids=seq, attention_mask=torch.ones_like(seq), output_hidden_states=True
                )
            h = out.hidden_states[layer][:, pos].float()
            if head is not None:
                h = head.project(h).float()
            out_rows.append(h.cpu().numpy())
            if progress is not None:
                progress(b + 1, len(batches))
    return np.concatenate(out_rows).astype(np.float32, copy=False)


@contextlib.contextmanager
def _on_device(modules: Sequence[nn.Module | None], device: torch.device) -> Iterator[None]:
    """Move ``modules`` to ``device`` for the block, then back to where they were."""
    present = [m for m in modules if m is not None]
    homes = [next(m.parameters()).device for m in present]
    try:
        for m in present:
            m.to(device)
        yield
    finally:
        for m, home in zip(present, homes, strict=True):
            m.to(home)


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the block (no dropout), then back to its own mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _manifest(
    encoder: Encoder,
    run: Run | None,
    options: MatrixOptions,
    layer: int | None,
    removed: dict[str, int],
    steps: list[dict[str, Any]],
    shape: tuple[int, ...],
) -> dict[str, Any]:
    """What a matrix records about how it was made."""
    from embedgen.runs import run_manifest

    projected = options.method.needs_run or (
        options.method is Method.CONTEXTUAL and run is not None and options.through_projection
    )
    return {
        "method": options.method,
        "method_description": options.method.description,
        "layer": layer,
        "through_projection": bool(projected),
        "reflects_tuning": reflects_run(options, run),
        "rows": int(shape[0]),
        "dims": int(shape[1]),
        "selection": {
            "drop_special": options.drop_special,
            "cjk_only": options.cjk_only,
            "drop_continuation": options.drop_continuation,
            "removed": removed,
        },
        "postprocess": steps,
        "model": encoder.info.as_dict(),
        "run": run_manifest(run) if run is not None else None,
        "embedgen_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------
# The matrix folder
# --------------------------------------------------------------------------------------------

# Every character str.splitlines() breaks on; any of them in vocab.txt would shift the rows.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_UNESCAPE = re.compile(r"\\(\\|n|r|u[0-9a-fA-F]{4})")


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
        matrix_sha = sha256_file(tmp)

    escaped = sum(_has_line_break(t) for t in matrix.vocab)
    tokens = [_escape_line(t) for t in matrix.vocab] if escaped else list(matrix.vocab)
    vocab_bytes = text_lines(tokens).encode("utf-8")
    write_bytes(out / VOCAB_FILE, vocab_bytes)
    if escaped:
        log.warning(
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
    log.info("Saved a %d x %d %s matrix to %s", rows, dims, dtype, out)
    return out


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
    manifest = _read_manifest(_need(src, MANIFEST_FILE))
    if verify:
        for name, expected in manifest.get("files", {}).items():
            if (src / name).is_file() and sha256_file(src / name) != expected:
                raise BadRun(
                    f"{src / name} does not match the sha256 in {MANIFEST_FILE}; the file was "
                    "changed or only partly written. Rebuild the matrix."
                )
    vectors = _read_vectors(matrix_path)
    lines = _read_vocab(vocab_path, escaped=manifest.get("vocab_escaping") == "backslash")
    if vectors.shape[0] != len(lines):
        raise BadRun(
            f"{src}: {MATRIX_FILE} has {vectors.shape[0]} rows but {VOCAB_FILE} has "
            f"{len(lines)} lines; they must match one to one. The folder is incomplete or was "
            "edited by hand; rebuild the matrix."
        )
    try:
        return EmbeddingMatrix(
            vectors=vectors.astype(np.float32, copy=False), vocab=tuple(lines), manifest=manifest
        )
    except BadConfig as exc:
        raise BadRun(f"{src / MANIFEST_FILE}: {exc} Rebuild the matrix.") from exc


def _need(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise BadRun(
            f"{folder} has no {name}; build one with "
            f"`embedgen matrix RUN_DIR_OR_MODEL --method input --out {folder}`."
        )
    return path


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRun(f"{path} is not valid UTF-8 JSON ({exc}); rebuild the matrix.") from exc
    if not isinstance(manifest, dict):
        raise BadRun(f"{path} does not hold a JSON object; rebuild the matrix.")
    return manifest


def _read_vectors(path: Path) -> np.ndarray:
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadRun(f"{path} cannot be read as a .npy array ({exc}); rebuild the matrix.") from exc
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise BadRun(
            f"{path} holds a {vectors.dtype} array of shape {vectors.shape}; "
            "a matrix must be 2-D floats. Rebuild the matrix."
        )
    return vectors


def _read_vocab(path: Path, *, escaped: bool) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRun(f"{path} is not UTF-8 ({exc}); rebuild the matrix.") from exc
    if text and not text.endswith("\n"):
        text += "\n"  # tolerate a hand-edited file without a final line end
    lines = text[:-1].split("\n") if text else []
    return [_unescape_line(line) for line in lines] if escaped else lines


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
