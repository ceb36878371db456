"""Blending: the untuned rows kept whole, the run's label signal added as a few columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedgen.blend import blend, label_signal, logits, projected, unit_centred
from embedgen.errors import BadConfig
from embedgen.train.head import Head


def test_unit_centred_rows_have_mean_zero_before_scaling_and_length_one() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)) + 5.0
    u = unit_centred(x)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        u * np.linalg.norm(x - x.mean(0), axis=1)[:, None], x - x.mean(0), atol=1e-4
    )


def test_label_signal_keeps_only_the_leaning_between_labels() -> None:
    scores = np.array([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [12.0, 10.0]])
    s = label_signal(scores)
    np.testing.assert_allclose(s.sum(axis=1), 0.0, atol=1e-6)  # a row's own mean removed
    np.testing.assert_allclose(s[2], 0.0, atol=1e-6)  # no leaning: no signal
    np.testing.assert_allclose(s[0], s[3], atol=1e-6)  # a shift of every score changes nothing
    np.testing.assert_allclose(np.sqrt((s**2).sum(axis=1).mean()), 1.0, rtol=1e-5)


def test_shrink_zeroes_the_weakest_leanings() -> None:
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 0.0], [0.0, 5.0]])
    s = label_signal(scores, shrink=0.5)
    assert np.allclose(s[:2], 0.0) and not np.allclose(s[2:], 0.0)
    with pytest.raises(BadConfig):
        label_signal(scores, shrink=1.0)


def test_blend_keeps_the_untuned_cosines_where_the_label_columns_agree() -> None:
    rng = np.random.default_rng(1)
    untuned = rng.normal(size=(20, 6))
    label = np.zeros((20, 2), dtype=np.float32)
    rows = blend(untuned, label, 1.0)
    u = untuned / np.linalg.norm(untuned, axis=1, keepdims=True)
    np.testing.assert_allclose(rows[:, :6] @ rows[:, :6].T, u @ u.T, atol=1e-5)
    centred = blend(untuned, label, 1.0, centre=True)
    c = unit_centred(untuned)
    np.testing.assert_allclose(centred[:, :6] @ centred[:, :6].T, c @ c.T, atol=1e-5)
    assert rows.shape == (20, 8) and np.allclose(rows[:, 6:], 0)
    label[:10, 0], label[10:, 1] = 1.0, 1.0
    heavy = blend(untuned, label, 3.0)
    unit = heavy / np.linalg.norm(heavy, axis=1, keepdims=True)
    within = (unit[:10] @ unit[:10].T).mean()
    across = (unit[:10] @ unit[10:].T).mean()
    assert within > across + 0.5, "a heavy label weight pulls the rows of a label together"
    with pytest.raises(BadConfig):
        blend(untuned, label, -1.0)


def test_logits_and_projection_are_the_heads_own() -> None:
    torch.manual_seed(0)
    head = Head(6, 3, 2)
    head.train()  # dropout on: the helpers must switch it off, then back
    x = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)
    with torch.no_grad():
        head.eval()
        expected = head(torch.tensor(x)).numpy()
        expected_projection = head.project(torch.tensor(x)).numpy()
        head.train()
    np.testing.assert_allclose(logits(head, x), expected, rtol=1e-5)
    np.testing.assert_allclose(projected(head, x), expected_projection, rtol=1e-5)
    assert head.training
