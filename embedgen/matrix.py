"""The embedding matrix: what it is, and how each method builds it from an encoder or a run."""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from embedgen import __version__
from embedgen.device import autocast, resolve_device
from embedgen.errors import BadConfig, Cancelled
from embedgen.finetune import ProgressFn, Run, iter_batches
from embedgen.models import Encoder
from embedgen.postprocess import PostProcess
from embedgen.postprocess import apply as apply_postprocess

log = logging.getLogger(__name__)


class Method(enum.StrEnum):
    """How the matrix rows were made; recorded in every manifest."""

    INPUT = "input"  # the model's token-embedding matrix, untouched by training
    PROJECTED = "projected"  # input vectors through the trained projection (vocab x d)
    CONTEXTUAL = "contextual"  # each token run alone through the (tuned) encoder at a layer


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

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, dims)."""
        return (int(self.vectors.shape[0]), int(self.vectors.shape[1]))

    @property
    def method(self) -> str:
        """The method that made the matrix, as recorded in the manifest."""
        return str(self.manifest.get("method", "unknown"))


# --------------------------------------------------------------------------------------------
# Building a matrix
# --------------------------------------------------------------------------------------------

_UNUSED = re.compile(r"^(\[unused\d+\]|<unused\d+>|\[UNUSED_?\d+\])$", re.IGNORECASE)
_MARKERS = ("##", "\u2581", "\u0120")  # WordPiece continuation, SentencePiece / byte-BPE word start


def is_cjk_char(ch: str) -> bool:
    """True for CJK unified ideographs (all extensions) and compatibility ideographs."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x323AF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def strip_marker(token: str) -> str:
    """The token's text without a subword marker (``##``, ``▁``, ``Ġ``)."""
    for m in _MARKERS:
        if token.startswith(m) and len(token) > len(m):
            return token[len(m) :]
    return token


def is_cjk_token(token: str) -> bool:
    """True when the token (marker stripped) is made of CJK characters only."""
    text = strip_marker(token)
    return bool(text) and all(is_cjk_char(c) for c in text)


@dataclass(frozen=True)
class MatrixOptions:
    """Which rows to keep and how to build them."""

    method: Method = Method.INPUT
    layer: int | None = None  # contextual: 0 = embeddings output, N = last layer; None = last
    through_projection: bool = True  # contextual from a run: pass vectors through the projection
    drop_special: bool = True  # [CLS], [SEP], [PAD], [MASK], [UNK] and [unusedN] tokens
    cjk_only: bool = False  # keep tokens made of CJK characters only
    drop_continuation: bool = False  # drop "##x" pieces (their "x" twins stay)
    postprocess: PostProcess = field(default_factory=PostProcess)
    batch_size: int = 256
    device: str = "auto"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", Method(self.method))
        except ValueError:
            raise BadConfig(
                f"Unknown method '{self.method}'. Choose one of: "
                + ", ".join(m.value for m in Method)
                + "."
            ) from None
        if self.batch_size < 1:
            raise BadConfig("Matrix batch size must be at least 1.")


def select_tokens(encoder: Encoder, options: MatrixOptions) -> tuple[list[int], dict[str, int]]:
    """Token ids to keep (in id order) and how many each rule removed."""
    tokenizer = encoder.tokenizer
    rows = encoder.info.vocab_size
    n = min(rows, len(tokenizer))
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = set(tokenizer.all_special_ids or [])
    removed = {
        "beyond_tokenizer": rows - n,
        "special": 0,
        "unused": 0,
        "not_cjk": 0,
        "continuation": 0,
        "unnamed": 0,
    }
    keep = []
    for i, tok in enumerate(tokens):
        if tok is None or tok == "":
            removed["unnamed"] += 1
        elif options.drop_special and i in special:
            removed["special"] += 1
        elif options.drop_special and _UNUSED.match(tok):
            removed["unused"] += 1
        elif options.drop_continuation and tok.startswith("##"):
            removed["continuation"] += 1
        elif options.cjk_only and not is_cjk_token(tok):
            removed["not_cjk"] += 1
        else:
            keep.append(i)
    if not keep:
        raise BadConfig(
            f"No tokens are left after the filters ({_describe_removed(removed)}). "
            "Turn off 'CJK only' for a model without Chinese tokens."
        )
    return keep, removed


def _describe_removed(removed: dict[str, int]) -> str:
    parts = [f"{v} {k.replace('_', ' ')}" for k, v in removed.items() if v]
    return ", ".join(parts) or "none removed"


def _single_token_inputs(tokenizer: Any) -> tuple[list[int], int]:
    """The special-token frame a single token sits in (e.g. [CLS] x [SEP]) and x's position."""
    frame = tokenizer("", add_special_tokens=True)["input_ids"]
    if hasattr(frame, "tolist"):
        frame = frame.tolist()
    lead = 1 if frame and frame[0] in set(tokenizer.all_special_ids or []) and len(frame) > 1 else 0
    if (
        len(frame) == 1
        and tokenizer.bos_token_id is not None
        and frame[0] == tokenizer.bos_token_id
    ):
        lead = 1
    return list(frame), lead


