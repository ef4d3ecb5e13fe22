"""The doppelganger rate (SPEC §2, paper Sec. 4.2), exact and fast.

For each cluster c with n_c ≥ 2 members, with the RSCA map fitted without c (leave-one-cluster-out,
``cv=True``) or on all clusters (``cv=False``):

* intra-cluster distances: all n_c(n_c−1)/2 member pairs;
* inter-cluster distances: every (member of c, field star) pair with |ΔVHELIO_AVG| < 5 km/s and
  |ΔAK_TARG| < 0.05;
* rate_c = fraction of inter-cluster distances strictly below the median intra-cluster distance.

The global rate is the mean of the defined rate_c weighted by n_c. A cluster whose every pair is
removed by the filter has an undefined rate (NaN): it is left out of the mean, with a warning.

Speed: the field sphering depends only on the field, so it is done once; a fold refits only steps
3–4 from per-cluster pieces computed once (:class:`~rsca_core.rsca.ClusterStats`), for all folds at
once (one batched eigendecomposition and one sort; the same numbers, to rounding, as a refit on the
training clusters alone). Candidate field stars of a cluster are found by binary search in VHELIO_AVG, and
distances use one matrix product per cluster, with pairs within rounding of the median recomputed
exactly, so that the strict "<" is decided as a direct computation would.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from .rsca import RSCA, ClusterStats, check_cluster_ids, check_representation, check_top_n, group_indices

#: Bins of a distance histogram (Fig. 9/10, the dashboard's histograms).
HIST_BINS = 40


def global_rate(rates, n_stars) -> float:
    """The global doppelganger rate: the mean of the defined per-cluster rates weighted by cluster size.

    Clusters whose rate is undefined (NaN) are left out; ``nan`` when none is defined.

    Examples
    --------
    >>> round(global_rate([0.1, 0.4, float("nan")], [3, 1, 5]), 6)
    0.175
    """
    r = np.asarray(rates, float)
    w = np.asarray(n_stars, float)
    ok = np.isfinite(r)
    return float(np.average(r[ok], weights=w[ok])) if ok.any() else float("nan")


def histogram_edges(intra, inter, bins: int = HIST_BINS) -> np.ndarray:
    """Shared bin edges of an intra- and inter-cluster distance histogram.

    The range is [0, 1.02 × max(largest intra distance, 99th percentile of inter distances)], so that
    the rare very distant field pairs do not squeeze the interesting part; :func:`distance_histogram`
    puts those pairs in the last bin.

    Examples
    --------
    >>> histogram_edges([1.0, 2.0], [0.5, 1.5, 3.0], bins=2).round(4).tolist()
    [0.0, 1.5147, 3.0294]
    """
    intra = np.asarray(intra, float).ravel()
    inter = np.asarray(inter, float).ravel()
    hi = max(float(intra.max()) if intra.size else 0.0, float(np.quantile(inter, 0.99)) if inter.size else 0.0)
    return np.linspace(0.0, hi * 1.02 if hi > 0 else 1.0, int(bins) + 1)


def distance_histogram(intra, inter, bins: int = HIST_BINS) -> dict:
    """Counts of intra- and inter-cluster distances on :func:`histogram_edges` (overflow in the last bin).

    Returns ``{"edges", "intra", "inter"}``; the counts add up to the numbers of distances given.

    Examples
    --------
    >>> h = distance_histogram([1.0, 20.0], [0.5, 1.5, 30.0], bins=2)
    >>> h["intra"].tolist(), h["inter"].tolist()
    ([1, 1], [2, 1])
    """
    edges = histogram_edges(intra, inter, bins)
    top = edges[-1]
    ci = np.histogram(np.clip(np.asarray(intra, float), 0.0, top), edges)[0]
    ce = np.histogram(np.clip(np.asarray(inter, float), 0.0, top), edges)[0]
    return {"edges": edges, "intra": ci, "inter": ce}


class UndefinedRateWarning(UserWarning):
    """A cluster's rate (or the global rate) is undefined and was left out."""


@dataclass
class DoppelgangerResult:
    """Output of :func:`doppelganger_rates`."""

    global_rate: float
    per_cluster: pd.DataFrame
    intra_distances: dict = field(default_factory=dict)
    inter_distances: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def n_stars_used(self) -> int:
        ok = self.per_cluster["rate"].notna()
        return int(self.per_cluster.loc[ok, "n_stars"].sum())

    def to_dict(self) -> dict:
        rows = [
            {
                "name": r.cluster,
                "n_stars": int(r.n_stars),
                "rate": None if pd.isna(r.rate) else float(r.rate),
                "median_intra": None if pd.isna(r.median_intra) else float(r.median_intra),
                "n_inter_pairs": int(r.n_inter_pairs),
            }
            for r in self.per_cluster.itertuples()
        ]
        g = None if np.isnan(self.global_rate) else float(self.global_rate)
        return {"global_rate": g, "clusters": rows, "settings": self.settings}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)


