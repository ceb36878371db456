"""The protocol that chooses the defaults (BENCHMARKS.md, "Choosing the defaults").

    python bench/bench_defaults.py --model e5=/path/to/e5-small --model m3e=/path/to/m3e-small \\
        [--out bench/results/defaults.md] [--json bench/results/defaults.json]

For each model: a ``head`` run with the Train page's defaults on each labelled file in
``../shared/data/classification`` (through ``runs.train_and_save``, in a fresh
``$EMBEDGEN_HOME``); the rows are every word of the similarity and analogy files plus each
file's significant label words (``tokenstats.significant``: z >= 3, seen >= 10 times, the 50
strongest per label), read by ``aggregated`` with generated contexts only, untuned (a head run
leaves the encoder as it was). From those rows and each run's head, the variants:

- ``untuned``; ``untuned, centred`` (the mean row subtracted);
- ``tuned projection`` (what a run's matrix was by default: the rows through the projection);
- ``labels W, centred`` and ``labels W`` (``blend.blend`` with and without centring the untuned
  part; W in 0.05, 0.1, 0.25, 0.5, 1).

Each is scored on wordsim-297 (the choose set), wordsim-240 and SimLex-999 (confirm: Spearman
and its difference from ``untuned`` with a paired bootstrap interval), CA_translated (confirm:
3CosAdd over the rows) and label purity of the run's own significant words (k = 10, with a
bootstrap interval). The rules of the protocol are then applied and their verdicts printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.blend import blend, label_signal, logits, projected  # noqa: E402
from embedgen.data import prepare  # noqa: E402
from embedgen.evaluate import (  # noqa: E402
    analogy,
    label_purity,
    read_analogy,
    read_similarity,
    similarity,
    similarity_difference,
)
from embedgen.matrix import EmbeddingMatrix, MatrixOptions, build_matrix  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.report import benchmark_words  # noqa: E402
from embedgen.runs import train_and_save  # noqa: E402
from embedgen.table import read_table  # noqa: E402
from embedgen.tokenstats import significant, token_stats  # noqa: E402
from embedgen.train import FinetuneConfig  # noqa: E402
from embedgen.words import Corpus, WordSplitter, words_from_list  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CHOOSE = "wordsim-297.txt"
CONFIRM = ("wordsim-240.txt", "zh_tw_SimLex-999.txt")
ANALOGY = SHARED / "analogy" / "CA_translated" / "ca_translated.txt"
WEIGHTS = (0.05, 0.1, 0.25, 0.5, 1.0)
DATASETS = {  # name: (file, text column, label column)
    "waimai": (SHARED / "classification" / "waimai_10k.csv", "review", "label"),
    "thucnews": (SHARED / "classification" / "THUCNews" / "test.txt", 1, 2),
}
PER_LABEL = 50


def label_words(data) -> dict[str, tuple[str, float]]:
    """The data's significant label words, at most ``PER_LABEL`` strongest per label."""
    splitter = WordSplitter(Corpus.of(data.texts, data.source_name))
    stats = token_stats(splitter, data.texts, data.labels, data.label_names)
    strong = significant(stats, min_z=3.0, min_count=10)
    by_label: dict[str, list[tuple[float, str]]] = {}
    for word, (label, z) in strong.items():
        by_label.setdefault(label, []).append((z, word))
    return {
        w: strong[w]
        for leaning in by_label.values()
        for _, w in sorted(leaning, reverse=True)[:PER_LABEL]
    }


def variants(raw: EmbeddingMatrix, head) -> dict[str, np.ndarray]:
    signal = label_signal(logits(head, raw.vectors))
    out = {
        "untuned": raw.vectors,
        "untuned, centred": raw.vectors - raw.vectors.mean(axis=0),
        "tuned projection": projected(head, raw.vectors),
    }
    for w in WEIGHTS:
        out[f"labels {w:g}, centred"] = blend(raw.vectors, signal, w, centre=True)
        out[f"labels {w:g}"] = blend(raw.vectors, signal, w, centre=False)
    return out


