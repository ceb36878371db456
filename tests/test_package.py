"""The package's public face: every public name importable from ``embedgen``, and stable."""

from __future__ import annotations

import importlib
import subprocess
import sys

import embedgen as eg


def test_every_public_name_is_importable() -> None:
    missing = [name for name in eg.__all__ if getattr(eg, name, None) is None]
    assert not missing, f"public names that do not import: {missing}"


def test_finetune_and_export_stay_functions_after_their_submodules_are_imported() -> None:
    # A fresh interpreter: in this one, other tests may have imported the submodules already.
    code = """
import embedgen as eg
import embedgen.export, embedgen.train, embedgen.train.loop
from embedgen.export import export_zip
assert callable(eg.export) and eg.export.__module__ == "embedgen.export", eg.export
assert callable(eg.finetune) and eg.finetune.__name__ == "finetune", eg.finetune
from embedgen import export, finetune
assert export is eg.export and finetune is eg.finetune
assert importlib.import_module("embedgen.export").export_zip is export_zip
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", "import importlib\n" + code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_submodules_stay_reachable_as_modules() -> None:
    module = importlib.import_module("embedgen.export")
    assert hasattr(module, "export_word2vec")
    assert sys.modules["embedgen.export"] is module
