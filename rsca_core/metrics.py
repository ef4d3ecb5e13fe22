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

from ._folds import PairFilter, fold_rate
from .learners import check_method, linear_map
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


def rate_spread(rates, n_stars, n_boot: int = 2000, seed: int = 0) -> float:
    """How well the cluster sample fixes the global rate: the standard deviation of
    :func:`global_rate` over ``n_boot`` resamples of the clusters with replacement (clusters with an
    undefined rate left out first; ``nan`` with fewer than two defined rates).

    The global rate averages a few dozen clusters' rates, and a different sample of clusters would give
    another average: on the default simulated survey (22 clusters, K = 30) this spread is 0.0045
    around 0.0114. For large samples it approaches ``sqrt(Σ n_c² (r_c − R)²) / Σ n_c``.

    Examples
    --------
    >>> round(rate_spread([0.0, 0.1], [1, 1], n_boot=20000), 2)   # exact: 0.05 / sqrt(2)
    0.04
    >>> rate_spread([0.02, float("nan")], [5, 3])
    nan
    """
    r = np.asarray(rates, float)
    w = np.asarray(n_stars, float)
    ok = np.isfinite(r)
    r, w = r[ok], w[ok]
    if r.size < 2:
        return float("nan")
    idx = np.random.default_rng(seed).integers(0, r.size, size=(int(n_boot), r.size))
    return float(np.std((w[idx] * r[idx]).sum(axis=1) / w[idx].sum(axis=1)))


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
    #: {cluster: :func:`distance_histogram` of its distances} (``keep_distances="histogram"``)
    histograms: dict = field(default_factory=dict)

    @property
    def rate_spread(self) -> float:
        """:func:`rate_spread` of the per-cluster rates: the global rate's sampling error from the
        cluster sample (standard deviation over 2,000 resamples of the clusters, seed 0)."""
        return rate_spread(self.per_cluster["rate"], self.per_cluster["n_stars"])

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
        sd = self.rate_spread
        return {
            "global_rate": g,
            "rate_spread": None if np.isnan(sd) else sd,
            "clusters": rows,
            "settings": self.settings,
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)


def _check_meta(arr, name, n):
    a = np.asarray(arr, dtype=float)
    if a.shape != (n,):
        raise ValueError(f"{name} has shape {a.shape}, expected ({n},)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf values")
    return a


def _pair_filter(Z_pop, Z_clust, meta, max_dvhelio, max_dak):
    """(PairFilter, cluster VHELIO_AVG, cluster AK_TARG) from the four metadata arrays, or None."""
    if any(m is None for m in meta) and not all(m is None for m in meta):
        raise ValueError("pass all four of pop_vhelio, pop_ak, clust_vhelio, clust_ak, or none of them")
    if meta[0] is None:
        return None
    if not (max_dvhelio > 0 and max_dak > 0):
        raise ValueError("max_dvhelio and max_dak must be positive")
    pv = _check_meta(meta[0], "pop_vhelio", len(Z_pop))
    pa = _check_meta(meta[1], "pop_ak", len(Z_pop))
    cvh = _check_meta(meta[2], "clust_vhelio", len(Z_clust))
    ca = _check_meta(meta[3], "clust_ak", len(Z_clust))
    return PairFilter(pv, pa, float(max_dvhelio), float(max_dak)), cvh, ca


