"""embedgen: turn a pretrained transformer into a word-embedding matrix shaped by labelled text.

The public API is re-exported here and imported lazily, so ``embedgen --help`` starts fast.
``embedgen.<name>`` is always the public object, also after a submodule of the same name has
been imported: ``embedgen.export`` is the function, and ``from embedgen.export import ...``
reaches the module's other names.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EmbedgenError": "embedgen.errors",
    "NotAllowed": "embedgen.errors",
    "Cancelled": "embedgen.errors",
    "ModelNotAvailable": "embedgen.errors",
    "BadTable": "embedgen.errors",
    "BadConfig": "embedgen.errors",
    "BadRun": "embedgen.errors",
    "NotInVocabulary": "embedgen.errors",
    "resolve_device": "embedgen.device",
    "load_encoder": "embedgen.models",
    "list_cached_models": "embedgen.models",
    "Encoder": "embedgen.models",
    "operator_settings": "embedgen.settings",
    "embedgen_home": "embedgen.paths",
    "read_table": "embedgen.table",
    "xlsx_sheets": "embedgen.table",
    "Table": "embedgen.table",
    "guess_columns": "embedgen.data",
    "prepare": "embedgen.data",
    "split": "embedgen.data",
    "LabelledData": "embedgen.data",
    "FinetuneConfig": "embedgen.train",
    "Strategy": "embedgen.train",
    "finetune": "embedgen.train",
    "Run": "embedgen.train",
    "save_run": "embedgen.runs",
    "load_run": "embedgen.runs",
    "Method": "embedgen.matrix",
    "MatrixOptions": "embedgen.matrix",
    "EmbeddingMatrix": "embedgen.matrix",
    "build_matrix": "embedgen.matrix",
    "PostProcess": "embedgen.postprocess",
    "Corpus": "embedgen.words",
    "WordOptions": "embedgen.words",
    "WordVocab": "embedgen.words",
    "words_from_corpus": "embedgen.words",
    "words_from_list": "embedgen.words",
    "NeighbourIndex": "embedgen.neighbours",
    "save_matrix": "embedgen.matrix",
    "load_matrix": "embedgen.matrix",
    "evaluate": "embedgen.evaluate",
    "read_similarity": "embedgen.evaluate",
    "read_analogy": "embedgen.evaluate",
    "export": "embedgen.export",
    "ExportFormat": "embedgen.export",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embedgen' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


class _Package(types.ModuleType):
    """The package's type. Importing ``embedgen.export`` sets the package's attribute
    ``export`` to the submodule, which would hide the public function of that name; a public
    name keeps its public object instead (the submodule stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