def _check_meta(arr, name, n):
    a = np.asarray(arr, dtype=float)
    if a.shape != (n,):
        raise ValueError(f"{name} has shape {a.shape}, expected ({n},)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf values")
    return a


class _PairFilter:
    """Candidate field stars for a set of members, by binary search on VHELIO_AVG."""

    def __init__(self, pop_v, pop_ak, max_dv, max_dak):
        self.order = np.argsort(pop_v)
        self.v_sorted = pop_v[self.order]
        self.ak_sorted = pop_ak[self.order]
        self.max_dv, self.max_dak = max_dv, max_dak

    def candidates(self, mv, mak):
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


def _sq_norms(Y):
    return np.einsum("ij,ij->i", Y, Y)


def _intra(Ym):
    iu = np.triu_indices(len(Ym), k=1)
    diff = Ym[iu[0]] - Ym[iu[1]]
    return np.sqrt(_sq_norms(diff))


def _median(x):
    """np.median of a short 1-D array, without its overhead."""
    s = np.sort(x)
    n = len(s)
    return float(s[n // 2]) if n % 2 else 0.5 * (float(s[n // 2 - 1]) + float(s[n // 2]))


def _count_below(Ym, Yf, pair_ok, median, keep):
    """Number of allowed pairs with distance < median (exact near the threshold), and the distances."""
    nm, nf = _sq_norms(Ym), _sq_norms(Yf)
    m2 = median * median
    gap = Ym @ Yf.T  # becomes d² − median², in place
    gap *= -2.0
    gap += (nm - m2)[:, None]
    gap += nf[None, :]
    # rounding of the product form is below 1e-9 of this bound; closer pairs are recomputed exactly
    tol = 1e-9 * (nm.max(initial=0) + nf.max(initial=0) + m2) + 1e-300
    n_below = int(np.count_nonzero((gap < -tol) & pair_ok))
    near = (gap <= tol) & pair_ok
    exact = None
    if np.count_nonzero(near) > n_below:  # some allowed pair lies within rounding of the median
        near &= gap >= -tol
        ii, jj = np.nonzero(near)
        diff = Ym[ii] - Yf[jj]
        exact = np.sqrt(_sq_norms(diff))
        n_below += int(np.count_nonzero(exact < median))
    dist = None
    if keep:
        if exact is not None:
            gap[ii, jj] = exact**2 - m2
        gap += m2
        dist = np.sqrt(np.maximum(gap[pair_ok], 0.0))
    return n_below, int(np.count_nonzero(pair_ok)), dist


def _fold_rate(A, S_members, Zf, sphere, pair_ok, keep):
    """One cluster under one map ``A`` (sphered space → output): its members ``S_members`` (sphered),
    its candidate field stars ``Zf`` (centred, not sphered) and their allowed pairs.
    Returns (rate, median intra distance, allowed pairs, intra distances, inter distances or None)."""
    Ym = S_members @ A.T
    Yf = Zf @ (A @ sphere).T
    intra = _intra(Ym)
    med = _median(intra)
    n_below, n_pairs, dist = _count_below(Ym, Yf, pair_ok, med, keep)
    return (n_below / n_pairs if n_pairs else np.nan), med, n_pairs, intra, dist


def doppelganger_rates(
    Z_pop,
    Z_clust,
    cluster_ids,
    *,
    pop_vhelio=None,
    pop_ak=None,
    clust_vhelio=None,
    clust_ak=None,
    cv=True,
    top_n=None,
    max_dvhelio=5.0,
    max_dak=0.05,
    keep_distances=True,
    **rsca_options,
) -> DoppelgangerResult:
    """Per-cluster and global doppelganger rates of the RSCA representation (SPEC §2).

    ``top_n`` may also be a list (e.g. ``[1, 2, 4, None]``): then a dict {top_n: result} is
    returned, computed in one pass over the folds.
    Passing ``None`` for all four metadata arrays disables the pair filter.
    """
    multi = isinstance(top_n, (list, tuple))
    top_ns = list(top_n) if multi else [top_n]
    Z_pop = check_representation(Z_pop, "Z_pop")
    K = Z_pop.shape[1]
    Z_clust = check_representation(Z_clust, "Z_clust", K)
    ids = check_cluster_ids(cluster_ids, len(Z_clust))
    for n in top_ns:
        check_top_n(n, K)
    if len(Z_pop) == 0:
        raise ValueError("Z_pop is empty: the field set has no stars")
    meta = (pop_vhelio, pop_ak, clust_vhelio, clust_ak)
    if any(m is None for m in meta) and not all(m is None for m in meta):
        raise ValueError("pass all four of pop_vhelio, pop_ak, clust_vhelio, clust_ak, or none of them")
    use_filter = meta[0] is not None
    if use_filter:
        if not (max_dvhelio > 0 and max_dak > 0):
            raise ValueError("max_dvhelio and max_dak must be positive")
        pv = _check_meta(pop_vhelio, "pop_vhelio", len(Z_pop))
        pa = _check_meta(pop_ak, "pop_ak", len(Z_pop))
        cvh = _check_meta(clust_vhelio, "clust_vhelio", len(Z_clust))
        ca = _check_meta(clust_ak, "clust_ak", len(Z_clust))
        pfilter = _PairFilter(pv, pa, float(max_dvhelio), float(max_dak))
    est = RSCA(**rsca_options)
    est.check_params(K)
    groups = group_indices(ids)
    usable = [c for c, idx in groups.items() if len(idx) >= 2]
    need = 3 if (cv and est.variant != "raw") else 2
    if len(usable) < need:
        raise ValueError(
            f"need at least {need} clusters with 2 or more stars"
            f"{' for leave-one-cluster-out' if need == 3 else ''}; got {len(usable)}"
        )
    singles = [c for c, idx in groups.items() if len(idx) < 2]
    if singles:
        warnings.warn(
            f"{len(singles)} cluster(s) with a single star have no rate: {', '.join(singles[:5])}",
            UndefinedRateWarning,
            stacklevel=2,
        )

    results = {n: {"rows": [], "intra": {}, "inter": {}} for n in top_ns}
    # Step 2 is shared by every fold: it depends on the field only (its field-sized sums are split
    # over the cores inside). The rest is thin matrices (K ≤ a few dozen): BLAS threads would add more
    # overhead than they save.
    mean, sphere = est.fit_population(Z_pop)
    with threadpool_limits(limits=1, user_api="blas"):
        S_cl = (Z_clust - mean) @ sphere.T
        stats = ClusterStats(S_cl, groups)
        if cv and est.variant != "raw":
            fold_geom = est.fit_leave_one_out(stats)
        else:
            fold_geom = dict.fromkeys(groups, est.fit_cluster_subset(stats))
        _fold_loop(
            groups,
            fold_geom,
            (Z_pop, mean, sphere),
            S_cl,
            top_ns,
            results,
            keep_distances,
            (pfilter, cvh, ca) if use_filter else None,
        )

    settings = {
        "cv": bool(cv),
        "max_dvhelio": float(max_dvhelio) if use_filter else None,
        "max_dak": float(max_dak) if use_filter else None,
        "pair_filter": use_filter,
        "k": int(K),
        "n_field": int(len(Z_pop)),
        "n_cluster_stars": int(len(Z_clust)),
        **est.get_params(),
    }
    out = {}
    for n in top_ns:
        df = pd.DataFrame(results[n]["rows"], columns=["cluster", "n_stars", "rate", "median_intra", "n_inter_pairs"])
        undefined = df[(df.n_stars >= 2) & df.rate.isna()]
        if len(undefined):
            warnings.warn(
                f"{len(undefined)} cluster(s) have no field star passing the pair filter; their "
                f"rate is undefined and left out of the global rate: "
                f"{', '.join(undefined.cluster.astype(str)[:5])}",
                UndefinedRateWarning,
                stacklevel=2,
            )
        g = global_rate(df.rate, df.n_stars)
        if not np.isfinite(g):
            warnings.warn(
                "no cluster has a defined rate; the global rate is undefined", UndefinedRateWarning, stacklevel=2
            )
        out[n] = DoppelgangerResult(g, df, results[n]["intra"], results[n]["inter"], settings | {"top_n": n})
    return out if multi else out[top_ns[0]]


def _fold_loop(groups, fold_geom, pop, S_cl, top_ns, results, keep_distances, flt):
    Z_pop, mean, sphere = pop
    for name in groups:
        idx = groups[name]
        if len(idx) < 2:
            for n in top_ns:
                results[n]["rows"].append((name, len(idx), np.nan, np.nan, 0))
            continue
        geom = fold_geom[name]
        if flt is not None:
            pfilter, cvh, ca = flt
            cand, pair_ok = pfilter.candidates(cvh[idx], ca[idx])
        else:
            cand = slice(None)
            pair_ok = np.ones((len(idx), len(Z_pop)), dtype=bool)
        Zf = np.take(Z_pop, cand, axis=0) if flt is not None else Z_pop.copy()
        Zf -= mean
        for n in top_ns:
            rate, med, n_pairs, intra, dist = _fold_rate(geom.matrix(n), S_cl[idx], Zf, sphere, pair_ok, keep_distances)
            results[n]["rows"].append((name, len(idx), rate, med, n_pairs))
            if keep_distances:
                results[n]["intra"][name] = intra
                results[n]["inter"][name] = dist
