"""Plotly figures the pages show. Presentation only: the numbers come from the library."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from embedgen.finetune import EpochMetrics

CJK_FONT = "Noto Sans CJK SC, Noto Sans SC, Microsoft YaHei, PingFang SC, sans-serif"


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
    fig.update_xaxes(title_text="epoch", dtick=1 if len(epochs) <= 20 else None)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=320, margin={"t": 30, "b": 10}, font={"family": CJK_FONT})
    return fig


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> go.Figure:
    """Heatmap of validation counts: rows true label, columns predicted."""
    z = np.asarray(confusion)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(labels),
            y=list(labels),
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
        yaxis_autorange="reversed",
        font={"family": CJK_FONT},
    )
    return fig


_OUTWARD = (
    "middle right",
    "top right",
    "top center",
    "top left",
    "middle left",
    "bottom left",
    "bottom center",
    "bottom right",
)


def label_positions(points: np.ndarray) -> list[str]:
    """Plotly text positions that put each label on the side facing away from the group.

    A token's neighbours sit close together on a map, and labels all above their points
    pile up; pointing each label away from the group's centre spreads them out.
    """
    if len(points) < 2:
        return ["top center"] * len(points)
    offset = points[:, :2] - points[:, :2].mean(0)
    angle = np.degrees(np.arctan2(offset[:, 1], offset[:, 0])) % 360
    sector = np.round(angle / 45).astype(int) % 8
    return [_OUTWARD[i] for i in sector]


def scatter_map(
    coords: np.ndarray,
    tokens: Sequence[str],
    colour: Sequence[object] | np.ndarray,
    *,
    colour_name: str,
    categorical: bool,
    highlight: dict[int, str] | None = None,
    hover_extra: Sequence[str] | None = None,
) -> go.Figure:
    """A WebGL scatter of a 2D or 3D map; hover shows the token, highlighted rows are labelled."""
    three_d = coords.shape[1] == 3
    hover = (
        list(tokens)
        if hover_extra is None
        else [f"{t}<br>{e}" for t, e in zip(tokens, hover_extra, strict=True)]
    )
    fig = go.Figure()
    marker_size = 3 if len(tokens) > 5000 else 5

    def trace(idx: np.ndarray, name: str, colour_values: object, showscale: bool) -> None:
        kwargs = {
            "mode": "markers",
            "name": name,
            "text": [hover[i] for i in idx],
            "hovertemplate": "%{text}<extra></extra>",
            "marker": {"size": marker_size if not three_d else 2, "opacity": 0.7},
        }
        if isinstance(colour_values, str):
            kwargs["marker"]["color"] = colour_values
        elif colour_values is not None:
            kwargs["marker"].update(
                color=colour_values,
                colorscale="Viridis",
                showscale=showscale,
                colorbar={"title": colour_name} if showscale else None,
            )
        if three_d:
            fig.add_trace(
                go.Scatter3d(x=coords[idx, 0], y=coords[idx, 1], z=coords[idx, 2], **kwargs)
            )
        else:
            fig.add_trace(go.Scattergl(x=coords[idx, 0], y=coords[idx, 1], **kwargs))

    if categorical:
        names = np.array([str(v) for v in colour])
        palette = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
        for i, group in enumerate(sorted(set(names), key=_natural)):
            colour_of = "#c8c8c8" if group == "" else palette[i % len(palette)]
            trace(np.flatnonzero(names == group), group or "(none)", colour_of, False)
    else:
        trace(np.arange(len(tokens)), colour_name, np.asarray(colour, dtype=float), True)

    if highlight:
        idx = np.array(list(highlight))
        labels = [highlight[i] for i in idx]
        common = {
            "mode": "markers+text",
            "name": "search",
            "text": labels,
            "textposition": label_positions(coords[idx]),
            "textfont": {"size": 14, "color": "#d62728", "family": CJK_FONT},
            "marker": {
                "size": 9 if not three_d else 5,
                "color": "#d62728",
                "line": {"width": 1, "color": "white"},
            },
            "hovertemplate": "%{text}<extra></extra>",
        }
        if three_d:
            fig.add_trace(
                go.Scatter3d(x=coords[idx, 0], y=coords[idx, 1], z=coords[idx, 2], **common)
            )
        else:
            fig.add_trace(go.Scattergl(x=coords[idx, 0], y=coords[idx, 1], **common))
    fig.update_layout(
        height=640,
        margin={"t": 10, "b": 10, "l": 10, "r": 10},
        legend={"itemsizing": "constant", "title": colour_name if categorical else None},
        font={"family": CJK_FONT},
    )
    if not three_d:
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False, scaleanchor="x")
    return fig
