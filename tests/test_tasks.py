"""Matrix builds and their estimates as queue tasks: job folders, real workers, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import test_jobs
from test_jobs import wait_for

from embedgen import jobs, tasks
from embedgen.errors import QueueUnreachable
from embedgen.jobrecord import end_job, jobs_dir, list_jobs, read_job
from embedgen.matrix import MatrixOptions, build_matrix, load_matrix
from embedgen.runs import HEARTBEAT_FILE, RunStatus
from embedgen.words import Corpus, WordOptions, words_from_list

home = test_jobs.home  # fixtures: a home of its own, real worker processes
start_worker = test_jobs.start_worker
TEXTS = ["中国的经济工作很好", "他说中国的天气不错", "好美的天气", "坏天气", "经济不错"] * 4


def _request(model_dir: Path, **fields: object) -> tasks.MatrixRequest:
    source = tasks.Source(model=str(model_dir), allow_download=False)
    options = fields.pop("options", MatrixOptions(method="aggregated", device="cpu"))
    return tasks.MatrixRequest(source, options, **fields)  # type: ignore[arg-type]


def test_a_matrix_job_builds_in_the_task_what_build_matrix_builds(
    home: Path, tiny_model_dir: Path, tiny_encoder
) -> None:
    words = words_from_list(["中国", "天气", "好美"])
    corpus = Corpus.of(TEXTS, "reviews.csv")
    record = tasks.submit("matrix", _request(tiny_model_dir), words=words, corpus=corpus)
    folder = Path(record.folder)
    assert folder.parent == jobs_dir() and record.status is RunStatus.QUEUED
    assert read_job(folder).status is RunStatus.QUEUED and record.task_id

    assert tasks.run_job({"folder": str(folder)}) is RunStatus.FINISHED
    done = read_job(folder)
    assert done.status is RunStatus.FINISHED and done.started and done.finished
    assert not (folder / HEARTBEAT_FILE).exists()
    assert jobs.read_progress(folder)["stage"] == "saving"
    matrix = load_matrix(tasks.take_result(done))
    direct = build_matrix(
        tiny_encoder, MatrixOptions(method="aggregated", device="cpu"), words=words, corpus=corpus
    )
    assert matrix.vocab == direct.vocab
    np.testing.assert_allclose(matrix.vectors, direct.vectors, atol=1e-5)
    assert done.result["kept"] and "3 words" in done.result["described"]
    assert tasks.run_job({"folder": str(folder)}) is RunStatus.CANCELLED, "taken once"


def test_an_estimate_job_finds_the_data_s_words_and_the_build_takes_them(
    home: Path, tiny_model_dir: Path
) -> None:
    corpus = Corpus.of(TEXTS, "reviews.csv")
    asked = _request(tiny_model_dir, word_options=WordOptions(min_count=2))
    estimate = tasks.submit("estimate", asked, corpus=corpus)
    assert tasks.run_job({"folder": estimate.folder}) is RunStatus.FINISHED
    result = read_job(estimate.folder).result
    words = tasks.words_of(estimate.folder)
    assert words is not None and result["words"] == len(words) and "中国" in words.words
    assert result["estimate"]["rows"] == len(words) and result["estimate"]["seconds"] >= 0
    assert Path(result["target"]).name.startswith("aggregated") and result["existing"] is None

    build = tasks.submit("matrix", _request(tiny_model_dir), words=words, corpus=corpus)
    tasks.run_job({"folder": build.folder})
    done = read_job(build.folder)
    assert done.result["folder"] == result["target"], "built where the estimate said"
    assert load_matrix(done.result["folder"]).vocab == words.words


def test_a_job_that_cannot_load_its_model_fails_with_the_reason(home: Path, tmp_path: Path) -> None:
    request = _request(tmp_path / "no-such-model")
    record = tasks.submit("matrix", request, words=words_from_list(["中国"]))
    assert tasks.run_job({"folder": record.folder}) is RunStatus.FAILED
    failed = read_job(record.folder)
    assert failed.status is RunStatus.FAILED
    assert "no-such-model" in failed.message and "Traceback" not in failed.message


def test_a_job_cancelled_while_queued_is_never_built(home: Path, tiny_model_dir: Path) -> None:
    record = tasks.submit("matrix", _request(tiny_model_dir), words=words_from_list(["中国"]))
    from embedgen.jobrecord import cancel_queued_job

    assert cancel_queued_job(record.folder)
    assert read_job(record.folder).status is RunStatus.CANCELLED
    assert tasks.run_job({"folder": record.folder}) is RunStatus.CANCELLED
    assert not cancel_queued_job(record.folder), "an ended job is not cancelled again"


def test_a_running_job_whose_worker_is_gone_reads_interrupted(
    home: Path, tiny_model_dir: Path
) -> None:
    from embedgen.jobrecord import claim_job

    record = tasks.submit("matrix", _request(tiny_model_dir), words=words_from_list(["中国"]))
    claim_job(record.folder)
    assert read_job(record.folder).status is RunStatus.RUNNING
    (Path(record.folder) / HEARTBEAT_FILE).unlink()  # as a worker killed with -9 leaves it
    gone = read_job(record.folder)
    assert gone.status is RunStatus.INTERRUPTED and "worker stopped" in gone.message
    end_job(record.folder, RunStatus.FAILED, "x")
    assert read_job(record.folder).status is RunStatus.FAILED


def test_a_submit_the_queue_cannot_take_leaves_no_job(
    home: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("redis")
    monkeypatch.setenv(jobs.QUEUE_URL_ENV, "redis://127.0.0.1:9/0")
    with pytest.raises(QueueUnreachable, match="nothing was started"):
        tasks.submit("matrix", _request(tiny_model_dir), words=words_from_list(["中国"]))
    assert not list(jobs_dir().iterdir())


def test_embedgen_matrix_queue_returns_at_once_and_a_worker_builds_it(
    home: Path, tiny_model_dir: Path, tmp_path: Path, start_worker: Callable[[str], Path]
) -> None:
    """The CLI queues (no model loaded, the job folder printed); a real worker process builds
    it; ``embedgen runs`` lists the job with its matrix; ``embedgen cancel`` refuses it then."""
    (tmp_path / "words.txt").write_text("中国\n天气\n", "utf-8")
    env = {**os.environ, "EMBEDGEN_HOME": str(home)}
    command = [sys.executable, "-m", "embedgen"]
    queued = subprocess.run(
        [
            *command,
            "matrix",
            str(tiny_model_dir),
            "--method",
            "contextual",
            "--words",
            str(tmp_path / "words.txt"),
            "--device",
            "cpu",
            "--queue",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert queued.returncode == 0, queued.stderr
    folder = Path(queued.stdout.strip())
    assert read_job(folder).status is RunStatus.QUEUED

    start_worker("one")
    wait_for("the job", lambda: read_job(folder).status is RunStatus.FINISHED)
    done = read_job(folder)
    assert load_matrix(done.result["folder"]).vocab == ("中国", "天气")
    listed = subprocess.run([*command, "runs"], env=env, capture_output=True, text=True, timeout=60)
    line = next(x for x in listed.stdout.splitlines() if str(folder) in x)
    assert line.startswith("finished\t") and "matrix contextual" in line
    assert done.result["folder"] in line
    again = subprocess.run(
        [*command, "cancel", str(folder)], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2 and "not queued or running" in again.stderr
    assert [j.folder for j in list_jobs()] == [str(folder)]
    assert json.loads((folder / "job.json").read_text("utf-8"))["kind"] == "matrix"


def test_a_map_job_gives_the_projection_project_gives(home: Path, tiny_encoder) -> None:
    """A saved matrix is read from its folder; a matrix kept in no folder goes into the job's."""
    from embedgen.matrix import save_matrix
    from embedgen.projection import ProjectionOptions, project

    matrix = build_matrix(tiny_encoder, MatrixOptions(method="input"))
    options = ProjectionOptions(reducer="pca", max_rows=50)
    save_matrix(matrix, home / "saved")
    for folder in (str(home / "saved"), None):
        record = tasks.submit_map(matrix, folder, options)
        assert tasks.run_job({"folder": record.folder}) is RunStatus.FINISHED
        mapped = tasks.projection_of(read_job(record.folder))
        direct = project(matrix, options)
        np.testing.assert_allclose(mapped.coords, direct.coords, atol=1e-5)
        assert mapped.rows.tolist() == direct.rows.tolist() and mapped.options == options
    assert (Path(record.folder) / tasks.KEPT_HERE / "matrix.npy").exists()


