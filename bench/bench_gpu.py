"""GPU check and timings: fine-tuning, matrices and real out-of-memory recovery on CUDA.

    python bench/bench_gpu.py --json results.json     # bert-base-sized model (needs a GPU)
    python bench/bench_gpu.py --quick                 # a small model: checks the script on CPU

No model hub is reachable on the GPU machine, so the model is a random-init BERT with
bert-base-chinese's shape (12 layers, hidden 768, 21,128 WordPiece tokens: every CJK
character U+4E00..U+9FA5 plus specials), saved with ``save_pretrained`` and loaded back
through ``embedgen.models.load_encoder``. Random weights cost the same FLOPs as trained
ones, so the timings stand for bert-base-chinese; the accuracies only show that the
training signal gets through (the labels are decided by a few cue characters).

Cases (each timed after a warm-up, with CUDA synchronised):

- ``head``: embedgen's head strategy (encode once with the frozen encoder, then the
  epochs on cached features).
- ``top-k`` and ``full``: one epoch of embedgen's loop (bf16 autocast, length-bucketed
  padding) against the peer: the plain loop most fine-tuning tutorials write (fp32,
  ``padding="max_length"``, CLS vector, same model, rows, batch and epoch, validation pass
  included).
- ``contextual``: the whole 21,128-row contextual matrix through embedgen (batched, bf16)
  against the peer: one token at a time in fp32 (timed on a slice, reported per token).
  Its bf16 rows are compared with fp32 rows computed on the CPU.
- ``oom``: ``full`` with a batch far too large for the card (2,048 rows x 512 tokens):
  embedgen must halve the batch until it fits and finish the epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.data import prepare  # noqa: E402
from embedgen.device import device_info, resolve_device  # noqa: E402
from embedgen.matrix import MatrixOptions, build_matrix  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.runs import status_of  # noqa: E402
from embedgen.table import read_table  # noqa: E402
from embedgen.train import FinetuneConfig, finetune  # noqa: E402

CJK = [chr(c) for c in range(0x4E00, 0x9FA6)]
CLASSES = ["美食", "体育", "科技", "旅游"]


def build_model(folder: Path, *, quick: bool) -> Path:
    """A random-init BERT with bert-base-chinese's vocabulary size (and, unless quick, shape)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [f"[unused{i}]" for i in range(1, 100)] + CJK
    tokens += ["##" + c for c in CJK[: 21_128 - len(tokens)]]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)})
    size = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2} if quick else {}
    config = BertConfig(vocab_size=len(tokens), intermediate_size=4 * size.get("hidden_size", 768))
    for key, value in size.items():
        setattr(config, key, value)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_rows(path: Path, n: int, *, min_len: int, max_len: int, seed: int = 0) -> Path:
    """A labelled CSV: four classes, each decided by one of its 8 cue characters."""
    rng = random.Random(seed)
    common = CJK[:3000]
    cues = {c: rng.sample(CJK[3000:6000], 8) for c in CLASSES}
    lines = ["text,label"]
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        chars = [rng.choice(common) for _ in range(rng.randint(min_len, max_len))]
        for _ in range(2):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(cues[label]))
        lines.append(f"{''.join(chars)},{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else None


def timed(fn: Any) -> tuple[Any, float]:
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def peer_run(model_dir: Path, data: Any, cfg: FinetuneConfig, device: torch.device) -> float:
    """The tutorial loop: fp32, pad every text to max_length, CLS vector; train + val passes.

    For ``head`` the encoder is frozen and runs again every epoch (no feature cache), as in
    the recipe embedgen grew from.
    """
    from transformers import AutoModel, AutoTokenizer

    from embedgen.data import split

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).to(device)
    frozen = cfg.strategy == "head"
    if frozen:
        model.requires_grad_(False)
    elif cfg.strategy == "top-k":
        for p in model.parameters():
            p.requires_grad = False
        for layer in model.encoder.layer[-cfg.top_k :]:
            for p in layer.parameters():
                p.requires_grad = True
    else:
        for p in model.embeddings.word_embeddings.parameters():
            p.requires_grad = False
    hidden = model.config.hidden_size
    head = torch.nn.Sequential(
        torch.nn.Linear(hidden, cfg.dim), torch.nn.Linear(cfg.dim, len(data.label_names))
    ).to(device)
    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    train, val = split(data, val_fraction=cfg.val_fraction, seed=cfg.seed)

    def batches(part: Any):
        for i in range(0, len(part.texts), cfg.batch_size):
            enc = tok(
                list(part.texts[i : i + cfg.batch_size]),
                padding="max_length",
                truncation=True,
                max_length=cfg.max_length,
                return_tensors="pt",
            ).to(device)
            yield enc, torch.tensor(part.labels[i : i + cfg.batch_size], device=device)

    def run() -> None:
        for _ in range(cfg.epochs):
            model.train(not frozen)
            for enc, y in batches(train):
                with torch.set_grad_enabled(not frozen):
                    cls = model(**enc).last_hidden_state[:, 0]
                loss = torch.nn.functional.cross_entropy(head(cls), y)
                loss.backward()
                opt.step()
                opt.zero_grad()
            model.eval()
            with torch.no_grad():
                for enc, _ in batches(val):
                    head(model(**enc).last_hidden_state[:, 0]).argmax(1).cpu()

    _, seconds = timed(run)
    return seconds


