"""Disk budgets: matrices built from a plain model and cached maps stay under the operator's
limits, the least recently used going first; a run's matrices and folders the user chose are
never removed; a matrix removed from under a later load fails with a clean message."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_matrix, shown
from streamlit.testing.v1 import AppTest

from embedgen.budget import MIB, Entry, folder_size, least_recently_used
from embedgen.cli import main
from embedgen.errors import BadConfig, BadRun, NotKept
from embedgen.matrix import (
    CACHE_FILE,
    EmbeddingMatrix,
    load_matrix,
    matrix_budget_bytes,
    save_matrix,
    using,
)
from embedgen.matrix import folder as matrix_module
from embedgen.paths import matrix_folder
from embedgen.projection import (
    MapCache,
    ProjectionOptions,
    Reducer,
    cache_path,
    map_budget_bytes,
    project,
)
from embedgen.settings import operator_settings

ROOT = Path(__file__).resolve().parents[1]
MATRIX_BUDGET = "EMBEDGEN_MATRIX_CACHE_MB"
MAP_BUDGET = "EMBEDGEN_MAP_CACHE_MB"
PCA = ProjectionOptions(reducer=Reducer.PCA)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of this test's own, with the default budgets."""
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(MATRIX_BUDGET, raising=False)
    monkeypatch.delenv(MAP_BUDGET, raising=False)
    return tmp_path / "home"


def budget(monkeypatch: pytest.MonkeyPatch, variable: str, nbytes: float) -> None:
    monkeypatch.setenv(variable, repr(nbytes / MIB))


def place(name: str) -> Path:
    """Where the app and the command line save a plain model's matrix called ``name``."""
    return matrix_folder(name, run_folder=None, model_id="tiny")


def save_cached(name: str, seed: int = 0) -> Path:
    return save_matrix(make_matrix(seed=seed), place(name), rebuildable=True)


def last_used(folder: Path, seconds_ago: float) -> None:
    then = time.time() - seconds_ago
    os.utime(folder / CACHE_FILE, (then, then))


def cached_names(home: Path) -> set[str]:
    return {p.parent.name for p in home.glob(f"matrices/*/*/{CACHE_FILE}")}


def cached_bytes(home: Path) -> int:
    return sum(folder_size(p.parent) for p in home.glob(f"matrices/*/*/{CACHE_FILE}"))


# ---- the operator's settings ---------------------------------------------------------------------


