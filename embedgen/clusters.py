"""Clusters of matrix rows by direction (k-means on unit vectors), for colouring maps."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from embedgen.errors import BadConfig
from embedgen.postprocess import l2_normalize

log = logging.getLogger(__name__)


# Above this many rows the centres are fitted on a seeded sample and every row is then given
# its nearest centre: a 250,000 x 384 vocabulary took 5.6 s to cluster on the Explore page
# (2 cores), 21,000 rows 0.5 s.
FIT_ROWS = 20_000


def kmeans_clusters(
    vectors: npt.NDArray[np.float32], k: int = 12, *, seed: int = 0, fit_rows: int = FIT_ROWS
) -> npt.NDArray[np.int64]:
    """Cluster id per row: mini-batch k-means on L2-normalised rows (cosine geometry), fitted
    on at most ``fit_rows`` rows (a seeded sample), every row then labelled."""
    from sklearn.cluster import MiniBatchKMeans

    n = int(vectors.shape[0])
    if not 2 <= k <= max(2, n):
        raise BadConfig(f"Number of clusters must be between 2 and {n} (got {k}).")
    unit = l2_normalize(vectors)
    fit = unit
    if n > fit_rows:
        picked = np.random.default_rng(seed).choice(n, size=fit_rows, replace=False)
        fit = unit[np.sort(picked)]
    model = MiniBatchKMeans(
        n_clusters=k, random_state=seed, batch_size=min(4096, len(fit)), n_init=3, max_iter=100
    )
    model.fit(fit)
    labels = model.predict(unit)
    log.info("Clustered %d rows into %d clusters", n, k)
    return labels.astype(np.int64)
