"""What a matrix's manifest records about how it was made, and the words that describe a
matrix to people (the CLI and the Matrix page say the same)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from embedgen import __version__
from embedgen.matrix.types import EmbeddingMatrix, MatrixOptions, Method, reflects_run
from embedgen.models import Encoder
from embedgen.runs import run_manifest
from embedgen.train import Run


def manifest_for(
    encoder: Encoder,
    run: Run | None,
    options: MatrixOptions,
    rows: dict[str, Any],
    steps: list[dict[str, Any]],
    shape: tuple[int, ...],
) -> dict[str, Any]:
    """What a matrix records about how it was made."""
    projected = options.method.needs_run or (
        options.method.reads_context
        and run is not None
        and options.through_projection
        and not options.label_weight
    )
    layers = rows.pop("layers", None)
    manifest: dict[str, Any] = {
        "method": options.method,
        "method_description": options.method.description,
        "layer": layers[0] if layers and layers[0] == layers[1] else None,
        "layers": layers,
        "through_projection": bool(projected),
        "reflects_tuning": reflects_run(options, run),
        "rows": int(shape[0]),
        "dims": int(shape[1]),
        "rows_are": rows.pop("rows_are"),
        "selection": {
            "drop_special": options.drop_special,
            "cjk_only": options.cjk_only,
            "drop_continuation": options.drop_continuation,
            "removed": rows.pop("removed", None),
        },
        "postprocess": steps,
        "model": encoder.info.as_dict(),
        "run": run_manifest(run) if run is not None else None,
        "embedgen_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    manifest.update(rows)  # vocabulary, corpus, contexts for word rows
    if options.method is Method.AGGREGATED:
        manifest["context_tokens"] = options.context_tokens
    return manifest


def describe(matrix: EmbeddingMatrix) -> str:
    """What a matrix is and how it was read, in one line for people: "contextual · 17,134
    tokens × 384 · layer 12 · post-processing: none", with the words read in the data and
    what was reused for aggregated word rows."""
    rows, dims = matrix.shape
    parts = [str(matrix.method or "matrix"), f"{rows:,} {matrix.rows_are} × {dims}"]
    if matrix.layers:
        first, last = matrix.layers
        parts.append(f"layer {first}" if first == last else f"layers {first}-{last}")
    read = matrix.manifest.get("contexts")
    if read:
        line = f"{read['words_read_in_corpus']:,} words read in your data"
        if window := read.get("corpus_window"):
            line += f" (in pieces of at most {window} characters)"
        generated = read.get("generated_per_word")
        fewer = read.get("generated_per_word_in_corpus", generated)
        if generated and fewer != generated and read["words_read_in_corpus"]:
            line += f", also in {fewer} generated sentences (the others in {generated})"
        elif generated:
            line += f", every word also in {generated} generated sentences"
        if read.get("words_read_alone"):
            line += f", {read['words_read_alone']:,} read alone"
        parts.append(line)
    if (note := kept_note(matrix.manifest)) is not None:
        parts.append(note)
    parts.append("post-processing: " + (", ".join(matrix.postprocess_steps) or "none"))
    return " · ".join(parts)


def kept_note(manifest: dict[str, Any]) -> str | None:
    """For people, what an aggregated matrix reused: corpus contexts from a run's word states
    (and how many were read again), generated contexts from the cache; None if nothing."""
    contexts = manifest.get("contexts") or {}
    notes = []
    if shared := contexts.get("from_run"):
        notes.append(
            f"{shared['contexts']:,} corpus contexts taken from the run's encoding pass, "
            f"{shared['read_again']:,} read again"
        )
    if cached := contexts.get("generated_cached"):
        notes.append(f"generated contexts of {cached:,} words from the cache")
    return " · ".join(notes) or None