def test_budgets_come_from_the_settings_file_and_the_environment_wins(home, monkeypatch) -> None:
    settings = operator_settings()
    assert (settings.matrix_cache_mb, settings.map_cache_mb) == (4096, 1024)
    home.mkdir(parents=True)
    (home / "config.toml").write_text("matrix_cache_mb = 10\nmap_cache_mb = 0.5\n", "utf-8")
    assert (matrix_budget_bytes(), map_budget_bytes()) == (10 * MIB, MIB // 2)
    monkeypatch.setenv(MATRIX_BUDGET, "20")
    assert matrix_budget_bytes() == 20 * MIB


@pytest.mark.parametrize(
    ("line", "variable"),
    [('matrix_cache_mb = "lots"', None), ("map_cache_mb = -1", None), ("", "ten")],
    ids=["words", "negative", "environment"],
)
def test_a_budget_that_is_not_a_size_is_refused(home, monkeypatch, line, variable) -> None:
    home.mkdir(parents=True)
    (home / "config.toml").write_text(line + "\n", "utf-8")
    if variable is not None:
        monkeypatch.setenv(MAP_BUDGET, variable)
    with pytest.raises(BadConfig, match="must be a number of MiB, 0 or more"):
        operator_settings()


# ---- choosing what goes --------------------------------------------------------------------------


def test_least_recently_used_go_first_until_the_rest_fit_and_kept_ones_stay() -> None:
    a, b, c = (Entry(Path(n), (Path(n),), 10, used) for n, used in (("a", 1), ("b", 2), ("c", 3)))
    assert least_recently_used([c, a, b], budget=20) == [a]
    assert least_recently_used([c, a, b], budget=20, keep={Path("a")}) == [b]
    assert least_recently_used([c, a, b], budget=0, keep={Path("c")}) == [a, b]
    assert least_recently_used([c, a, b], budget=30) == []


# ---- matrices built from a plain model -----------------------------------------------------------


def test_the_matrix_cache_stays_within_its_budget_keeping_the_newest(home, monkeypatch) -> None:
    size = folder_size(save_cached("m0"))
    last_used(place("m0"), 100)
    budget(monkeypatch, MATRIX_BUDGET, 2.5 * size)  # two fit
    for i in range(1, 6):
        save_cached(f"m{i}", seed=i)
        last_used(place(f"m{i}"), 100 - i)
        assert cached_bytes(home) <= 2.5 * size, f"over budget after saving m{i}"
    assert cached_names(home) == {"m4", "m5"}


def test_matrices_in_users_workspaces_share_the_one_budget(home, monkeypatch) -> None:
    size = folder_size(save_cached("shared"))
    last_used(place("shared"), 300)
    budget(monkeypatch, MATRIX_BUDGET, 2.5 * size)  # two fit
    folders = []
    for i, user in enumerate(["alice@example.com", "bob@example.com"]):
        folder = matrix_folder(f"m{i}", run_folder=None, model_id="tiny", user=user)
        folders.append(save_matrix(make_matrix(seed=i + 1), folder, rebuildable=True))
        last_used(folder, 200 - 100 * i)
    assert not place("shared").exists(), "the shared home's oldest matrix made room"
    assert all((f / "matrix.npy").is_file() for f in folders)
    assert all(f.is_relative_to(home / "users") for f in folders)


def test_a_matrix_opened_again_is_kept_over_older_ones(home, monkeypatch) -> None:
    a, b = save_cached("a"), save_cached("b")
    last_used(a, 200)
    last_used(b, 100)  # a is the least recently used...
    budget(monkeypatch, MATRIX_BUDGET, 2.5 * folder_size(a))
    load_matrix(a)  # ...until it is opened
    save_cached("c")
    assert cached_names(home) == {"a", "c"}


def test_matrices_of_runs_and_of_folders_the_user_chose_are_never_removed(
    home, tmp_path, monkeypatch
) -> None:
    of_run = save_matrix(make_matrix(), tmp_path / "RUN" / "matrices" / "input-tuned")
    chosen = save_matrix(make_matrix(), home / "matrices" / "mine" / "kept")  # --out, inside
    budget(monkeypatch, MATRIX_BUDGET, 1.5 * folder_size(chosen))  # one fits
    for i in range(3):
        save_cached(f"m{i}", seed=i)
    assert (of_run / "matrix.npy").is_file() and (chosen / "matrix.npy").is_file()
    assert not (chosen / CACHE_FILE).exists()
    assert cached_names(home) == {"m2"}
    with pytest.raises(ValueError, match="not a folder of the matrix cache"):
        save_matrix(make_matrix(), tmp_path / "RUN" / "matrices" / "x", rebuildable=True)


def test_a_matrix_being_read_in_this_process_is_not_removed(home, monkeypatch) -> None:
    a = save_cached("a")
    last_used(a, 100)
    budget(monkeypatch, MATRIX_BUDGET, 1.5 * folder_size(a))
    with using(a):
        save_cached("b")
    assert (a / "matrix.npy").is_file()
    save_cached("c")  # a is no longer read: it goes now, and b with it
    assert cached_names(home) == {"c"}


@pytest.mark.parametrize("when", ["before writing", "after writing"])
def test_a_matrix_bigger_than_the_whole_budget_is_not_saved_and_removes_nothing(
    home, monkeypatch, when
) -> None:
    small = save_cached("small")
    big = make_matrix(vocab=tuple(f"w{i}" for i in range(200)), dims=16)
    # "after writing": matrix.npy fits, the folder with its vocabulary and manifest does not
    limit = 1.5 * folder_size(small) if when == "before writing" else big.vectors.nbytes + 10
    budget(monkeypatch, MATRIX_BUDGET, limit)
    with pytest.raises(NotKept, match="The matrix 'big' takes .* MiB the operator") as caught:
        save_matrix(big, place("big"), rebuildable=True)
    assert str(home) not in str(caught.value)
    assert not place("big").exists()
    assert cached_names(home) == {"small"}


def test_a_zero_matrix_budget_keeps_none(home, monkeypatch) -> None:
    budget(monkeypatch, MATRIX_BUDGET, 0)
    with pytest.raises(NotKept, match="keeps no matrices built from a model"):
        save_cached("m")
    assert not place("m").exists()


def test_removals_are_logged_with_their_number_size_and_the_budget(
    home, monkeypatch, caplog
) -> None:
    for i in range(3):
        last_used(save_cached(f"m{i}", seed=i), 100 - i)
    budget(monkeypatch, MATRIX_BUDGET, 1.5 * folder_size(place("m0")))
    with caplog.at_level(logging.INFO, logger="embedgen.budget"):
        save_cached("new")
    assert cached_names(home) == {"new"}
    assert any(
        r.getMessage().startswith("Removed 3 cached matrices (")
        and "KiB), least recently used, to stay under 0.00" in r.getMessage()
        and r.getMessage().endswith("MiB (matrix_cache_mb)")
        for r in caplog.records
    ), caplog.text


# ---- a matrix removed from under a later load ----------------------------------------------------


@pytest.fixture()
def removed(home, monkeypatch) -> Path:
    """The folder of a cached matrix "input-base" that a newer save removed."""
    gone = save_cached("input-base")
    last_used(gone, 100)
    budget(monkeypatch, MATRIX_BUDGET, 1.5 * folder_size(gone))
    save_cached("newer")
    assert not gone.exists()
    return gone


def test_loading_a_removed_matrix_says_it_is_not_there_by_name(removed, home) -> None:
    with pytest.raises(BadRun, match="The matrix 'input-base' is not there") as caught:
        load_matrix(removed)
    message = str(caught.value)
    assert "Build it again" in message
    assert str(home) not in message and "--out" not in message


def test_a_matrix_removed_while_it_is_read_says_the_same(home, monkeypatch) -> None:
    folder = save_cached("input-base")

    def removed_meanwhile(path, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(matrix_module, "_read_vocab", removed_meanwhile)
    with pytest.raises(BadRun, match="The matrix 'input-base' is not there"):
        load_matrix(folder)


def test_the_command_line_says_so_in_one_line(removed, capsys) -> None:
    assert main(["neighbors", str(removed), "--word", "好"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("embedgen neighbors: error: The matrix 'input-base' is not there"), err


def test_the_app_says_so_without_the_servers_paths(home) -> None:
    """Opening a removed folder on the Explore page, and one half removed (another process
    was removing it): an error each, no traceback, no path the visitor did not type."""
    half = save_cached("half-gone")
    (half / "matrix.npy").unlink()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/5_Explore.py")
    at.run()
    for folder, expected in (
        (place("gone"), "is not a matrix folder you can open here: it is not there"),
        (half, "The matrix 'half-gone' has no matrix.npy"),
    ):
        at.text_input(key="explore_open").input(str(folder)).run()
        next(b for b in at.button if b.label == "Open").click()
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        errors = [shown(e) for e in at.error]
        assert len(errors) == 1 and expected in errors[0], errors
        assert str(home) not in errors[0].replace(str(folder), "<typed>"), errors[0]


def test_the_app_keeps_a_matrix_too_big_to_save_for_the_session(
    app: AppTest, tiny_model_dir, tmp_path, monkeypatch
) -> None:
    from test_app import click, go, load_model, wait_for

    budget(monkeypatch, MATRIX_BUDGET, 1000)  # less than the tiny model's input matrix
    load_model(app, tiny_model_dir)
    go(app, "4_Matrix")
    click(app, "Build matrix")
    wait_for(app, "matrix_job")
    entry = app.session_state["matrices"]["input-base"]
    assert entry.folder == "" and entry.matrix.shape[0] > 0
    said = " ".join(shown(c) for c in app.caption)
    assert "not saved" in said and "export it" in said, said
    assert not list((tmp_path / "home").glob("matrices/*/*"))


# ---- the command line ----------------------------------------------------------------------------


def test_the_command_line_caches_its_default_folder_only(
    home, tiny_model_dir, monkeypatch, capsys
) -> None:
    out = home / "matrices" / "mine" / "kept"
    assert main(["matrix", str(tiny_model_dir), "--out", str(out)]) == 0
    assert not (out / CACHE_FILE).exists()
    budget(monkeypatch, MATRIX_BUDGET, 1.5 * folder_size(out))  # one fits
    assert main(["matrix", str(tiny_model_dir)]) == 0  # input-base
    assert main(["matrix", str(tiny_model_dir), "--center"]) == 0  # input-base-center
    assert cached_names(home) == {"input-base-center"}
    assert (out / "matrix.npy").is_file()


def test_the_command_line_asks_for_out_when_no_matrix_can_be_kept(
    home, tiny_model_dir, monkeypatch, capsys
) -> None:
    budget(monkeypatch, MATRIX_BUDGET, 0)
    assert main(["matrix", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert "matrix_cache_mb" in err and "--out FOLDER" in err, err
    assert not (home / "matrices").exists()


# ---- maps ----------------------------------------------------------------------------------------


def small_matrix(seed: int) -> EmbeddingMatrix:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((60, 8)).astype(np.float32)
    return EmbeddingMatrix(vectors, tuple(f"w{i}" for i in range(60)), {"method": "input"})


def map_used(matrix: EmbeddingMatrix, folder: Path, seconds_ago: float) -> None:
    then = time.time() - seconds_ago
    os.utime(cache_path(matrix, PCA, folder).with_suffix(".json"), (then, then))


def test_the_map_cache_stays_within_its_budget_keeping_the_newest(tmp_path, monkeypatch) -> None:
    first = small_matrix(0)
    project(first, PCA, cache_dir=tmp_path)
    map_used(first, tmp_path, 100)
    (entry,) = MapCache(tmp_path).entries()
    budget(monkeypatch, MAP_BUDGET, 2.5 * entry.size)  # two fit
    matrices = [first] + [small_matrix(i) for i in range(1, 5)]
    for i, matrix in enumerate(matrices[1:], start=1):
        project(matrix, PCA, cache_dir=tmp_path)
        map_used(matrix, tmp_path, 100 - i)
        assert sum(e.size for e in MapCache(tmp_path).entries()) <= 2.5 * entry.size
    kept = {p.name for p in tmp_path.glob("*.npy")}
    assert kept == {cache_path(m, PCA, tmp_path).name for m in matrices[-2:]}


def test_a_map_opened_again_is_kept_over_older_ones(tmp_path, monkeypatch) -> None:
    a, b, c = small_matrix(0), small_matrix(1), small_matrix(2)
    project(a, PCA, cache_dir=tmp_path)
    project(b, PCA, cache_dir=tmp_path)
    map_used(a, tmp_path, 200)
    map_used(b, tmp_path, 100)
    size = max(e.size for e in MapCache(tmp_path).entries())
    budget(monkeypatch, MAP_BUDGET, 2.5 * size)
    assert project(a, PCA, cache_dir=tmp_path).from_cache  # a is used now
    project(c, PCA, cache_dir=tmp_path)
    assert project(a, PCA, cache_dir=tmp_path).from_cache
    assert not cache_path(b, PCA, tmp_path).exists()
    assert not cache_path(b, PCA, tmp_path).with_suffix(".json").exists()


def test_a_map_bigger_than_the_whole_budget_is_returned_but_not_kept(tmp_path, monkeypatch):
    kept = small_matrix(0)
    project(kept, PCA, cache_dir=tmp_path)
    budget(monkeypatch, MAP_BUDGET, 300)  # less than 60 rows' coordinates and their record
    result = project(small_matrix(1), PCA, cache_dir=tmp_path)
    assert result.coords.shape == (60, 2)
    assert [p.name for p in tmp_path.glob("*.npy")] == [cache_path(kept, PCA, tmp_path).name]


def test_a_zero_map_budget_switches_the_map_cache_off(tmp_path, monkeypatch) -> None:
    matrix = small_matrix(0)
    project(matrix, PCA, cache_dir=tmp_path)  # cached while the cache was on
    budget(monkeypatch, MAP_BUDGET, 0)
    assert not project(matrix, PCA, cache_dir=tmp_path).from_cache
    assert not project(small_matrix(1), PCA, cache_dir=tmp_path).from_cache
    assert len(list(tmp_path.glob("*.npy"))) == 1
