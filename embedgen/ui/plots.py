"""Plotly figures the pages show. Presentation only: the numbers come from the library.

Plotly reads the text it draws (hover, legend, ticks, labels) as a little HTML (``<b>``,
``<a href>``, entities), so tokens, words, labels and column names go in through ``_text``:
a token ``<s>`` or a label ``<b>好</b>`` shows as typed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from embedgen.compare import Curve
from embedgen.train import EpochMetrics

CJK_FONT = "Noto Sans CJK SC, Noto Sans SC, Microsoft YaHei, PingFang SC, sans-serif"


def _text(value: object) -> str:
    """A user string as Plotly text: its ``<``, ``>`` and ``&`` as entities, which Plotly shows as
    the characters."""
    return html.escape(str(value), quote=False)


def _natural(label: str) -> tuple[bool, list[object]]:
    """Sort key: "cluster 2" before "cluster 10"; the empty label last."""
    parts = re.split(r"(\d+)", label)
    return (label == "", [int(p) if p.isdigit() else p for p in parts])


def training_curves(history: Sequence[EpochMetrics]) -> go.Figure:
    """Loss (left) and validation accuracy / macro-F1 (right) per epoch."""
    epochs = [m.epoch for m in history]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Validation"))
    fig.add_scatter(x=epochs, y=[m.train_loss for m in history], name="train loss", row=1, col=1)
    fig.add_scatter(x=epochs, y=[m.val_loss for m in history], name="val loss", row=1, col=1)
    fig.add_scatter(x=epochs, y=[m.val_accuracy for m in history], name="accuracy", row=1, col=2)
    fig.add_scatter(x=epochs, y=[m.val_macro_f1 for m in history], name="macro-F1", row=1, col=2)
    return _epoch_charts(fig, len(epochs))


def _epoch_charts(fig: go.Figure, epochs: int) -> go.Figure:
    """The look of two charts per epoch side by side, a share (0 to 1) on the right. The legend
    below both: on the right it stood beside the right-hand chart only (issue 21)."""
    fig.update_xaxes(title_text="epoch", dtick=1 if epochs <= 20 else None)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(
        height=340,
        margin={"t": 30, "b": 10},
        font={"family": CJK_FONT},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> go.Figure:
    """Heatmap of validation counts: rows true label, columns predicted."""
    z = np.asarray(confusion)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[_text(label) for label in labels],
            y=[_text(label) for label in labels],
            colorscale="Blues",
            text=z,
            texttemplate="%{text}",
            hovertemplate="true %{y}<br>predicted %{x}<br>%{z} rows<extra></extra>",
        )
    )
    fig.update_layout(
        height=120 + 40 * len(labels),
        margin={"t": 10, "b": 10},
        xaxis_title="predicted",
        yaxis_title="true",
        # Labels "0" and "1" read as numbers made a numeric axis, ticked -0.5 ... 1.5.
        xaxis_type="category",
        yaxis_type="category",
        yaxis_autorange="reversed",
        font={"family": CJK_FONT},
    )
    return fig


def label_ring(points: np.ndarray, *, min_radius: float = 70.0) -> list[tuple[float, float]]:
    """Pixel offsets (ax, ay) that put the labels of ``points`` on a ring around the group.

    A token's neighbours sit within a few pixels of each other on a map of 20,000 tokens, so
    labels next to their points pile up whatever side they take. Instead each label goes to
    its own slot on a ring, in the order of the points' angles around the group's centre,
    with an arrow back to its point. The ring grows with the number of labels (about 45 px of
    arc each, at most 260 px of radius).
    """
    n = len(points)
    if n == 0:
        return []
    if n == 1:
        return [(0.0, -40.0)]
    radius = min(260.0, max(min_radius, n * 45.0 / (2 * np.pi)))
    offset = points[:, :2] - points[:, :2].mean(0)
    angle = np.arctan2(offset[:, 1], offset[:, 0])
    order = np.argsort(angle, kind="stable")
    slots = angle[order[0]] + 2 * np.pi * np.arange(n) / n
    out: list[tuple[float, float]] = [(0.0, 0.0)] * n
    for slot, i in zip(slots, order, strict=True):
        out[int(i)] = (float(radius * np.cos(slot)), float(-radius * np.sin(slot)))  # y down
    return out


def scatter_map(
    coords: np.ndarray,
    tokens: Sequence[str],
    colour: Sequence[object] | np.ndarray,
    *,
    colour_name: str,
    categorical: bool,
    highlight: dict[int, str] | None = None,
    hover_extra: Sequence[str] | None = None,
    note: str | None = None,
) -> go.Figure:
    """A WebGL scatter of a 2D or 3D map; hover shows the token, highlighted rows are labelled.

    ``highlight`` maps rows to labels, the searched token first (its label is bold on 2D maps).
    ``note`` is written above the map, e.g. which rows a sampled map shows.
    """
    three_d = coords.shape[1] == 3
    hover = (
        [_text(t) for t in tokens]
        if hover_extra is None
        else [f"{_text(t)}<br>{_text(e)}" for t, e in zip(tokens, hover_extra, strict=True)]
    )
    fig = go.Figure()
    size = (3 if len(tokens) > 5000 else 5) if not three_d else 2

    def trace(idx: np.ndarray, name: str, colour_values: object, showscale: bool) -> None:
        _add_points(fig, coords, idx, [hover[i] for i in idx], name, size, colour_values)
        if showscale:
            fig.data[-1].marker.update(showscale=True, colorbar={"title": colour_name})

    if categorical:
        names = np.array([str(v) for v in colour])
        palette = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
        for i, group in enumerate(sorted(set(names), key=_natural)):
            colour_of = "#c8c8c8" if group == "" else palette[i % len(palette)]
            trace(np.flatnonzero(names == group), _text(group) or "(none)", colour_of, False)
    else:
        trace(np.arange(len(tokens)), colour_name, np.asarray(colour, dtype=float), True)

    if highlight:
        _add_highlight(fig, coords, highlight)
    if note:
        fig.update_layout(title={"text": note, "font": {"size": 13}, "x": 0.01})
    fig.update_layout(
        height=640 if three_d else map_height(coords),
        margin={"t": 40 if note else 10, "b": 10, "l": 10, "r": 10},
        legend={"itemsizing": "constant", "title": colour_name if categorical else None},
        font={"family": CJK_FONT},
    )
    if not three_d:
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False, scaleanchor="x")
    return fig


MAP_WIDTH = 900  # pixels a 2D map's plot area is about wide on the page (the column's width)


def map_height(coords: np.ndarray, lowest: int = 380, highest: int = 760) -> int:
    """The height of a 2D map whose axes keep one scale: the points' height-to-width ratio
    at :data:`MAP_WIDTH`, within ``lowest`` and ``highest``. A fixed 640 px left wide empty
    bands above and below a flat cloud (issue 21)."""
    if len(coords) < 2:
        return highest
    span = np.ptp(coords[:, :2], axis=0)
    ratio = float(span[1] / span[0]) if span[0] > 0 else 1.0
    return int(np.clip(MAP_WIDTH * ratio * 1.05 + 60, lowest, highest))


def _add_highlight(fig: go.Figure, coords: np.ndarray, highlight: dict[int, str]) -> None:
    """Black markers for the highlighted rows, labelled: on 2D maps on a ring around the group
    with arrows to their points (the query's label bold), on 3D maps beside them."""
    three_d = coords.shape[1] == 3
    idx = np.array(list(highlight))
    labels = [_text(highlight[i]) for i in idx]
    marker = {
        "size": 9 if not three_d else 5,
        "color": "#111111",
        "line": {"width": 1.5, "color": "white"},
    }
    common = {
        "name": "search",
        "text": labels,
        "marker": marker,
        "hovertemplate": "%{text}<extra></extra>",
    }
    if three_d:
        text = {"textposition": "top center", "textfont": {"size": 14, "family": CJK_FONT}}
        fig.add_trace(
            go.Scatter3d(
                x=coords[idx, 0],
                y=coords[idx, 1],
                z=coords[idx, 2],
                mode="markers+text",
                **common,
                **text,
            )
        )
        return
    fig.add_trace(go.Scattergl(x=coords[idx, 0], y=coords[idx, 1], mode="markers", **common))
    ring = label_ring(coords[idx])
    for n, (i, label, (ax, ay)) in enumerate(zip(idx, labels, ring, strict=True)):
        fig.add_annotation(
            x=coords[i, 0],
            y=coords[i, 1],
            text=f"<b>{label}</b>" if n == 0 else label,  # the query comes first
            ax=ax,
            ay=ay,
            showarrow=True,
            arrowhead=0,
            arrowwidth=1,
            arrowcolor="#555555",
            font={"size": 14, "family": CJK_FONT, "color": "#111111"},
            bgcolor="rgba(255,255,255,0.85)",
            bordercolor="#999999",
            borderpad=2,
        )


def _add_points(
    fig: go.Figure,
    coords: np.ndarray,
    idx: np.ndarray,
    hover: list[str],
    name: str,
    size: int,
    colour: object,
) -> None:
    """One trace of the rows ``idx``: a fixed colour (a string) or values on Viridis."""
    marker: dict[str, object] = {"size": size, "opacity": 0.7}
    if isinstance(colour, str):
        marker["color"] = colour
    elif colour is not None:
        marker.update(color=colour, colorscale="Viridis", showscale=False)
    kwargs = {
        "mode": "markers",
        "name": name,
        "text": hover,
        "hovertemplate": "%{text}<extra></extra>",
        "marker": marker,
    }
    if coords.shape[1] == 3:
        fig.add_trace(go.Scatter3d(x=coords[idx, 0], y=coords[idx, 1], z=coords[idx, 2], **kwargs))
    else:
        fig.add_trace(go.Scattergl(x=coords[idx, 0], y=coords[idx, 1], **kwargs))


def tradeoff_figure(records: Sequence[dict], chosen: float | None = None) -> go.Figure:
    """Label purity (x) against word similarity (y), a line per kind of point, weights shown;
    ``chosen`` (a label weight) ringed: where the matrix being built stands."""
    fig = go.Figure()
    styles = {
        "untuned": ("#444444", "diamond"),
        "tuned": ("#d62728", "square"),
        "baseline": ("#7f7f7f", "circle-open"),
        "label weight": ("#1f77b4", "circle"),
    }
    for kind, (colour, symbol) in styles.items():
        points = [r for r in records if r["kind"] == kind and r["similarity"] is not None]
        if not points:
            continue
        fig.add_trace(
            go.Scatter(
                x=[r["purity"] for r in points],
                y=[r["similarity"] for r in points],
                mode="lines+markers+text" if len(points) > 1 else "markers+text",
                name={"baseline": "untuned ‖ α · tuned"}.get(kind, kind),
                text=[
                    f"{r['weight']:g}" if kind in ("baseline", "label weight") else ""
                    for r in points
                ],
                textposition="top center",
                hovertext=[r["option"] for r in points],
                hoverinfo="text+x+y",
                marker={"color": colour, "symbol": symbol, "size": 10},
                line={"color": colour},
            )
        )
    _ring(fig, records, chosen)
    fig.update_layout(
        height=420,
        margin={"t": 10, "b": 40, "l": 60, "r": 10},
        xaxis_title="label purity (share of neighbours with the same label)",
        yaxis_title=records[0]["similarity_measure"].split(" (")[0] if records else "",
        font={"family": CJK_FONT},
    )
    return fig


def _ring(fig: go.Figure, records: Sequence[dict], chosen: float | None) -> None:
    """Ring the point of the label weight ``chosen`` (0: the tuned projection alone)."""
    spot = ("tuned", 1.0) if chosen == 0 else ("label weight", chosen)
    mine = [
        r
        for r in records
        if chosen is not None and r["similarity"] is not None and (r["kind"], r["weight"]) == spot
    ]
    if mine:
        fig.add_trace(
            go.Scatter(
                x=[r["purity"] for r in mine],
                y=[r["similarity"] for r in mine],
                mode="markers",
                name="this matrix",
                marker={
                    "color": "rgba(0,0,0,0)",
                    "size": 22,
                    "line": {"width": 3, "color": "#2ca02c"},
                },
                hoverinfo="skip",
            )
        )


def label_counts_figure(counts: dict[str, int], label_column: str) -> go.Figure:
    """Rows per class as bars: one category per label (0/1 are names, not a scale), counts on
    the bars."""
    names, values = [_text(n) for n in counts], list(counts.values())
    label_column = _text(label_column)
    fig = go.Figure(
        go.Bar(
            x=names,
            y=values,
            text=[f"{v:,}" for v in values],
            textposition="outside",
            cliponaxis=False,
            hovertemplate=f"{label_column} %{{x}}<br>%{{y:,}} rows<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=names)
    fig.update_layout(
        title=f"{len(names)} classes",
        xaxis_title=label_column,
        yaxis_title="rows",
        yaxis_range=[0, max(values, default=0) * 1.15 or 1],
        height=320,
        margin={"t": 40, "b": 0},
        font={"family": CJK_FONT},
    )
    return fig


def compared_curves(curves: Sequence[Curve]) -> go.Figure:
    """Several runs' validation loss (left) and macro-F1 (right) per epoch, one colour a run
    in both, each run named once in the legend."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Validation loss", "Validation macro-F1"))
    colours = px.colors.qualitative.Plotly
    for n, curve in enumerate(curves):
        line = {"color": colours[n % len(colours)]}
        name = _text(curve.run)
        fig.add_scatter(
            x=curve.epoch, y=curve.val_loss, name=name, legendgroup=name, line=line, row=1, col=1
        )
        fig.add_scatter(
            x=curve.epoch,
            y=curve.val_macro_f1,
            name=name,
            legendgroup=name,
            line=line,
            showlegend=False,
            row=1,
            col=2,
        )
    return _epoch_charts(fig, max((len(c.epoch) for c in curves), default=0))
