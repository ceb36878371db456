"""Fixtures: tiny models and labelled tables built here, loaded through the real loading code."""

from __future__ import annotations

import os
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never reach for a model hub from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("EMBEDGEN_NO_WARMUP", "1")  # the app's UMAP warm-up would take CPU from tests

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Characters whose presence decides the label in the synthetic set.
POSITIVE = "好美棒赞优爽香甜"
NEGATIVE = "坏差烂糟劣臭苦慢"
FILLER = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说"
    "产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使"
    "点从业本去把性应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看"
    "原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象"
    "员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几"
    "九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油"
    "思术极交受联什认六共权收证改清己"
)
LATIN = ["the", "food", "good", "bad", "##s", "##ing", "12", "3"]


def cjk_vocab() -> dict[str, int]:
    """A WordPiece vocabulary: specials, unused slots, CJK characters, a few ## pieces, Latin."""
    chars = list(dict.fromkeys(POSITIVE + NEGATIVE + FILLER + "，。！？"))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused1]", "[unused2]"]
    tokens += chars + ["##" + c for c in chars[:40]] + LATIN
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def build_tiny_bert(folder: Path, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a random-init BERT with a CJK WordPiece tokenizer to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    vocab = cjk_vocab()
    tokenizer = BertTokenizerFast(vocab=vocab)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=160,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_xlmr(folder: Path, *, hidden: int = 16, seed: int = 0) -> Path:
    """Save a random-init XLM-R with a SentencePiece-style Unigram tokenizer ("▁" word starts)."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    torch.manual_seed(seed)
    chars = list(dict.fromkeys(POSITIVE + NEGATIVE + FILLER[:60]))
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + c, -2.0) for c in chars] + [(c, -3.0) for c in chars]
    pieces += [("\u2581中国", -1.0), ("\u2581", -4.0), ("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizerFast(vocab=pieces)
    config = XLMRobertaConfig(
        vocab_size=len(pieces),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=160,
        pad_token_id=tokenizer.pad_token_id,
    )
    XLMRobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True, scope="session")
def _embedgen_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nothing a test writes lands in the real ~/.embedgen (tests may point elsewhere)."""
    home = tmp_path_factory.mktemp("embedgen-home")
    os.environ["EMBEDGEN_HOME"] = str(home)
    return home


@pytest.fixture(autouse=True)
def _stop_app_worker() -> Iterator[None]:
    """A worker the app started for a test (embedgen.jobs.ensure_worker) ends with it."""
    yield
    jobs = sys.modules.get("embedgen.jobs")
    if jobs is not None:
        jobs.stop_started_worker()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path):
    """Loaded once per session through load_encoder; tests must not change it."""
    from embedgen.models import load_encoder

    return load_encoder(str(tiny_model_dir), allow_download=False, device="cpu")


def synthetic_rows(n: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) pairs where one POSITIVE or NEGATIVE character decides the label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "正面" if i % 2 == 0 else "负面"
        cue = rng.choice(POSITIVE if label == "正面" else NEGATIVE)
        words = [rng.choice(FILLER) for _ in range(rng.randint(6, 14))]
        words.insert(rng.randrange(len(words) + 1), cue)
        if rng.random() < 0.5:  # a second cue makes the signal stronger without changing it
            words.insert(
                rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "正面" else NEGATIVE)
            )
        rows.append(("".join(words), label))
    return rows


def cue_rows(n: int = 400, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) pairs whose cue character stands as a word of its own (between commas),
    so that word statistics find it: with 400 rows the cues lean to their label beyond chance
    (tokenstats.significant: z >= 3, seen >= 10 times), as label purity needs."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "正面" if i % 2 == 0 else "负面"
        cue = rng.choice(POSITIVE if label == "正面" else NEGATIVE)
        left, right = (
            "".join(rng.choice(FILLER) for _ in range(rng.randint(3, 7))) for _ in range(2)
        )
        rows.append((f"{left}，{cue}，{right}", label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], *, encoding: str = "utf-8") -> Path:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["text", "label"])
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def workbook_bytes(rows: list[tuple[str, str]], *, sheet: str = "数据") -> bytes:
    """An .xlsx whose first sheet holds only a note and whose ``sheet`` holds the rows."""
    import io

    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "说明"
    book.active.append(["标注说明：正面/负面"])
    data = book.create_sheet(sheet)
    data.append(["text", "label"])
    for row in rows:
        data.append(list(row))
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


@pytest.fixture()
def synthetic_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "reviews.csv", synthetic_rows())


@pytest.fixture()
def synthetic_data(synthetic_csv: Path):
    from embedgen.data import prepare
    from embedgen.table import read_table

    return prepare(read_table(synthetic_csv), "text", "label")


@pytest.fixture()
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not present at {SHARED_DATA}: real-data tests need it")
    return SHARED_DATA


# Small labelled tables for the reading (test_table) and labelled-data (test_data) tests.

REVIEWS = [
    ("这家店的菜很好吃", "1"),
    ("送餐太慢了，菜都凉了", "0"),
    ("味道不错，下次还点", "1"),
    ("难吃，再也不点了", "0"),
    ("服务态度很好", "1"),
    ("量太少，不值这个价", "0"),
]


def csv_text(rows, header=("label", "review"), sep=",", newline="\n") -> str:
    lines = [sep.join(header)] if header else []
    lines += [sep.join((label, text)) for text, label in rows]
    return newline.join(lines) + newline


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


VOCAB = ("[PAD]", "好", "##好", "坏", "▁中国", "国", "\\", "héllo")


def make_matrix(vocab=VOCAB, dims: int = 6, seed: int = 0):
    """A random matrix over ``vocab`` whose manifest says "input"."""
    import numpy as np

    from embedgen.matrix import EmbeddingMatrix

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(vocab), dims)).astype(np.float32)
    return EmbeddingMatrix(vectors=vectors, vocab=tuple(vocab), manifest={"method": "input"})


@pytest.fixture
def matrix():
    """A small random matrix over VOCAB (6 dims)."""
    return make_matrix()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture()
def app(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
):  # an AppTest of the whole app, run once
    """The app, as a visitor opens it, with its own $EMBEDGEN_HOME."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    # The operator lets visitors open the tests' own folders (tiny models, matrices).
    monkeypatch.setenv("EMBEDGEN_ALLOWED_ROOTS", str(tmp_path_factory.getbasetemp()))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.run()
    return at


def unmarked(text: str) -> str:
    """What the browser shows of Markdown ``text``: user strings reach Streamlit escaped
    (embedgen.ui.markup.plain), so the escapes and word joiners are taken out."""
    return re.sub(r"\\(.)", r"\1", str(text)).replace("\u2060", "")


def shown(element) -> str:
    """What the browser shows of an AppTest element's Markdown (:func:`unmarked`)."""
    return unmarked(element.value)
