"""Comparing training runs: the settings that differ, the metrics, the curves, which matrix of
each run is compared, and the neighbours of the same words side by side.

Two real runs of the tiny model are trained once for this file with the real command, the
same data and seed, and two settings apart (``--dim 8 --epochs 2`` and ``--dim 16 --epochs
3``); each builds its matrices with ``embedgen matrix RUN`` into its ``matrices/``. Cases that
need a run with other matrices, or none, copy one of these folders and change its matrices.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import POSITIVE, synthetic_rows, write_csv
from test_cli import cli, cli_for_fixture, refusal, succeeded, train_args

from embedgen.compare import (
    MatrixChoice,
    curves,
    matrices_to_compare,
    metrics_table,
    neighbours_side_by_side,
    open_matrices,
    same_settings,
    saved_matrices,
    settings_diff,
)
from embedgen.errors import BadConfig
from embedgen.matrix import load_matrix
from embedgen.runs import RunRecord, read_run_record

GOOD = POSITIVE[0]  # 好: a token of the tiny model
POOLED = GOOD + POSITIVE[1]  # 好美: not a token, read as 好 + 美
UNANSWERABLE = "干净"  # 干 is a token, 净 is not: the word cannot be pieced together
EARLIER, LATER = "2024-01-01T10:00:00+00:00", "2024-06-01T10:00:00+00:00"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text("utf-8"))


def build(run: Path, *flags: object) -> str:
    """``embedgen matrix RUN FLAGS`` saved where the naming rule puts it; its folder name."""
    before = set(saved_matrices(run))
    result = cli_for_fixture("matrix", run, *flags)
    assert result.code == 0, f"building a matrix in {run.name} failed: {succeeded(result)}"
    (made,) = set(saved_matrices(run)) - before
    return made


def built_at(run: Path, name: str, when: str) -> None:
    """Say in the manifest of ``run``'s matrix ``name`` that it was built at ``when``: builds
    within one second are otherwise a tie, and which is newest is what the tests are about."""
    path = run / "matrices" / name / "manifest.json"
    manifest = read_json(path)
    manifest["created"] = when
    path.write_text(json.dumps(manifest), "utf-8")


# --------------------------------------------------------------------------------------------
# Two runs, trained once for this file
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tiny_model_dir, tmp_path_factory) -> Path:
    """An EMBEDGEN_HOME whose runs/ holds ``narrow`` (dim 8, 2 epochs) and ``wide`` (dim 16,
    3 epochs), each with a projected matrix (the same name in both) built first and, in
    ``narrow`` only, an input matrix built later."""
    home = tmp_path_factory.mktemp("compare-home")
    data = write_csv(home / "reviews.csv", synthetic_rows())
    for name, dim, epochs in (("narrow", 8, 2), ("wide", 16, 3)):
        run = home / "runs" / name
        result = cli_for_fixture(
            *train_args(tiny_model_dir, data, run, "--dim", dim, "--epochs", epochs)
        )
        assert result.code == 0, f"training {name} failed: {succeeded(result)}"
        built_at(run, build(run, "--method", "projected"), EARLIER)
    built_at(home / "runs" / "narrow", build(home / "runs" / "narrow", "--method", "input"), LATER)
    return home


@pytest.fixture(scope="module")
def narrow(home) -> RunRecord:
    return read_run_record(home / "runs" / "narrow")


@pytest.fixture(scope="module")
def wide(home) -> RunRecord:
    return read_run_record(home / "runs" / "wide")


@pytest.fixture(scope="module")
def names(narrow, wide) -> tuple[str, str]:
    """The projected matrix both runs have, and the input matrix only ``narrow`` has."""
    (common,) = set(saved_matrices(narrow.folder)) & set(saved_matrices(wide.folder))
    (only_narrow,) = set(saved_matrices(narrow.folder)) - {common}
    assert common.startswith("projected") and only_narrow.startswith("input"), (common, only_narrow)
    return common, only_narrow


def copy_run(record: RunRecord, to: Path, *, matrices: dict[str, str] | None = None) -> RunRecord:
    """A copy of ``record``'s run folder at ``to``, holding only ``matrices`` (its matrix name
    -> the copy's name; None: no matrix at all)."""
    shutil.copytree(record.folder, to, ignore=shutil.ignore_patterns("matrices"))
    for old, new in (matrices or {}).items():
        shutil.copytree(Path(record.folder) / "matrices" / old, to / "matrices" / new)
    return read_run_record(to)


