"""The Explore page's map: the default row cap, the sample stated, highlighted rows always shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import shown
from streamlit.testing.v1 import AppTest

from embedgen.matrix import EmbeddingMatrix, save_matrix
from embedgen.projection import DEFAULT_MAX_ROWS

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60
ROWS = 400


def explore(tmp_path: Path, rows: int, vocab: tuple[str, ...] | None = None) -> AppTest:
    """The Explore page with a saved matrix of ``rows`` rows (4 clusters) opened, its rows
    named ``vocab`` (default w0, w1, ...)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 16)) * 5
    vectors = np.repeat(centres, rows // 4, axis=0) + rng.standard_normal((rows, 16))
    vocab = vocab or tuple(f"w{i}" for i in range(rows))
    folder = save_matrix(
        EmbeddingMatrix(vectors.astype(np.float32), vocab, {"method": "input"}),
        tmp_path / f"matrix-{rows}",
    )
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/5_Explore.py")
    at.run()
    at.text_input(key="explore_open").input(str(folder)).run()
    next(b for b in at.button if b.label == "Open").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture()
def home(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("EMBEDGEN_HOME", str(tmp_path / "home"))
    # The operator lets visitors open the tests' own folders.
    monkeypatch.setenv("EMBEDGEN_ALLOWED_ROOTS", str(tmp_path_factory.getbasetemp()))
    return tmp_path / "home"


@pytest.fixture()
def app(home: Path, tmp_path: Path) -> AppTest:
    return explore(tmp_path, ROWS)


def warnings_about_all_rows(at: AppTest) -> list[str]:
    return [shown(w) for w in at.warning if "A map of all" in shown(w)]


def compute_map(at: AppTest) -> None:
    next(b for b in at.button if b.label == "Compute map").click()
    at.run()
    job = at.session_state["explore_projection_job"]
    assert job.wait(TIMEOUT), "the map did not finish"
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def captions(at: AppTest) -> str:
    return " | ".join(shown(c) for c in at.caption)


def test_the_map_caps_rows_at_the_library_default(app: AppTest) -> None:
    assert app.number_input(key="explore_map_rows").value == DEFAULT_MAX_ROWS
    assert app.checkbox(key="explore_map_all").value is False
    assert f"all {ROWS} rows" in captions(app)  # 400 rows are under the cap


def test_a_capped_map_states_its_sample_and_still_shows_a_highlighted_row(app: AppTest) -> None:
    app.selectbox(key="explore_reducer").set_value("pca")
    app.number_input(key="explore_map_rows").set_value(100).run()
    assert "100 of 400 rows (random sample, seed 0)" in captions(app)
    compute_map(app)
    assert app.session_state["explore_projection_job"].stage == "PCA to 2 dims"  # named stages
    projection = next(iter(app.session_state["explore_projections"].values()))
    assert len(projection.rows) == 100
    assert "100 of 400 rows, random sample (seed 0)" in captions(app)

    left_out = next(i for i in range(ROWS) if i not in set(projection.rows.tolist()))
    app.number_input(key="explore_search_k").set_value(0)
    app.text_input(key="explore_search").input(f"w{left_out}").run()
    assert not app.exception, [e.value for e in app.exception]
    figure = app.get("plotly_chart")[0].proto.spec
    assert f"w{left_out}" in figure, "the highlighted token is missing from the map"
    assert "1 highlighted, placed near their nearest sampled rows" in captions(app)


def test_all_rows_of_a_small_matrix_need_no_warning(app: AppTest) -> None:
    app.checkbox(key="explore_map_all").check().run()
    assert f"all {ROWS} rows" in captions(app)
    assert not warnings_about_all_rows(app)


def test_all_rows_of_a_large_matrix_warn_with_an_estimate(home: Path, tmp_path: Path) -> None:
    at = explore(tmp_path, DEFAULT_MAX_ROWS + 1000)
    assert not warnings_about_all_rows(at)
    assert f"{DEFAULT_MAX_ROWS:,} of {DEFAULT_MAX_ROWS + 1000:,} rows" in captions(at)
    at.checkbox(key="explore_map_all").check().run()
    [warning] = warnings_about_all_rows(at)
    assert f"all {DEFAULT_MAX_ROWS + 1000:,} rows takes about" in warning
    assert "cancel" in warning


def test_the_map_of_a_mixed_vocabulary_keeps_to_chinese_rows_unless_told(
    home: Path, tmp_path: Path
) -> None:
    """Latin rows, Japanese forms and ##-twins crowd a Chinese reader's map as they crowd
    neighbour lists: one checkbox, on by default, keeps both to Chinese rows."""
    from embedgen.tokens import chinese_rows, is_japanese_form

    chinese = [c for c in map(chr, range(0x4E00, 0x5200)) if not is_japanese_form(c)][:300]
    others = [f"w{i}" for i in range(80)] + ["##" + c for c in chinese[:10]] + list("乗駅黒麺")
    vocab = tuple(chinese + others + [f"x{i}" for i in range(ROWS - 300 - len(others))])
    at = explore(tmp_path, ROWS, vocab)
    assert at.checkbox(key="explore_cjk").value is True
    wanted = int(chinese_rows(vocab).sum())
    assert wanted == 300
    at.selectbox(key="explore_reducer").set_value("pca").run()
    assert f"all {wanted} Chinese rows" in captions(at)
    compute_map(at)
    projection = next(iter(at.session_state["explore_projections"].values()))
    assert all(chinese_rows([vocab[r] for r in projection.rows]))
    assert len(projection.rows) == wanted
    at.checkbox(key="explore_cjk").uncheck().run()
    assert f"all {ROWS} rows" in captions(at)
    compute_map(at)
    assert {len(p.rows) for p in at.session_state["explore_projections"].values()} == {
        wanted,
        ROWS,
    }
