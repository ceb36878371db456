"""The library lists a workspace's runs and matrices newest first, and renames or deletes only
a run or a matrix inside the workspace it is given (issue 21, item 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import make_matrix

from embedgen.errors import BadConfig
from embedgen.library import TITLE_CHARS, delete, list_items, rename, title_of
from embedgen.matrix import save_matrix
from embedgen.paths import matrices_dir, runs_dir, workspace
from embedgen.runs import read_run_record, train_and_save
from embedgen.train import FinetuneConfig


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture()
def run_folder(home: Path, tiny_encoder, synthetic_data) -> Path:
    """A real run, trained one epoch, with one matrix saved in it."""
    folder = runs_dir() / "2026-12-08_reviews_head"
    train_and_save(tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, dim=8), folder)
    save_matrix(_made(make_matrix(), "2020-06-01T10:00:00+00:00"), folder / "matrices" / "m1")
    return folder


def _made(matrix, when: str, model: str = "/models/tiny-bert"):
    matrix.manifest.update(created=when, model={"model_id": model}, rows=8, dims=6)
    return matrix


def test_runs_and_matrices_are_listed_newest_first(
    run_folder: Path, home: Path, tiny_model_dir: Path
) -> None:
    cache = matrices_dir() / "tiny-bert"
    save_matrix(_made(make_matrix(), "2030-01-01T00:00:00+00:00"), cache / "newest")
    save_matrix(_made(make_matrix(), "2001-01-01T00:00:00+00:00"), cache / "oldest")
    (cache / "half-written").mkdir()  # no manifest: not a matrix
    items = list_items()
    assert [(i.kind, Path(i.folder).name) for i in items] == [
        ("matrix", "newest"),
        ("run", run_folder.name),
        ("matrix", "m1"),
        ("matrix", "oldest"),
    ]
    run, in_run = items[1], items[2]
    assert (run.model, run.data, run.status) == (tiny_model_dir.name, "reviews.csv", "finished")
    assert run.what.startswith("head · 1 epochs · best F1 ")
    assert run.size > 0 and in_run.size > 0
    assert in_run.run == str(run_folder) and in_run.data == "reviews.csv"
    assert in_run.owner == read_run_record(run_folder).owner


def test_a_name_given_is_shown_and_an_empty_one_gives_the_folders_back(run_folder: Path) -> None:
    assert rename(run_folder, "  酒店 评论  第一次 ") == "酒店 评论 第一次"
    assert title_of(run_folder) == "酒店 评论 第一次"
    assert next(i for i in list_items() if i.kind == "run").title == "酒店 评论 第一次"
    assert rename(run_folder, "") == run_folder.name
    assert title_of(run_folder) is None
    with pytest.raises(BadConfig, match=f"at most {TITLE_CHARS}"):
        rename(run_folder, "长" * (TITLE_CHARS + 1))


def test_delete_removes_a_matrix_then_a_run_with_its_matrices(run_folder: Path) -> None:
    matrix = run_folder / "matrices" / "m1"
    freed = delete(matrix)
    assert freed > 0 and not matrix.exists() and run_folder.is_dir()
    assert delete(run_folder) > 0
    assert not run_folder.exists() and list_items() == []


def test_nothing_outside_the_workspace_is_renamed_or_deleted(
    run_folder: Path, home: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    save_matrix(make_matrix(), outside)
    link = matrices_dir() / "m" / "link"
    link.parent.mkdir(parents=True)
    os.symlink(outside, link)
    alice = workspace("alice@example.com")
    for folder in (outside, link, home, runs_dir(), run_folder / "matrices"):
        with pytest.raises(BadConfig, match="nothing was changed"):
            delete(folder)
        with pytest.raises(BadConfig, match="nothing was changed"):
            rename(folder, "mine")
    with pytest.raises(BadConfig, match="not in your workspace"):
        delete(run_folder, user="alice@example.com")  # the shared home is not alice's
    assert outside.is_dir() and run_folder.is_dir() and not alice.exists()
    assert not (outside / "title.txt").exists()


def test_a_run_waiting_in_the_queue_is_not_deleted(
    home: Path, tiny_encoder, synthetic_data
) -> None:
    from embedgen.runs import write_queued

    folder = write_queued(
        runs_dir() / "waiting",
        FinetuneConfig(epochs=1, dim=8),
        tiny_encoder.info.as_dict(),
        synthetic_data.summary(),
        task_id="t-1",
    )
    assert read_run_record(folder).status.active
    with pytest.raises(BadConfig, match="cancel it first"):
        delete(folder)
    assert folder.is_dir()
