"""The ``embedgen`` command: what a user types, what lands on disk, and how bad input is refused.

Every test runs the real command in-process (``main(argv)``) on the tiny model from conftest, with
real training (``--epochs 2 --dim 8``); one runs the installed entry point in a subprocess.
Bad input always ends the same way: exit code 2 and one line on stderr,
``embedgen <command>: error: <what, where, what to do>``, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE, synthetic_rows, workbook_bytes, write_csv

from embedgen.atomic import TEMP_PREFIX
from embedgen.cli import _stop_on_signals, main
from embedgen.runs import load_run

DIM = 8
SUBCOMMANDS = ("train", "matrix", "neighbors", "evaluate", "export", "models")
LABELS = {"正面", "负面"}
GOOD, BAD, BEAUTIFUL = POSITIVE[0], NEGATIVE[0], POSITIVE[1]  # 好, 坏, 美


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> Result:
    """Run ``embedgen argv`` in-process; return its exit code and what it printed.

    argparse ends bad usage with SystemExit; its code is the exit code a user sees.
    """
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return Result(code, out, err)


def cli_for_fixture(*argv: object) -> Result:
    """Like :func:`cli`, for module fixtures (which cannot use capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return Result(code, out.getvalue(), err.getvalue())


def train_args(model: object, data: object, out: object, *extra: object) -> list[object]:
    """``embedgen train`` as a user scripts it, with settings small enough for a test."""
    return [
        "train",
        "--model",
        model,
        "--data",
        data,
        "--text-col",
        "text",
        "--label-col",
        "label",
        "--out",
        out,
        "--epochs",
        2,
        "--dim",
        DIM,
        *extra,
    ]


def refusal(result: Result, command: str) -> str:
    """Check the bad-input contract (exit 2, one stderr line, no traceback); return that line."""
    assert result.code == 2, f"bad input should exit 2, got {result.code}; stderr:\n{result.err}"
    assert "Traceback" not in result.err, f"a traceback reached the user:\n{result.err}"
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.err}"
    prefix = f"embedgen {command}: error: "
    assert lines[0].startswith(prefix), f"stderr should start with {prefix!r}: {lines[0]!r}"
    return lines[0]


def succeeded(result: Result) -> str:
    return f"exit code {result.code}; stderr:\n{result.err}"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text("utf-8"))


def ranked_lines(out: str) -> list[tuple[int, str, float]]:
    """The "  1  token\\t0.1234" lines of ``neighbors`` output as (rank, token, score)."""
    rows = []
    for line in out.splitlines()[1:]:
        rank, token, score = line.split()
        rows.append((int(rank), token, float(score)))
    return rows


# --------------------------------------------------------------------------------------------
# Shared work: one head run and the matrices built from it, trained once for this file
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", synthetic_rows())


@pytest.fixture(scope="module")
def head_train(tiny_model_dir, reviews_csv, tmp_path_factory) -> tuple[Path, Result]:
    """``embedgen train`` with the default strategy (head): the run folder and the result."""
    run = tmp_path_factory.mktemp("head") / "RUN"
    return run, cli_for_fixture(*train_args(tiny_model_dir, reviews_csv, run))


@pytest.fixture(scope="module")
def head_run(head_train) -> Path:
    run, result = head_train
    assert result.code == 0, f"training the shared head run failed: {succeeded(result)}"
    return run


@pytest.fixture(scope="module")
def projected(head_run, tmp_path_factory) -> Path:
    """``embedgen matrix RUN --method projected --out M``: the matrix folder."""
    out = tmp_path_factory.mktemp("projected") / "M"
    result = cli_for_fixture("matrix", head_run, "--method", "projected", "--out", out)
    assert result.code == 0, f"building the projected matrix failed: {succeeded(result)}"
    return out


@pytest.fixture(scope="module")
def contextual_layer_1(head_run, tmp_path_factory) -> Path:
    """``embedgen matrix RUN --method contextual --layer 1 --out M2``: the matrix folder."""
    out = tmp_path_factory.mktemp("contextual") / "M2"
    result = cli_for_fixture(
        "matrix", head_run, "--method", "contextual", "--layer", 1, "--out", out
    )
    assert result.code == 0, f"building the contextual matrix failed: {succeeded(result)}"
    return out


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------


