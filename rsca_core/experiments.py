"""The paper's experiments (SPEC §3) as functions that return tables (no plotting here).

Every function takes a :class:`~rsca_core.dataset.Dataset` and returns a pandas DataFrame (or a dict
of DataFrames) whose rows carry a ``label`` column ("simulated" / "real", from ``ds.label``) and the
``seed`` the numbers were computed with, so that nothing made from simulated data can be mistaken
for a measurement, and every number can be regenerated.

==================  ===================================================================  ========
function            what it computes                                                     paper
==================  ===================================================================  ========
``k_sweep``         global rate vs the number K of PCA components, with and without CV   Fig. 2
``top_n_table``     global rate keeping the top N axes of a K-dim map, mean ± std over   Table 1
                    compressions with different seeds
``ablation``        {spectra, all 21 abundances, a subset} × {raw, scaled, transformed}  Fig. 4
``data_size_curve`` expected global rate vs the number of training clusters              Fig. 5
``feature_relations`` top RSCA features vs [Fe/H] / VHELIO_AVG, feature–label correlations Fig. 3
``distance_histograms`` intra- vs inter-cluster distance distributions per cluster       Fig. 9/10
==================  ===================================================================  ========

Shared conventions
------------------
* **Representations.** ``"spectra"``: the K PCA scores of ``ds.compress(K, seed)`` (PCA with missing
  values, fitted on field + cluster stars, cached on disk beside the bundle and in memory for the
  life of the Dataset object). ``"abundances"``: the bundle's [X/H] of the 21 species of the paper
  (``ds.abundances()``, i.e. relative to H for every species; the paper's subset used [X/Fe] except
  for Fe — a linear change of basis that only the "raw" and "scaled" variants can see).
  ``"subset"``: [X/H] of a chosen list of species (default Fe, Mg, Ni, Si, Al, C, N).
  Stars lacking a measured abundance (−9999.99) are left out of abundance representations (the
  paper's cuts remove them; the number left out is reported).
* **Compressions: exact or truncated.** By default every K gets its own compression (the paper
  refitted its PPCA per K). With ``truncate_from=K_max`` one compression per seed at ``K_max`` is
  computed and its leading K components are used for every K ≤ K_max (much faster for a sweep).
  With complete data the two are identical (the leading principal axes do not depend on how many are
  kept); with missing pixels they are *not*: the EM fit imputes missing pixels with the rank-K_max
  model, so the truncated scores are projections of data completed by a richer model — close to, but
  not the least-squares rank-K fit of the observed pixels. ``k_sweep`` records which was used.
  Measured on a 20,000-field-star simulated bundle (21 % missing pixels): the first 8 of 10
  components agree (|r| > 0.999 per component), the 9th/10th do not (0.97 / 0.54), and the K = 10
  leave-one-cluster-out rate is 0.0050 truncated from K = 30 vs 0.0063 from a K = 10 fit.
* **Sharing work.** ``doppelganger_rates`` spheres the field once for all leave-one-cluster-out
  folds and evaluates every N of ``top_n=[...]`` in the same pass over the folds; ``top_n_table``
  uses that (one pass per seed for all N). ``data_size_curve`` spheres once per K, finds each
  cluster's pair-filtered field candidates once and reuses them in every trial.
* **Seeds.** ``seed`` is the compression seed (``top_n_table``/``ablation`` use ``seed, seed+1, …``)
  and, in ``data_size_curve``, also the seed of the random cluster subsets.
* ``progress``: False, True (own tqdm bar on stderr) or an object with ``update(n)`` (e.g. a tqdm bar
  shared by several experiments; each function documents how many units it adds).
"""

from __future__ import annotations

import sys
import warnings
import weakref
from collections import OrderedDict

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ._folds import PairFilter, fold_rate
from .constants import MAX_DAK, MAX_DVHELIO, PAPER_RESULTS, PAPER_SUBSET, SPECIES, canonical_species
from .dataset import Compression, Dataset, RateInputs
from .learners import METHODS, check_method
from .metrics import distance_histogram, doppelganger_rates, global_rate
from .rsca import RSCA, VARIANTS, ClusterStats, check_cluster_ids, group_indices

DEFAULT_KS = (5, 10, 15, 20, 25, 30, 40, 50, 60)
DEFAULT_NS = (1, 2, 3, 4, 5, 6, 7)
DATA_SIZE_KS = (10, 20, 30)
INPUT_NAMES = {"spectra": "spectra", "abundances": "all abundances", "subset": "abundance subset"}

#: Paper values that have a counterpart in our tables (SPEC §3; Table 1 rows quoted in the SPEC).
PAPER_TOP_N = {
    1: (PAPER_RESULTS["spectra_k30_top1"], None),
    4: PAPER_RESULTS["spectra_k30_top4"],
    "all": PAPER_RESULTS["spectra_k30_all_axes"],
}
PAPER_ABLATION = {
    ("spectra", "transformed"): PAPER_RESULTS["spectra_k30"],
    ("subset", "transformed"): PAPER_RESULTS["abundance_subset"],
}

#: Compressions kept in memory per Dataset object (least recently used dropped first; the disk cache
#: beside a bundle keeps the rest).
MEMO_SIZE = 8
_MEMO: weakref.WeakKeyDictionary[Dataset, OrderedDict] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------- small helpers
class _Progress:
    """A tqdm bar we own, a bar/object somebody else owns, or nothing."""

    def __init__(self, progress, total, desc):
        self.own = False
        if hasattr(progress, "update"):
            self.bar = progress
        elif progress:
            self.bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False)
            self.own = True
        else:
            self.bar = None

    def update(self, n=1):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.own:
            self.bar.close()