def peer_contextual(model_dir: Path, n: int, device: torch.device) -> float:
    """Seconds per token: each token alone as [CLS] x [SEP], fp32, one forward each."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    ids = range(104, 104 + n)
    with torch.no_grad():
        model(input_ids=torch.tensor([[2, 104, 3]], device=device))  # warm-up

        def run() -> None:
            for i in ids:
                x = torch.tensor([[2, i, 3]], device=device)
                model(input_ids=x, output_hidden_states=True).last_hidden_state[0, 1].cpu()

        _, seconds = timed(run)
    return seconds / n


def cpu_reference(encoder: Any, ids: list[int]) -> np.ndarray:
    """fp32 last-layer vectors of [CLS] x [SEP] on the CPU, written out independently."""
    import copy

    model = copy.deepcopy(encoder.model).float().cpu().eval()
    cls, sep = encoder.tokenizer.cls_token_id, encoder.tokenizer.sep_token_id
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), 256):
            chunk = torch.tensor(ids[start : start + 256])
            x = torch.stack([torch.full_like(chunk, cls), chunk, torch.full_like(chunk, sep)], 1)
            out.append(model(input_ids=x).last_hidden_state[:, 1].numpy())
    return np.concatenate(out)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small model and data (CPU check)")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--skip-oom", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    device = resolve_device("auto")
    results: dict[str, Any] = {
        "machine": {
            "device": device_info(device).describe(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cuda": torch.version.cuda,
            "bf16": bool(device.type == "cuda" and torch.cuda.is_bf16_supported()),
        },
        "cases": {},
    }
    import transformers

    results["machine"]["transformers"] = transformers.__version__
    print(json.dumps(results["machine"]), flush=True)
    cases = results["cases"]
    quick = args.quick
    work = Path(tempfile.mkdtemp(prefix="embedgen-bench-gpu-"))

    _, build_s = timed(lambda: build_model(work / "model", quick=quick))
    encoder, load_s = timed(lambda: load_encoder(str(work / "model")))
    cases["model"] = {
        "params_m": sum(p.numel() for p in encoder.model.parameters()) / 1e6,
        "vocab": encoder.info.vocab_size,
        "build_s": build_s,
        "load_s": load_s,
    }
    n_rows = 800 if quick else 20_000
    csv = write_rows(work / "rows.csv", n_rows, min_len=20, max_len=120)
    data = prepare(read_table(csv), "text", "label")

    # -- head: encode once, then epochs on the cached features -------------------------
    cfg = FinetuneConfig(strategy="head", epochs=10, batch_size=64, patience=0)
    finetune(encoder, prepare_slice(data, 256), cfg)  # warm-up: CUDA context, kernels
    peak_reset()
    run, seconds = timed(lambda: finetune(encoder, data, cfg))
    epochs_s = sum(m.seconds for m in run.history)
    cases["head"] = {
        "rows": n_rows,
        "epochs": cfg.epochs,
        "total_s": seconds,
        "encode_s": seconds - epochs_s,
        "epochs_s": epochs_s,
        "val_accuracy": run.best.val_accuracy,
        "val_macro_f1": run.best.val_macro_f1,
        "peak_gib": peak_gib(),
    }
    print("head", json.dumps(cases["head"]), flush=True)
    head_run = run

    # -- head against the recipe that re-encodes every epoch, 10 epochs on 4,000 rows ------
    few = prepare_slice(data, 400 if quick else 4_000)
    run, ours_s = timed(lambda: finetune(encoder, few, cfg))
    peer_s = peer_run(work / "model", few, cfg, device)
    cases["head_vs_peer"] = {
        "rows": len(few),
        "epochs": cfg.epochs,
        "ours_s": ours_s,
        "peer_s": peer_s,
        "peer_over_ours": peer_s / ours_s,
    }
    print("head_vs_peer", json.dumps(cases["head_vs_peer"]), flush=True)

    # -- the same small run on the CPU and the GPU: does the GPU path learn as well? ------
    if device.type == "cuda":
        small = build_model(work / "small", quick=True)
        small_enc = load_encoder(str(small), device="cpu")
        both = {}
        for where in ("cpu", "cuda"):
            run = finetune(small_enc, few, replace(cfg, epochs=20, device=where))
            both[where] = run.best.val_accuracy
        cases["head_cpu_vs_cuda_small_model"] = {
            "rows": len(few),
            "val_accuracy_cpu": both["cpu"],
            "val_accuracy_cuda": both["cuda"],
        }
        print("cpu_vs_cuda", json.dumps(cases["head_cpu_vs_cuda_small_model"]), flush=True)

    # -- top-k and full: one epoch, embedgen vs the tutorial loop -------------------------
    tuned_rows = 400 if quick else 8_000
    tuned = prepare(
        read_table(write_rows(work / "tuned.csv", tuned_rows, min_len=20, max_len=120)),
        "text",
        "label",
    )
    for strategy in ("top-k", "full"):
        cfg = FinetuneConfig(strategy=strategy, epochs=1, batch_size=32, patience=0, top_k=2)
        finetune(encoder, prepare_slice(tuned, 64), cfg)  # warm-up: kernels, allocator
        peak_reset()
        run, seconds = timed(lambda cfg=cfg: finetune(encoder, tuned, cfg))
        ours_peak = peak_gib()
        peak_reset()
        peer_s = peer_run(work / "model", tuned, cfg, device)
        cases[strategy] = {
            "rows": tuned_rows,
            "batch": cfg.batch_size,
            "max_length": cfg.max_length,
            "ours_s": seconds,
            "peer_s": peer_s,
            "peer_over_ours": peer_s / seconds,
            "ours_peak_gib": ours_peak,
            "peer_peak_gib": peak_gib(),
            "val_accuracy": run.best.val_accuracy,
        }
        print(strategy, json.dumps(cases[strategy]), flush=True)
        del run

    # -- contextual matrix: whole vocabulary, embedgen vs one token at a time ------------
    opts = MatrixOptions(method="contextual", through_projection=False, drop_special=False)
    build_matrix(encoder, replace(opts, cjk_only=True))  # warm-up
    peak_reset()
    matrix, ours_s = timed(lambda: build_matrix(encoder, opts))
    ours_peak = peak_gib()
    sample = 200 if quick else 1_000
    peer_per_token = peer_contextual(work / "model", sample, device)
    rows = matrix.vectors.shape[0]
    check = 2_000
    ids = encoder.tokenizer.convert_tokens_to_ids(list(matrix.vocab[:check]))
    a = matrix.vectors[:check].astype(np.float64)
    b = cpu_reference(encoder, ids).astype(np.float64)
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    cos = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (
        b / np.linalg.norm(b, axis=1, keepdims=True)
    ).T
    cases["contextual"] = {
        "rows": rows,
        "ours_s": ours_s,
        "ours_tokens_per_s": rows / ours_s,
        "peer_tokens_per_s": 1 / peer_per_token,
        "ours_over_peer_speed": (rows / ours_s) * peer_per_token,
        "peak_gib": ours_peak,
        "rel_error_vs_cpu_fp32": rel,
        "min_row_cosine_vs_cpu_fp32": float(np.diag(cos).min()),
    }
    print("contextual", json.dumps(cases["contextual"]), flush=True)

    for method in ("input", "projected"):
        m, s = timed(lambda method=method: build_matrix(head_run, MatrixOptions(method=method)))
        cases[method] = {"rows": m.vectors.shape[0], "dims": m.vectors.shape[1], "seconds": s}
    through, s = timed(lambda: build_matrix(head_run, MatrixOptions(method="contextual")))
    cases["contextual_through_projection"] = {"dims": through.vectors.shape[1], "seconds": s}

    # -- a batch far too big for the card: halve and finish -----------------------------
    if device.type == "cuda" and not args.skip_oom:
        long_rows = prepare(
            read_table(write_rows(work / "long.csv", 4_096, min_len=480, max_len=500)),
            "text",
            "label",
        )
        cfg = FinetuneConfig(strategy="full", epochs=1, batch_size=2_048, max_length=512)
        handler = Collect()
        logging.getLogger("embedgen").addHandler(handler)
        peak_reset()
        free_before = torch.cuda.mem_get_info()[0]
        try:
            run, seconds = timed(lambda: finetune(encoder, long_rows, cfg))
            outcome = {
                "status": str(status_of(run)),
                "batch_size_used": run.batch_size_used,
                "seconds": seconds,
                "head_lr_end": run.history[-1].head_learning_rate,
            }
            del run
        except Exception as exc:  # the point is to report what happened
            outcome = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
        logging.getLogger("embedgen").removeHandler(handler)
        torch.cuda.empty_cache()
        outcome.update(
            {
                "batch_asked": cfg.batch_size,
                "warnings": handler.messages,
                "peak_gib": peak_gib(),
                "free_gib_before": free_before / 1024**3,
                "free_gib_after": torch.cuda.mem_get_info()[0] / 1024**3,
            }
        )
        cases["oom"] = outcome
        print("oom", json.dumps(outcome), flush=True)

    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    print()
    print(f"| case | result |  ({results['machine']['device']})")
    print("| --- | --- |")
    for name, case in cases.items():
        short = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in case.items()}
        print(f"| {name} | {json.dumps(short, ensure_ascii=False)} |")
    return 0


def prepare_slice(data: Any, n: int) -> Any:
    """The first n rows as labelled data (for warm-ups)."""
    return replace(data, texts=data.texts[:n], labels=data.labels[:n], rows=data.rows[:n])


if __name__ == "__main__":
    sys.exit(main())