def _contextual(
    encoder: Encoder,
    ids: list[int],
    layer: int,
    options: MatrixOptions,
    device: torch.device,
    project: Callable[[torch.Tensor], torch.Tensor] | None,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> np.ndarray:
    frame, pos = _single_token_inputs(encoder.tokenizer)
    model = encoder.model
    was_training = model.training
    model.eval()
    out_rows: list[np.ndarray] = []
    batches = list(iter_batches(len(ids), options.batch_size))
    try:
        with torch.no_grad():
            for b, rng in enumerate(batches):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("Matrix building was cancelled.")
                chunk = torch.tensor([ids[i] for i in rng], dtype=torch.long)
                seq = torch.tensor(frame, dtype=torch.long).repeat(len(chunk), 1)
                seq = torch.cat([seq[:, :pos], chunk[:, None], seq[:, pos:]], dim=1).to(device)
                mask = torch.ones_like(seq)
                with autocast(device):
                    out = model(input_ids=seq, attention_mask=mask, output_hidden_states=True)
                h = out.hidden_states[layer][:, pos].float()
                if project is not None:
                    h = project(h).float()
                out_rows.append(h.cpu().numpy())
                if progress is not None:
                    progress(b + 1, len(batches))
    finally:
        model.train(was_training)
    return np.concatenate(out_rows).astype(np.float32, copy=False)


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
    from embedgen.runs import run_manifest

    options = options or MatrixOptions()
    run = source if isinstance(source, Run) else None
    encoder = run.encoder if run is not None else source
    if options.method is Method.PROJECTED and run is None:
        raise BadConfig(
            "The 'projected' method needs a fine-tuning run (it uses the trained projection). "
            "Train first, or choose 'input' or 'contextual'."
        )
    ids, removed = select_tokens(encoder, options)
    vocab = tuple(encoder.tokenizer.convert_ids_to_tokens(ids))
    device = resolve_device(options.device)
    layer = None
    model = encoder.model
    if options.method is Method.CONTEXTUAL:
        n_layers = encoder.info.num_layers
        layer = n_layers if options.layer is None else options.layer
        if layer < 0:
            layer += n_layers + 1
        if not 0 <= layer <= n_layers:
            raise BadConfig(
                f"Layer {options.layer} does not exist: {encoder.info.model_id} has layers "
                f"0 (embeddings) to {n_layers}."
            )
    moved = next(model.parameters()).device
    head = run.head if run is not None else None
    try:
        if options.method is Method.CONTEXTUAL:
            model.to(device)
            project = None
            if head is not None and options.through_projection:
                head.to(device)
                project = head.project
            vectors = _contextual(encoder, ids, layer, options, device, project, progress, cancel)
        else:
            weight = model.get_input_embeddings().weight.detach()
            rows = weight[torch.tensor(ids, dtype=torch.long, device=weight.device)].float()
            if options.method is Method.PROJECTED:
                assert head is not None
                with torch.no_grad():
                    rows = torch.cat(
                        [
                            head.project(rows[r].to(next(head.parameters()).device)).float().cpu()
                            for r in iter_batches(len(ids), 4096)
                        ]
                    )
            vectors = rows.cpu().numpy().astype(np.float32, copy=False)
            if progress is not None:
                progress(1, 1)
    finally:
        model.to(moved)
        if head is not None:
            head.to(moved)
    vectors, steps = apply_postprocess(vectors, options.postprocess)
    manifest: dict[str, Any] = {
        "method": str(options.method),
        "method_description": METHOD_DESCRIPTIONS[options.method],
        "layer": layer,
        "through_projection": bool(
            options.method is Method.CONTEXTUAL and head is not None and options.through_projection
        )
        or options.method is Method.PROJECTED,
        "rows": int(vectors.shape[0]),
        "dims": int(vectors.shape[1]),
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
    log.info(
        "Built %s matrix: %d rows x %d dims (%s removed)",
        options.method,
        vectors.shape[0],
        vectors.shape[1],
        _describe_removed(removed),
    )
    return EmbeddingMatrix(vectors=np.ascontiguousarray(vectors), vocab=vocab, manifest=manifest)


METHOD_DESCRIPTIONS = {
    Method.INPUT: "The model's token-embedding matrix as it is; fine-tuning does not change it.",
    Method.PROJECTED: "Each token's input embedding passed through the trained projection "
    "Linear(hidden -> d) of the fine-tuned head.",
    Method.CONTEXTUAL: "Each token run alone through the encoder (the tuned one when built from "
    "a run) and read at the chosen layer; from a run, then through the trained projection "
    "unless switched off.",
}
