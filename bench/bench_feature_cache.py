"""The ``head`` strategy's feature cache on real data: a first run against re-runs with another d.

    python bench/bench_feature_cache.py [--model /root/.embedgen/models/e5-small]
                                        [--out bench/results/feature_cache.md]

Trains the ``head`` strategy on waimai_10k (11,987 reviews) with multilingual-e5-small (built
by ../shared/tools/build-e5-small.sh). The first run encodes every review and keeps the
features in a feature cache made for this benchmark (an empty temporary ``$EMBEDGEN_HOME``);
the re-runs change d (and so would change nothing the cache is keyed by), find the features
there and only train the head. Each time is the whole ``finetune`` call: split, cache key
(texts' sha256 and the weight samples), reading the chunks and 10 epochs of the head. Prints
a Markdown table with the machine and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.data import prepare  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.table import read_table  # noqa: E402
from embedgen.train import FinetuneConfig, finetune  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "classification"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/root/.embedgen/models/e5-small")
    parser.add_argument("--data", type=Path, default=DATA / "waimai_10k.csv")
    parser.add_argument("--out", type=Path, default=Path("bench/results/feature_cache.md"))
    parser.add_argument("--reruns", type=int, default=3)
    args = parser.parse_args()

    os.environ["EMBEDGEN_HOME"] = tempfile.mkdtemp(prefix="embedgen-bench-")  # an empty cache
    encoder = load_encoder(args.model, allow_download=False, device="cpu")
    data = prepare(read_table(args.data), "review", "label")
    encoded = {"texts": 0}

    def count(module, inputs, kwargs):
        encoded["texts"] += kwargs["input_ids"].shape[0]

    encoder.model.register_forward_pre_hook(count, with_kwargs=True)

    rows = []
    for i, dim in enumerate([128] + [64, 256, 32, 512][: args.reruns]):
        encoded["texts"] = 0
        cfg = FinetuneConfig(dim=dim, device="cpu")
        t0 = time.perf_counter()
        run = finetune(encoder, data, cfg)
        seconds = time.perf_counter() - t0
        rows.append(("first run" if i == 0 else f"re-run {i}", dim, seconds, encoded["texts"]))
        best = run.best.val_macro_f1 if run.best else float("nan")
        print(
            f"{rows[-1][0]}: d={dim} {seconds:.2f} s, {encoded['texts']} texts encoded, "
            f"macro-F1 {best:.3f}",
            flush=True,
        )

    first = rows[0][2]
    median = statistics.median(r[2] for r in rows[1:])
    cpu = platform.processor() or platform.machine()
    lines = [
        "## Feature cache: re-running the head strategy skips encoding",
        "",
        f"{Path(args.model).name} on {args.data.name} ({len(data):,} rows), strategy head, "
        f"10 epochs, CPU ({cpu}, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} cores), torch {torch.__version__}.",
        "",
        "| run | d | seconds | texts encoded |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {name} | {dim} | {s:.2f} | {n:,} |" for name, dim, s, n in rows],
        "",
        f"First run {first:.1f} s; re-run median {median:.2f} s of {len(rows) - 1}: "
        f"{first / median:.0f}x faster.",
        "",
        "`python bench/bench_feature_cache.py`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
