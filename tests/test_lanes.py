"""Reading on the CPU in lanes (embedgen.lanes): every batch once, in order, as if alone."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from conftest import synthetic_rows

from embedgen import lanes
from embedgen.errors import Cancelled
from embedgen.lanes import LANES_ENV, cpu_lanes, run_in_lanes
from embedgen.matrix import MatrixOptions, build_matrix
from embedgen.train import FinetuneConfig, finetune
from embedgen.words import Corpus, words_from_corpus


def test_each_batch_is_worked_once_in_a_lane_of_one_thread_without_gradients() -> None:
    seen: dict[int, tuple[str, int, bool]] = {}
    finished: list[int] = []
    before = torch.get_num_threads()

    def work(batch: int) -> None:
        time.sleep(0.01 * (batch % 3))  # lanes end out of order
        seen[batch] = (
            threading.current_thread().name,
            torch.get_num_threads(),
            torch.is_grad_enabled(),
        )

    run_in_lanes(range(20), work, finished.append, lanes=3)
    assert finished == list(range(20)), "done() is called in the batches' order"
    assert sorted(seen) == list(range(20))
    assert {name.startswith("embedgen-lane") for name, _, _ in seen.values()} == {True}
    assert len({name for name, _, _ in seen.values()}) > 1, "more than one lane did work"
    assert {threads for _, threads, _ in seen.values()} == {1}
    assert {grad for _, _, grad in seen.values()} == {False}
    assert torch.get_num_threads() == before, "the caller's thread count comes back"


def test_a_cancel_starts_no_new_batch_and_the_work_under_way_ends_first() -> None:
    started: list[int] = []
    ended: list[int] = []
    checks = iter(range(1000))

    def check() -> None:
        if next(checks) == 5:
            raise Cancelled("stop")

    def work(batch: int) -> None:
        started.append(batch)
        time.sleep(0.02)
        ended.append(batch)

    with pytest.raises(Cancelled):
        run_in_lanes(range(100), work, lambda b: None, lanes=2, check=check)
    # Five were handed out before the cancel; one still waiting for a lane is dropped.
    assert {0, 1, 2} <= set(started) <= {0, 1, 2, 3, 4}
    assert sorted(ended) == sorted(started), "and those finished before the cancel went on"


def test_an_error_in_a_lane_reaches_the_caller() -> None:
    def work(batch: int) -> None:
        if batch == 3:
            raise ValueError("batch 3 is bad")

    with pytest.raises(ValueError, match="batch 3 is bad"):
        run_in_lanes(range(10), work, lambda b: None, lanes=2)


def test_the_lane_count_follows_the_threads_unless_the_operator_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(LANES_ENV, raising=False)
    assert cpu_lanes() == min(torch.get_num_threads(), lanes.MAX_LANES)
    monkeypatch.setenv(LANES_ENV, "3")
    assert cpu_lanes() == 3
    monkeypatch.setenv(LANES_ENV, "0")
    assert cpu_lanes() == 1
    monkeypatch.setenv(LANES_ENV, "many")
    assert cpu_lanes() == min(torch.get_num_threads(), lanes.MAX_LANES)


def test_head_features_read_in_lanes_train_the_same_head_as_one_at_a_time(
    tiny_encoder, synthetic_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = FinetuneConfig(epochs=3, seed=2, dim=8, batch_size=16, patience=0, cache_features=False)
    runs = {}
    for n in ("1", "3"):
        monkeypatch.setenv(LANES_ENV, n)
        runs[n] = finetune(tiny_encoder, synthetic_data, cfg)
    one, three = runs["1"], runs["3"]
    assert not one.cancelled and not three.cancelled
    for a, b in zip(one.history, three.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-5)
        assert a.val_macro_f1 == pytest.approx(b.val_macro_f1, abs=1e-9)
    for key, value in one.head.state_dict().items():
        torch.testing.assert_close(value, three.head.state_dict()[key], atol=1e-5, rtol=1e-5)


def test_a_cancel_while_reading_in_lanes_ends_the_run_as_cancelled(
    tiny_encoder, synthetic_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LANES_ENV, "2")
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 32:
            cancel.set()

    cfg = FinetuneConfig(epochs=2, dim=8, batch_size=16, cache_features=False)
    run = finetune(tiny_encoder, synthetic_data, replace(cfg), progress=progress, cancel=cancel)
    assert run.cancelled and not run.history
    assert asdict(run.config)["epochs"] == 2


def test_matrices_read_in_lanes_equal_those_read_one_batch_at_a_time(
    tiny_encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token rows, whole words and aggregated words (corpus and generated contexts), each in
    batches small enough that the lanes share them out."""
    texts = [row[0] for row in synthetic_rows(120)]
    corpus = Corpus.of(texts, "reviews")
    words = words_from_corpus(corpus)
    builds = {
        "contextual tokens": (MatrixOptions(method="contextual", batch_size=16), {}),
        "contextual words": (
            MatrixOptions(method="contextual", batch_size=4),
            {"words": words},
        ),
        "aggregated": (
            MatrixOptions(method="aggregated", batch_size=4),
            {"words": words, "corpus": corpus},
        ),
    }
    for name, (options, given) in builds.items():
        built = {}
        for n in ("1", "3"):
            monkeypatch.setenv(LANES_ENV, n)
            steps: list[tuple[int, int]] = []
            built[n] = build_matrix(
                tiny_encoder, options, progress=lambda d, t, s=steps: s.append((d, t)), **given
            )
            assert steps and steps[-1][0] == steps[-1][1], f"{name}: progress ends at its total"
        assert built["1"].vocab == built["3"].vocab
        assert built["1"].columns == built["3"].columns, name
        np.testing.assert_allclose(built["1"].vectors, built["3"].vectors, atol=1e-5, err_msg=name)