def _check_dataset(ds):
    if not isinstance(ds, Dataset):
        raise ValueError(f"expected a Dataset, got {type(ds).__name__}")
    if len(ds.cluster_names) < 3:
        raise ValueError(f"{ds.name}: the experiments need at least 3 clusters, found {len(ds.cluster_names)}")
    return ds


def _positive_ints(values, name):
    out = []
    for v in values:
        if isinstance(v, bool) or int(v) != v or int(v) < 1:
            raise ValueError(f"{name} must be positive integers, got {v!r}")
        out.append(int(v))
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def _species(species):
    sp = [canonical_species(s) for s in (species or ())]
    if not sp:
        raise ValueError("the abundance subset is empty")
    if len(set(sp)) != len(sp):
        raise ValueError(f"the abundance subset repeats a species: {', '.join(sp)}")
    return sp


def compression(
    ds: Dataset,
    k: int,
    seed: int = 0,
    truncate_from: int | None = None,
    extra_mask_ranges=(),
    progress: bool = False,
    weights: str | None = None,
) -> Compression:
    """The compression of every star at ``k``, memoised per Dataset object (the last ``MEMO_SIZE``;
    on top of the disk cache).

    ``truncate_from=None``: the exact K=k compression. ``truncate_from=K_max ≥ k``: the leading k
    components of the K_max compression (see the module docstring for what that means).
    ``weights="ivar"``: the error-aware compression (``MaskedPCA(weights="ivar")`` with the bundle's
    flux errors); kept in memory only, since ``Dataset.compress`` does not pass the errors on.
    """
    k = int(k)
    src = k if truncate_from is None or int(truncate_from) < k else int(truncate_from)
    key = (src, int(seed), ds.mask_key(extra_mask_ranges), weights)
    memo = _MEMO.setdefault(ds, OrderedDict())
    if key in memo:
        memo.move_to_end(key)
    else:
        memo[key] = _fit_compression(ds, src, int(seed), extra_mask_ranges, weights, progress)
        while len(memo) > MEMO_SIZE:
            memo.popitem(last=False)
    comp = memo[key]
    return comp if src == k else comp.truncate(k)


def _fit_compression(ds, k, seed, extra_mask_ranges, weights, progress):
    """``ds.compress`` (disk-cached), with the flux-error weights when asked for."""
    options = {} if weights is None else {"weights": weights}
    return ds.compress(k, seed=seed, extra_mask_ranges=extra_mask_ranges, progress=progress, **options)


def compression_scores(
    ds: Dataset, k: int, seed: int = 0, truncate_from: int | None = None, extra_mask_ranges=(), progress: bool = False
) -> np.ndarray:
    """(N, k) PCA scores of every star: ``compression(...).scores``."""
    return compression(ds, k, seed, truncate_from, extra_mask_ranges, progress).scores


def _compression_note(k, truncate_from):
    if truncate_from is None or int(truncate_from) <= int(k):
        return f"exact K={int(k)}"
    return f"truncated from K={int(truncate_from)}"


def complete_rows(ds: Dataset, species) -> np.ndarray:
    """Boolean mask of the stars with every one of ``species`` measured."""
    return ~np.isnan(ds.abundances(list(species))).any(axis=1)


def representation(
    ds: Dataset,
    input: str = "spectra",
    k: int = 30,
    seed: int = 0,
    species=None,
    rows=None,
    truncate_from=None,
    extra_mask_ranges=(),
    weights: str | None = None,
) -> RateInputs:
    """``ds.rate_inputs`` with this module's memoised compressions (optional truncation and weights).

    Abundance inputs drop stars lacking a used species (counted in ``description["n_left_out"]``)."""
    comp = None
    if input == "spectra":
        comp = compression(ds, k, seed, truncate_from, extra_mask_ranges, weights=weights)
    elif input == "subset":
        species = _species(species or PAPER_SUBSET)
    inp = ds.rate_inputs(input, k=k, seed=seed, species=species, rows=rows, compression=comp)
    if input == "spectra":
        inp.description["compression"] = _compression_note(k, truncate_from) + (
            "" if weights is None else f", {weights}-weighted"
        )
    return inp


