"""The embedding matrix: what it is, how each method builds it, and its folder on disk.

Methods (:class:`Method`), each named in the manifest:

- ``input``: the model's token-embedding table as it is (the baseline; fine-tuning never
  changes it) — ``tables``;
- ``projected``: each token's input vector through the run's trained projection — ``tables``;
- ``contextual``: each token (or word) run alone through the (possibly tuned) encoder and read
  at a layer; from a run, then through the projection unless switched off — ``contextual``;
- ``aggregated``: each word read in context (corpus occurrences and generated sentences) —
  ``aggregated``, ``contexts``, ``generated``.

The modules, read top to bottom: ``types`` (the matrix, its methods and options), ``naming``
(its name and default folder), ``build`` (:func:`build_matrix`), ``estimate`` (how long a
build takes), ``manifest`` (what it records, and the words that describe it), ``folder`` (save
and load, swapped in whole), ``cache`` (the disk budget for matrices of plain models), and
``saving``, the one build-and-save path of the command line and the Matrix page.
"""

from embedgen.matrix.build import build_matrix
from embedgen.matrix.cache import CACHE_FILE, MatrixCache, matrix_budget_bytes, using
from embedgen.matrix.estimate import BuildEstimate, estimate_build
from embedgen.matrix.folder import (
    DTYPES,
    MANIFEST_FILE,
    MATRIX_FILE,
    ROWS_FILE,
    VOCAB_FILE,
    load_matrix,
    save_matrix,
    saved_matrix,
    text_lines,
)
from embedgen.matrix.manifest import describe, kept_note
from embedgen.matrix.naming import folder_for, name_for
from embedgen.matrix.saving import IfSaved, Saved, Target, build_and_save, settle, target_for
from embedgen.matrix.types import (
    DEFAULT_LABEL_WEIGHT,
    EmbeddingMatrix,
    MatrixOptions,
    Method,
    Rows,
    default_method,
    methods_for,
    reflects_run,
    resolve_layer,
    resolve_layers,
)

__all__ = [
    "CACHE_FILE",
    "DEFAULT_LABEL_WEIGHT",
    "DTYPES",
    "MANIFEST_FILE",
    "MATRIX_FILE",
    "ROWS_FILE",
    "VOCAB_FILE",
    "BuildEstimate",
    "EmbeddingMatrix",
    "IfSaved",
    "MatrixCache",
    "MatrixOptions",
    "Method",
    "Rows",
    "Saved",
    "Target",
    "build_and_save",
    "build_matrix",
    "default_method",
    "describe",
    "estimate_build",
    "folder_for",
    "kept_note",
    "load_matrix",
    "matrix_budget_bytes",
    "methods_for",
    "name_for",
    "reflects_run",
    "resolve_layer",
    "resolve_layers",
    "save_matrix",
    "saved_matrix",
    "settle",
    "target_for",
    "text_lines",
    "using",
]
