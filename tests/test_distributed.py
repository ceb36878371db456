"""Training under torchrun: two CPU processes (gloo) give the run that one process gives.

Each test launches the real command, ``python -m torch.distributed.run --nproc-per-node 2 -m
embedgen train ...``, on a tiny BERT, and compares the run folder rank 0 wrote with
``finetune`` in this process on the same data, seed and (global) batch size.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_bert, synthetic_rows, write_csv

from embedgen.data import prepare
from embedgen.models import load_encoder
from embedgen.runs import load_run
from embedgen.table import read_table
from embedgen.train import FinetuneConfig, distributed, finetune

ROOT = Path(__file__).resolve().parents[1]

# Two processes and one differ only in the order floating-point sums are taken (the gradient
# all-reduce, each process padding its own share of a batch): about 1e-7 here, while training
# moves the weights by about 1e-2.
ATOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_train(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``embedgen train ARGS`` under torchrun on two CPU processes; fails the test if it fails."""
    env = {
        **os.environ,
        "EMBEDGEN_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",  # two processes share the CPU (and torchrun's banner goes)
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "embedgen",
        "train",
        "--device",
        "cpu",
        *args,
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def still_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with its dropout set to 0 in config.json.

    Dropout draws its masks per process: two processes drawing for half a batch each cannot
    draw what one process draws for the whole batch, so the comparison of the tuned encoder
    would fail for that reason alone. The head's dropout is set to 0 by flag where it trains
    with the encoder.
    """
    folder = build_tiny_bert(tmp_path_factory.mktemp("still-bert"))
    config = json.loads((folder / "config.json").read_text("utf-8"))
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config), "utf-8")
    return folder


def _flags(cfg: FinetuneConfig) -> list[str]:
    return [
        f"--{name.replace('_', '-')}={getattr(cfg, name)}"
        for name in ("strategy", "epochs", "batch_size", "dim", "dropout", "max_length", "seed")
    ] + [f"--lr={cfg.learning_rate}", f"--head-lr={cfg.head_learning_rate}", "--patience=0"]


def _assert_same_weights(ours: dict, theirs: dict, what: str) -> None:
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        torch.testing.assert_close(
            theirs[name], value, atol=ATOL, rtol=0, msg=lambda m, n=name: f"{what} {n}: {m}"
        )


def test_full_on_two_processes_trains_what_one_process_trains(
    still_model_dir: Path, tmp_path: Path
) -> None:
    """181 training rows in batches of 15: the two processes take 7 and 8 rows of a batch,
    and of the last batch (1 row) one takes nothing and still joins the gradient sync."""
    csv = write_csv(tmp_path / "rows.csv", synthetic_rows(201))
    cfg = FinetuneConfig(
        strategy="full",
        epochs=2,
        batch_size=15,
        dim=8,
        dropout=0.0,
        max_length=32,
        learning_rate=1e-3,
        patience=0,
        device="cpu",
    )
    home = tmp_path / "home"
    out = tmp_path / "run"
    done = _torchrun_train(
        home,
        f"--model={still_model_dir}",
        f"--data={csv}",
        "--text-col=text",
        "--label-col=label",
        f"--out={out}",
        *_flags(cfg),
    )
    assert done.stdout.count("Run saved to") == 1, "rank 0 alone reports the run"
    assert not home.exists() or not any(home.rglob("*")), "no process writes elsewhere"
    two = load_run(out)

    encoder = load_encoder(str(still_model_dir), allow_download=False, device="cpu")
    data = prepare(read_table(csv), "text", "label")
    one = finetune(encoder, data, cfg)

    assert not two.cancelled and two.data_summary["rows_train"] == 181
    _assert_same_weights(one.head.state_dict(), two.head.state_dict(), "head")
    _assert_same_weights(
        one.encoder.model.state_dict(), two.encoder.model.state_dict(), "tuned encoder"
    )
    moved = max(
        (one.encoder.model.state_dict()[k] - v).abs().max().item()
        for k, v in encoder.model.state_dict().items()
    )
    assert moved > 100 * ATOL, "training must move the encoder for the comparison to mean much"
    for a, b in zip(one.history, two.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, abs=ATOL)
        assert (a.val_loss, a.val_accuracy) == pytest.approx((b.val_loss, b.val_accuracy), abs=ATOL)


def test_head_on_two_processes_shares_the_encoding_and_rank_0_keeps_the_cache(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 1,024 texts, so the features are two cache chunks: rank 0 finds the first in the
    cache and sends it; the two processes encode half of the second each, and rank 0 writes
    it. The frozen encoder runs in eval mode, so its dropout plays no part, and the head's
    draws the same masks in both processes as in one (each trains on whole batches)."""
    csv = write_csv(tmp_path / "rows.csv", synthetic_rows(1100))
    cfg = FinetuneConfig(epochs=3, batch_size=64, dim=8, max_length=16, patience=0, device="cpu")
    home = tmp_path / "home"
    monkeypatch.setenv("EMBEDGEN_HOME", str(home))
    encoder = load_encoder(str(tiny_model_dir), allow_download=False, device="cpu")
    one = finetune(encoder, prepare(read_table(csv), "text", "label"), cfg)
    (entry,) = (home / "cache" / "features").iterdir()
    first = np.load(entry / "000000.npy")
    second = np.load(entry / "000001.npy")
    (entry / "000001.npy").unlink()

    out = tmp_path / "run"
    done = _torchrun_train(
        home,
        f"--model={tiny_model_dir}",
        f"--data={csv}",
        "--text-col=text",
        "--label-col=label",
        f"--out={out}",
        *_flags(cfg),
    )
    assert "1024 of" in done.stderr, "rank 0 must have read the first chunk from the cache"
    np.testing.assert_array_equal(np.load(entry / "000000.npy"), first)
    np.testing.assert_allclose(np.load(entry / "000001.npy"), second, atol=ATOL, rtol=0)
    assert sorted(p.name for p in home.iterdir()) == ["cache"], "no process writes elsewhere"
    two = load_run(out)
    _assert_same_weights(one.head.state_dict(), two.head.state_dict(), "head")
    assert [m.val_accuracy for m in one.history] == [m.val_accuracy for m in two.history]


def test_one_process_is_its_own_world(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched() and distributed.is_main()
    assert distributed.world_size() == 1
    assert distributed.shard(range(7)) == range(7)
    rows = torch.arange(6.0).reshape(3, 2)
    assert distributed.gather_rows(rows, 3) is rows


def test_shards_cover_a_batch_in_order_and_differ_by_at_most_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = []
    for r in range(3):
        monkeypatch.setattr(distributed, "world_size", lambda: 3)
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        parts.append(list(distributed.shard(list(range(10)))))
    assert sum(parts, []) == list(range(10))
    assert sorted(len(p) for p in parts) == [3, 3, 4]
    assert distributed.shard([5, 6]) == [6]  # the last of 3 processes; the first takes none