def test_a_tradeoff_job_gives_the_points_tradeoff_of_data_gives(
    home: Path, tiny_encoder, tmp_path: Path
) -> None:
    """The worker counts the data's words itself; the points (JSON in job.json) are the
    ones the pages drew when the trade-off ran in the server."""
    from conftest import NEGATIVE, POSITIVE

    from embedgen.data import prepare
    from embedgen.evaluate import read_similarity
    from embedgen.report import tradeoff_of_data
    from embedgen.runs import load_run, train_and_save
    from embedgen.table import read_table
    from embedgen.tokenstats import token_stats
    from embedgen.train import FinetuneConfig
    from embedgen.words import WordSplitter

    rows = [(f"{POSITIVE[i % 8]}{POSITIVE[(i + 3) % 8]}好", "pos") for i in range(120)]
    rows += [(f"{NEGATIVE[i % 8]}{NEGATIVE[(i + 5) % 8]}坏", "neg") for i in range(120)]
    csv = tmp_path / "cues.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), "utf-8")
    data = prepare(read_table(csv), "text", "label")
    run = train_and_save(
        tiny_encoder, data, FinetuneConfig(epochs=2, dim=8, device="cpu"), tmp_path / "run"
    )
    sim = tmp_path / "sim.txt"
    sim.write_text(
        f"{POSITIVE[0]}\t{POSITIVE[1]}\t9\n{POSITIVE[0]}\t{NEGATIVE[0]}\t1\n"
        f"{POSITIVE[2]}\t{NEGATIVE[2]}\t2\n",
        "utf-8",
    )
    sets = [read_similarity(sim)]
    record = tasks.submit_tradeoff(str(run.folder), data, sets)
    assert tasks.run_job({"folder": record.folder}) is RunStatus.FINISHED
    points = read_job(record.folder).result["points"]
    stats = token_stats(
        WordSplitter(Corpus.of(data.texts, data.source_name)),
        data.texts,
        data.labels,
        data.label_names,
    )
    direct = tradeoff_of_data(load_run(run.folder), stats, similarity=sets)
    assert [p["kind"] for p in points] == [p["kind"] for p in direct]
    np.testing.assert_allclose(
        [p["purity"] for p in points], [p["purity"] for p in direct], atol=1e-6
    )


