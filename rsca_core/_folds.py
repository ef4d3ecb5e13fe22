"""The per-cluster step of the doppelganger rate, shared by :mod:`rsca_core.metrics` and
:mod:`rsca_core.experiments` (private to the package: the public API is ``doppelganger_rates``).

A fold scores one cluster under one linear map: the pair filter picks the field stars a member may
be compared with (:class:`PairFilter`), :func:`fold_rate` measures the cluster's intra-cluster
distances, their median and the fraction of allowed (member, field star) distances below it.
"""

from __future__ import annotations

import numpy as np


class PairFilter:
    """Candidate field stars for a set of members, by binary search on VHELIO_AVG.

    Examples
    --------
    >>> pf = PairFilter(np.array([0.0, 3.0, 20.0]), np.array([0.0, 0.2, 0.0]), 5.0, 0.05)
    >>> rows, ok = pf.candidates(np.array([1.0]), np.array([0.01]))
    >>> rows.tolist(), ok.tolist()
    ([0], [[True]])
    """

    def __init__(self, pop_v: np.ndarray, pop_ak: np.ndarray, max_dv: float, max_dak: float):
        self.order = np.argsort(pop_v)
        self.v_sorted = pop_v[self.order]
        self.ak_sorted = pop_ak[self.order]
        self.max_dv, self.max_dak = max_dv, max_dak

    def candidates(self, mv: np.ndarray, mak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(field rows, members × rows allowed-pair matrix) for members with VHELIO_AVG mv, AK_TARG mak."""
        lo_v, hi_v = mv.min() - self.max_dv, mv.max() + self.max_dv
        pad = 1e-9 * (1 + abs(lo_v) + abs(hi_v))
        a = np.searchsorted(self.v_sorted, lo_v - pad, side="left")
        b = np.searchsorted(self.v_sorted, hi_v + pad, side="right")
        v, ak = self.v_sorted[a:b], self.ak_sorted[a:b]
        pad_ak = 1e-9 * (1 + np.abs(mak).max())
        keep = (ak > mak.min() - self.max_dak - pad_ak) & (ak < mak.max() + self.max_dak + pad_ak)
        cand, v, ak = self.order[a:b][keep], v[keep], ak[keep]
        pair_ok = np.abs(v[None, :] - mv[:, None]) < self.max_dv
        pair_ok &= np.abs(ak[None, :] - mak[:, None]) < self.max_dak
        used = pair_ok.any(axis=0)  # only field stars that pair with some member get transformed
        return cand[used], pair_ok[:, used]


def sq_norms(Y: np.ndarray) -> np.ndarray:
    """Squared Euclidean norm of each row."""
    return np.einsum("ij,ij->i", Y, Y)


def intra_distances(Ym: np.ndarray) -> np.ndarray:
    """The n(n−1)/2 distances between the rows of ``Ym`` (upper triangle, row by row)."""
    iu = np.triu_indices(len(Ym), k=1)
    diff = Ym[iu[0]] - Ym[iu[1]]
    return np.sqrt(sq_norms(diff))


def median(x: np.ndarray) -> float:
    """np.median of a short 1-D array, without its overhead."""
    s = np.sort(x)
    n = len(s)
    return float(s[n // 2]) if n % 2 else 0.5 * (float(s[n // 2 - 1]) + float(s[n // 2]))


#: Largest (members × field stars) block of distances a fold holds at once: the field is scored in
#: chunks of ``FOLD_BLOCK // members`` stars, so a fold's memory does not grow with the field.
FOLD_BLOCK = 1 << 22


def count_below(Ym: np.ndarray, Yf: np.ndarray, pair_ok, med: float, keep: bool):
    """Number of allowed pairs with distance < ``med`` (exact near the threshold), the number of
    allowed pairs, and (``keep``) their distances. ``pair_ok``: members × field allowed pairs, or
    None (every pair allowed)."""
    nm, nf = sq_norms(Ym), sq_norms(Yf)
    m2 = med * med
    gap = Ym @ Yf.T  # becomes d² − median², in place
    gap *= -2.0
    gap += (nm - m2)[:, None]
    gap += nf[None, :]
    # rounding of the product form is below 1e-9 of this bound; closer pairs are recomputed exactly
    tol = 1e-9 * (nm.max(initial=0) + nf.max(initial=0) + m2) + 1e-300
    below = gap < -tol
    near = gap <= tol
    if pair_ok is not None:
        below &= pair_ok
        near &= pair_ok
    n_below = int(np.count_nonzero(below))
    exact = None
    if np.count_nonzero(near) > n_below:  # some allowed pair lies within rounding of the median
        near &= gap >= -tol
        ii, jj = np.nonzero(near)
        diff = Ym[ii] - Yf[jj]
        exact = np.sqrt(sq_norms(diff))
        n_below += int(np.count_nonzero(exact < med))
    dist = None
    if keep:
        if exact is not None:
            gap[ii, jj] = exact**2 - m2
        gap += m2
        dist = np.sqrt(np.maximum(gap if pair_ok is None else gap[pair_ok], 0.0)).ravel()
    n_pairs = gap.size if pair_ok is None else int(np.count_nonzero(pair_ok))
    return n_below, n_pairs, dist


def fold_rate(
    A: np.ndarray,
    members: np.ndarray,
    Zf: np.ndarray,
    sphere: np.ndarray | None,
    pair_ok,
    keep: bool,
    center: np.ndarray | None = None,
):
    """One cluster under one linear map ``A``.

    ``members`` are the cluster's rows already in ``A``'s input space; ``Zf`` its candidate field
    stars, centred (or minus ``center`` when given), which ``sphere`` (when given) takes into that
    space first. ``pair_ok``: the allowed (member, field star) pairs, or None for all of them. The
    field is scored in chunks (:data:`FOLD_BLOCK`); each pair's rounding bound depends on its own
    norms only, so chunking does not change the count. Returns (rate, median intra distance, allowed
    pairs, intra distances, inter distances or None).
    """
    Ym = members @ A.T
    M = (A if sphere is None else A @ sphere).T
    intra = intra_distances(Ym)
    med = median(intra)
    step = max(1, FOLD_BLOCK // max(1, len(Ym)))
    n_below = n_pairs = 0
    parts = []
    for a in range(0, len(Zf), step):
        zc = Zf[a : a + step]
        Yf = (zc if center is None else zc - center) @ M
        ok = None if pair_ok is None else pair_ok[:, a : a + step]
        nb, npairs, dist = count_below(Ym, Yf, ok, med, keep)
        n_below += nb
        n_pairs += npairs
        if keep:
            parts.append(dist.reshape(len(Ym), -1) if ok is None else (dist, ok))
    dist = _join_distances(parts, len(Ym)) if keep else None
    return (n_below / n_pairs if n_pairs else np.nan), med, n_pairs, intra, dist


def _join_distances(parts, n_members):
    """The chunks' distances in the order of one whole-field pass: member by member (row-major)."""
    if not parts:
        return np.zeros(0)
    if isinstance(parts[0], np.ndarray):
        return np.hstack(parts).ravel() if n_members else np.zeros(0)
    split = [np.split(dist, np.cumsum(np.count_nonzero(ok, axis=1))[:-1]) for dist, ok in parts]
    return np.concatenate([chunk[i] for i in range(n_members) for chunk in split])
