"""embedgen.ui.plots: the map figure and where highlighted labels go."""

from __future__ import annotations

import numpy as np

from embedgen.ui.plots import label_positions, scatter_map


def test_labels_point_away_from_the_group_centre() -> None:
    points = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.7, 0.7]])
    assert label_positions(points) == [
        "middle right",
        "top center",
        "middle left",
        "bottom center",
        "top right",
    ]
    assert label_positions(points[:1]) == ["top center"]


def test_highlighted_tokens_get_their_own_labelled_trace() -> None:
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
    assert len(search) == 1
    assert list(search[0].text) == ["字3", "字7", "字9"]
    assert list(search[0].textposition) == label_positions(coords[[3, 7, 9]])
    assert len(set(search[0].textposition)) > 1  # spread out, not all above their points
    assert sum(len(t.x) for t in fig.data if t.name in ("a", "b")) == 50