def test_an_evaluate_job_scores_what_the_page_chose_in_the_worker(
    home: Path, tiny_model_dir: Path, tiny_encoder, tmp_path: Path
) -> None:
    """Evaluate's tables come from a worker: the matrices are read from their folders (one
    kept in no folder goes into the job's), the files from the job folder under fixed names
    (the name a visitor gave is only shown), and the data's tokens are counted with the
    loaded model, not with another model's tokenizer."""
    from conftest import NEGATIVE, POSITIVE

    from embedgen.data import prepare
    from embedgen.evaluate import read_similarity, similarity
    from embedgen.matrix import EmbeddingMatrix, save_matrix
    from embedgen.table import read_table

    rows = [(f"{POSITIVE[i % 8]}{POSITIVE[(i + 3) % 8]}好", "pos") for i in range(120)]
    rows += [(f"{NEGATIVE[i % 8]}{NEGATIVE[(i + 5) % 8]}坏", "neg") for i in range(120)]
    csv = tmp_path / "cues.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), "utf-8")
    data = prepare(read_table(csv), "text", "label")
    matrix = build_matrix(tiny_encoder, MatrixOptions(method="input", cjk_only=True))
    save_matrix(matrix, home / "saved")
    other = EmbeddingMatrix(
        vectors=matrix.vectors, vocab=matrix.vocab, manifest={"model": {"model_id": "m3e-small"}}
    )
    pairs = f"{POSITIVE[0]}\t{POSITIVE[1]}\t9\n{POSITIVE[0]}\t{NEGATIVE[0]}\t1\n"
    pairs += f"{POSITIVE[2]}\t{NEGATIVE[2]}\t2\n"
    name = "../../escape.txt"
    record = tasks.submit_evaluation(
        {"saved": (matrix, str(home / "saved")), "unsaved": (matrix, ""), "other": (other, "")},
        similarity=[tasks.Benchmark(name, pairs.encode())],
        purity={"per_label": 4, "k": 1},
        data=data,
        model=tasks.Source(model=str(tiny_model_dir), allow_download=False),
    )
    folder = Path(record.folder)
    assert not (folder.parent.parent / "escape.txt").exists()
    assert tasks.run_job({"folder": record.folder}) is RunStatus.FINISHED
    scores = tasks.scores_of(read_job(folder))

    direct = similarity(matrix, read_similarity(pairs.encode(), name=name))
    assert [r["matrix"] for r in scores["similarity"]] == ["saved", "unsaved", "other"]
    for row in scores["similarity"]:
        assert row["file"] == name and row["Spearman"] == pytest.approx(direct.spearman)
    assert (folder / "similarity-0.txt").read_bytes() == pairs.encode()
    assert (folder / f"{tasks.KEPT_HERE}-1" / "matrix.npy").exists(), "the unsaved one, here"

    purity = {r["matrix"]: r for r in scores["purity"]}
    assert set(purity) == {"saved", "unsaved"} and 0.0 <= purity["saved"]["purity"] <= 1.0
    assert purity["saved"]["qualified"] and purity["saved"] == {
        **purity["unsaved"],
        "matrix": "saved",
    }
    (note,) = scores["notes"]
    assert note["matrix"] == "other" and "load m3e-small on the Model page" in note["text"]