def _rates(inp: RateInputs, notes: list, **kw):
    """doppelganger_rates with its warnings collected into ``notes`` instead of printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = doppelganger_rates(inp.z_pop, inp.z_clust, inp.cluster_ids, **inp.as_kwargs(), **kw)
    for w in caught:
        msg = str(w.message)
        if msg not in notes:
            notes.append(msg)
    return res


def _n_rated(res):
    ok = res.per_cluster["rate"].notna()
    return int(ok.sum()), int(res.per_cluster.loc[ok, "n_stars"].sum())


# ---------------------------------------------------------------------------- Fig. 2
def k_sweep(
    ds: Dataset,
    ks=DEFAULT_KS,
    seed: int = 0,
    cv=(True, False),
    *,
    truncate_from: int | None = None,
    variant: str = "transformed",
    method: str = "rsca",
    weights: str | None = None,
    max_dvhelio: float = MAX_DVHELIO,
    max_dak: float = MAX_DAK,
    extra_mask_ranges=(),
    progress=False,
) -> pd.DataFrame:
    """Global doppelganger rate vs K, with (leave-one-cluster-out) and without CV (Fig. 2).

    ``method``: the metric learner (``"rsca"``, ``"rca"``, ``"lda"``, ``"nca"``; ``variant`` is
    RSCA's). ``weights="ivar"``: the error-aware compression (see :func:`compression`).
    One row per (K, cv): ``k, cv, global_rate, n_clusters_rated, n_stars_rated, compression,
    variant, method, weights, seed, label, notes``. A K the data cannot support (too few cluster
    stars) gives NaN and the reason in ``notes``. Progress: ``len(ks) * len(cv)`` units.
    """
    _check_dataset(ds)
    opts = {"variant": variant} if check_method(method) == "rsca" else {"method": method}
    ks = _positive_ints(ks, "ks")
    cvs = [bool(c) for c in (cv if isinstance(cv, (list, tuple)) else [cv])]
    bar = _Progress(progress, len(ks) * len(cvs), "K sweep")
    rows = []
    try:
        for k in ks:
            inp = representation(
                ds,
                "spectra",
                k,
                seed,
                truncate_from=truncate_from,
                extra_mask_ranges=extra_mask_ranges,
                weights=weights,
            )
            for c in cvs:
                notes = []
                try:
                    res = _rates(
                        inp,
                        notes,
                        cv=c,
                        **opts,
                        max_dvhelio=max_dvhelio,
                        max_dak=max_dak,
                        keep_distances=False,
                    )
                    g, (nc, ns) = res.global_rate, _n_rated(res)
                except ValueError as exc:
                    g, nc, ns = np.nan, 0, 0
                    notes.append(str(exc))
                rows.append(
                    {
                        "k": k,
                        "cv": c,
                        "global_rate": g,
                        "n_clusters_rated": nc,
                        "n_stars_rated": ns,
                        "compression": _compression_note(k, truncate_from),
                        "variant": variant if method == "rsca" else "",
                        "method": method,
                        "weights": weights or "none",
                        "seed": int(seed),
                        "label": ds.label,
                        "notes": " | ".join(notes),
                    }
                )
                bar.update()
    finally:
        bar.close()
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- beyond the paper (issue 15)
METHOD_NAMES = {"rsca": "RSCA (paper)", "rca": "RCA", "lda": "LDA", "nca": "NCA"}


def method_comparison(
    ds: Dataset,
    k: int = 30,
    seed: int = 0,
    methods=METHODS,
    inputs=("spectra", "subset"),
    *,
    subset=PAPER_SUBSET,
    cv: bool = True,
    weights: str | None = None,
    max_dvhelio: float = MAX_DVHELIO,
    max_dak: float = MAX_DAK,
    extra_mask_ranges=(),
    progress=False,
    truncate_from: int | None = None,
) -> dict:
    """RSCA against the metric learners the paper cites, by the paper's yardstick.

    Every method is fitted on the same inputs (``inputs``: "spectra" = K PCA scores, "abundances",
    "subset") and scored by the same leave-one-cluster-out protocol (each fold refits it without the
    held-out cluster; :func:`~rsca_core.metrics.doppelganger_rates` with ``method=``). Returns a dict:
    ``"table"``: one row per (input, method): ``input, representation, method, method_name,
    global_rate, n_clusters_rated, n_stars_rated, k, cv, weights, seed, label, notes``;
    ``"per_cluster"``: ``input, method, cluster, n_stars, rate``; ``"settings"``.
    Progress: ``len(inputs) * len(methods)`` units. ``truncate_from``: the spectra are the leading
    ``k`` components of that larger compression (as :func:`k_sweep`; the dashboard's one PCA).
    """
    _check_dataset(ds)
    methods = [check_method(m) for m in methods]
    sub = _species(subset)
    bar = _Progress(progress, len(inputs) * len(methods), "methods")
    rows, per = [], []
    try:
        for inp_name in inputs:
            inp = representation(
                ds,
                inp_name,
                k,
                seed,
                species=sub,
                truncate_from=truncate_from,
                extra_mask_ranges=extra_mask_ranges,
                weights=weights,
            )
            for m in methods:
                row, clusters = _method_rates(inp, inp_name, m, cv, seed, max_dvhelio, max_dak)
                rows.append(row | {"k": int(k) if inp_name == "spectra" else np.nan, "weights": weights or "none"})
                rows[-1] |= {"seed": int(seed), "label": ds.label}
                per += clusters
                bar.update()
    finally:
        bar.close()
    per = pd.DataFrame(per, columns=["input", "method", "cluster", "n_stars", "rate"])
    per["seed"], per["label"] = int(seed), ds.label
    settings = {
        "k": int(k),
        "seed": int(seed),
        "methods": methods,
        "inputs": list(inputs),
        "subset": sub,
        "cv": bool(cv),
        "label": ds.label,
    }
    return {"table": pd.DataFrame(rows), "per_cluster": per, "settings": settings}


def _method_rates(inp, inp_name, method, cv, seed, max_dvhelio, max_dak):
    """One row of the method comparison and its per-cluster rates (a failed fit: NaN and the reason)."""
    notes, per = [], []
    try:
        res = _rates(
            inp,
            notes,
            cv=cv,
            method=method,
            random_state=seed,
            max_dvhelio=max_dvhelio,
            max_dak=max_dak,
            keep_distances=False,
        )
        g, (nc, ns) = res.global_rate, _n_rated(res)
        per = [
            {"input": inp_name, "method": method, "cluster": r.cluster, "n_stars": int(r.n_stars), "rate": r.rate}
            for r in res.per_cluster.itertuples()
        ]
    except ValueError as exc:
        g, nc, ns = np.nan, 0, 0
        notes.append(str(exc))
    row = {
        "input": inp_name,
        "representation": INPUT_NAMES[inp_name],
        "method": method,
        "method_name": METHOD_NAMES[method],
        "global_rate": g,
        "n_clusters_rated": nc,
        "n_stars_rated": ns,
        "cv": bool(cv),
        "notes": " | ".join(notes),
    }
    return row, per


def flux_error_weights(
    ds: Dataset,
    ks=(10, 20, 30),
    seed: int = 0,
    *,
    truncate_from: int | None = None,
    method: str = "rsca",
    extra_mask_ranges=(),
    progress=False,
) -> dict:
    """Does error-aware compression lower the doppelganger rate? Plain vs ``weights="ivar"`` PCA.

    The leave-one-cluster-out rate of ``method`` at each K of ``ks`` with the plain compression
    (every observed pixel counts the same) and with the inverse-variance-weighted one
    (``MaskedPCA(weights="ivar")``, the bundle's flux errors, capped at ``compress.IVAR_CAP``),
    same seed, same truncation. Returns ``{"table": k_sweep rows of both (column
    ``compression_weights``), "answer": one sentence, "settings"}``. Progress: ``2 * len(ks)`` units.
    """
    _check_dataset(ds)
    if ds.errors is None:
        raise ValueError(f"{ds.name}: the bundle stores no flux errors, so there is nothing to weight by")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        parts = [
            k_sweep(
                ds,
                ks,
                seed,
                cv=True,
                truncate_from=truncate_from,
                method=method,
                weights=w,
                extra_mask_ranges=extra_mask_ranges,
                progress=progress,
            )
            for w in (None, "ivar")
        ]
    t = pd.concat(parts, ignore_index=True).rename(columns={"weights": "compression_weights"})
    fit_notes = list(dict.fromkeys(str(w.message) for w in caught))
    answer = weights_answer(t) + "".join(f" Note: {n}." for n in fit_notes)
    return {
        "table": t,
        "answer": answer,
        "settings": {"ks": list(ks), "seed": int(seed), "method": method, "label": ds.label},
    }


def weights_answer(table: pd.DataFrame) -> str:
    """One sentence: whether the ivar-weighted compression lowers the rate at the largest K, and the
    relative change at every K.

    Examples
    --------
    >>> t = pd.DataFrame({"k": [10, 10, 30, 30], "compression_weights": ["none", "ivar"] * 2,
    ...                   "global_rate": [0.02, 0.019, 0.010, 0.012]})
    >>> weights_answer(t)
    'Weighting each pixel by its inverse variance does not lower the doppelganger rate at K = 30 (0.0100 plain → 0.0120 weighted); change per K: K = 10 −5.0 %, K = 30 +20.0 %.'
    """
    piv = table.pivot_table(index="k", columns="compression_weights", values="global_rate")
    if not {"none", "ivar"} <= set(piv.columns) or piv.dropna().empty:
        return "No answer: a rate could not be computed for both compressions."
    piv = piv.dropna()
    change = 100 * (piv["ivar"] - piv["none"]) / piv["none"]
    kmax = int(piv.index.max())
    a, b = float(piv.loc[kmax, "none"]), float(piv.loc[kmax, "ivar"])
    per_k = ", ".join(f"K = {int(k)} {c:+.1f} %".replace("-", "−") for k, c in change.items())
    return (
        f"Weighting each pixel by its inverse variance {'lowers' if b < a else 'does not lower'} the "
        f"doppelganger rate at K = {kmax} ({a:.4f} plain → {b:.4f} weighted); change per K: {per_k}."
    )


# ---------------------------------------------------------------------------- Table 1
def top_n_table(
    ds: Dataset,
    k: int = 30,
    ns=DEFAULT_NS,
    n_seeds: int = 10,
    seed: int = 0,
    *,
    cv: bool = True,
    truncate_from: int | None = None,
    variant: str = "transformed",
    max_dvhelio: float = MAX_DVHELIO,
    max_dak: float = MAX_DAK,
    extra_mask_ranges=(),
    progress=False,
) -> pd.DataFrame:
    """Global rate keeping only the top N axes (and all K axes) of a K-dim map (Table 1).

    Compressions with seeds ``seed … seed + n_seeds − 1``; for each, one pass over the folds gives
    every N. One row per N (the last row: all K axes): ``n_axes, axes, mean, std`` (sample std,
    ddof = 1, NaN for one seed), ``n_seeds``, one ``rate_seed<s>`` column per seed, the paper's
    ``paper_mean, paper_std`` where the SPEC quotes them, ``k, cv, seeds, seed, label``.
    Progress: ``n_seeds`` units.
    """
    _check_dataset(ds)
    ns = sorted(set(_positive_ints(ns, "ns")))
    if ns[-1] > k:
        raise ValueError(f"top N={ns[-1]} exceeds K={k}")
    n_seeds = _positive_ints([n_seeds], "n_seeds")[0]
    seeds = [int(seed) + i for i in range(n_seeds)]
    levels = [n for n in ns if n < k] + [None]
    per_seed = {}
    notes = []
    bar = _Progress(progress, n_seeds, f"top-N table (K={k})")
    try:
        for s in seeds:
            inp = representation(ds, "spectra", k, s, truncate_from=truncate_from, extra_mask_ranges=extra_mask_ranges)
            res = _rates(
                inp,
                notes,
                cv=cv,
                top_n=levels,
                variant=variant,
                max_dvhelio=max_dvhelio,
                max_dak=max_dak,
                keep_distances=False,
            )
            per_seed[s] = {n: res[n].global_rate for n in levels}
            bar.update()
    finally:
        bar.close()
    rows = []
    for n in levels:
        vals = np.array([per_seed[s][n] for s in seeds], float)
        paper = PAPER_TOP_N.get("all" if n is None else n, (np.nan, np.nan))
        row = {
            "n_axes": k if n is None else n,
            "axes": f"all {k}" if n is None else f"top {n}",
            "mean": float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan,
            "std": float(np.nanstd(vals, ddof=1)) if np.isfinite(vals).sum() > 1 else np.nan,
            "n_seeds": int(np.isfinite(vals).sum()),
        }
        row |= {f"rate_seed{s}": v for s, v in zip(seeds, vals)}
        row |= {
            "paper_mean": paper[0] if k == 30 else np.nan,
            "paper_std": (paper[1] if paper[1] is not None else np.nan) if k == 30 else np.nan,
            "k": int(k),
            "cv": bool(cv),
            "compression": _compression_note(k, truncate_from),
            "seeds": f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0]),
            "seed": int(seed),
            "label": ds.label,
            "notes": " | ".join(notes),
        }
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- Fig. 4
def ablation(
    ds: Dataset,
    k: int = 30,
    subset=PAPER_SUBSET,
    *,
    variants=VARIANTS,
    n_seeds: int = 1,
    seed: int = 0,
    cv: bool = True,
    common_stars: bool = True,
    truncate_from: int | None = None,
    max_dvhelio: float = MAX_DVHELIO,
    max_dak: float = MAX_DAK,
    extra_mask_ranges=(),
    progress=False,
) -> pd.DataFrame:
    """{spectra (K PCA scores), all 21 abundances, ``subset``} × ``variants`` (Fig. 4).

    Spectra rates are averaged over ``n_seeds`` compressions (seeds ``seed …``); abundances are
    deterministic (one run). ``common_stars=True`` evaluates all three representations on the same
    stars: those with all 21 species (and the subset) measured, as the paper's sample. One row per
    (representation, variant): ``input, representation, variant, mean, std, n_runs, k, species,
    n_field, n_cluster_stars, paper, seeds, seed, label, notes``.
    Progress: ``len(variants) * (n_seeds + 2)`` units.

    Over 80 lines with its docstring and the row of each (representation, variant); the loop is one idea.
    """
    _check_dataset(ds)
    sub = _species(subset)
    variants = list(variants)
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {v!r}")
    n_seeds = _positive_ints([n_seeds], "n_seeds")[0]
    seeds = [int(seed) + i for i in range(n_seeds)]
    rows_mask = complete_rows(ds, sorted(set(SPECIES) | set(sub))) if common_stars else None
    bar = _Progress(progress, len(variants) * (n_seeds + 2), "ablation")
    out = []
    try:
        for inp_name in ("spectra", "abundances", "subset"):
            runs = seeds if inp_name == "spectra" else [None]
            inputs = [
                representation(
                    ds,
                    inp_name,
                    k,
                    s if s is not None else seed,
                    species=sub,
                    rows=rows_mask,
                    truncate_from=truncate_from,
                    extra_mask_ranges=extra_mask_ranges,
                )
                for s in runs
            ]
            for v in variants:
                notes, vals = [], []
                for inp in inputs:
                    try:
                        res = _rates(
                            inp, notes, cv=cv, variant=v, max_dvhelio=max_dvhelio, max_dak=max_dak, keep_distances=False
                        )
                        vals.append(res.global_rate)
                    except ValueError as exc:
                        vals.append(np.nan)
                        notes.append(str(exc))
                    bar.update()
                vals = np.array(vals, float)
                d = inputs[0].description
                out.append(
                    {
                        "input": inp_name,
                        "representation": INPUT_NAMES[inp_name],
                        "variant": v,
                        "mean": float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan,
                        "std": float(np.nanstd(vals, ddof=1)) if np.isfinite(vals).sum() > 1 else np.nan,
                        "n_runs": int(np.isfinite(vals).sum()),
                        "k": int(k) if inp_name == "spectra" else np.nan,
                        "species": "" if inp_name == "spectra" else ",".join(d["species"]),
                        "n_field": d["n_field"],
                        "n_cluster_stars": d["n_cluster_stars"],
                        "paper": PAPER_ABLATION.get((inp_name, v), np.nan)
                        if (inp_name != "spectra" or k == 30) and (inp_name != "subset" or sub == list(PAPER_SUBSET))
                        else np.nan,
                        "seeds": (f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0]))
                        if inp_name == "spectra"
                        else "",
                        "seed": int(seed),
                        "label": ds.label,
                        "notes": " | ".join(notes),
                    }
                )
    finally:
        bar.close()
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------- Fig. 5
def default_cluster_counts(n_usable: int, max_points: int = 10) -> list[int]:
    """Up to ``max_points`` training-set sizes between 2 and n_usable − 1 (inclusive)."""
    if n_usable < 3:
        raise ValueError(f"need at least 3 clusters with 2 or more stars, got {n_usable}")
    return sorted(set(int(round(v)) for v in np.linspace(2, n_usable - 1, max_points)))


def data_size_curve(
    ds: Dataset,
    ks=DATA_SIZE_KS,
    n_clusters=None,
    n_trials: int = 50,
    seed: int = 0,
    *,
    truncate_from: int | None = None,
    variant: str = "transformed",
    max_dvhelio: float = MAX_DVHELIO,
    max_dak: float = MAX_DAK,
    extra_mask_ranges=(),
    return_trials: bool = False,
    progress=False,
):
    """Expected global rate when the map is trained on only m clusters (Fig. 5).

    Evaluation (held-out, so it never scores a cluster with a map that saw it): in each trial, for
    every cluster c with ≥ 2 stars, a training set of m clusters is drawn at random (without
    replacement) from the *other* clusters with ≥ 2 stars; the map (steps 3–4; the field sphering
    does not depend on the clusters) is fitted on those m clusters and rate_c is measured exactly as
    in SPEC §2. The trial's global rate is the n_c-weighted mean of rate_c; the curve is the mean
    over trials. For m = J − 1 (all other clusters) this *is* the leave-one-cluster-out rate of
    ``doppelganger_rates``. Training subsets are drawn once from ``default_rng(seed)`` and shared
    by every K (common random numbers: differences between K are not sampling noise). A draw whose
    clusters are too few to constrain K axes (Σ(n_j − 1) < K) cannot be fitted; its rate_c is left
    out and counted in ``fraction_unfit``.

    Returns a DataFrame, one row per (K, m): ``k, n_train_clusters, mean_rate, std_rate`` (over
    trials), ``sem``, ``n_trials``, ``fraction_unfit``, ``seed, label``; with ``return_trials`` also
    the per-trial table. Progress: ``len(ks) * len(n_clusters) * n_trials`` units.

    Over 80 lines: most of it is this docstring and the argument list.
    """
    _check_dataset(ds)
    ks = _positive_ints(ks, "ks")
    n_trials = _positive_ints([n_trials], "n_trials")[0]
    est = RSCA(variant=variant)
    ids_all = ds.stars["cluster"].to_numpy(dtype=object)[ds.cluster_index]
    groups0 = group_indices(check_cluster_ids(ids_all, len(ids_all)))
    usable = [c for c, v in groups0.items() if len(v) >= 2]
    ms = default_cluster_counts(len(usable)) if n_clusters is None else _positive_ints(n_clusters, "n_clusters")
    bad = [m for m in ms if m > len(usable) - 1]
    if bad:
        raise ValueError(
            f"n_clusters={bad[0]} is too many: each evaluated cluster can be trained on at most "
            f"{len(usable) - 1} other clusters"
        )
    ms = sorted(set(ms))
    rng = np.random.default_rng(seed)
    # draws[m][t][c] = names of the training clusters for evaluating c (shared by every K)
    draws = {
        m: [
            {c: sorted(rng.choice([o for o in usable if o != c], size=m, replace=False).tolist()) for c in usable}
            for _ in range(n_trials)
        ]
        for m in ms
    }
    bar = _Progress(progress, len(ks) * len(ms) * n_trials, "data-size curve")
    trial_rows = []
    try:
        with threadpool_limits(limits=1, user_api="blas"):  # K × K work: BLAS threads only add overhead
            _data_size_trials(
                ds,
                ks,
                ms,
                n_trials,
                usable,
                draws,
                est,
                seed,
                truncate_from,
                extra_mask_ranges,
                float(max_dvhelio),
                float(max_dak),
                trial_rows,
                bar,
            )
    finally:
        bar.close()
    trials = pd.DataFrame(trial_rows)
    summary = [
        _data_size_row(int(k), int(m), grp, len(usable), variant, truncate_from, seed, ds.label)
        for (k, m), grp in trials.groupby(["k", "n_train_clusters"], sort=True)
    ]
    summary = pd.DataFrame(summary)
    if return_trials:
        trials["seed"], trials["label"] = int(seed), ds.label
        return summary, trials
    return summary


def _data_size_row(k, m, grp, n_usable, variant, truncate_from, seed, label):
    """One point of the Fig. 5 curve from its trials."""
    vals = grp["global_rate"].to_numpy(float)
    fin = vals[np.isfinite(vals)]
    return {
        "k": k,
        "n_train_clusters": m,
        "mean_rate": float(fin.mean()) if len(fin) else np.nan,
        "std_rate": float(fin.std(ddof=1)) if len(fin) > 1 else np.nan,
        "sem": float(fin.std(ddof=1) / np.sqrt(len(fin))) if len(fin) > 1 else np.nan,
        "n_trials": int(len(fin)),
        "fraction_unfit": float(grp["n_unfit"].sum() / grp["n_evaluated"].sum()),
        "n_clusters_total": n_usable,
        "variant": variant,
        "compression": _compression_note(k, truncate_from),
        "seed": int(seed),
        "label": label,
    }


def _data_size_trials(
    ds,
    ks,
    ms,
    n_trials,
    usable,
    draws,
    est,
    seed,
    truncate_from,
    extra_mask_ranges,
    max_dvhelio,
    max_dak,
    trial_rows,
    bar,
):
    for k in ks:
        inp = representation(ds, "spectra", k, seed, truncate_from=truncate_from, extra_mask_ranges=extra_mask_ranges)
        ids = check_cluster_ids(inp.cluster_ids, len(inp.cluster_ids))
        groups = group_indices(ids)
        mean, sphere = est.fit_population(inp.z_pop)
        S_cl = (inp.z_clust - mean) @ sphere.T
        stats = ClusterStats(S_cl, groups)
        pf = PairFilter(inp.pop_vhelio, inp.pop_ak, max_dvhelio, max_dak)
        cand = {}
        for c in usable:
            idx = groups[c]
            cidx, ok = pf.candidates(inp.clust_vhelio[idx], inp.clust_ak[idx])
            cand[c] = (inp.z_pop[cidx] - mean, ok)
        for m in ms:
            for t in range(n_trials):
                rates, weights, unfit = [], [], 0
                for c in usable:
                    try:
                        geom = est.fit_cluster_subset(stats, draws[m][t][c])
                    except ValueError:
                        unfit += 1
                        continue
                    idx = groups[c]
                    Zf, ok = cand[c]
                    rate, _, n_pairs, _, _ = fold_rate(geom.matrix(), S_cl[idx], Zf, sphere, ok, False)
                    if n_pairs:
                        rates.append(rate)
                        weights.append(len(idx))
                g = global_rate(rates, weights)
                trial_rows.append(
                    {
                        "k": k,
                        "n_train_clusters": m,
                        "trial": t,
                        "global_rate": g,
                        "n_unfit": unfit,
                        "n_evaluated": len(usable),
                    }
                )
                bar.update()


# ---------------------------------------------------------------------------- Fig. 3
CORRELATION_LABELS = ("teff", "logg", "fe_h", *[f"x_h_{s.lower()}" for s in SPECIES], "ak_targ", "vhelio_avg", "snr")


def feature_relations(
    ds: Dataset,
    k: int = 30,
    n_features: int = 3,
    seed: int = 0,
    *,
    vhelio_feature=None,
    n_correlated: int = 10,
    truncate_from: int | None = None,
    extra_mask_ranges=(),
) -> dict:
    """The top RSCA features of a K-dim map fitted on all clusters, against observed labels (Fig. 3).

    Returns a dict:

    * ``"stars"``: one row per star (field and cluster): ``apogee_id, cluster, is_cluster, fe_h,
      vhelio_avg, feature_1 … feature_m`` (m = max(n_features, vhelio_feature)), ``label, seed``;
    * ``"correlations"``: for features 1 … ``n_correlated``: Pearson r over the field stars with
      each observed label (Teff, logg, [Fe/H], the 21 [X/H], AK_TARG, VHELIO_AVG, SNR, and
      ``mg_fe`` = [Mg/H] − [Fe/H]), plus
      ``r2_all_labels`` (R² of a linear fit of the feature on all those labels together) and the
      feature's scale σ_i;
    * ``"settings"``: k, seed, n_features, vhelio_feature, label.

    Feature i is output axis i of ``RSCA`` (σ_i ascending: most discriminative first). Its sign is
    arbitrary; it is chosen so that the feature correlates positively with [Fe/H] over the field.
    The paper plots features 1–3 against [Fe/H] and feature 4 (its example of a radial-velocity
    trend) against VHELIO_AVG. ``vhelio_feature=None`` picks, among features n_features + 1 …
    n_correlated, the one most correlated (|Pearson r|) with VHELIO_AVG over the field.

    Over 80 lines: most of it is this docstring.
    """
    _check_dataset(ds)
    n_features, n_correlated = _positive_ints([n_features, n_correlated], "feature counts")
    if vhelio_feature is not None:
        vhelio_feature = _positive_ints([vhelio_feature], "vhelio_feature")[0]
    m = max(n_features, vhelio_feature or 0)
    if m > k:
        raise ValueError(f"feature {m} does not exist in a K={k} map")
    n_corr = min(k, max(n_correlated, m))
    z = compression_scores(ds, k, seed, truncate_from, extra_mask_ranges)
    isc = ds.is_cluster
    inp = representation(ds, "spectra", k, seed, truncate_from=truncate_from, extra_mask_ranges=extra_mask_ranges)
    est = RSCA().fit(inp.z_pop, inp.z_clust, inp.cluster_ids)
    Y = est.transform(z, top_n=n_corr)
    st = ds.stars
    field = ~isc
    feh = st["fe_h"].to_numpy(float)
    for i in range(n_corr):
        ok = field & np.isfinite(feh)
        if ok.sum() > 2 and np.corrcoef(Y[ok, i], feh[ok])[0, 1] < 0:
            Y[:, i] = -Y[:, i]
    vh = st["vhelio_avg"].to_numpy(float)
    if vhelio_feature is None:
        if n_corr > n_features:
            r = [abs(np.corrcoef(Y[field, i], vh[field])[0, 1]) for i in range(n_features, n_corr)]
            vhelio_feature = n_features + 1 + int(np.nanargmax(r))
        else:
            vhelio_feature = n_features
    m = max(n_features, vhelio_feature)
    stars = pd.DataFrame(
        {"apogee_id": st["apogee_id"], "cluster": st["cluster"], "is_cluster": isc, "fe_h": feh, "vhelio_avg": vh}
    )
    for i in range(m):
        stars[f"feature_{i + 1}"] = Y[:, i]
    stars["label"], stars["seed"] = ds.label, int(seed)

    rows = _label_correlations(Y[field], st.loc[field], est.scales_, n_corr)
    corr = pd.DataFrame(rows)
    corr["seed"], corr["label"] = int(seed), ds.label
    return {
        "stars": stars,
        "correlations": corr,
        "settings": {
            "k": int(k),
            "seed": int(seed),
            "n_features": n_features,
            "vhelio_feature": vhelio_feature,
            "compression": _compression_note(k, truncate_from),
            "label": ds.label,
            "n_field": int(field.sum()),
            "n_cluster_stars": int(isc.sum()),
        },
    }


def _label_correlations(Yf, field_stars, scales, n_corr):
    """Rows of the Fig. 3 correlation table: Pearson r of each feature with each observed label over
    the field, and the R² of a linear fit of the feature on all labels together."""
    labels = [c for c in CORRELATION_LABELS if c in field_stars.columns]
    L = field_stars[labels].to_numpy(dtype=float, copy=True)
    L[L <= -9999] = np.nan
    rows = []
    complete = np.isfinite(L).all(axis=1)
    design = np.column_stack([np.ones(complete.sum()), L[complete]])
    if "x_h_mg" in labels and "fe_h" in labels:  # [Mg/Fe], the α tracer of the paper's feature 2
        L = np.column_stack([L, L[:, labels.index("x_h_mg")] - L[:, labels.index("fe_h")]])
        labels = labels + ["mg_fe"]
    for i in range(n_corr):
        row = {"feature": f"feature_{i + 1}", "axis": i + 1, "scale": float(scales[i])}
        for j, lab in enumerate(labels):
            ok = np.isfinite(L[:, j])
            x, y = L[ok, j], Yf[ok, i]
            row[lab] = float(np.corrcoef(x, y)[0, 1]) if ok.sum() > 2 and x.std() > 0 and y.std() > 0 else np.nan
        y = Yf[complete, i]
        if len(y) > design.shape[1]:
            coef, *_ = np.linalg.lstsq(design, y, rcond=None)
            resid = y - design @ coef
            row["r2_all_labels"] = float(1 - resid.var() / y.var()) if y.var() > 0 else np.nan
        else:
            row["r2_all_labels"] = np.nan
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- Fig. 9/10
def _histogram_rows(inp_name, cluster, intra, inter, bins):
    """Rows of the Fig. 9/10 histogram table of one cluster (counts and densities per bin)."""
    hist = distance_histogram(intra, inter, bins)
    edges, ci, ce = hist["edges"], hist["intra"], hist["inter"]
    width = np.diff(edges)
    return [
        {
            "input": inp_name,
            "cluster": cluster,
            "bin": b,
            "left": edges[b],
            "right": edges[b + 1],
            "intra_count": int(ci[b]),
            "inter_count": int(ce[b]),
            "intra_density": ci[b] / (len(intra) * width[b]),
            "inter_density": ce[b] / (len(inter) * width[b]) if len(inter) else np.nan,
        }
        for b in range(bins)
    ]


def distance_histograms(
    ds: Dataset,
    k: int = 30,
    seed: int = 0,
    inputs=("spectra", "subset"),
    *,
    subset=PAPER_SUBSET,
    cv: bool = True,
    bins: int = 30,
    truncate_from: int | None = None,
    max_dvhelio: float = MAX_DVHELIO,
    max_dak: float = MAX_DAK,
    extra_mask_ranges=(),
    progress=False,
) -> dict:
    """Per-cluster intra- vs inter-cluster distance distributions (Fig. 9/10).

    For each representation in ``inputs`` ("spectra", "abundances", "subset"), the full RSCA
    (``cv`` as in SPEC §2) gives each cluster's intra- and inter-cluster distances. Returns a dict:

    * ``"summary"``: one row per (input, cluster): ``input, representation, cluster, n_stars, rate,
      median_intra, n_intra_pairs, n_inter_pairs, global_rate, label, seed``;
    * ``"histograms"``: ``input, cluster, bin, left, right, intra_count, inter_count,
      intra_density, inter_density`` (densities normalised over *all* distances; the range is
      [0, max(largest intra distance, 99th percentile of inter distances)], so the top 1 % of
      inter distances may fall outside);
    * ``"distances"``: {input: {cluster: {"intra": array, "inter": array}}} (the raw distances).

    Progress: ``len(inputs)`` units.

    Over 80 lines: most of it is this docstring and the argument list.
    """
    _check_dataset(ds)
    bins = _positive_ints([bins], "bins")[0]
    sub = _species(subset)
    bar = _Progress(progress, len(inputs), "distance histograms")
    summary, hists, raw = [], [], {}
    try:
        for inp_name in inputs:
            inp = representation(
                ds, inp_name, k, seed, species=sub, truncate_from=truncate_from, extra_mask_ranges=extra_mask_ranges
            )
            notes = []
            res = _rates(inp, notes, cv=cv, max_dvhelio=max_dvhelio, max_dak=max_dak, keep_distances=True)
            raw[inp_name] = {}
            for r in res.per_cluster.itertuples():
                intra = np.asarray(res.intra_distances.get(r.cluster, np.array([])), float)
                inter = res.inter_distances.get(r.cluster)
                inter = np.array([]) if inter is None else np.asarray(inter, float)
                raw[inp_name][r.cluster] = {"intra": intra, "inter": inter}
                summary.append(
                    {
                        "input": inp_name,
                        "representation": INPUT_NAMES[inp_name],
                        "cluster": r.cluster,
                        "n_stars": int(r.n_stars),
                        "rate": r.rate,
                        "median_intra": r.median_intra,
                        "n_intra_pairs": int(len(intra)),
                        "n_inter_pairs": int(r.n_inter_pairs),
                        "global_rate": res.global_rate,
                        "k": int(k) if inp_name == "spectra" else np.nan,
                        "cv": bool(cv),
                        "seed": int(seed),
                        "label": ds.label,
                        "notes": " | ".join(notes),
                    }
                )
                if len(intra) == 0:
                    continue
                hists += _histogram_rows(inp_name, r.cluster, intra, inter, bins)
            bar.update()
    finally:
        bar.close()
    h = pd.DataFrame(hists)
    if len(h):
        h["seed"], h["label"] = int(seed), ds.label
    return {
        "summary": pd.DataFrame(summary),
        "histograms": h,
        "distances": raw,
        "settings": {
            "k": int(k),
            "seed": int(seed),
            "cv": bool(cv),
            "inputs": list(inputs),
            "subset": sub,
            "bins": bins,
            "label": ds.label,
        },
    }