def test_console_entry_point_help_lists_every_subcommand():
    done = subprocess.run(
        [sys.executable, "-m", "embedgen", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"`python -m embedgen --help` failed:\n{done.stderr}"
    missing = [c for c in SUBCOMMANDS if c not in done.stdout]
    assert not missing, f"--help does not list {missing}:\n{done.stdout}"


def test_the_command_removes_what_killed_writes_left_in_embedgen_home(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path))
    stale = tmp_path / "tmp" / f"{TEMP_PREFIX}download"
    stale.mkdir(parents=True)
    then = time.time() - 2 * 3600
    os.utime(stale, (then, then))
    assert cli(capsys, "models").code == 0
    assert not stale.exists()


# --------------------------------------------------------------------------------------------
# Stopped by the system: SIGTERM, SIGHUP
# --------------------------------------------------------------------------------------------


def _finished_epochs(run: Path) -> int:
    try:
        return len(read_json(run / "run.json").get("history") or [])
    except (OSError, ValueError):
        return 0


@contextlib.contextmanager
def long_training(model, data, run: Path, stderr: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`embedgen train` of 10,000 epochs in a process of its own, once an epoch has finished;
    killed at the end if it is still there."""
    argv = train_args(model, data, run, "--epochs", 10_000, "--patience", 0)
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedgen", *map(str, argv)], stdout=subprocess.PIPE, stderr=err
        )
        try:
            deadline = time.monotonic() + 25
            while _finished_epochs(run) < 1 and proc.poll() is None:
                assert time.monotonic() < deadline, "no epoch finished within 25 s"
                time.sleep(0.1)
            yield proc
        finally:
            proc.kill()


def test_sigterm_during_training_keeps_the_finished_epochs(tiny_model_dir, reviews_csv, tmp_path):
    """A scheduler stopping a 10,000-epoch run keeps the epochs that finished, like Ctrl-C."""
    run = tmp_path / "RUN"
    with long_training(tiny_model_dir, reviews_csv, run, tmp_path / "stderr.txt") as proc:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    stderr = (tmp_path / "stderr.txt").read_text("utf-8")
    assert code == 128 + signal.SIGTERM, f"exit code {code}; stderr:\n{stderr[-2000:]}"
    record = read_json(run / "run.json")
    assert record["status"] == "cancelled"
    epochs = len(record["history"])
    assert 1 <= epochs < 10_000
    last = stderr.strip().splitlines()[-1]
    assert last == (
        f"Stopped by SIGTERM after epoch {epochs} of 10000; the best epoch "
        f"({record['best_epoch']}) is saved in {run}."
    ), last
    assert load_run(run).best_epoch == record["best_epoch"]


def test_embedgen_runs_lists_a_training_command_and_embedgen_cancel_stops_it(
    tiny_model_dir, reviews_csv, tmp_path, monkeypatch, capsys
):
    """What an operator has for a run nobody's tab follows: list it, stop it."""
    home = tmp_path / "home"
    monkeypatch.setenv("EMBEDGEN_HOME", str(home))
    run = home / "runs" / "long"
    with long_training(tiny_model_dir, reviews_csv, run, tmp_path / "stderr.txt") as proc:
        assert main(["runs", "--active"]) == 0
        listed = capsys.readouterr().out.strip().splitlines()
        assert len(listed) == 1 and listed[0].startswith("running\t")
        assert listed[0].endswith(f"\t{run}")
        assert main(["cancel", str(run)]) == 0
        assert f"Sent SIGTERM to `embedgen train` (pid {proc.pid})" in capsys.readouterr().out
        code = proc.wait(timeout=20)
    assert code == 128 + signal.SIGTERM
    assert read_json(run / "run.json")["status"] == "cancelled"
    assert main(["runs", "--active"]) == 0
    assert capsys.readouterr().out.strip() == "No runs or jobs are queued or running."
    assert main(["runs"]) == 0
    assert capsys.readouterr().out.startswith("cancelled\t")
    assert main(["cancel", str(run)]) == 2
    assert "Run 'long' is cancelled, not queued or training: nothing to stop." in (
        capsys.readouterr().err
    )


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this system")
def test_sighup_asks_the_work_to_stop_and_names_the_signal():
    cancel = threading.Event()
    before = signal.getsignal(signal.SIGHUP)  # SIG_IGN under nohup, SIG_DFL elsewhere
    with _stop_on_signals(cancel) as stopped:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert cancel.is_set()
    assert stopped.name == "SIGHUP" and stopped.exit_code == 129
    assert signal.getsignal(signal.SIGHUP) == before, "the old handler is back"


# --------------------------------------------------------------------------------------------
# train (strategy head)
# --------------------------------------------------------------------------------------------


def test_train_exits_0_and_says_where_the_run_was_saved(head_train):
    run, result = head_train
    assert result.code == 0, succeeded(result)
    assert str(run) in result.out, f"stdout does not name the run folder:\n{result.out}"


def test_train_marks_the_run_finished_in_run_json(head_run):
    assert read_json(head_run / "run.json")["status"] == "finished"


def test_train_label_map_holds_both_classes(head_run):
    label_map = read_json(head_run / "run.json")["label_map"]
    assert set(label_map.values()) == LABELS, f"label_map is {label_map}"


def test_train_history_has_one_entry_per_epoch(head_run):
    # --epochs 2 with the default patience of 3 cannot stop early: both epochs run.
    history = read_json(head_run / "run.json")["history"]
    assert [m["epoch"] for m in history] == [1, 2], f"history is {history}"


def test_head_strategy_saves_the_head_and_no_encoder_folder(head_run):
    assert (head_run / "head.safetensors").is_file(), "head.safetensors is missing"
    assert not (head_run / "encoder").exists(), "strategy head must not save an encoder/ folder"


# --------------------------------------------------------------------------------------------
# matrix
# --------------------------------------------------------------------------------------------


def test_projected_matrix_has_dim_columns(projected):
    assert np.load(projected / "matrix.npy").shape[1] == DIM


def test_projected_vocab_has_one_line_per_matrix_row(projected):
    rows = np.load(projected / "matrix.npy").shape[0]
    lines = (projected / "vocab.txt").read_text("utf-8").splitlines()
    assert len(lines) == rows, f"{len(lines)} vocab lines for {rows} matrix rows"


def test_projected_manifest_records_the_method(projected):
    assert read_json(projected / "manifest.json")["method"] == "projected"


def test_contextual_matrix_from_a_run_keeps_the_hidden_columns_and_adds_the_labels(
    contextual_layer_1, projected, tiny_model_dir
):
    """By default from a run: the untuned rows beside the run's label signal."""
    rows = np.load(projected / "matrix.npy").shape[0]
    hidden = read_json(tiny_model_dir / "config.json")["hidden_size"]
    manifest = read_json(contextual_layer_1 / "manifest.json")
    classes = manifest["label_signal"]["classes"]
    assert np.load(contextual_layer_1 / "matrix.npy").shape == (rows, hidden + classes)


def test_label_weight_0_gives_the_tuned_projection_with_dim_columns(
    capsys, head_run, projected, tmp_path
):
    out = tmp_path / "projection"
    result = cli(
        capsys, "matrix", head_run, "--method", "contextual", "--label-weight", 0, "--out", out
    )
    assert result.code == 0, succeeded(result)
    rows = np.load(projected / "matrix.npy").shape[0]
    assert np.load(out / "matrix.npy").shape == (rows, DIM)
    assert read_json(out / "manifest.json")["through_projection"] is True


def test_contextual_manifest_records_the_layer(contextual_layer_1):
    manifest = read_json(contextual_layer_1 / "manifest.json")
    assert (manifest["method"], manifest["layer"]) == ("contextual", 1)


def test_input_matrix_from_a_model_folder_has_hidden_size_columns(capsys, tiny_model_dir, tmp_path):
    hidden = read_json(tiny_model_dir / "config.json")["hidden_size"]
    result = cli(capsys, "matrix", tiny_model_dir, "--method", "input", "--out", tmp_path / "M3")
    assert result.code == 0, succeeded(result)
    assert np.load(tmp_path / "M3" / "matrix.npy").shape[1] == hidden


# --------------------------------------------------------------------------------------------
# neighbors
# --------------------------------------------------------------------------------------------


def test_neighbors_word_prints_k_ranked_lines(capsys, projected):
    result = cli(capsys, "neighbors", projected, "--word", GOOD, "--k", 5)
    assert result.code == 0, succeeded(result)
    assert [rank for rank, _, _ in ranked_lines(result.out)] == [1, 2, 3, 4, 5], result.out


def test_neighbors_word_leaves_out_the_word_itself(capsys, projected):
    result = cli(capsys, "neighbors", projected, "--word", GOOD, "--k", 5)
    tokens = [token for _, token, _ in ranked_lines(result.out)]
    assert GOOD not in tokens, f"{GOOD} is listed as its own neighbour: {tokens}"


def test_neighbors_pair_prints_the_cosine_of_the_two_rows(capsys, projected):
    vocab = (projected / "vocab.txt").read_text("utf-8").splitlines()
    vectors = np.load(projected / "matrix.npy")
    a, b = vectors[vocab.index(GOOD)], vectors[vocab.index(BAD)]
    expected = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    result = cli(capsys, "neighbors", projected, "--pair", GOOD, BAD)
    assert result.code == 0, succeeded(result)
    printed = float(result.out.strip().rsplit("=", 1)[1])
    assert printed == pytest.approx(expected, abs=1e-4), result.out


def test_neighbors_analogy_lists_k_answers_without_its_three_words(capsys, projected):
    result = cli(capsys, "neighbors", projected, "--analogy", GOOD, BAD, BEAUTIFUL, "--k", 5)
    assert result.code == 0, succeeded(result)
    tokens = [token for _, token, _ in ranked_lines(result.out)]
    assert len(tokens) == 5 and not {GOOD, BAD, BEAUTIFUL} & set(tokens), result.out


def test_neighbors_json_is_k_tokens_with_descending_scores(capsys, projected):
    result = cli(capsys, "neighbors", projected, "--word", GOOD, "--k", 5, "--json")
    answers = json.loads(result.out)
    scores = [a["score"] for a in answers]
    assert len(answers) == 5 and scores == sorted(scores, reverse=True), answers


def test_neighbors_chinese_only_answers_among_chinese_rows(capsys, tmp_path):
    from embedgen.matrix import EmbeddingMatrix, save_matrix

    vocab = ("好", "good", "##好", "乗", "棒", "妙", "车", "船")  # the first four lie together
    vectors = np.array([[1, 0.1 * i, 0] if i < 4 else [0, 1, 0.1 * i] for i in range(8)])
    folder = save_matrix(
        EmbeddingMatrix(vectors.astype(np.float32), vocab, {"method": "input"}), tmp_path / "m"
    )
    plain = cli(capsys, "neighbors", folder, "--word", "好", "--k", 3)
    assert [t for _, t, _ in ranked_lines(plain.out)] == ["good", "##好", "乗"], plain.out
    chinese = cli(capsys, "neighbors", folder, "--word", "好", "--k", 3, "--chinese-only")
    assert chinese.code == 0, succeeded(chinese)
    assert {t for _, t, _ in ranked_lines(chinese.out)} <= {"棒", "妙", "车", "船"}, chinese.out
    analogy = cli(capsys, "neighbors", folder, "--analogy", "车", "船", "好", "--chinese-only")
    assert {t for _, t, _ in ranked_lines(analogy.out)} <= {"棒", "妙"}, analogy.out


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def test_export_word2vec_loads_in_gensim_with_the_matrix_shape(capsys, projected, tmp_path):
    keyed_vectors = pytest.importorskip("gensim.models").KeyedVectors
    result = cli(capsys, "export", projected, "--format", "word2vec", "--out", tmp_path / "f.txt")
    assert result.code == 0, succeeded(result)
    loaded = keyed_vectors.load_word2vec_format(str(tmp_path / "f.txt"), binary=False)
    assert loaded.vectors.shape == np.load(projected / "matrix.npy").shape


def test_export_projector_writes_one_line_per_row_in_both_tsvs(capsys, projected, tmp_path):
    rows = np.load(projected / "matrix.npy").shape[0]
    result = cli(capsys, "export", projected, "--format", "projector", "--out", tmp_path / "p")
    assert result.code == 0, succeeded(result)
    counts = {
        name: len((tmp_path / "p" / name).read_text("utf-8").splitlines())
        for name in ("vectors.tsv", "metadata.tsv")
    }
    assert counts == {"vectors.tsv": rows, "metadata.tsv": rows}


def test_export_zip_bundles_the_matrix_word2vec_and_projector_files(capsys, projected, tmp_path):
    result = cli(capsys, "export", projected, "--format", "zip", "--out", tmp_path / "m.zip")
    assert result.code == 0, succeeded(result)
    names = set(zipfile.ZipFile(tmp_path / "m.zip").namelist())
    expected = {"matrix.npy", "vocab.txt", "manifest.json", "vectors.word2vec.txt"}
    assert expected | {"vectors.tsv", "metadata.tsv"} <= names, sorted(names)


# --------------------------------------------------------------------------------------------
# Strategies that tune the encoder
# --------------------------------------------------------------------------------------------

TUNING = [("top-k", "--top-k", "1"), ("full",)]


@pytest.fixture(scope="module", params=TUNING, ids=[t[0] for t in TUNING])
def tuned_run(request, tiny_model_dir, reviews_csv, tmp_path_factory) -> Path:
    strategy, *extra = request.param
    run = tmp_path_factory.mktemp(strategy) / "RUN"
    result = cli_for_fixture(
        *train_args(tiny_model_dir, reviews_csv, run, "--strategy", strategy, *extra)
    )
    assert result.code == 0, f"training with strategy {strategy} failed: {succeeded(result)}"
    return run


def test_tuning_strategy_saves_the_tuned_encoder(tuned_run):
    assert (tuned_run / "encoder" / "config.json").is_file(), "no encoder/ saved in the run"


def test_contextual_matrix_of_a_tuned_run_differs_from_the_untuned_model(
    capsys, tuned_run, tiny_model_dir, tmp_path
):
    # top-k 1 tunes only the last layer, so read the last layer (2 of the tiny model).
    same = (
        "--method",
        "contextual",
        "--layer",
        2,
        "--no-projection",
        "--label-weight",
        0,
        "--cjk-only",
    )
    tuned = cli(capsys, "matrix", tuned_run, *same, "--out", tmp_path / "tuned")
    untuned = cli(capsys, "matrix", tiny_model_dir, *same, "--out", tmp_path / "untuned")
    assert (tuned.code, untuned.code) == (0, 0), f"{succeeded(tuned)}\n{succeeded(untuned)}"
    a, b = np.load(tmp_path / "tuned" / "matrix.npy"), np.load(tmp_path / "untuned" / "matrix.npy")
    assert a.shape == b.shape, f"tuned {a.shape} vs untuned {b.shape}"
    gap = float(np.abs(a - b).max())
    assert gap > 1e-4, f"the tuned encoder did not reach the matrix (max difference {gap:.2e})"


# --------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the problem
# --------------------------------------------------------------------------------------------


def test_missing_data_file_is_refused_naming_the_file(capsys, tiny_model_dir, tmp_path):
    result = cli(capsys, *train_args(tiny_model_dir, tmp_path / "nowhere.csv", tmp_path / "RUN"))
    assert "nowhere.csv" in refusal(result, "train")


def test_unknown_label_column_is_refused_listing_the_columns(
    capsys, tiny_model_dir, synthetic_csv, tmp_path
):
    args = train_args(tiny_model_dir, synthetic_csv, tmp_path / "RUN")
    args[args.index("--label-col") + 1] = "sentiment"
    line = refusal(cli(capsys, *args), "train")
    assert "'sentiment'" in line and "Columns: text, label" in line, line


def test_single_class_csv_is_refused_naming_the_class(capsys, tiny_model_dir, tmp_path):
    one_class = [(text, "正面") for text, _ in synthetic_rows(40)]
    data = write_csv(tmp_path / "one.csv", one_class)
    line = refusal(cli(capsys, *train_args(tiny_model_dir, data, tmp_path / "RUN")), "train")
    assert "only one class" in line and "正面" in line, line


def test_uncached_model_id_is_refused_saying_how_to_get_it(capsys, synthetic_csv, tmp_path):
    model = "no-such-org/no-such-model"
    result = cli(capsys, *train_args(model, synthetic_csv, tmp_path / "RUN"))
    line = refusal(result, "train")
    assert f"hf download {model}" in line, line


def test_uncached_model_id_fails_within_seconds(capsys, synthetic_csv, tmp_path):
    started = time.monotonic()
    result = cli(capsys, *train_args("no-such-org/no-such-model", synthetic_csv, tmp_path / "RUN"))
    seconds = time.monotonic() - started
    assert result.code == 2, succeeded(result)
    assert seconds < 10, f"an uncached model took {seconds:.1f} s to be refused"


def test_model_folder_without_config_json_is_refused(capsys, synthetic_csv, tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "vocab.txt").write_text("[PAD]\n", "utf-8")
    line = refusal(cli(capsys, *train_args(folder, synthetic_csv, tmp_path / "RUN")), "train")
    assert "config.json" in line and "not-a-model" in line, line


def test_projected_matrix_of_a_plain_model_is_refused(capsys, tiny_model_dir, tmp_path):
    result = cli(capsys, "matrix", tiny_model_dir, "--method", "projected", "--out", tmp_path / "M")
    line = refusal(result, "matrix")
    assert "'projected'" in line and "run" in line, line


def test_contextual_layer_out_of_range_is_refused_naming_the_layer(capsys, head_run, tmp_path):
    result = cli(
        capsys,
        "matrix",
        head_run,
        "--method",
        "contextual",
        "--layer",
        99,
        "--out",
        tmp_path / "M",
    )
    assert "Layer 99" in refusal(result, "matrix")


def test_neighbors_of_an_unknown_word_is_refused_naming_it(capsys, projected):
    line = refusal(cli(capsys, "neighbors", projected, "--word", "☃"), "neighbors")
    assert "☃" in line, line


def test_neighbors_on_a_folder_that_is_not_a_matrix_is_refused(capsys, tmp_path):
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"\xff\xd8")
    line = refusal(cli(capsys, "neighbors", folder, "--word", GOOD), "neighbors")
    assert "holiday-photos" in line and "matrix.npy" in line, line


def test_matrix_of_a_run_whose_process_died_says_it_was_interrupted(capsys, tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    run = tmp_path / "RUN"
    run.mkdir()
    record = {
        "format": 1,
        "status": "running",
        "pid": finished.pid,
        "host": socket.gethostname(),
        "started": "2025-01-01T00:00:00+00:00",
    }
    (run / "run.json").write_text(json.dumps(record), "utf-8")
    result = cli(capsys, "matrix", run, "--method", "projected", "--out", tmp_path / "M")
    assert "interrupted" in refusal(result, "matrix")


def test_train_into_a_folder_holding_a_run_is_refused(
    capsys, head_run, tiny_model_dir, synthetic_csv, tmp_path
):
    run = shutil.copytree(head_run, tmp_path / "RUN")
    line = refusal(cli(capsys, *train_args(tiny_model_dir, synthetic_csv, run)), "train")
    assert "already holds a run" in line, line


def test_train_queue_queues_the_run_and_prints_its_folder(
    capsys, tiny_model_dir, synthetic_csv, tmp_path, monkeypatch
):
    """embedgen train --queue returns at once: the run waits for a worker, its folder on stdout."""
    from embedgen import jobs
    from embedgen.runs import read_run_record

    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(jobs.QUEUE_URL_ENV, raising=False)
    result = cli(capsys, *train_args(tiny_model_dir, synthetic_csv, tmp_path / "RUN"), "--queue")
    assert result.code == 0, succeeded(result)
    assert result.out.strip() == str((tmp_path / "RUN").resolve())
    assert "No worker is running" in result.err
    assert read_run_record(tmp_path / "RUN").status == "queued"
    queued = json.loads((tmp_path / "RUN" / jobs.REQUEST_FILE).read_text("utf-8"))
    assert queued["model"] == str(tiny_model_dir.resolve()) and queued["config"]["epochs"] == 2


def test_train_out_on_an_existing_file_is_refused(capsys, tiny_model_dir, synthetic_csv, tmp_path):
    taken = tmp_path / "RUN"
    taken.write_text("mine", "utf-8")
    line = refusal(cli(capsys, *train_args(tiny_model_dir, synthetic_csv, taken)), "train")
    assert str(taken) in line and "is a file, not a folder" in line, line
    assert taken.read_text("utf-8") == "mine"


def test_export_where_nothing_can_be_written_is_refused(capsys, projected, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("x", "utf-8")
    result = cli(capsys, "export", projected, "--format", "projector", "--out", blocked / "x")
    line = refusal(result, "export")
    assert "a-file" in line, line


@pytest.mark.parametrize("source", ["/dev/zero", "fifo", "big"])
def test_data_that_is_no_file_or_too_big_is_refused_before_it_is_read(
    capsys, source, tiny_model_dir, tmp_path
):
    from embedgen.table import MAX_FILE_MB

    if source == "fifo":
        path = tmp_path / "pipe.csv"
        os.mkfifo(path)  # reading it would wait for a writer for ever
    elif source == "big":
        path = tmp_path / "big.csv"
        with path.open("wb") as f:  # sparse: no disk used
            f.truncate(MAX_FILE_MB * 1_000_000 + 1)
    else:
        path = Path(source)
    line = refusal(cli(capsys, *train_args(tiny_model_dir, path, tmp_path / "RUN")), "train")
    assert path.name in line
    assert ("regular file" in line) if source != "big" else (f"{MAX_FILE_MB} MB" in line), line


def test_pickled_only_weights_are_refused_then_loaded_when_allowed(
    capsys, tiny_model_dir, tmp_path
):
    import torch
    from safetensors.torch import load_file

    model = shutil.copytree(tiny_model_dir, tmp_path / "pickled")
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    result = cli(capsys, "matrix", model, "--out", tmp_path / "M")
    line = refusal(result, "matrix")
    assert "pytorch_model.bin" in line and "--allow-pickled-weights" in line, line
    result = cli(capsys, "matrix", model, "--out", tmp_path / "M", "--allow-pickled-weights")
    assert result.code == 0, succeeded(result)


def test_a_full_disk_is_said_in_words(capsys, tiny_model_dir, projected, tmp_path, monkeypatch):
    """Every file embedgen writes starts as a new file beside its final name: on a full disk
    that is where it fails ("internal error: OSError" before)."""
    from embedgen import atomic

    def full(parent, name, *args, **kwargs):
        raise OSError(28, "No space left on device", str(parent / name))

    monkeypatch.setattr(atomic, "_new_temp", full)
    for command, args in (
        ("matrix", [tiny_model_dir, "--out", tmp_path / "M"]),
        ("export", [projected, "--format", "projector", "--out", tmp_path / "P"]),
    ):
        line = refusal(cli(capsys, command, *args), command)
        assert "no space left on the disk holding" in line and "MB free" in line, line


@pytest.mark.parametrize("setting", ["epochs", "dim"])
def test_zero_setting_is_refused_naming_it(
    capsys, setting, tiny_model_dir, synthetic_csv, tmp_path
):
    args = train_args(tiny_model_dir, synthetic_csv, tmp_path / "RUN")
    args[args.index(f"--{setting}") + 1] = 0
    line = refusal(cli(capsys, *args), "train")
    assert setting in line, line


# --------------------------------------------------------------------------------------------
# Data files as users have them
# --------------------------------------------------------------------------------------------


def test_gbk_csv_trains_with_its_labels_intact(capsys, tiny_model_dir, tmp_path):
    data = write_csv(tmp_path / "gbk.csv", synthetic_rows(), encoding="gbk")
    result = cli(capsys, *train_args(tiny_model_dir, data, tmp_path / "RUN"))
    assert result.code == 0, succeeded(result)
    assert set(read_json(tmp_path / "RUN" / "run.json")["label_map"].values()) == LABELS


def with_empty_texts(tmp_path: Path) -> Path:
    """reviews.csv whose data rows 4 and 11 (spreadsheet rows 5 and 12) have no text."""
    rows = synthetic_rows()
    for i in (3, 10):
        rows[i] = ("  ", rows[i][1])
    return write_csv(tmp_path / "gaps.csv", rows)


def _workbook(path: Path) -> Path:
    """A notes sheet first, then the labelled rows on a sheet called 数据."""
    path.write_bytes(workbook_bytes(synthetic_rows(60)))
    return path


@pytest.mark.parametrize("sheet", ["数据", "2"])
def test_train_reads_the_xlsx_sheet_named_or_numbered_from_1(
    capsys, tiny_model_dir, tmp_path, sheet
):
    book = _workbook(tmp_path / "book.xlsx")
    args = train_args(tiny_model_dir, book, tmp_path / "RUN", "--sheet", sheet)
    result = cli(capsys, *args)
    assert result.code == 0, succeeded(result)
    record = json.loads((tmp_path / "RUN" / "run.json").read_text(encoding="utf-8"))
    assert record["dataset"]["source"] == "book.xlsx [数据]"


def test_train_with_a_sheet_the_workbook_lacks_lists_its_sheets(capsys, tiny_model_dir, tmp_path):
    book = _workbook(tmp_path / "book.xlsx")
    args = train_args(tiny_model_dir, book, tmp_path / "RUN", "--sheet", "5")
    line = refusal(cli(capsys, *args), "train")
    assert "no sheet number 5" in line and "说明, 数据" in line, line


def test_train_skips_rows_with_empty_text_and_still_finishes(capsys, tiny_model_dir, tmp_path):
    result = cli(capsys, *train_args(tiny_model_dir, with_empty_texts(tmp_path), tmp_path / "RUN"))
    assert result.code == 0, succeeded(result)


def test_train_reports_dropped_rows_by_row_number(capsys, tiny_model_dir, tmp_path):
    result = cli(capsys, *train_args(tiny_model_dir, with_empty_texts(tmp_path), tmp_path / "RUN"))
    assert "2 rows dropped: empty text in rows 5, 12" in result.err, result.err


# --------------------------------------------------------------------------------------------
# Runs and matrices wherever the command is run from
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def run_from_relative_model_path(tiny_model_dir, reviews_csv, tmp_path, monkeypatch) -> Path:
    """A head run trained with ``--model tiny``, a folder relative to the working directory."""
    work = tmp_path / "work"
    shutil.copytree(tiny_model_dir, work / "tiny")
    monkeypatch.chdir(work)
    result = cli_for_fixture(*train_args("tiny", reviews_csv, tmp_path / "RUN"))
    assert result.code == 0, f"training from a relative model path failed: {succeeded(result)}"
    return tmp_path / "RUN"


def test_run_trained_from_a_relative_model_path_works_from_another_directory(
    capsys, run_from_relative_model_path, tmp_path, monkeypatch
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli(
        capsys, "matrix", run_from_relative_model_path, "--method", "projected", "--out", "M"
    )
    assert result.code == 0, succeeded(result)


def test_matrix_without_out_goes_where_the_naming_rule_puts_it(
    capsys, tiny_model_dir, head_run, tmp_path, monkeypatch
):
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    args = ["--method", "contextual", "--layer", "1", "--cjk-only", "--center"]
    result = cli(capsys, "matrix", tiny_model_dir, *args)
    assert result.code == 0, succeeded(result)
    base = tmp_path / "home" / "matrices" / tiny_model_dir.name / "contextual-L1-base-cjk-center"
    assert (base / "matrix.npy").is_file(), result.out
    result = cli(capsys, "matrix", head_run, *args, "--pca", 4)
    assert result.code == 0, succeeded(result)
    tuned = head_run / "matrices" / "contextual-L1-labels0.1-tuned-cjk-center-pca4"
    assert (tuned / "matrix.npy").is_file(), result.out


# --------------------------------------------------------------------------------------------
# One source for every default
# --------------------------------------------------------------------------------------------


# Settings whose default the command decides from what it is given, as the Matrix page does.
FOLLOW_THE_SOURCE = {("matrix", "method"), ("matrix", "cjk_only")}


def test_a_matrix_from_a_run_by_default_carries_the_tuning(capsys, head_run, tmp_path):
    # The Matrix page's default from a run: contextual through the tuned encoder and the
    # projection, CJK tokens only for Chinese data. The CLI once wrote the untouched embedding
    # table (input) here, the matrix the training never touched.
    result = cli(capsys, "matrix", head_run, "--out", tmp_path / "M")
    assert result.code == 0, succeeded(result)
    manifest = read_json(tmp_path / "M" / "manifest.json")
    assert manifest["method"] == "contextual", manifest["method"]
    assert manifest["reflects_tuning"] is True
    assert manifest["selection"]["cjk_only"] is True
    assert "Method: contextual (the default from a run" in result.err
    assert "CJK tokens only: the run's data is mostly Chinese" in result.err


def test_a_matrix_from_a_run_keeps_every_token_when_asked(capsys, head_run, tmp_path):
    result = cli(
        capsys, "matrix", head_run, "--all-tokens", "--method", "projected", "--out", tmp_path / "M"
    )
    assert result.code == 0, succeeded(result)
    manifest = read_json(tmp_path / "M" / "manifest.json")
    assert (manifest["method"], manifest["selection"]["cjk_only"]) == ("projected", False)
    assert "Method:" not in result.err, "a method given is not announced as a default"


def test_a_matrix_from_a_model_is_its_table_and_word_rows_are_aggregated(
    capsys, tiny_model_dir, reviews_csv, tmp_path
):
    table = cli(capsys, "matrix", tiny_model_dir, "--out", tmp_path / "T")
    assert table.code == 0, succeeded(table)
    manifest = read_json(tmp_path / "T" / "manifest.json")
    assert (manifest["method"], manifest["selection"]["cjk_only"]) == ("input", False)
    words = cli(
        capsys,
        "matrix",
        tiny_model_dir,
        "--corpus",
        reviews_csv,
        "--text-col",
        "text",
        "--out",
        tmp_path / "W",
    )
    assert words.code == 0, succeeded(words)
    assert read_json(tmp_path / "W" / "manifest.json")["method"] == "aggregated"
    assert "Method: aggregated (the default for word rows" in words.err


@pytest.mark.parametrize(
    ("argv", "config_classes"),
    [
        (["train", "--data", "d.csv", "--text-col", "t", "--label-col", "l"], ["FinetuneConfig"]),
        (["matrix", "RUN"], ["MatrixOptions", "PostProcess", "WordOptions"]),
    ],
    ids=["train", "matrix"],
)
def test_every_flag_default_is_the_config_fields_default(argv, config_classes):
    import dataclasses

    import embedgen as eg
    from embedgen import words as words_module
    from embedgen.cli import build_parser
    from embedgen.fields import specs

    parsed = vars(build_parser().parse_args(argv))
    for name in config_classes:
        cls = getattr(eg, name) if hasattr(eg, name) else getattr(words_module, name)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name in specs(cls)}
        assert fields, f"{name} declares no settings"
        for field_name, field in fields.items():
            assert field_name in parsed, f"{name}.{field_name} has no flag"
            value = parsed[field_name]
            if (argv[0], field_name) in FOLLOW_THE_SOURCE:
                assert value is None, f"--{field_name} should wait for the source, not {value!r}"
                continue
            assert value == field.default and cls(**{field_name: value}) == cls(), (
                f"--{field_name}: the flag's default {value!r} is not {name}'s {field.default!r}"
            )


# --------------------------------------------------------------------------------------------
# matrix with word rows
# --------------------------------------------------------------------------------------------


def test_matrix_rows_can_be_a_word_list(capsys, tiny_model_dir, tmp_path):
    (tmp_path / "words.txt").write_text("好美\n坏\n", encoding="utf-8")
    out = tmp_path / "W"
    result = cli(
        capsys, "matrix", tiny_model_dir, "--method", "contextual", "--words",
        tmp_path / "words.txt", "--out", out,
    )  # fmt: skip
    assert result.code == 0, succeeded(result)
    assert "2 words × 32" in result.out
    assert (out / "vocab.txt").read_text("utf-8") == "好美\n坏\n"
    assert read_json(out / "manifest.json")["vocabulary"]["list"] == "words.txt"


def test_aggregated_reads_the_words_of_a_corpus_in_it(
    capsys, tiny_model_dir, reviews_csv, tmp_path
):
    result = cli(
        capsys, "matrix", tiny_model_dir, "--method", "aggregated", "--corpus", reviews_csv,
        "--text-col", "text", "--min-count", 5, "--layers", "1-2", "--out", tmp_path / "A",
    )  # fmt: skip
    assert result.code == 0, succeeded(result)
    manifest = read_json(tmp_path / "A" / "manifest.json")
    assert manifest["rows_are"] == "words" and manifest["layers"] == [1, 2]
    assert manifest["vocabulary"]["min_count"] == 5
    assert manifest["contexts"]["words_read_in_corpus"] == manifest["rows"]
    header = (tmp_path / "A" / "rows.tsv").read_text("utf-8").splitlines()[0]
    assert header == "token\tcorpus_count\tcorpus_contexts\tvector"


def test_aggregated_from_a_head_run_over_its_data_takes_the_runs_word_states(
    capsys, tiny_model_dir, reviews_csv, tmp_path, monkeypatch
):
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))  # an empty feature cache
    run = tmp_path / "RUN"
    trained = cli(capsys, *train_args(tiny_model_dir, reviews_csv, run))
    assert trained.code == 0, succeeded(trained)
    result = cli(
        capsys, "matrix", run, "--method", "aggregated", "--corpus", reviews_csv,
        "--text-col", "text", "--corpus-contexts", "8", "--context-chars", "0",
        "--out", tmp_path / "A",
    )  # fmt: skip
    assert result.code == 0, succeeded(result)
    assert "corpus contexts taken from the run's encoding pass" in result.out, result.out
    shared = read_json(tmp_path / "A" / "manifest.json")["contexts"]["from_run"]
    assert shared["contexts"] > 0


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--corpus", "CSV"], "--corpus needs --text-col"),
        (["--method", "aggregated"], "reads words in context"),
        (["--layers", "top"], "layer range 'top' is not A-B"),
        (["--text-col", "text"], "--text-col and --user-dict go with --corpus"),
    ],
    ids=["corpus without column", "aggregated without words", "bad layers", "column alone"],
)
def test_bad_word_options_are_refused_in_one_line(
    capsys, tiny_model_dir, reviews_csv, extra, expected
):
    argv = [reviews_csv if a == "CSV" else a for a in extra]
    line = refusal(cli(capsys, "matrix", tiny_model_dir, *argv), "matrix")
    assert expected in line, line