def test_a_quick_job_runs_beside_a_training_and_a_build_waits_for_it(
    home: Path, tiny_model_dir: Path, synthetic_data, start_worker: Callable[[str], Path]
) -> None:
    """One worker: an estimate asked while a training runs finishes before the training
    does (the quick lane); a matrix build waits for it (the main lane, one at a time)."""
    training = test_jobs.request(tiny_model_dir, epochs=10_000, patience=0)  # till cancelled
    jobs.submit(training, synthetic_data)
    log = start_worker("one")
    wait_for("the training", lambda: jobs.run_status(training.folder) is RunStatus.RUNNING)
    build = tasks.submit("matrix", _request(tiny_model_dir), words=words_from_list(["中国"]))
    estimate = tasks.submit("estimate", _request(tiny_model_dir), words=words_from_list(["中国"]))
    try:
        wait_for(
            "the estimate",
            lambda: read_job(estimate.folder).status is RunStatus.FINISHED,
        )
        assert jobs.run_status(training.folder) is RunStatus.RUNNING, log.read_text()
        assert read_job(build.folder).status is RunStatus.QUEUED, "a build waits its turn"
    finally:
        jobs.cancel(training.folder)
    wait_for("the build", lambda: read_job(build.folder).status is RunStatus.FINISHED)
    ended = jobs.run_status(training.folder)
    assert ended is None or not ended.active, "the build ran after the training ended"


def test_a_job_whose_queue_entry_was_lost_is_queued_again(home: Path, tiny_model_dir: Path) -> None:
    from huey import SqliteHuey

    from embedgen.paths import queue_dir

    record = tasks.submit("matrix", _request(tiny_model_dir), words=words_from_list(["中国"]))
    (queue_dir() / "huey.db").unlink()  # the entry is gone with the file
    fresh = SqliteHuey("embedgen", filename=str(queue_dir() / "huey.db"), results=False)
    fresh.task(name=tasks.MATRIX_TASK)(tasks.run_job)  # as a worker's queue knows it
    assert jobs.requeue_lost(min_age=3600) == [], "a job queued a moment ago is not lost yet"
    assert jobs.requeue_lost(min_age=0) == [Path(record.folder)]
    again = read_job(record.folder)
    assert again.status is RunStatus.QUEUED and again.task_id != record.task_id
    assert [m.id for m in fresh.pending()] == [again.task_id]
    assert jobs.requeue_lost(min_age=0) == [], "queued again once"
    assert tasks.run_job({"folder": record.folder}) is RunStatus.FINISHED


def test_a_lost_job_that_no_task_of_the_worker_runs_fails_saying_so(home: Path) -> None:
    """A job of a kind this embedgen has no task for (written by another version) whose queue
    entry is lost is not left queued for ever: it ends failed, with the reason."""
    from embedgen.jobrecord import new_job_folder, write_queued_job

    folder = new_job_folder("nosuchkind", "old")
    write_queued_job(folder, "nosuchkind", {}, title="old", task_id="gone")
    assert jobs.requeue_lost(min_age=0) == []
    ended = read_job(folder)
    assert ended.status is RunStatus.FAILED and "queue entry was lost" in ended.message