# --------------------------------------------------------------------------------------------
# Settings, metrics, curves
# --------------------------------------------------------------------------------------------


def test_the_diff_lists_exactly_the_settings_that_differ_each_value_a_run(narrow, wide):
    assert settings_diff([narrow, wide]) == [
        ("projection size d (dim)", ("8", "16")),
        ("epochs", ("2", "3")),
    ]


def test_the_settings_left_out_of_the_diff_are_the_same_ones(narrow, wide):
    same = same_settings([narrow, wide])
    assert {"model", "data", "data sha256", "rows used", "strategy", "seed"} <= set(same)
    assert not {"epochs", "projection size d (dim)"} & set(same)
    settings_of_a_run = len(narrow.config) + 4  # the config, model, data, its sha256, rows
    assert len(same) == settings_of_a_run - 2, same


def test_two_runs_with_the_same_settings_differ_in_none(narrow, tmp_path):
    twin = copy_run(narrow, tmp_path / "twin")
    assert settings_diff([narrow, twin]) == []


def test_a_setting_an_older_run_lacks_shows_as_missing_there(narrow, tmp_path):
    older = copy_run(narrow, tmp_path / "older")
    raw = read_json(Path(older.folder) / "run.json")
    del raw["config"]["pooling"]
    (Path(older.folder) / "run.json").write_text(json.dumps(raw), "utf-8")
    assert settings_diff([narrow, read_run_record(older.folder)]) == [("pooling", ("mean", "—"))]


def test_the_metrics_are_each_runs_best_epoch_as_run_json_says(home, narrow, wide):
    rows = metrics_table([narrow, wide])
    assert [r.run for r in rows] == ["narrow", "wide"]
    for row, name in zip(rows, ("narrow", "wide"), strict=True):
        raw = read_json(home / "runs" / name / "run.json")
        best = raw["best"]
        assert row.best_epoch == raw["best_epoch"] == best["epoch"]
        assert (row.val_macro_f1, row.val_accuracy, row.val_loss) == (
            best["val_macro_f1"],
            best["val_accuracy"],
            best["val_loss"],
        )
        assert row.epochs == len(raw["history"])
        assert row.seconds == pytest.approx(sum(m["seconds"] for m in raw["history"]))
        assert row.status == "finished"
        assert row.model == Path(raw["model"]["model_id"]).name
    assert [r.epochs for r in rows] == [2, 3]


def test_the_curves_hold_one_point_an_epoch_from_the_history(narrow, wide):
    narrow_curve, wide_curve = curves([narrow, wide])
    assert narrow_curve.epoch == [1, 2] and wide_curve.epoch == [1, 2, 3]
    assert wide_curve.val_macro_f1 == [m.val_macro_f1 for m in wide.history]
    assert wide_curve.train_loss == [m.train_loss for m in wide.history]
    assert len(narrow_curve.val_loss) == len(narrow_curve.val_accuracy) == 2


# --------------------------------------------------------------------------------------------
# Which matrix of each run
# --------------------------------------------------------------------------------------------


def test_a_matrix_name_all_runs_have_is_preferred_over_a_newer_one_not_all_have(
    narrow, wide, names
):
    common, only_narrow = names
    assert next(iter(saved_matrices(narrow.folder))) == only_narrow, "narrow's newest is input"
    choices = matrices_to_compare([narrow, wide])
    assert [c.name for c in choices] == [common, common]
    assert [c.folder for c in choices] == [
        Path(r.folder) / "matrices" / common for r in (narrow, wide)
    ]
    assert [c.note for c in choices] == ["", ""]


def test_a_matrix_named_is_used_and_a_run_without_it_gets_a_note_naming_it(narrow, wide, names):
    _, only_narrow = names
    choices = matrices_to_compare([narrow, wide], name=only_narrow)
    assert choices[0] == MatrixChoice("narrow", Path(narrow.folder) / "matrices" / only_narrow)
    assert choices[1].folder is None
    assert f"no matrix '{only_narrow}'" in choices[1].note and "embedgen matrix" in choices[1].note


