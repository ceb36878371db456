"""The head strategy's encoding pass on a GPU: rows/s by encoding batch, and the whole run.

    python bench/bench_gpu_encode.py --json gpu_encode.json   # bert-base-sized model, on a GPU
    python bench/bench_gpu_encode.py --quick                  # a small model: checks the script

The model is bench_gpu.py's random-init BERT with bert-base-chinese's shape. Cases, each after
a warm-up, with the feature cache off (so the encoder runs every time):

- ``encode``: 20,000 texts of 126 characters (128 tokens with [CLS] and [SEP]), one epoch of
  the head strategy; encoding rows/s with the encoding batch at the training batch (32, what
  the loop did before) and at ``embedgen.train.encode.ENCODE_BATCH["cuda"]`` (256), and how
  far the two features' heads differ (same seed: the run's validation loss after one epoch).
- ``waimai-like``: 12,000 texts of 10-60 characters (waimai_10k's length range), 10 epochs of
  the head strategy at batch 32, end to end (issue 10's target: < 5 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import build_model, prepare_slice, timed, write_rows  # noqa: E402

from embedgen.data import prepare  # noqa: E402
from embedgen.device import device_info, resolve_device  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.table import read_table  # noqa: E402
from embedgen.train import FinetuneConfig, finetune  # noqa: E402
from embedgen.train import encode as encoding  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = resolve_device("auto")
    out: dict = {"device": device_info(device).describe(), "torch": torch.__version__}
    print(json.dumps(out), flush=True)
    work = Path(tempfile.mkdtemp(prefix="embedgen-gpu-encode-"))
    encoder = load_encoder(str(build_model(work / "model", quick=args.quick)))
    n = 800 if args.quick else 20_000
    long = prepare(read_table(write_rows(work / "long.csv", n, min_len=124, max_len=124)),
                   "text", "label")  # fmt: skip
    base = FinetuneConfig(strategy="head", epochs=1, batch_size=32, patience=0,
                          cache_features=False)  # fmt: skip
    finetune(encoder, prepare_slice(long, 512), base)  # warm-up
    encode = {}
    for batch in (32, encoding.ENCODE_BATCH.get("cuda", 32)):
        encoding.ENCODE_BATCH["cuda"] = batch
        runs = []
        for _ in range(3):
            run, seconds = timed(lambda: finetune(encoder, long, base))
            runs.append((seconds - sum(m.seconds for m in run.history), run))
        runs.sort(key=lambda r: r[0])
        encode_s, run = runs[1]
        encode[batch] = {
            "encode_s": encode_s,
            "rows_per_s": len(long) / encode_s,
            "val_loss_epoch1": run.history[0].val_loss,
        }
        print("encode batch", batch, json.dumps(encode[batch]), flush=True)
    out["encode"] = encode
    encoding.ENCODE_BATCH["cuda"] = 256

    m = 1_200 if args.quick else 12_000
    short = prepare(read_table(write_rows(work / "short.csv", m, min_len=8, max_len=58, seed=1)),
                    "text", "label")  # fmt: skip
    cfg = replace(base, epochs=10)
    finetune(encoder, prepare_slice(short, 512), cfg)  # warm-up
    whole = []
    for _ in range(3):
        run, seconds = timed(lambda: finetune(encoder, short, cfg))
        whole.append({"total_s": seconds, "epochs_s": sum(x.seconds for x in run.history),
                      "val_macro_f1": run.best.val_macro_f1})  # fmt: skip
        print("waimai-like", json.dumps(whole[-1]), flush=True)
    out["waimai_like"] = sorted(whole, key=lambda r: r["total_s"])[1]
    print(json.dumps(out, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
