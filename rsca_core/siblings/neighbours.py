"""Nearest neighbours in RSCA space: a scikit-learn k-d tree, with exact tie-breaking by bundle order."""

from __future__ import annotations

import numpy as np

#: Bound on the rounding of the squared distances scikit-learn's searches return, relative to the
#: largest squared norm (a tree, or a brute-force |x|² + |q|² − 2 x·q, is exact to ~1e-15 of that): stars this close to the cut are decided by exact distances.
DISTANCE_TOLERANCE = 1e-12


#: Leaf size of the k-d tree: single-point queries at 150,000 stars are ~2× faster than the default 30.
LEAF_SIZE = 100


class NeighbourIndex:
    """scikit-learn ``NearestNeighbors`` (a k-d tree) over the coordinates' informative axes.

    RSCA gives the axes that carry no information (intra-cluster spread ≥ the field's) weight 0:
    those columns are 0 for every star and are left out of the tree (a query point's values there
    add the same amount to every squared distance, which the radius query accounts for).
    Single-point k-d tree queries run on one thread: no thread-pool start-up per query.
    """

    def __init__(self, coords: np.ndarray):
        from sklearn.neighbors import NearestNeighbors

        coords = np.asarray(coords, dtype=float)
        cols = np.flatnonzero(np.any(coords != 0, axis=0))
        self.columns = cols if len(cols) else np.arange(min(1, coords.shape[1]))
        self.rest = np.setdiff1d(np.arange(coords.shape[1]), self.columns)
        self.nn = NearestNeighbors(algorithm="kd_tree", leaf_size=LEAF_SIZE).fit(coords[:, self.columns])
        self.n = len(coords)
        self.max_sq = float(np.max((coords * coords).sum(axis=1), initial=0.0))

    def slack2(self, point: np.ndarray) -> float:
        """Rounding bound of a squared distance to ``point`` (see DISTANCE_TOLERANCE)."""
        return DISTANCE_TOLERANCE * (self.max_sq + float((point * point).sum()))

    def kneighbors(self, point: np.ndarray, k: int):
        """(distances over the informative axes, rows) of the ``k`` nearest, by the tree."""
        d, i = self.nn.kneighbors(point[:, self.columns], k)
        return d[0], i[0]

    def within(self, point: np.ndarray, radius: float) -> np.ndarray:
        """Rows whose (full) distance to ``point`` is at most ``radius``, by the tree."""
        c2 = float((point[:, self.rest] ** 2).sum())
        if radius**2 < c2:
            return np.zeros(0, dtype=np.intp)
        return self.nn.radius_neighbors(point[:, self.columns], np.sqrt(radius**2 - c2), return_distance=False)[0]


def search(index: NeighbourIndex, coords, rows, point, n, exclude):
    """The ``n`` rows of ``coords`` nearest ``point`` among ``rows`` (sorted; ``index`` holds
    ``coords[rows]``), but position ``exclude`` of ``rows``: (rows, exact distances).

    One k-nearest query for n (+1 for ``exclude``) + 1 neighbours; when the last two are closer than
    the search's rounding, a radius query collects every point that may be tied with the n-th.
    Exact distances (:func:`exact_distances`) and row numbers then decide the order.
    """
    m = n + (exclude is not None)
    k = min(index.n, m + 1)
    dist, idx = index.kneighbors(point, k)
    slack2 = index.slack2(point)
    last = dist[min(m, k) - 1]
    if k > m and dist[m] ** 2 - last**2 > 2 * slack2:
        cand = idx[:m]  # no other point can be as close as the m-th: the set is settled
    else:
        c2 = float((point[:, index.rest] ** 2).sum())
        cand = index.within(point, np.sqrt(last**2 + c2 + 2 * slack2))
    if exclude is not None:
        cand = cand[cand != exclude]
    cand = rows[cand]
    d = exact_distances(coords[cand], point[0])
    order = np.lexsort((cand, d))[:n]
    return cand[order], d[order]


def pair_distances(Y: np.ndarray) -> np.ndarray:
    """Distances of every pair of rows of ``Y`` (i < j, row-major order).

    Examples
    --------
    >>> pair_distances(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])).tolist()
    [5.0, 1.0, 4.242640687119285]
    """
    Y = np.asarray(Y, dtype=float)
    i, j = np.triu_indices(len(Y), k=1)
    diff = Y[i] - Y[j]
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def exact_distances(coords: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Euclidean distances of the rows of ``coords`` to ``point``: the one formula every distance here uses.

    Examples
    --------
    >>> exact_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.zeros(2)).tolist()
    [0.0, 5.0]
    """
    diff = np.asarray(coords, dtype=float) - np.asarray(point, dtype=float)
    return np.sqrt((diff * diff).sum(axis=1))  # row by row: a row's value does not depend on the others