def test_without_a_common_matrix_each_run_shows_its_newest_and_says_they_differ(
    narrow, wide, names, tmp_path
):
    common, only_narrow = names
    other = copy_run(wide, tmp_path / "other", matrices={common: "projected-renamed"})
    choices = matrices_to_compare([narrow, other])
    assert [c.name for c in choices] == [only_narrow, "projected-renamed"]
    assert all("built" in c.note for c in choices), [c.note for c in choices]


def test_runs_of_models_of_other_depths_compare_matrices_built_alike(narrow, wide, names, tmp_path):
    """m3e-small's default is contextual-L4-…, e5-small's contextual-L12-…: no name in
    common, but built the same way, each at its model's last layer. Those are compared, not
    each run's newest (a word matrix against a token one, in the walk of issue 21)."""
    common, only_narrow = names
    shallow = copy_run(narrow, tmp_path / "shallow", matrices={common: "contextual-L4-tuned-cjk"})
    deep = copy_run(
        narrow,
        tmp_path / "deep",
        matrices={common: "contextual-L12-tuned-cjk", only_narrow: "aggregated-L12-tuned-words"},
    )
    newest = Path(deep.folder) / "matrices" / "aggregated-L12-tuned-words" / "manifest.json"
    manifest = json.loads(newest.read_text("utf-8"))
    newest.write_text(json.dumps({**manifest, "created": "2099-01-01T00:00:00+00:00"}), "utf-8")
    assert next(iter(saved_matrices(deep.folder))) == "aggregated-L12-tuned-words"
    choices = matrices_to_compare([shallow, deep])
    assert [c.name for c in choices] == ["contextual-L4-tuned-cjk", "contextual-L12-tuned-cjk"]
    assert all("each at its own model's layer" in c.note for c in choices)


def test_a_run_with_no_matrix_is_told_how_to_build_one(narrow, wide, names, tmp_path):
    bare = copy_run(wide, tmp_path / "bare")
    choices = matrices_to_compare([narrow, bare])
    assert choices[0].name == names[1], "narrow's newest: the other run has none to share"
    assert choices[1].folder is None
    assert f"embedgen matrix {bare.folder}" in choices[1].note
    assert "Matrix page" in choices[1].note


def test_matrices_open_mapped_and_a_damaged_one_becomes_a_note(narrow, wide, names, tmp_path):
    common, _ = names
    damaged = copy_run(wide, tmp_path / "damaged", matrices={common: common})
    (Path(damaged.folder) / "matrices" / common / "vocab.txt").write_text("好\n", "utf-8")
    (matrix, _), (none, note) = open_matrices(matrices_to_compare([narrow, damaged]))
    assert matrix is not None and not matrix.vectors.flags.owndata, "read, not mapped"
    assert none is None and note.folder is None and "rows" in note.note, note


# --------------------------------------------------------------------------------------------
# Neighbours side by side
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def projected(narrow, wide, names):
    common, _ = names
    return [load_matrix(Path(r.folder) / "matrices" / common, mapped=True) for r in (narrow, wide)]


def test_the_neighbours_of_a_word_differ_between_runs_whose_matrices_differ(projected):
    (found,) = neighbours_side_by_side(projected, [GOOD], k=5)
    narrow_answer, wide_answer = found.answers
    assert len(narrow_answer.neighbours) == len(wide_answer.neighbours) == 5
    tokens = [[t for t, _ in a.neighbours] for a in found.answers]
    assert tokens[0] != tokens[1], "a projection of 8 and one of 16 dims gave the same neighbours"
    assert GOOD not in tokens[0] + tokens[1], "the word itself is left out"
    for answer in found.answers:
        cosines = [c for _, c in answer.neighbours]
        assert cosines == sorted(cosines, reverse=True) and all(-1 <= c <= 1 for c in cosines)


def test_a_word_a_matrix_cannot_answer_gets_a_note_and_the_other_words_still_come(projected):
    found = neighbours_side_by_side(projected, [UNANSWERABLE, " ", POOLED, GOOD], k=3)
    assert [f.word for f in found] == [UNANSWERABLE, POOLED, GOOD], "blank words are left out"
    for answer in found[0].answers:
        assert answer.neighbours == () and answer.note.startswith("not in its"), answer
    for answer in found[1].answers:
        assert answer.pieces == (GOOD, POSITIVE[1]) and len(answer.neighbours) == 3
        assert answer.note == ""


