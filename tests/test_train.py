"""Fine-tuning: strategies, metrics, early stopping, progress, cancel, out-of-memory recovery."""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import pytest
import torch
from conftest import synthetic_rows, write_csv

from embedgen.data import prepare
from embedgen.errors import BadConfig
from embedgen.table import read_table
from embedgen.train.config import FinetuneConfig, Strategy
from embedgen.train.loop import finetune, lr_factor, transformer_layers
from embedgen.train.metrics import macro_f1

FAST = {"dim": 8, "batch_size": 32, "patience": 0}


class Stages:
    """A progress sink that records each stage's name, unit and (done, total) calls."""

    def __init__(self, on_call=None) -> None:
        self.names: list[str] = []
        self.units: list[str] = []
        self.calls: dict[str, list[tuple[int, int]]] = {}
        self.on_call = on_call

    def set_stage(self, name: str, unit: str = "") -> None:
        self.names.append(name)
        self.units.append(unit)
        self.calls[name] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls[self.names[-1]].append((done, total))
        if self.on_call is not None:
            self.on_call(self.names[-1], done, total)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("epochs", 0, "epochs"),
        ("dim", 0, "dim"),
        ("batch_size", 0, "batch size"),
        ("learning_rate", 0.0, "learning rate"),
        ("dropout", 1.0, "dropout"),
        ("val_fraction", 0.9, "validation fraction"),
        ("strategy", "everything", "Unknown strategy 'everything'. Choose one of: head"),
    ],
)
def test_bad_settings_are_named(field: str, value: object, named: str) -> None:
    with pytest.raises(BadConfig, match=named):
        FinetuneConfig(**{field: value})


def test_head_training_learns_the_cue_characters(tiny_encoder, tmp_path) -> None:
    # 800 rows, so 80 validate: 24 made 0.67 vs 0.71 a matter of seed (and of CPU vs GPU).
    # Seeds 0-3 reach 0.74-0.79 here; a coin would reach 0.7 of 80 once in 300,000 tries.
    csv = write_csv(tmp_path / "rows.csv", synthetic_rows(800))
    data = prepare(read_table(csv), "text", "label")
    run = finetune(tiny_encoder, data, FinetuneConfig(epochs=40, head_learning_rate=2e-2, **FAST))
    assert not run.cancelled
    assert len(run.history) == 40
    assert run.history[-1].train_loss < run.history[0].train_loss - 0.1
    assert run.best.val_accuracy >= 0.7, run.best
    assert not run.encoder_changed
    assert run.label_names == ("正面", "负面")
    assert run.data_summary["rows_train"] + run.data_summary["rows_validation"] == 800
    assert np.array(run.confusion).sum() == run.data_summary["rows_validation"]


def test_head_strategy_uses_the_encoder_as_it_is(tiny_encoder, synthetic_data) -> None:
    run = finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, **FAST))
    assert run.encoder.model is tiny_encoder.model


