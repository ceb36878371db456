"""The Library page and "open the saved one" (issue 21, item 3): a run or matrix saved in
one visit is found and opened in another without typing a path; only the visitor who made it
renames or deletes it on a shared server; a build that would repeat a saved matrix offers it."""

from __future__ import annotations

from pathlib import Path

from conftest import unmarked
from streamlit.testing.v1 import AppTest
from test_app import build_default_matrix, click, go, load_model, texts, wait_for
from test_app_choices import build, train


def another_visitor() -> AppTest:
    """A second browser on the same server (the same $EMBEDGEN_HOME), with nothing open."""
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.run()
    return at


def pick(at: AppTest, starts: str) -> AppTest:
    box = at.selectbox(key="library_pick")
    box.set_value(next(o for o in box.options if o.startswith(starts))).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def buttons(at: AppTest) -> list[str]:
    return [unmarked(b.label) for b in at.button]


def test_a_run_and_its_matrix_open_in_another_visit(app: AppTest, tiny_model_dir: Path) -> None:
    train(app, tiny_model_dir)
    build_default_matrix(app)
    run = app.session_state["train_run"]
    (built,) = app.session_state["matrices"].values()

    other = another_visitor()
    go(other, "8_Library")
    listed = other.selectbox(key="library_pick").options
    assert [o.split(" · ")[1] for o in listed] == ["matrix", "run"], listed
    pick(other, Path(run.folder).name)
    # Shared server, workspaces off: the run is the other visitor's to change, not this one's.
    assert "Rename" not in buttons(other) and "Delete the run, with its saved matrices…" not in (
        buttons(other)
    )
    assert any("Only the visitor who trained this run" in t for t in texts(other.caption))
    click(other, "Open")
    assert other.session_state["train_run"].folder == run.folder
    (opened,) = other.session_state["matrices"].values()
    assert opened.folder == built.folder and opened.matrix.shape == built.matrix.shape
    go(other, "7_Export")
    assert other.selectbox(key="export_matrix").value == other.session_state["current_matrix"]
    go(other, "5_Explore")
    assert other.selectbox(key="explore_a").value == other.session_state["current_matrix"]


def test_rename_then_delete_after_a_confirmation(app: AppTest, tiny_model_dir: Path) -> None:
    train(app, tiny_model_dir)
    build_default_matrix(app)
    (entry,) = app.session_state["matrices"].values()
    folder = Path(entry.folder)
    go(app, "8_Library")
    for show, kinds in (("Matrices", ["matrix"]), ("Runs", ["run"]), ("All", ["matrix", "run"])):
        app.get("button_group")[0].set_value(show).run()  # "Show": All / Runs / Matrices
        listed = app.selectbox(key="library_pick").options
        assert [o.split(" · ")[1] for o in listed] == kinds, (show, listed)
    pick(app, folder.name)
    app.text_input(key=f"library_title_{folder}").input("酒店 第一版").run()
    click(app, "Rename")
    assert app.selectbox(key="library_pick").value.startswith("酒店 第一版 · matrix"), (
        "the renamed item stays chosen"
    )
    assert (folder / "title.txt").read_text("utf-8").strip() == "酒店 第一版"
    run = Path(app.session_state["train_run"].folder)
    pick(app, run.name)  # not the first in the list: it stays chosen after its rename
    app.text_input(key=f"library_title_{run}").input("第一次训练").run()
    click(app, "Rename")
    assert app.selectbox(key="library_pick").value.startswith("第一次训练 · run")
    pick(app, "酒店 第一版")

    click(app, "Delete the matrix…")
    assert any("for good" in t for t in texts(app.warning))
    click(app, "Keep it")
    assert folder.is_dir(), "kept when the user said keep"
    click(app, "Delete the matrix…")
    click(app, "Yes, delete it")
    assert not folder.exists()
    assert app.session_state["matrices"] == {}, "the session let go of the deleted matrix"
    assert [o.split(" · ")[1] for o in app.selectbox(key="library_pick").options] == ["run"]


def test_a_build_that_repeats_a_saved_matrix_offers_to_open_it(
    app: AppTest, tiny_model_dir: Path
) -> None:
    load_model(app, tiny_model_dir)
    build(app)
    (first,) = app.session_state["matrices"].values()
    stamp = (Path(first.folder) / "manifest.json").stat().st_mtime_ns

    other = another_visitor()
    load_model(other, tiny_model_dir)
    build(other)  # the same settings: the same folder
    assert other.session_state["matrix_job"] is None, "nothing is built before the answer"
    assert "Open it, replace it, or keep both?" in " ".join(texts(other.warning))
    click(other, "Open the saved one")
    (opened,) = other.session_state["matrices"].values()
    assert opened.folder == first.folder and other.session_state["matrix_job"] is None
    assert other.session_state["current_matrix"] == Path(first.folder).name
    assert (Path(first.folder) / "manifest.json").stat().st_mtime_ns == stamp, "not rebuilt"


def test_two_runs_compared_side_by_side(app: AppTest, tiny_model_dir: Path) -> None:
    train(app, tiny_model_dir)  # dim 8
    build_default_matrix(app)
    go(app, "3_Train")
    app.number_input(key="train_dim").set_value(16)
    click(app, "Start training")
    wait_for(app, "train_job")
    build_default_matrix(app)
    first, second = sorted(
        p.name for p in (Path(app.session_state["train_run"].folder).parent).iterdir()
    )

    go(app, "8_Library")
    box = app.multiselect(key="library_compare")
    box.set_value([o for o in box.options if o.split(" · ")[1] == "run"]).run()
    assert not app.exception, [e.value for e in app.exception]
    tables = [t.value for t in app.dataframe]
    diff = next(t for t in tables if "setting" in t.columns)
    assert list(diff["setting"]) == ["projection size d (dim)"], "only the dim differs"
    assert {tuple(diff[first]), tuple(diff[second])} == {("8",), ("16",)}
    metrics = next(t for t in tables if "macro-F1" in t.columns)
    assert set(metrics["run"]) == {first, second} and metrics["epochs"].tolist() == [1, 1]
    assert any(c.proto.spec for c in app.get("plotly_chart")), "the curves are drawn"
    assert any("contextual" in t for t in texts(app.caption)), "which matrix is compared"

    app.text_input(key="library_compare_words").input("好，坏").run()
    assert not app.exception, [e.value for e in app.exception]
    lists = [t.value for t in app.dataframe if "neighbour" in t.value.columns]
    assert len(lists) == 4, "two words, a list from each run"
    assert all(len(t) == 5 for t in lists)
