"""Where embedgen keeps things: the shared home and the users' workspaces under it."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedgen.paths import matrices_dir, matrix_folder, runs_dir, users_dir, workspace


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_no_user_means_the_shared_home_as_before(home: Path) -> None:
    assert workspace(None) == home
    assert runs_dir() == home / "runs" and matrices_dir() == home / "matrices"


def test_a_users_workspace_is_named_for_them_and_holds_their_runs_and_matrices(
    home: Path,
) -> None:
    alice = workspace("alice@example.com")
    assert alice.parent == users_dir() == home / "users"
    assert alice.name.startswith("alice_example_com-")
    assert runs_dir("alice@example.com") == alice / "runs"
    assert matrix_folder(
        "input-base", run_folder=None, model_id="/m/bert-base-chinese", user="alice@example.com"
    ) == (alice / "matrices" / "bert-base-chinese" / "input-base")


@pytest.mark.parametrize(
    "names", [("a.b", "a_b"), ("Alice", "alice"), ("..", "/"), ("x" * 50, "x" * 51)]
)
def test_names_that_slug_alike_get_workspaces_of_their_own(
    home: Path, names: tuple[str, str]
) -> None:
    first, second = (workspace(name) for name in names)
    assert first != second
    assert first.parent == second.parent == users_dir(), "no name leaves the users' folder"