@pytest.mark.parametrize("strategy", [Strategy.TOP_K, Strategy.FULL])
def test_tuning_strategies_never_change_the_loaded_model(
    tiny_encoder, synthetic_data, strategy
) -> None:
    before = _weights(tiny_encoder.model)
    run = finetune(
        tiny_encoder,
        synthetic_data,
        FinetuneConfig(strategy=strategy, epochs=2, learning_rate=1e-3, top_k=1, **FAST),
    )
    assert run.encoder_changed
    assert run.encoder.model is not tiny_encoder.model
    after = _weights(tiny_encoder.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_top_k_trains_only_the_top_layers(tiny_encoder, synthetic_data) -> None:
    cfg = FinetuneConfig(strategy="top-k", top_k=1, epochs=2, learning_rate=1e-3, **FAST)
    run = finetune(tiny_encoder, synthetic_data, cfg)
    old = transformer_layers(tiny_encoder.model)
    new = transformer_layers(run.encoder.model)

    def same(a, b):
        pairs = zip(a.parameters(), b.parameters(), strict=True)
        return all(torch.equal(x, y) for x, y in pairs)

    assert same(old[0], new[0]), "layer 0 is below the top 1 and must stay frozen"
    assert not same(old[1], new[1]), "the top layer must have trained"


def _cpu_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the loop on the CPU as on a bf16 GPU: autocast to bf16 (CPU autocast is real)."""
    import embedgen.device
    import embedgen.train.trainable

    for module in (embedgen.device, embedgen.train.trainable):
        monkeypatch.setattr(module, "autocast_dtype", lambda device: torch.bfloat16)


def test_frozen_linear_layers_are_cast_once_and_give_the_same_run(
    tiny_encoder, synthetic_data, monkeypatch, caplog
) -> None:
    _cpu_bf16(monkeypatch)
    cfg = FinetuneConfig(strategy="top-k", top_k=1, epochs=2, learning_rate=1e-3, **FAST)
    with caplog.at_level("INFO", logger="embedgen.train.trainable"):
        cast = finetune(tiny_encoder, synthetic_data, cfg)
    assert re.search(r"\d+ frozen linear layers kept in torch.bfloat16", caplog.text)
    monkeypatch.setattr("embedgen.train.trainable.cast_frozen_linears", lambda model, dtype: [])
    each_step = finetune(tiny_encoder, synthetic_data, cfg)
    losses = [[m.train_loss, m.val_loss] for m in cast.history]
    np.testing.assert_allclose(
        losses, [[m.train_loss, m.val_loss] for m in each_step.history], rtol=1e-6
    )
    original = dict(tiny_encoder.model.named_parameters())
    for name, p in cast.encoder.model.named_parameters():
        if not name.startswith(tuple(f"encoder.layer.{i}." for i in (1,))):  # frozen
            assert p.dtype == original[name].dtype, f"{name} was saved as {p.dtype}"
            assert torch.equal(p, original[name]), f"{name} changed though frozen"


def test_full_keeps_input_embeddings_unless_asked(tiny_encoder, synthetic_data) -> None:
    def embeddings(run):
        return run.encoder.model.get_input_embeddings().weight

    frozen = finetune(
        tiny_encoder,
        synthetic_data,
        FinetuneConfig(strategy="full", epochs=1, learning_rate=1e-3, **FAST),
    )
    original = tiny_encoder.model.get_input_embeddings().weight
    assert torch.equal(embeddings(frozen), original)
    tuned = finetune(
        tiny_encoder,
        synthetic_data,
        FinetuneConfig(
            strategy="full", epochs=1, learning_rate=1e-3, train_embeddings=True, **FAST
        ),
    )
    assert not torch.equal(embeddings(tuned), original)


def test_top_k_larger_than_the_model_is_refused(tiny_encoder, synthetic_data) -> None:
    with pytest.raises(BadConfig, match="has 2"):
        finetune(tiny_encoder, synthetic_data, FinetuneConfig(strategy="top-k", top_k=5, **FAST))


def test_same_seed_same_run_other_seed_other_run(tiny_encoder, synthetic_data) -> None:
    def head(seed: int) -> torch.Tensor:
        run = finetune(tiny_encoder, synthetic_data, FinetuneConfig(epochs=3, seed=seed, **FAST))
        return run.head.projection.weight.detach()

    assert torch.equal(head(0), head(0))
    assert not torch.equal(head(0), head(1))


# Progress goes by stage (embedgen.progress.stage): it used to be one count of rows over the
# encoding pass and every epoch together, which read "192/77,655 rows" while still encoding.
@pytest.mark.parametrize("cache", [True, False])
def test_head_progress_names_encoding_then_each_epoch(
    tiny_encoder, synthetic_data, cache: bool
) -> None:
    stages = Stages()
    cfg = FinetuneConfig(epochs=2, cache_features=cache, **FAST)
    run = finetune(tiny_encoder, synthetic_data, cfg, progress=stages)
    n_texts = len(set(synthetic_data.texts))
    assert stages.names == [f"encoding {n_texts:,} texts", "epoch 1 of 2", "epoch 2 of 2"]
    assert stages.units == ["texts", "rows", "rows"]
    per_epoch = run.data_summary["rows_train"]
    for name, calls in stages.calls.items():
        done = [d for d, _ in calls]
        assert done == sorted(done), f"{name}: counts must only go up"
        assert {t for _, t in calls} == {n_texts if name.startswith("enc") else per_epoch}
        assert calls[-1][0] == calls[-1][1], f"{name} must end at its total"


def test_tuning_progress_names_tokenizing_then_each_epoch(tiny_encoder, synthetic_data) -> None:
    stages = Stages()
    cfg = FinetuneConfig(strategy="top-k", top_k=1, epochs=2, **FAST)
    finetune(tiny_encoder, synthetic_data, cfg, progress=stages)
    n = len(synthetic_data)
    assert stages.names == [f"tokenizing {n:,} texts", "epoch 1 of 2", "epoch 2 of 2"]
    # An epoch of a tuned encoder passes over the training rows, then encodes the validation
    # rows with the changed encoder: both are its rows.
    assert stages.calls["epoch 1 of 2"][-1] == (n, n)


def test_epoch_callback_sees_every_epoch(tiny_encoder, synthetic_data) -> None:
    seen = []
    run = finetune(
        tiny_encoder, synthetic_data, FinetuneConfig(epochs=3, **FAST), on_epoch=seen.append
    )
    assert [m.epoch for m in seen] == [1, 2, 3] == [m.epoch for m in run.history]
    assert all(0.0 <= m.val_accuracy <= 1.0 and 0.0 <= m.val_macro_f1 <= 1.0 for m in seen)


def test_cancel_stops_within_one_batch(tiny_encoder, synthetic_data) -> None:
    cancel = threading.Event()

    def after(name: str, done: int, total: int) -> None:  # counts rows: three batches of 16
        if name == "epoch 1 of 5" and done == 48:
            cancel.set()

    stages = Stages(after)
    cfg = FinetuneConfig(strategy="top-k", top_k=1, epochs=5, batch_size=16, dim=8, patience=0)
    run = finetune(tiny_encoder, synthetic_data, cfg, progress=stages, cancel=cancel)
    assert run.cancelled
    assert stages.names[-1] == "epoch 1 of 5"
    done = [d for d, _ in stages.calls["epoch 1 of 5"]]
    assert done == [0, 16, 32, 48], "no batch may run after cancel was set"
    assert "Cancelled before the first epoch" in run.message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("strategy", ["head", "top-k"])
def test_a_gpu_run_leaves_the_encoder_where_it_was_and_frees_the_card(
    tiny_encoder, synthetic_data, strategy: str
) -> None:
    before = torch.cuda.memory_allocated()
    cfg = FinetuneConfig(strategy=strategy, epochs=2, device="cuda", **FAST)
    run = finetune(tiny_encoder, synthetic_data, cfg)
    assert next(tiny_encoder.model.parameters()).device.type == "cpu"
    assert next(run.encoder.model.parameters()).device.type == "cpu"
    assert next(run.head.parameters()).device.type == "cpu"
    assert torch.cuda.memory_allocated() == before
    assert len(run.history) == 2


def test_cancel_after_an_epoch_keeps_the_trained_head(tiny_encoder, synthetic_data) -> None:
    cancel = threading.Event()
    run = finetune(
        tiny_encoder,
        synthetic_data,
        FinetuneConfig(epochs=10, **FAST),
        cancel=cancel,
        on_epoch=lambda m: cancel.set(),
    )
    assert run.cancelled
    assert len(run.history) == 1 and run.best_epoch == 1


def test_early_stopping_after_patience_without_improvement(tiny_encoder, synthetic_data) -> None:
    cfg = FinetuneConfig(epochs=20, dim=8, patience=2, head_learning_rate=1e-12, dropout=0.0)
    run = finetune(tiny_encoder, synthetic_data, cfg)
    assert len(run.history) == 3, [m.val_macro_f1 for m in run.history]
    assert run.best_epoch == 1
    assert "Stopped early" in run.message


def test_a_run_that_reaches_its_last_epoch_is_not_said_to_stop_early(
    tiny_encoder, synthetic_data
) -> None:
    cfg = FinetuneConfig(epochs=3, dim=8, patience=2, head_learning_rate=1e-12, dropout=0.0)
    run = finetune(tiny_encoder, synthetic_data, cfg)
    assert len(run.history) == 3 and run.best_epoch == 1
    assert "Stopped early" not in run.message, run.message


def test_out_of_memory_halves_the_batch_and_carries_on(tiny_encoder, synthetic_data) -> None:
    """A GPU out-of-memory error for batches above 4 rows, raised where CUDA would raise it."""

    def too_big(module, args, kwargs):
        if kwargs["input_ids"].shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = tiny_encoder.model.register_forward_pre_hook(too_big, with_kwargs=True)
    stages = Stages()
    # Without the feature cache, so the encoder runs (and runs out of memory) in this test.
    cfg = FinetuneConfig(epochs=2, batch_size=32, dim=8, patience=0, cache_features=False)
    try:
        run = finetune(tiny_encoder, synthetic_data, cfg, progress=stages)
    finally:
        hook.remove()
    assert not run.cancelled
    # Only the encoding pass ran out of memory: its batch halved, the head's did not.
    assert run.batch_size_used == 32
    assert len(run.history) == 2
    # Half the rows trained, half the head's rate left; and each stage's bar ends exactly at
    # its total.
    first, last = run.history
    assert first.head_learning_rate == pytest.approx(0.5 * cfg.head_learning_rate)
    assert last.head_learning_rate == pytest.approx(0.0)
    assert len(stages.names) == 3
    for name, calls in stages.calls.items():
        assert all(t == calls[0][1] for _, t in calls), f"{name}: the total must not move"
        assert calls[-1][0] == calls[-1][1], f"{name} must end at its total"


def test_out_of_memory_while_tuning_halves_the_training_batch(tiny_encoder, synthetic_data) -> None:
    """When the encoder trains, the training batch halves; eight times the planned steps
    must not end the learning-rate schedule early, nor move a stage's total."""

    def too_big(module, args, kwargs):
        if kwargs["input_ids"].shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = tiny_encoder.model.register_forward_pre_hook(too_big, with_kwargs=True)
    stages = Stages()
    cfg = FinetuneConfig(strategy="top-k", top_k=1, epochs=2, batch_size=32, dim=8, patience=0)
    try:
        run = finetune(tiny_encoder, synthetic_data, cfg, progress=stages)
    finally:
        hook.remove()
    assert not run.cancelled
    assert run.batch_size_used == 4
    assert run.history[-1].head_learning_rate == pytest.approx(0.0)
    for name, calls in stages.calls.items():
        assert all(t == calls[0][1] for _, t in calls), f"{name}: the total must not move"
        assert calls[-1][0] == calls[-1][1], f"{name} must end at its total"


def test_out_of_memory_at_batch_one_is_a_clear_error(tiny_encoder, synthetic_data) -> None:
    def always(module, args, kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    hook = tiny_encoder.model.register_forward_pre_hook(always, with_kwargs=True)
    try:
        with pytest.raises(BadConfig, match="batch size 1"):
            cfg = FinetuneConfig(epochs=1, batch_size=4, dim=8, cache_features=False)
            finetune(tiny_encoder, synthetic_data, cfg)
    finally:
        hook.remove()


def test_learning_rate_warms_up_then_decays_to_zero_over_rows() -> None:
    total, warmup = 1000, 100
    assert lr_factor(0, 10, total, warmup) == pytest.approx(0.1)
    assert lr_factor(90, 10, total, warmup) == pytest.approx(1.0)
    assert lr_factor(100, 10, total, warmup) == pytest.approx(1.0)
    assert lr_factor(550, 10, total, warmup) == pytest.approx(0.5)
    assert lr_factor(1000, 10, total, warmup) == 0.0
    # No warm-up (the head strategy): full rate at once, then linear decay.
    assert lr_factor(0, 32, total, 0) == 1.0
    assert lr_factor(250, 32, total, 0) == pytest.approx(0.75)


def test_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    assert macro_f1(y, p, 4) == pytest.approx(f1_score(y, p, average="macro"))


def test_gpu_batches_pad_to_a_multiple_of_16_within_max_length(tiny_encoder) -> None:
    from embedgen.train.batches import GPU_PAD_MULTIPLE, Batches

    texts = ["好" * 3, "好" * 15, "好" * 31, "好" * 60]  # 5, 17, 33 and (cut to) 40 tokens
    cpu = torch.device("cpu")
    batches = Batches(tiny_encoder.tokenizer, texts, max_length=40, multiple=GPU_PAD_MULTIPLE)
    assert [len(r) for r in batches.ids] == [5, 17, 33, 40]
    widths = [batches.collate([i], cpu)["input_ids"].shape[1] for i in range(4)]
    assert widths == [16, 32, 40, 40]
    both = batches.collate([0, 1], cpu)
    assert both["input_ids"].shape == (2, 32)
    assert both["attention_mask"].sum(1).tolist() == [5, 17]
    exact = Batches(tiny_encoder.tokenizer, texts, max_length=40)  # the CPU's: no rounding
    assert [exact.collate([i], cpu)["input_ids"].shape[1] for i in range(4)] == [5, 17, 33, 40]


def test_extra_padding_does_not_change_the_features(tiny_encoder) -> None:
    from embedgen.train.batches import Batches, pool
    from embedgen.train.config import Pooling

    texts = [row[0] for row in synthetic_rows(12)]
    batches = Batches(tiny_encoder.tokenizer, texts, max_length=64, multiple=16)
    model = tiny_encoder.model.eval()
    with torch.no_grad():
        batch = batches.collate(range(len(texts)), torch.device("cpu"))
        padded = pool(model(**batch).last_hidden_state, batch["attention_mask"], Pooling.MEAN)
        for i, ids in enumerate(batches.ids):
            alone = model(input_ids=torch.tensor([ids])).last_hidden_state.mean(1)[0]
            torch.testing.assert_close(padded[i], alone, atol=1e-5, rtol=1e-4)


def test_a_bigger_encoding_batch_gives_the_same_head(
    tiny_encoder, synthetic_data, monkeypatch
) -> None:
    """The frozen encoder's pass takes bigger batches where ENCODE_BATCH says so (the GPU);
    the features, and so the trained head, do not depend on it."""
    from embedgen.train import encode

    cfg = FinetuneConfig(epochs=2, batch_size=8, dim=8, patience=0, cache_features=False)
    batches: list[int] = []

    def count(module, args, kwargs):
        batches.append(kwargs["input_ids"].shape[0])

    hook = tiny_encoder.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        plain = finetune(tiny_encoder, synthetic_data, cfg)
        assert max(batches) == 8
        batches.clear()
        monkeypatch.setitem(encode.ENCODE_BATCH, "cpu", 64)
        bigger = finetune(tiny_encoder, synthetic_data, cfg)
        assert max(batches) == 64
    finally:
        hook.remove()
    assert bigger.batch_size_used == 8  # training keeps its own batch
    for a, b in zip(plain.history, bigger.history, strict=True):
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0.0, -1e-3])
@pytest.mark.parametrize("field", ["learning_rate", "head_learning_rate"])
def test_a_learning_rate_must_be_a_positive_finite_number(field: str, value: float) -> None:
    with pytest.raises(BadConfig, match="learning rate"):
        FinetuneConfig(**{field: value})


