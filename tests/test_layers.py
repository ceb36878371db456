"""The house's shape, checked: the layering in pyproject.toml ([tool.importlinter]) and the size
of what a reader must hold in mind at once (docs/ARCHITECTURE.md says why)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "embedgen"
LONGEST_FUNCTION = 60  # lines, def to last line; longer ones say why in a "# Long:" comment
LONGEST_CLASS = 250  # lines
WHY_LONG = re.compile(r"#\s*Long:\s*\S")


def test_the_import_contracts_hold() -> None:
    """Layers from errors and paths up to the CLI and the pages; training independent of
    words and matrices; streamlit only in embedgen.ui; no import cycle anywhere."""
    lint_imports = shutil.which("lint-imports")
    if lint_imports is None:
        pytest.skip("import-linter is not installed (pip install -e .[dev] brings it)")
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _definitions() -> list[tuple[str, ast.AST, list[str]]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text("utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                found.append((where, node, lines[node.lineno - 1 : node.end_lineno]))
    return found


def test_no_function_is_longer_than_a_screen_without_saying_why() -> None:
    too_long = [
        f"{where} ({len(body)} lines)"
        for where, node, body in _definitions()
        if not isinstance(node, ast.ClassDef)
        and len(body) > LONGEST_FUNCTION
        and not any(WHY_LONG.search(line) for line in body)
    ]
    assert not too_long, "split these, or say why they are long in a '# Long:' comment:\n" + (
        "\n".join(too_long)
    )


def test_no_class_holds_more_than_one_idea_s_worth_of_lines() -> None:
    too_long = [
        f"{where} ({len(body)} lines)"
        for where, node, body in _definitions()
        if isinstance(node, ast.ClassDef) and len(body) > LONGEST_CLASS
    ]
    assert not too_long, "split these classes:\n" + "\n".join(too_long)
