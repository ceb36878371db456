"""The feature cache of the head strategy: same runs, no second encoding, resume, bounds, damage."""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from embedgen import features
from embedgen.features import FeatureCache, FeatureKey, cached_features, feature_key
from embedgen.lanes import LANES_ENV
from embedgen.train import FinetuneConfig, finetune

FAST = {"dim": 8, "batch_size": 32, "patience": 0}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $EMBEDGEN_HOME, so each test starts with an empty feature cache."""
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(features.BUDGET_ENV, raising=False)
    return tmp_path / "home"


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of 64 texts, so the 240 synthetic texts make four chunks."""
    monkeypatch.setattr(features, "CHUNK_TEXTS", 64)
    return 64


class Encoded:
    """Counts the texts the real tiny model's forward pass sees (a forward pre-hook)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.texts = 0
        self.model = model
        self.lock = threading.Lock()  # batches are read side by side on the CPU (lanes)

    def __enter__(self) -> Encoded:
        def count(module, args, kwargs):
            with self.lock:
                self.texts += kwargs["input_ids"].shape[0]

        self.hook = self.model.register_forward_pre_hook(count, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.hook.remove()


def _entry(home: Path) -> Path:
    (entry,) = (home / "cache" / "features").iterdir()
    return entry


def _chunks(home: Path) -> list[str]:
    return sorted(p.name for p in _entry(home).glob("*.npy"))


def _history(run) -> list[dict]:
    return [{k: v for k, v in asdict(m).items() if k != "seconds"} for m in run.history]


def _same_head(a, b) -> bool:
    sa, sb = a.head.state_dict(), b.head.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cached_features_give_the_same_head_as_uncached(
    home: Path, tiny_encoder, synthetic_data
) -> None:
    cfg = FinetuneConfig(epochs=3, seed=3, **FAST)
    uncached = finetune(tiny_encoder, synthetic_data, replace(cfg, cache_features=False))
    assert not (home / "cache" / "features").exists(), "cache_features=False writes nothing"
    first = finetune(tiny_encoder, synthetic_data, cfg)  # encodes and fills the cache
    again = finetune(tiny_encoder, synthetic_data, cfg)  # reads the cache
    for run in (first, again):
        assert _same_head(run, uncached)
        assert _history(run) == _history(uncached)


def test_a_second_run_with_other_head_settings_does_not_encode(
    home: Path, tiny_encoder, synthetic_data
) -> None:
    with Encoded(tiny_encoder.model) as first:
        finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, **FAST))
    assert first.texts == len(set(synthetic_data.texts))
    other = FinetuneConfig(
        epochs=2, dim=16, head_learning_rate=1e-2, seed=5, val_fraction=0.2, batch_size=8
    )
    with Encoded(tiny_encoder.model) as second:
        run = finetune(tiny_encoder, synthetic_data, other)
    assert second.texts == 0, "the features of every text were cached by the first run"
    assert not run.cancelled and len(run.history) == 2


def test_what_decides_the_features_decides_the_entry(
    home: Path, tiny_encoder, synthetic_data
) -> None:
    finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, **FAST))
    with Encoded(tiny_encoder.model) as shorter:
        finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, max_length=16, **FAST))
    with Encoded(tiny_encoder.model) as cls:
        finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, pooling="cls", **FAST))
    assert shorter.texts > 0 and cls.texts > 0
    assert len(list((home / "cache" / "features").iterdir())) == 3


def test_changed_weights_under_the_same_name_get_another_key(tiny_encoder) -> None:
    texts = ["好吃", "太慢"]
    cpu = torch.device("cpu")
    key = feature_key(tiny_encoder, texts, max_length=32, pooling="mean", device=cpu)
    assert key == feature_key(tiny_encoder, texts, max_length=32, pooling="mean", device=cpu)
    tuned = copy.deepcopy(tiny_encoder.model)
    with torch.no_grad():
        for layer_param in tuned.encoder.layer[-1].parameters():
            layer_param.add_(0.01)
    changed = replace(tiny_encoder, model=tuned)  # same model id and revision
    assert feature_key(changed, texts, max_length=32, pooling="mean", device=cpu).weights != (
        key.weights
    )
    other_texts = feature_key(tiny_encoder, texts[::-1], max_length=32, pooling="mean", device=cpu)
    assert other_texts.digest() != key.digest()


def test_tuning_strategies_do_not_use_the_cache(home: Path, tiny_encoder, synthetic_data) -> None:
    cfg = FinetuneConfig(strategy="top-k", top_k=1, epochs=1, learning_rate=1e-3, **FAST)
    finetune(tiny_encoder, synthetic_data, cfg)
    assert not (home / "cache" / "features").exists()


def test_cancel_during_encoding_keeps_finished_chunks_and_the_next_run_resumes(
    home: Path, tiny_encoder, synthetic_data, small_chunks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One batch at a time, so the cancel lands in the second chunk (lanes would finish it).
    monkeypatch.setenv(LANES_ENV, "1")
    n = len(set(synthetic_data.texts))
    cfg = FinetuneConfig(epochs=2, **FAST)
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= small_chunks + 32:  # one chunk and one batch of the next are done
            cancel.set()

    run = finetune(tiny_encoder, synthetic_data, cfg, progress=progress, cancel=cancel)
    assert run.cancelled and not run.history
    assert "cached" in run.message
    assert _chunks(home) == ["000000.npy"], "the finished chunk is kept, the cut one is not"

    with Encoded(tiny_encoder.model) as resumed:
        run = finetune(tiny_encoder, synthetic_data, cfg)
    assert resumed.texts == n - small_chunks, "only the chunks not kept are encoded"
    assert len(_chunks(home)) == -(-n // small_chunks)
    whole = finetune(tiny_encoder, synthetic_data, replace(cfg, cache_features=False))
    assert _same_head(run, whole) and _history(run) == _history(whole)


def test_a_damaged_chunk_is_encoded_again(
    home: Path, tiny_encoder, synthetic_data, small_chunks: int
) -> None:
    cfg = FinetuneConfig(epochs=2, **FAST)
    good = finetune(tiny_encoder, synthetic_data, cfg)
    entry = _entry(home)
    cut = entry / "000001.npy"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a partial file
    (entry / "000002.npy").write_bytes(b"not a numpy file")
    np.save(entry / "000003.npy", np.zeros((3, 2), dtype=np.float32))  # the wrong shape
    n = len(set(synthetic_data.texts))
    with Encoded(tiny_encoder.model) as repaired:
        again = finetune(tiny_encoder, synthetic_data, cfg)
    assert repaired.texts == n - small_chunks, "chunks 1-3 are encoded again, chunk 0 read"
    assert _same_head(again, good) and _history(again) == _history(good)
    with Encoded(tiny_encoder.model) as third:
        finetune(tiny_encoder, synthetic_data, cfg)
    assert third.texts == 0, "the repaired chunks were written back"


# -- the cache on its own: bounded, least recently used first -----------------------------------


def _key(name: str, n: int = 10) -> FeatureKey:
    return FeatureKey(
        model_id=name,
        revision="r",
        weights="w",
        tokenizer="t",
        texts_sha256=name,
        n_texts=n,
        max_length=8,
        pooling="mean",
        layer="last",
        compute="cpu-float32",
        chunk=4,
    )


def _fill(cache: FeatureCache, name: str, hidden: int = 16) -> torch.Tensor:
    def encode(positions, advance):
        advance(len(positions))
        return torch.tensor([[float(i)] * hidden for i in positions])

    return cached_features(_key(name), hidden, encode, cache=cache)


def test_the_least_recently_used_entry_goes_first_when_the_budget_is_reached(
    tmp_path: Path,
) -> None:
    entry_bytes = 3 * 128 + 10 * 16 * 4  # three .npy headers and 10 x 16 float32
    cache = FeatureCache(tmp_path, budget=int(2.5 * (entry_bytes + 200)))  # two entries fit
    _fill(cache, "a")
    _fill(cache, "b")
    os.utime(cache.folder(_key("a")) / "meta.json", (1_000, 1_000))
    os.utime(cache.folder(_key("b")) / "meta.json", (2_000, 2_000))
    _fill(cache, "a")  # reading a makes it the most recently used
    _fill(cache, "c")
    kept = {p.name for p in tmp_path.iterdir()}
    assert kept == {cache.folder(_key("a")).name, cache.folder(_key("c")).name}
    assert sum(size for _, size, _ in cache.entries()) <= cache.budget


def test_features_too_big_for_the_budget_are_returned_but_not_kept(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, budget=300)
    feats = _fill(cache, "big")
    assert feats.shape == (10, 16) and feats[9, 0] == 9.0
    assert not list(cache.folder(_key("big")).glob("*.npy"))


def test_a_zero_budget_switches_the_cache_off(
    home: Path, monkeypatch: pytest.MonkeyPatch, tiny_encoder, synthetic_data
) -> None:
    monkeypatch.setenv(features.BUDGET_ENV, "0")
    assert features.budget_bytes() == 0
    finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, **FAST))
    assert not (home / "cache" / "features").exists()
    monkeypatch.setenv(features.BUDGET_ENV, "1.5")
    assert features.budget_bytes() == int(1.5 * 2**20)