def test_a_run_without_a_matrix_gets_a_note_for_each_word(projected):
    (found,) = neighbours_side_by_side([projected[0], None], [GOOD], k=2)
    assert len(found.answers[0].neighbours) == 2
    assert found.answers[1].note == "no matrix"


def test_asking_for_no_neighbours_is_refused(projected):
    with pytest.raises(BadConfig, match="at least 1"):
        neighbours_side_by_side(projected, [GOOD], k=0)


# --------------------------------------------------------------------------------------------
# embedgen runs --compare
# --------------------------------------------------------------------------------------------


def test_compare_prints_the_settings_the_metrics_and_the_neighbours_side_by_side(
    capsys, home, names, monkeypatch
):
    monkeypatch.setenv("EMBEDGEN_HOME", str(home))
    result = cli(
        capsys, "runs", "--compare", "narrow", "wide", "--words", f"{GOOD}，{UNANSWERABLE}"
    )
    assert result.code == 0, succeeded(result)
    out = result.out
    assert "Settings that differ" in out and "other settings are the same." in out
    dim_line = next(line for line in out.splitlines() if "projection size d (dim)" in line)
    assert dim_line.split()[-2:] == ["8", "16"], dim_line
    assert "Metrics" in out and "macro-F1" in out
    assert f"narrow: {names[0]}" in out and f"wide: {names[0]}" in out
    good_block = out.split(f"Neighbours of {GOOD}\n")[1].split("\n\n")[0].splitlines()
    assert good_block[0].split() == ["narrow", "wide"], "one column a run, headed by its name"
    assert len(good_block) == 1 + 5, "the header and k = 5 neighbours"
    assert good_block[1].split()[0] == "1." and good_block[1].count("1.") == 2
    bad_block = out.split(f"Neighbours of {UNANSWERABLE}\n")[1]
    assert bad_block.count("(not in its") == 2


def test_compare_without_words_has_no_neighbours_section(capsys, home, monkeypatch):
    monkeypatch.setenv("EMBEDGEN_HOME", str(home))
    result = cli(capsys, "runs", "--compare", home / "runs" / "narrow", "wide")
    assert result.code == 0, succeeded(result)
    assert "Metrics" in result.out and "Neighbours" not in result.out


def test_compare_with_an_unknown_run_name_is_refused_naming_it(capsys, home, monkeypatch):
    monkeypatch.setenv("EMBEDGEN_HOME", str(home))
    line = refusal(cli(capsys, "runs", "--compare", "narrow", "nosuch"), "runs")
    assert "'nosuch'" in line and "embedgen runs" in line, line


def test_compare_with_a_name_two_workspaces_share_is_refused_naming_both(
    capsys, home, tmp_path, monkeypatch
):
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path))
    for user in ("ann", "bob"):
        shutil.copytree(home / "runs" / "narrow", tmp_path / "users" / user / "runs" / "narrow")
    shutil.copytree(home / "runs" / "wide", tmp_path / "runs" / "wide")
    line = refusal(cli(capsys, "runs", "--compare", "narrow", "wide"), "runs")
    assert "'narrow' names 2 runs" in line and "ann" in line and "bob" in line, line


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--compare", "narrow", "wide", "--active"], "leave out --active"),
        (["--compare", "narrow"], "at least two runs"),
        (["--words", GOOD], "--words go with --compare"),
        (["--compare", "narrow", "wide", "--words", GOOD, "--k", "0"], "--k 0"),
        (["--compare", "narrow", "wide", "--matrix", "projected"], "go with --words"),
        (["--compare", "narrow", "wide", "runs/narrow"], "'narrow' is given twice"),
    ],
    ids=["with-active", "one-run", "words-alone", "k-0", "matrix-without-words", "twice"],
)
def test_compare_refuses_what_does_not_go_together(capsys, home, monkeypatch, argv, said):
    monkeypatch.setenv("EMBEDGEN_HOME", str(home))
    monkeypatch.chdir(home)
    line = refusal(cli(capsys, "runs", *argv), "runs")
    assert said in line, line
