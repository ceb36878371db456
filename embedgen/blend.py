"""Keep the general geometry and add the label signal: the untuned rows beside a few label columns.

Fine-tuning sharpens label neighbourhoods and wrecks everything else: on multilingual-e5-small,
words passed through a head tuned on reviews fell from wordsim-240 63 to 21. A blended row is

    [ unit(untuned row)  ‖  weight · label(row) ]

where ``label(row)`` is what the run's classifier says of the row: its logits, each class centred
over the rows and the row's own mean removed (only the leaning between labels is left), scaled
to unit root-mean-square. With C labels that is C columns beside the untuned hundreds.

The untuned rows are not centred in a matrix's blend (``centre=False``): centring depends on
which rows are in the matrix, and it lost 5 to 10 points of word similarity on held-back sets.
The default weight, 0.1 (``matrix.types.DEFAULT_LABEL_WEIGHT``), was chosen by the protocol in
BENCHMARKS.md ("The defaults' numbers"): it keeps 99-103% of the untuned word similarity on
both real models and both labelled files, and raises label purity with an interval above 0.
``shrink`` (take a quantile of the leaning off every row, so rows the classifier hardly leans
on keep their geometry) helped only at the lightest weights and lost at the others, so it is
off. :func:`embedgen.report.tradeoff` draws the curve; ``weight`` is the one knob.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from embedgen.errors import BadConfig
from embedgen.train.head import Head

Matrix = npt.NDArray[np.float32]
SHRINK = 0.0  # the quantile of the leaning taken off every row's leaning (off: see above)


def unit_centred(rows: npt.ArrayLike) -> Matrix:
    """``rows`` minus their mean, each scaled to length 1 (all-zero rows stay zero)."""
    x = np.asarray(rows, dtype=np.float64)
    x = x - x.mean(axis=0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32)


def logits(head: Head, hidden: npt.ArrayLike) -> Matrix:
    """The classifier's logits for hidden-state rows (the head's full path, no dropout)."""
    return _through(head, hidden, head.forward, head.classifier.out_features)


def projected(head: Head, hidden: npt.ArrayLike) -> Matrix:
    """Hidden-state rows through the head's trained projection."""
    return _through(head, hidden, head.project, head.projection.out_features)


def _through(head: Head, hidden: npt.ArrayLike, fn: Any, dims: int, batch: int = 8192) -> Matrix:
    was = head.training
    head.eval()
    at = next(head.parameters()).device
    x = torch.as_tensor(np.asarray(hidden, dtype=np.float32))
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            out.append(fn(x[start : start + batch].to(at)).float().cpu())
    head.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, dims), dtype=np.float32)


def label_signal(scores: npt.ArrayLike, shrink: float = SHRINK) -> Matrix:
    """Per-row label leaning from class ``scores`` (rows x classes): centred per class, each
    row's mean removed, shrunk by the ``shrink`` quantile of the leaning's length, unit RMS."""
    if not 0 <= shrink < 1:
        raise BadConfig(f"shrink must be in [0, 1) (got {shrink}).")
    s = np.asarray(scores, dtype=np.float64)
    s = s - s.mean(axis=0)
    s = s - s.mean(axis=1, keepdims=True)
    length = np.linalg.norm(s, axis=1)
    tau = float(np.quantile(length, shrink)) if len(length) else 0.0
    keep = np.maximum(length - tau, 0.0)
    scale = np.divide(keep, length, out=np.zeros_like(length), where=length > 0)
    s = s * scale[:, None]
    rms = float(np.sqrt((s**2).sum(axis=1).mean())) if len(s) else 0.0
    return (s / rms if rms > 0 else s).astype(np.float32)


def unit(rows: npt.ArrayLike) -> Matrix:
    """Each row scaled to length 1 (all-zero rows stay zero)."""
    x = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32)


def blend(
    untuned: npt.ArrayLike, label: npt.ArrayLike, weight: float, *, centre: bool = False
) -> Matrix:
    """``[unit(untuned) ‖ weight · label]``: the rows with the label columns beside; with
    ``centre``, the untuned rows are centred over the rows present first."""
    if weight < 0:
        raise BadConfig(f"label weight must be 0 or more (got {weight}).")
    rows = unit_centred(untuned) if centre else unit(untuned)
    return np.hstack([rows, weight * np.asarray(label, np.float32)]).astype(np.float32)