def test_an_infinite_head_learning_rate_is_one_line_from_the_cli(
    tiny_model_dir, synthetic_csv, tmp_path, capsys
) -> None:
    from embedgen.cli import main

    argv = ["train", "--model", tiny_model_dir, "--data", synthetic_csv, "--out", tmp_path / "r"]
    code = main([str(a) for a in argv] + ["--text-col=text", "--label-col=label", "--head-lr=inf"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith("embedgen train: error: head learning rate") and "inf" in lines[0]


# A head rate of 10 with weight decay 1 multiplies each weight by 1 - 10 * 1 = -9 a step, and
# 54 steps of 4 rows take the weights past float32's largest number: both settings are within
# their limits, and the run diverges in its first epoch.
DIVERGES = {"head_learning_rate": 10.0, "weight_decay": 1.0, "batch_size": 4, "dim": 8}


def test_a_diverging_run_stops_naming_the_epoch_and_batch(tiny_encoder, synthetic_data) -> None:
    cfg = FinetuneConfig(epochs=2, patience=0, cache_features=False, **DIVERGES)
    with pytest.raises(BadConfig) as caught:
        finetune(tiny_encoder, synthetic_data, cfg)
    message = str(caught.value)
    assert re.fullmatch(
        r"Training diverged at epoch 1, batch \d+ \(loss is (nan|inf)\)\. Lower the learning "
        r"rate \(--head-lr\) and start again\.",
        message,
    ), message


def test_a_diverging_run_is_one_line_from_the_cli_and_its_folder_says_failed(
    tiny_model_dir, synthetic_csv, tmp_path, capsys
) -> None:
    from embedgen.cli import main

    out = tmp_path / "run"
    argv = ["train", "--model", tiny_model_dir, "--data", synthetic_csv, "--out", out]
    argv += ["--text-col=text", "--label-col=label", "--epochs=2", "--dim=8"]
    argv += ["--head-lr=10", "--weight-decay=1", "--batch-size=4", "--no-cache-features"]
    code = main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert lines[-1].startswith("embedgen train: error: Training diverged at epoch 1, batch")
    assert not any("Traceback" in line for line in lines), lines
    record = json.loads((out / "run.json").read_text("utf-8"))
    assert record["status"] == "failed" and "Training diverged" in record["message"]


def test_max_length_defaults_to_what_the_data_needs(tiny_encoder, synthetic_data) -> None:
    from embedgen.tokens import text_lengths

    expected = text_lengths(tiny_encoder.tokenizer, synthetic_data.texts).suggested
    run = finetune(
        tiny_encoder, synthetic_data, FinetuneConfig(epochs=1, dim=8, patience=0, device="cpu")
    )
    assert FinetuneConfig().max_length is None, "the default is read from the data"
    assert run.config.max_length == expected, "the run records the max length it used"
    longest = max(len(tiny_encoder.tokenizer(t)["input_ids"]) for t in synthetic_data.texts)
    assert 16 <= expected < 128 and expected % 8 == 0, f"{expected} for texts up to {longest}"
    given = finetune(
        tiny_encoder,
        synthetic_data,
        FinetuneConfig(epochs=1, dim=8, patience=0, max_length=24, device="cpu"),
    )
    assert given.config.max_length == 24