def score(vectors, vocab, sims, analogies, assoc, base) -> dict:
    matrix = EmbeddingMatrix(np.ascontiguousarray(vectors, dtype=np.float32), vocab)
    record: dict = {"similarity": {}, "difference": {}}
    for s in sims:
        result = similarity(matrix, s)
        record["similarity"][s.name] = result.spearman
        if base is not None:
            d = similarity_difference(base[s.name], result, s)
            record["difference"][s.name] = [d.value, d.low, d.high]
        record.setdefault("_results", {})[s.name] = result
    record["analogy"] = analogy(matrix, analogies).overall.accuracy_3cosadd
    purity = label_purity(matrix, assoc, per_label=PER_LABEL, k=10, resamples=1000)
    assert purity.interval is not None
    record["purity"] = [purity.purity, purity.interval.low, purity.interval.high]
    record["qualified"] = purity.qualified
    record["shares"] = list(purity.shares)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="name=folder")
    parser.add_argument("--out", type=Path, default=Path("bench/results/defaults.md"))
    parser.add_argument("--json", type=Path, default=Path("bench/results/defaults.json"))
    args = parser.parse_args()
    sims = [read_similarity(SHARED / "wordsim" / n) for n in (CHOOSE, *CONFIRM)]
    analogies = read_analogy(ANALOGY)
    results: dict = {}
    for spec in args.model:
        name, folder = spec.split("=", 1)
        os.environ["EMBEDGEN_HOME"] = tempfile.mkdtemp(prefix="embedgen-defaults-")
        encoder = load_encoder(folder, allow_download=False, device="cpu")
        runs, assocs = {}, {}
        for data_name, (path, text_col, label_col) in DATASETS.items():
            data = prepare(read_table(path), text_col, label_col)
            t0 = time.perf_counter()
            folder = Path(os.environ["EMBEDGEN_HOME"]) / data_name
            runs[data_name] = train_and_save(encoder, data, FinetuneConfig(device="cpu"), folder)
            assocs[data_name] = label_words(data)
            best = runs[data_name].best
            took = time.perf_counter() - t0
            print(
                f"{name} {data_name}: trained in {took:.0f} s, val macro-F1 "
                f"{best.val_macro_f1:.3f}; {len(assocs[data_name])} label words",
                flush=True,
            )
        words = benchmark_words(sims, [analogies]).words
        extra = [w for a in assocs.values() for w in a if w not in set(words)]
        rows = words_from_list([*words, *extra], name="benchmarks+labels")
        t0 = time.perf_counter()
        options = MatrixOptions(method="aggregated", corpus_contexts=0, device="cpu")
        raw = build_matrix(encoder, options, words=rows)
        print(f"{name}: {raw.shape[0]:,} rows read in {time.perf_counter() - t0:.0f} s", flush=True)
        results[name] = {}
        for data_name, run in runs.items():
            table = {}
            base = None
            for variant, vectors in variants(raw, run.head).items():
                record = score(vectors, raw.vocab, sims, analogies, assocs[data_name], base)
                if variant == "untuned":
                    base = record["_results"]
                record.pop("_results")
                table[variant] = record
            results[name][data_name] = {
                "val_macro_f1": run.best.val_macro_f1,
                "rows": raw.shape[0],
                "variants": table,
            }
            print(f"{name} {data_name}: scored", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False), "utf-8")
    text = report(results)
    print(text)
    args.out.write_text(text, "utf-8")