def test_a_missing_user_dictionary_is_refused_in_one_line(capsys, tiny_model_dir, reviews_csv):
    line = refusal(
        cli(capsys, "matrix", tiny_model_dir, "--corpus", reviews_csv, "--text-col", "text",
            "--user-dict", "nope.txt"),
        "matrix",
    )  # fmt: skip
    assert "nope.txt: no such user dictionary" in line, line


def test_evaluate_refuses_a_corpus_without_all(capsys, tmp_path, reviews_csv):
    from conftest import make_matrix

    from embedgen.matrix import save_matrix

    save_matrix(make_matrix(), tmp_path / "M")
    (tmp_path / "sim.txt").write_text("好\t坏\t1\n", encoding="utf-8")
    line = refusal(
        cli(capsys, "evaluate", tmp_path / "M", "--similarity", tmp_path / "sim.txt",
            "--corpus", reviews_csv),
        "evaluate",
    )  # fmt: skip
    assert "--corpus goes with --all" in line, line


def test_matrix_does_not_replace_a_saved_matrix_unless_told(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "M"
    assert cli(capsys, "matrix", tiny_model_dir, "--out", out).code == 0
    before = (out / "manifest.json").read_bytes()
    result = cli(capsys, "matrix", tiny_model_dir, "--method", "contextual", "--out", out)
    message = refusal(result, "matrix")
    assert "already holds a matrix" in message and "--overwrite" in message
    assert (out / "manifest.json").read_bytes() == before
    result = cli(
        capsys, "matrix", tiny_model_dir, "--method", "contextual", "--out", out, "--overwrite"
    )
    assert result.code == 0, succeeded(result)
    assert json.loads((out / "manifest.json").read_text("utf-8"))["method"] == "contextual"
