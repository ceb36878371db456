"""The int8 copy of a frozen encoder (CPU): what it changes, what it keeps, where it is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from embedgen import features
from embedgen.errors import BadConfig
from embedgen.quantize import int8_encoder, is_int8
from embedgen.train import FinetuneConfig, finetune

FAST = {"dim": 8, "batch_size": 32, "patience": 0, "epochs": 2}


def _mean_features(encoder, texts: list[str]) -> np.ndarray:
    batch = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return ((states * mask).sum(1) / mask.sum(1)).numpy()


def test_the_int8_copy_quantizes_every_linear_layer_and_leaves_the_original(tiny_encoder) -> None:
    before = {k: v.clone() for k, v in tiny_encoder.model.state_dict().items()}
    copy = int8_encoder(tiny_encoder)
    assert is_int8(copy.model) and not is_int8(tiny_encoder.model)
    linear = sum(isinstance(m, torch.nn.Linear) for m in tiny_encoder.model.modules())
    int8_linear = torch.ao.nn.quantized.dynamic.Linear
    quantized = sum(isinstance(m, int8_linear) for m in copy.model.modules())
    assert quantized == linear > 0
    after = tiny_encoder.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the fp32 encoder changed"


def test_int8_features_stay_close_to_fp32(tiny_encoder) -> None:
    from conftest import synthetic_rows

    texts = [t for t, _ in synthetic_rows(64)]
    fp32 = _mean_features(tiny_encoder, texts)
    int8 = _mean_features(int8_encoder(tiny_encoder), texts)
    cosine = (fp32 * int8).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(int8, axis=1)
    assert not np.allclose(fp32, int8), "int8 should change the numbers a little"
    # multilingual-e5-small: mean 0.983, worst 0.966 over 384 reviews (BENCHMARKS.md).
    assert cosine.min() > 0.95, f"worst cosine {cosine.min():.4f}"


def test_a_head_run_with_int8_reads_with_the_copy_keeps_fp32_and_caches_apart(
    tiny_encoder, synthetic_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(features.BUDGET_ENV, raising=False)
    run = finetune(tiny_encoder, synthetic_data, FinetuneConfig(int8=True, device="cpu", **FAST))
    assert not is_int8(run.encoder.model), "the run keeps the fp32 encoder for matrices"
    assert run.config.int8 and run.history, "the run trained"
    finetune(tiny_encoder, synthetic_data, FinetuneConfig(device="cpu", **FAST))
    entries = (tmp_path / "home" / "cache" / "features").iterdir()
    computes = sorted(
        json.loads((e / features.META_FILE).read_text())["key"]["compute"] for e in entries
    )
    assert computes == ["cpu-float32", "cpu-int8"], "int8 and fp32 features never share an entry"


def test_int8_is_refused_for_strategies_that_train_the_encoder() -> None:
    with pytest.raises(BadConfig, match="int8 reading is for the head strategy"):
        FinetuneConfig(int8=True, strategy="full")
