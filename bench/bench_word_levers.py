"""Levers on static word vectors read from an encoder, beyond what the product builds: more and
other templates, geometry after centring, prompts' <mask> states and the model's own sentence
vector. Wordsim-240 / 297 / SimLex Spearman x100 of each, on the benchmarks' 4,471 words.

    python bench/bench_word_levers.py [--model /root/.embedgen/models/e5-small]

Reads each word in 14 templates (the product's 8, then 6 more) and keeps the states of its
pieces (lone SentencePiece marker left out) at layers 6-12; then the 5 prompts. About 15
minutes on 2 CPU cores for multilingual-e5-small. The reference row is what ``aggregated``
with generated contexts builds (four templates, last layer, centred). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedgen.evaluate import read_analogy, read_similarity  # noqa: E402
from embedgen.models import load_encoder  # noqa: E402
from embedgen.report import benchmark_words  # noqa: E402
from embedgen.words import LONE_MARKER, TEMPLATES  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MORE = ("“{}”是什么意思？", "{}的意思", "我喜欢{}。", "这里有{}。", "看到{}了吗？", "{}和其他东西")
LAYERS = list(range(6, 13))


def word_states(encoder, words: list[str], template: str) -> np.ndarray:
    """words x layers x hidden: the mean state of each word's pieces in ``template``."""
    tok, start = encoder.tokenizer, template.index("{}")
    lone = tok.get_vocab().get(LONE_MARKER)
    out = np.zeros((len(words), len(LAYERS), encoder.info.hidden_size), dtype=np.float32)
    for s in range(0, len(words), 128):
        chunk = words[s : s + 128]
        enc = tok(
            [template.replace("{}", w) for w in chunk],
            padding=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            hidden = encoder.model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                output_hidden_states=True,
            ).hidden_states
        states = torch.stack([hidden[i] for i in LAYERS], 2)
        for j, w in enumerate(chunk):
            real = (enc["special_tokens_mask"][j] == 0) & (enc["attention_mask"][j] == 1)
            if lone is not None:
                real &= enc["input_ids"][j] != lone
            offsets = enc["offset_mapping"][j].tolist()
            pos = [
                k
                for k, (a, b) in enumerate(offsets)
                if real[k] and a < start + len(w) and b > start
            ]
            out[s + j] = states[j, pos].mean(0).numpy()
    return out


def prompt_vectors(
    encoder, words: list[str], template: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The mean of every token's last state (e5's sentence vector) and the <mask> state."""
    tok = encoder.tokenizer
    mean = np.zeros((len(words), encoder.info.hidden_size), dtype=np.float32)
    mask = np.zeros_like(mean) if tok.mask_token in template else None
    for s in range(0, len(words), 128):
        enc = tok(
            [template.replace("{}", w) for w in words[s : s + 128]],
            padding=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            last = encoder.model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        mean[s : s + 128] = ((last * m).sum(1) / m.sum(1)).numpy()
        if mask is not None:
            mask[s : s + 128] = last[enc["input_ids"] == tok.mask_token_id].numpy()
    return mean, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/root/.embedgen/models/e5-small")
    args = parser.parse_args()
    started = time.time()
    sims = [read_similarity(p) for p in sorted((DATA / "wordsim").glob("*.txt"))]
    analogy = [read_analogy(p) for p in sorted((DATA / "analogy").rglob("*.txt"))]
    words = list(benchmark_words(sims, analogy).words)
    row = {w: i for i, w in enumerate(words)}
    encoder = load_encoder(args.model, allow_download=False, device="cpu")
    templates = [*TEMPLATES, *MORE]
    states = np.stack([word_states(encoder, words, t) for t in templates])  # T x W x L x d

    def score(m: np.ndarray) -> list[float]:
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
        out = []
        for s in sims:
            a = [row[p.first] for p in s.pairs]
            b = [row[p.second] for p in s.pairs]
            out.append(100 * spearmanr((m[a] * m[b]).sum(1), [p.score for p in s.pairs]).statistic)
        return out

    def agg(ts: list[int], layers: tuple[int, ...] = (12,)) -> np.ndarray:
        at = [LAYERS.index(layer) for layer in layers]
        return states[ts][:, :, at].mean(2).mean(0)

    def centre(m: np.ndarray) -> np.ndarray:
        return m - m.mean(0)

    def unit(m: np.ndarray) -> np.ndarray:
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    four = centre(agg([0, 1, 2, 3]))
    u, sv, vt = np.linalg.svd(four, full_matrices=False)
    rows: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("reference: 4 templates, last layer, centred", lambda: four),
        *[
            (f"template {t} alone ({templates[t]})", lambda t=t: centre(agg([t])))
            for t in range(len(templates))
        ],
        ("all 14 templates", lambda: centre(agg(list(range(len(templates)))))),
        ("4 templates, layers 11-12", lambda: centre(agg([0, 1, 2, 3], (11, 12)))),
        *[
            (f"4 templates, layer {layer}", lambda layer=layer: centre(agg([0, 1, 2, 3], (layer,))))
            for layer in LAYERS[:-1]
        ],
        ("4 templates, z-scored dimensions", lambda: four / four.std(0)),
        *[
            (f"4 templates, soft whitening {a}", lambda a=a: u * sv ** (1 - a))
            for a in (0.1, 0.3, 0.5)
        ],
        *[
            (
                f"4 templates, top {k} directions removed",
                lambda k=k: four - (four @ vt[:k].T) @ vt[:k],
            )
            for k in (1, 2, 3)
        ],
    ]
    mask = encoder.tokenizer.mask_token
    prompts = [
        "query: {}",
        "passage: {}",
        f"“{{}}”的意思是{mask}。",
        f'This word : "{{}}" means {mask} .',
        f"“{{}}”这个词的意思是{mask}。",
    ]
    for p in prompts:
        mean, at_mask = prompt_vectors(encoder, words, p)
        rows.append((f"sentence vector of {p}", lambda mean=mean: centre(mean)))
        rows.append(
            (
                f"sentence vector of {p} beside the reference",
                lambda mean=mean: np.hstack([unit(centre(mean)), unit(four)]),
            )
        )
        if at_mask is not None:
            rows.append((f"<mask> state of {p}", lambda m=at_mask: centre(m)))
            rows.append(
                (
                    f"<mask> state of {p} beside the reference",
                    lambda m=at_mask: np.hstack([unit(centre(m)), unit(four)]),
                )
            )
    names = " | ".join(s.name for s in sims)
    print(f"| lever | {names} |\n| --- |" + " --- |" * len(sims))
    for label, make in rows:
        print(f"| {label} | " + " | ".join(f"{x:.1f}" for x in score(make())) + " |")
    print(f"\n{args.model} · {len(words):,} words · {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
