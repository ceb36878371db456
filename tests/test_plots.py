"""embedgen.ui.plots: the map figure and where highlighted labels go."""

from __future__ import annotations

import itertools
import math

import numpy as np

from embedgen.ui import plots
from embedgen.ui.plots import label_ring, scatter_map


def test_labels_of_a_tight_group_get_separate_slots_on_a_ring() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(11, 2)) * 1e-3  # within a pixel of each other on a real map
    offsets = label_ring(points)
    assert len(offsets) == 11
    radius = {round(math.hypot(ax, ay), 6) for ax, ay in offsets}
    assert len(radius) == 1 and 70 <= radius.pop() <= 260
    gap = min(math.dist(a, b) for a, b in itertools.combinations(offsets, 2))
    assert gap >= 2 * 70 * math.sin(math.pi / 11) - 1e-6  # evenly spaced: one chord apart


def test_each_label_sits_on_its_points_side_of_the_group() -> None:
    points = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    (rx, ry), (ux, uy), (lx, ly), (dx, dy) = label_ring(points)
    assert rx > 0 and abs(ry) < 1e-6  # right of the group
    assert uy < 0 and abs(ux) < 1e-6  # above (screen y grows downwards)
    assert lx < 0 and dy > 0
    assert label_ring(points[:1]) == [(0.0, -40.0)]
    assert label_ring(points[:0]) == []


def test_highlighted_tokens_are_marked_and_labelled_with_arrows() -> None:
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(50, 2))
    tokens = [f"字{i}" for i in range(50)]
    fig = scatter_map(
        coords,
        tokens,
        ["a" if i % 2 else "b" for i in range(50)],
        colour_name="cluster",
        categorical=True,
        highlight={3: "字3", 7: "字7", 9: "字9"},
    )
    search = [t for t in fig.data if t.name == "search"]
    assert len(search) == 1 and list(search[0].text) == ["字3", "字7", "字9"]
    notes = fig.layout.annotations
    assert [a.text for a in notes] == ["<b>字3</b>", "字7", "字9"]  # the query in bold
    assert [(a.x, a.y) for a in notes] == [tuple(coords[i]) for i in (3, 7, 9)]
    assert [(a.ax, a.ay) for a in notes] == label_ring(coords[[3, 7, 9]])
    assert all(a.showarrow for a in notes)
    assert sum(len(t.x) for t in fig.data if t.name in ("a", "b")) == 50


def test_a_3d_map_labels_its_highlights_in_the_trace() -> None:
    coords = np.random.default_rng(0).normal(size=(20, 3))
    fig = scatter_map(
        coords,
        [str(i) for i in range(20)],
        np.arange(20),
        colour_name="frequency",
        categorical=False,
        highlight={1: "1", 2: "2"},
    )
    search = next(t for t in fig.data if t.name == "search")
    assert search.mode == "markers+text" and list(search.text) == ["1", "2"]
    assert not fig.layout.annotations


def test_label_chart_draws_labels_as_categories_with_counts_on_the_bars() -> None:
    from embedgen.ui.plots import label_counts_figure

    fig = label_counts_figure({"0": 900, "1": 100, "10": 5}, "label")
    bar = fig.data[0]
    assert fig.layout.xaxis.type == "category"  # 0/1/10 are names, not a scale
    assert list(bar.x) == ["0", "1", "10"]
    assert list(bar.text) == ["900", "100", "5"]
    assert fig.layout.title.text == "3 classes"
    assert fig.layout.yaxis.range[1] > 900  # room for the count above the tallest bar


def test_a_note_above_the_map_says_which_rows_it_shows() -> None:
    coords = np.random.default_rng(0).normal(size=(10, 2))
    kwargs = {"colour_name": "cluster", "categorical": True}
    note = "10 of 400 rows, random sample (seed 0)"
    fig = scatter_map(coords, [str(i) for i in range(10)], [""] * 10, note=note, **kwargs)
    assert fig.layout.title.text == note
    plain = scatter_map(coords, [str(i) for i in range(10)], [""] * 10, **kwargs)
    assert plain.layout.title.text is None


def test_a_confusion_matrix_of_numbered_labels_ticks_the_labels() -> None:
    """waimai's labels are "0" and "1": plotly read them as numbers and ticked -0.5 ... 1.5."""
    fig = plots.confusion_figure([[40, 2], [3, 55]], ["0", "1"])
    assert fig.layout.xaxis.type == "category" and fig.layout.yaxis.type == "category"
    assert list(fig.data[0].x) == ["0", "1"] and list(fig.data[0].y) == ["0", "1"]


def test_a_flat_map_is_drawn_lower_than_a_tall_one_on_one_scale() -> None:
    """A fixed 640 px box around a flat cloud left wide empty bands (the axes keep one scale)."""
    rng = np.random.default_rng(0)
    flat = rng.normal(size=(500, 2)) * [10.0, 2.0]
    tall = rng.normal(size=(500, 2)) * [2.0, 10.0]
    kw = {"colour_name": "cluster", "categorical": True}
    flat_fig = scatter_map(flat, ["t"] * 500, ["a"] * 500, **kw)
    tall_fig = scatter_map(tall, ["t"] * 500, ["a"] * 500, **kw)
    assert flat_fig.layout.height < 640 <= tall_fig.layout.height
    assert flat_fig.layout.yaxis.scaleanchor == "x", "one scale on both axes still"
