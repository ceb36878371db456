"""Post-processing: each step's defining property, and apply()'s order and records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedgen.errors import BadConfig
from embedgen.postprocess import (
    PostProcess,
    all_but_the_top,
    apply,
    center,
    l2_normalize,
    pca,
    zscore,
)


@pytest.fixture
def vectors() -> np.ndarray:
    """60 rows x 8 dims, shifted away from the origin, with unequal variances per dim."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    return (x * np.arange(1, 9, dtype=np.float32) + 3.0).astype(np.float32)


def test_center_gives_every_dimension_mean_zero(vectors):
    out = center(vectors)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)


def test_all_but_the_top_removes_the_dominant_direction():
    rng = np.random.default_rng(1)
    common = np.zeros(16, dtype=np.float32)
    common[3] = 1.0
    # every row shares a large component along `common`, as anisotropic word vectors do
    x = rng.standard_normal((200, 16)).astype(np.float32) * 0.1
    x += rng.standard_normal((200, 1)).astype(np.float32) * 10.0 * common
    top = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)[2][0]
    out = all_but_the_top(x, 1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out @ top, 0.0, atol=1e-4)
    assert (out @ common).var() < 1e-4 * (x @ common).var()
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)


def test_all_but_the_top_with_zero_components_only_centres(vectors):
    np.testing.assert_allclose(all_but_the_top(vectors, 0), center(vectors), atol=1e-6)


def test_all_but_the_top_with_more_components_than_dims_is_bad_config(vectors):
    with pytest.raises(BadConfig, match="most it can be is 8"):
        all_but_the_top(vectors, 9)


def test_zscore_gives_every_dimension_mean_zero_and_unit_deviation(vectors):
    out = zscore(vectors)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-5)


def test_zscore_turns_a_constant_dimension_into_zeros_not_nan(vectors):
    x = vectors.copy()
    x[:, 2] = 7.0
    out = zscore(x)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 2], 0.0)


def test_pca_keeps_the_asked_number_of_dims(vectors):
    out = pca(vectors, 3)
    assert out.shape == (60, 3)
    assert out.dtype == np.float32


def test_pca_orders_columns_by_decreasing_variance(vectors):
    variances = pca(vectors, 5).var(axis=0)
    assert np.all(np.diff(variances) <= 1e-6), variances


def test_pca_agrees_with_scikit_learn_up_to_sign(vectors):
    from sklearn.decomposition import PCA

    ours = pca(vectors, 4)
    theirs = PCA(n_components=4, svd_solver="full").fit_transform(vectors.astype(np.float64))
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), rtol=1e-3, atol=1e-3)


def test_pca_is_deterministic(vectors):
    np.testing.assert_array_equal(pca(vectors, 4), pca(vectors.copy(), 4))


def test_pca_with_more_dims_than_the_matrix_names_the_maximum():
    x = np.random.default_rng(2).standard_normal((5, 12)).astype(np.float32)
    with pytest.raises(BadConfig, match="most it can be is 5"):
        pca(x, 6)


def test_l2_normalize_gives_rows_of_length_one(vectors):
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(vectors), axis=1), 1.0, atol=1e-6)


def test_l2_normalize_leaves_zero_rows_zero_without_nan(vectors):
    x = vectors.copy()
    x[4] = 0.0
    out = l2_normalize(x)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[4], 0.0)


@pytest.mark.parametrize(
    "options",
    [{"abtt": -1}, {"pca_dims": 0}, {"pca_dims": -3}],
    ids=["negative abtt", "zero pca dims", "negative pca dims"],
)
def test_postprocess_rejects_out_of_range_options(options):
    with pytest.raises(BadConfig):
        PostProcess(**options)


def test_apply_with_default_options_changes_nothing_and_records_nothing(vectors):
    out, records = apply(vectors, PostProcess())
    np.testing.assert_array_equal(out, vectors)
    assert out is not vectors
    assert records == []


def test_apply_records_every_step_in_the_fixed_order(vectors):
    options = PostProcess(center=True, abtt=1, zscore=True, pca_dims=4, l2=True)
    out, records = apply(vectors, options)
    assert [r["step"] for r in records] == ["center", "abtt", "zscore", "pca", "l2"]
    assert out.shape == (60, 4)
    assert out.dtype == np.float32
    json.dumps(records)  # JSON-ready for the manifest


def test_apply_records_pca_dims_and_explained_variance(vectors):
    _, records = apply(vectors, PostProcess(pca_dims=4))
    (record,) = records
    assert record["step"] == "pca"
    assert record["dims"] == 4
    assert 0.0 < record["explained_variance"] <= 1.0


def test_apply_runs_zscore_before_pca(vectors):
    out, _ = apply(vectors, PostProcess(zscore=True, pca_dims=3))
    np.testing.assert_allclose(out, pca(zscore(vectors), 3), atol=1e-5)


def test_apply_normalises_after_pca_so_rows_have_length_one(vectors):
    out, _ = apply(vectors, PostProcess(pca_dims=3, l2=True))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_apply_raises_bad_config_when_pca_dims_exceed_the_matrix(vectors):
    with pytest.raises(BadConfig, match="pca_dims = 9"):
        apply(vectors, PostProcess(pca_dims=9))
