"""Clusters of matrix rows by direction (k-means on unit vectors), for colouring maps."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from embedgen.errors import BadConfig
from embedgen.postprocess import l2_normalize

log = logging.getLogger(__name__)


def kmeans_clusters(
    vectors: npt.NDArray[np.float32], k: int = 12, *, seed: int = 0
) -> npt.NDArray[np.int64]:
    """Cluster id per row: mini-batch k-means on L2-normalised rows (cosine geometry)."""
    from sklearn.cluster import MiniBatchKMeans

    n = int(vectors.shape[0])
    if not 2 <= k <= max(2, n):
        raise BadConfig(f"Number of clusters must be between 2 and {n} (got {k}).")
    model = MiniBatchKMeans(
        n_clusters=k, random_state=seed, batch_size=min(4096, n), n_init=3, max_iter=100
    )
    labels = model.fit_predict(l2_normalize(vectors))
    log.info("Clustered %d rows into %d clusters", n, k)
    return labels.astype(np.int64)