class _FixedMap:
    """A fold's map that has no top-N truncation (the metric learners)."""

    def __init__(self, M):
        self.M = M

    def matrix(self, top_n=None):
        return self.M


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
    method: str = "rsca",
    random_state: int = 0,
    **rsca_options,
) -> DoppelgangerResult:
    """Per-cluster and global doppelganger rates of a learned representation (SPEC §2).

    Parameters
    ----------
    Z_pop, Z_clust : array-like of shape (n_field, K), (n_cluster_stars, K)
        The field and the cluster stars in the same representation (e.g. PCA scores).
    cluster_ids : array-like of shape (n_cluster_stars,)
        Cluster name of each cluster star.
    pop_vhelio, pop_ak, clust_vhelio, clust_ak : array-like, optional
        VHELIO_AVG and AK_TARG of field and cluster stars for the pair filter (|ΔVHELIO_AVG| <
        ``max_dvhelio``, |ΔAK_TARG| < ``max_dak``); all four or none (no filter).
    cv : bool
        Leave-one-cluster-out (every fold refits the method without the held-out cluster) or one
        map fitted on all clusters.
    top_n : int, None or list
        Keep the N most discriminative RSCA axes; a list (e.g. ``[1, 2, 4, None]``) returns a dict
        {top_n: result}, computed in one pass over the folds. RSCA only.
    keep_distances : bool or "histogram"
        True: keep every cluster's intra- and inter-cluster distances (for histograms): memory grows
        with (cluster stars × field stars). ``"histogram"``: keep only each cluster's
        :func:`distance_histogram` (``DoppelgangerResult.histograms``; the same counts as from the
        kept distances), made as each cluster is scored, so memory stays at one cluster's distances
        whatever the number of clusters (for surveys of millions of field stars). False: neither.
    method : {"rsca", "rca", "lda", "nca"}
        The paper's RSCA, or a metric learner it cites (:mod:`rsca_core.learners`), fitted on the
        training clusters' members only.
    random_state : int
        Seed of the learners that have one (NCA).
    **rsca_options
        Options of :class:`~rsca_core.rsca.RSCA` (e.g. ``variant``); RSCA only.

    Returns
    -------
    DoppelgangerResult, or a dict of them when ``top_n`` is a list.

    Notes
    -----
    Over 80 lines: half of it is this docstring; the body validates, fits the folds and collects them.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> field = rng.normal(size=(200, 3))
    >>> centres = rng.normal(size=(4, 3))
    >>> members = np.repeat(centres, 5, axis=0) + 0.05 * rng.normal(size=(20, 3))
    >>> ids = np.repeat(["A", "B", "C", "D"], 5)
    >>> res = doppelganger_rates(field, members, ids, method="rca")
    >>> res.per_cluster["n_stars"].tolist(), 0 <= res.global_rate < 0.05
    ([5, 5, 5, 5], True)
    """
    method = check_method(method)
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
    if method != "rsca" and (rsca_options or any(n is not None for n in top_ns)):
        raise ValueError(f"top_n and RSCA options ({', '.join(rsca_options) or 'top_n'}) apply to method='rsca' only")
    flt = _pair_filter(Z_pop, Z_clust, (pop_vhelio, pop_ak, clust_vhelio, clust_ak), max_dvhelio, max_dak)
    est = RSCA(**rsca_options)
    est.check_params(K)
    groups = group_indices(ids)
    usable = [c for c, idx in groups.items() if len(idx) >= 2]
    need = 3 if (cv and (method != "rsca" or est.variant != "raw")) else 2
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

    if keep_distances not in (True, False, "histogram"):
        raise ValueError(f"keep_distances must be True, False or 'histogram', not {keep_distances!r}")
    results = {n: {"rows": [], "intra": {}, "inter": {}, "hist": {}} for n in top_ns}
    # Step 2 is shared by every fold: it depends on the field only (its field-sized sums are split
    # over the cores inside). The rest is thin matrices (K ≤ a few dozen): BLAS threads would add more
    # overhead than they save. The learners use the field mean only to centre (distances do not move).
    mean, sphere = est.fit_population(Z_pop) if method == "rsca" else (Z_pop.mean(axis=0), None)
    with threadpool_limits(limits=1, user_api="blas"):
        if method == "rsca":
            members = (Z_clust - mean) @ sphere.T
            fold_geom = _rsca_folds(est, members, groups, cv)
        else:
            members = Z_clust - mean
            fold_geom = _learner_folds(method, members, ids, groups, usable, cv, random_state)
        _fold_loop(groups, fold_geom, (Z_pop, mean, sphere), members, top_ns, results, keep_distances, flt)

    settings = {
        "cv": bool(cv),
        "max_dvhelio": float(max_dvhelio) if flt else None,
        "max_dak": float(max_dak) if flt else None,
        "pair_filter": flt is not None,
        "k": int(K),
        "n_field": int(len(Z_pop)),
        "n_cluster_stars": int(len(Z_clust)),
        "method": method,
        **(est.get_params() if method == "rsca" else {"random_state": int(random_state)}),
    }
    out = {n: _result(results[n], settings | {"top_n": n}) for n in top_ns}
    return out if multi else out[top_ns[0]]


def _rsca_folds(est, S_cl, groups, cv):
    """{cluster: geometry of steps 3–4} fitted without that cluster (``cv``) or on all of them."""
    stats = ClusterStats(S_cl, groups)
    if cv and est.variant != "raw":
        return est.fit_leave_one_out(stats)
    return dict.fromkeys(groups, est.fit_cluster_subset(stats))


def _learner_folds(method, Zc, ids, groups, usable, cv, random_state):
    """{cluster: map of ``method``} fitted on the members of the other usable clusters (``cv``)."""
    if not cv:
        return dict.fromkeys(groups, _FixedMap(linear_map(method, Zc, ids, random_state)))
    out = {}
    for c in usable:
        train = ids != c
        out[c] = _FixedMap(linear_map(method, Zc[train], ids[train], random_state))
    return out


def _result(res, settings):
    """A DoppelgangerResult from the rows of the fold loop (warning about undefined rates)."""
    df = pd.DataFrame(res["rows"], columns=["cluster", "n_stars", "rate", "median_intra", "n_inter_pairs"])
    undefined = df[(df.n_stars >= 2) & df.rate.isna()]
    if len(undefined):
        warnings.warn(
            f"{len(undefined)} cluster(s) have no field star passing the pair filter; their "
            f"rate is undefined and left out of the global rate: "
            f"{', '.join(undefined.cluster.astype(str)[:5])}",
            UndefinedRateWarning,
            stacklevel=3,
        )
    g = global_rate(df.rate, df.n_stars)
    if not np.isfinite(g):
        warnings.warn("no cluster has a defined rate; the global rate is undefined", UndefinedRateWarning, stacklevel=3)
    return DoppelgangerResult(g, df, res["intra"], res["inter"], settings, res["hist"])


def _fold_loop(groups, fold_geom, pop, members, top_ns, results, keep_distances, flt):
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
            Zf, center = np.take(Z_pop, cand, axis=0), None
            Zf -= mean
        else:  # every field star: centred chunk by chunk inside the fold, not copied whole
            Zf, center, pair_ok = Z_pop, mean, None
        for n in top_ns:
            rate, med, n_pairs, intra, dist = fold_rate(
                geom.matrix(n), members[idx], Zf, sphere, pair_ok, bool(keep_distances), center
            )
            results[n]["rows"].append((name, len(idx), rate, med, n_pairs))
            if keep_distances == "histogram":  # this cluster's counts only: its distances are dropped here
                results[n]["hist"][name] = distance_histogram(intra, dist)
            elif keep_distances:
                results[n]["intra"][name] = intra
                results[n]["inter"][name] = dist