def report(results: dict) -> str:
    lines = [
        "## The defaults' numbers",
        "",
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads), torch {torch.__version__}. Spearman ×100; differences from `untuned` with "
        "paired bootstrap 95% intervals; purity with a bootstrap interval over the words.",
    ]
    for model, by_data in results.items():
        for data_name, r in by_data.items():
            lines += [
                "",
                f"### {model}, head run on {data_name} (val macro-F1 {r['val_macro_f1']:.3f}, "
                f"{r['rows']:,} word rows)",
                "",
                "| variant | wordsim-297 (choose) | wordsim-240 | SimLex-999 | CA_translated | "
                "purity |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for variant, rec in r["variants"].items():
                cells = [variant]
                for s in (CHOOSE, *CONFIRM):
                    sp = rec["similarity"][s]
                    cell = f"{100 * sp:.1f}"
                    if s in rec["difference"]:
                        d, lo, hi = (100 * x for x in rec["difference"][s])
                        cell += f" ({d:+.1f} [{lo:+.1f}, {hi:+.1f}])"
                    cells.append(cell)
                cells.append(f"{100 * rec['analogy']:.1f}")
                p, lo, hi = rec["purity"]
                cells.append(f"{p:.3f} [{lo:.3f}, {hi:.3f}]")
                lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *verdicts(results)]
    return "\n".join(lines) + "\n"


def verdicts(results: dict) -> list[str]:
    """The protocol's rules applied to the numbers."""
    out = ["### What the rules say", ""]
    runs = [(m, d, r["variants"]) for m, by in results.items() for d, r in by.items()]
    centred = "untuned, centred"
    gain = [v[centred]["similarity"][CHOOSE] - v["untuned"]["similarity"][CHOOSE] for *_, v in runs]
    below = [
        f"{m}/{d}/{s}" for m, d, v in runs for s in CONFIRM if v[centred]["difference"][s][2] < 0
    ]
    centre = all(g > 0 for g in gain) and not below
    out.append(
        f"1. Centring: choose-set gain {', '.join(f'{100 * g:+.1f}' for g in gain)}; confirm "
        f"intervals wholly below 0: {len(below)} ({', '.join(below) or 'none'}) -> centring "
        f"{'on' if centre else 'stays off'} by default."
    )
    for family, suffix in (("without centring", ""), ("with centring", ", centred")):
        out += _rule_2(runs, family, suffix)
    return out


def _rule_2(runs: list, family: str, suffix: str) -> list[str]:
    """Rule 2 within one family of blends: the largest weight keeping 97% of the choose set on
    every run, and whether the confirm sets and purity confirm it."""
    for w in reversed(WEIGHTS):
        kind = f"labels {w:g}{suffix}"
        kept = [
            v[kind]["similarity"][CHOOSE] / v["untuned"]["similarity"][CHOOSE] for *_, v in runs
        ]
        if all(k >= 0.97 for k in kept):
            break
    else:
        return [f"2. {family}: no label weight keeps 97% of the choose set on every run."]
    out = [
        f"2. {family}: `{kind}` (choose-set similarity kept: "
        f"{', '.join(f'{100 * k:.1f}%' for k in kept)})."
    ]
    for m, d, v in runs:
        ratios = {s: v[kind]["similarity"][s] / v["untuned"]["similarity"][s] for s in CONFIRM}
        gain = _paired(v["untuned"]["shares"], v[kind]["shares"])
        ok = all(r >= 0.95 for r in ratios.values()) and gain[1] > 0
        kept_text = ", ".join(f"{s.removesuffix('.txt')} {100 * r:.1f}%" for s, r in ratios.items())
        out.append(
            f"   - {m} / {d}: confirm sets kept {kept_text}; purity "
            f"{v['untuned']['purity'][0]:.3f} -> {v[kind]['purity'][0]:.3f}, gain {gain[0]:+.3f} "
            f"[{gain[1]:+.3f}, {gain[2]:+.3f}]: {'confirmed' if ok else 'NOT confirmed'}"
        )
    return out


def _paired(before: list[float], after: list[float], resamples: int = 2000) -> list[float]:
    """The mean gain of ``after`` over ``before`` (the same words), with a paired bootstrap
    95% interval."""
    a, b = np.array(before), np.array(after)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    gains = (b[picks] - a[picks]).mean(axis=1)
    low, high = np.percentile(gains, [2.5, 97.5])
    return [float((b - a).mean()), float(low), float(high)]


if __name__ == "__main__":
    main()
