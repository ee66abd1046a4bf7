"""UMAP 2-D projection with the settings the original tools used (15 neighbours, min_dist 0.1, cosine, seed 42)."""

from __future__ import annotations

import numpy as np


def umap_2d(
    vectors: np.ndarray,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    random_state: int | None = 42,
) -> np.ndarray:
    """Project ``(N, D)`` vectors to ``(N, 2)`` float32 coordinates.

    UMAP needs more points than neighbours: for tiny sets ``n_neighbors`` is lowered to ``N - 1``,
    and fewer than 4 points (where the spectral layout is undefined) fall back to the first two
    principal components, so small demos still get a map.
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if n < 4:
        centred = x - x.mean(axis=0, keepdims=True)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        coords = centred @ vt[:2].T if vt.shape[0] >= 2 else np.pad(centred @ vt[:1].T, ((0, 0), (0, 1)))
        return np.asarray(coords, dtype=np.float32)
    import umap

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, n - 1)),
        min_dist=min_dist,
        metric=metric,
        random_state=random_state,
        init="spectral" if n > 10 else "random",
    )
    return reducer.fit_transform(x).astype(np.float32)
