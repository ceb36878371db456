"""embedgen: turn a pretrained transformer into a word-embedding matrix shaped by labelled text.

The public API is re-exported here and imported lazily, so ``embedgen --help`` starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EmbedgenError": "embedgen.errors",
    "ModelNotAvailable": "embedgen.errors",
    "BadTable": "embedgen.errors",
    "BadConfig": "embedgen.errors",
    "BadRun": "embedgen.errors",
    "NotInVocabulary": "embedgen.errors",
    "resolve_device": "embedgen.device",
    "load_encoder": "embedgen.models",
    "list_cached_models": "embedgen.models",
    "Encoder": "embedgen.models",
    "read_table": "embedgen.data",
    "guess_columns": "embedgen.data",
    "prepare": "embedgen.data",
    "split": "embedgen.data",
    "Table": "embedgen.data",
    "LabelledData": "embedgen.data",
    "FinetuneConfig": "embedgen.finetune",
    "Strategy": "embedgen.finetune",
    "finetune": "embedgen.finetune",
    "Run": "embedgen.finetune",
    "save_run": "embedgen.runs",
    "load_run": "embedgen.runs",
    "Method": "embedgen.matrix",
    "MatrixOptions": "embedgen.matrix",
    "EmbeddingMatrix": "embedgen.matrix",
    "build_matrix": "embedgen.matrix",
    "PostProcess": "embedgen.postprocess",
    "NeighbourIndex": "embedgen.neighbors",
    "save_matrix": "embedgen.export",
    "load_matrix": "embedgen.export",
    "export": "embedgen.export",
    "ExportFormat": "embedgen.export",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embedgen' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
