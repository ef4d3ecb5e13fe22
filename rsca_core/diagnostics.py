"""Systematics diagnostics of the paper's appendices (SPEC §3), as tables and arrays (no plotting).

* App. A — :func:`extinction_residuals`: a K-component PCA (with missing pixels, ``MaskedPCA``)
  fitted on low-extinction stars (AK_TARG < 0.005); the mean residual of high-extinction stars
  (AK_TARG > 0.5) from their projection on that basis, per wavelength. Interstellar bands show as
  residual dips; contiguous runs of pixels beyond a threshold are suggested for masking.
* App. B — :func:`rv_residuals`: the same with |VHELIO_AVG| < 5 vs VHELIO_AVG > 80 km/s.
* App. C — :func:`visit_similarity`: intra-cluster pair distances for siblings observed together
  (identical visit dates) against siblings observed separately (no common date); partly
  overlapping pairs are set aside, as in the paper.

CLI: ``python -m rsca_core diagnose --dataset DIR --which dib|rv|visits [--out CSV]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .constants import MAX_PIXEL_ERROR, SPECIES
from .fileio import atomic_open

#: Defaults of the paper (SPEC §3).
EXTINCTION_LOW, EXTINCTION_HIGH = 0.005, 0.5
RV_LOW, RV_HIGH = 5.0, 80.0
N_COMPONENTS = 30


# ====================================================================== App. A / B
@dataclass
class ResidualDiagnostic:
    """Per-pixel mean residual of the "high" stars from the PCA basis of the "low" stars."""

    which: str  # "extinction" | "rv"
    wavelength: np.ndarray  # (P,) Å
    residual: np.ndarray  # (P,) mean residual over high stars (NaN where never observed)
    abs_residual: np.ndarray  # (P,) mean |residual|
    n_observed: np.ndarray  # (P,) high stars with that pixel observed
    bands: pd.DataFrame  # suggested pixel ranges to mask
    threshold: float  # |statistic - baseline| above which a pixel is flagged
    baseline: float  # median of the statistic over pixels
    statistic: str  # "mean" | "abs"
    n_low: int
    n_high: int
    label: str = "simulated"  # "simulated" | "real"
    settings: dict = field(default_factory=dict)

    @property
    def flagged(self) -> np.ndarray:
        s = self.residual if self.statistic == "mean" else self.abs_residual
        with np.errstate(invalid="ignore"):
            return np.abs(np.nan_to_num(s - self.baseline)) > self.threshold

    @property
    def suggested_ranges(self) -> list[tuple[int, int]]:
        """The bands as ``[(start, stop), …]`` pixel ranges (usable as ``extra_mask_ranges``)."""
        return [(int(a), int(b)) for a, b in zip(self.bands["start"], self.bands["stop"])]

    def to_frame(self) -> pd.DataFrame:
        """One row per pixel (pixel, wavelength, residual, abs_residual, n_observed, flagged, in_band, data)."""
        in_band = np.zeros(len(self.wavelength), bool)
        for a, b in self.suggested_ranges:
            in_band[a:b] = True
        return pd.DataFrame(
            {
                "pixel": np.arange(len(self.wavelength)),
                "wavelength": self.wavelength,
                "residual": self.residual,
                "abs_residual": self.abs_residual,
                "n_observed": self.n_observed,
                "flagged": self.flagged,
                "in_band": in_band,
                "data": self.label,
            }
        )

    def summary(self) -> dict:
        s = self.residual if self.statistic == "mean" else self.abs_residual
        i = int(np.nanargmax(np.abs(np.nan_to_num(s - self.baseline)))) if np.isfinite(s).any() else -1
        return {
            "diagnostic": self.which,
            "data": self.label,
            "n_low": self.n_low,
            "n_high": self.n_high,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "baseline": self.baseline,
            "peak_pixel": i,
            "peak_wavelength": float(self.wavelength[i]) if i >= 0 else float("nan"),
            "peak_value": float(s[i]) if i >= 0 else float("nan"),
            "n_bands": int(len(self.bands)),
            **{k: v for k, v in self.settings.items() if k in ("n_components", "low", "high")},
        }


def quality_mask(ds, rows, max_pixel_error: float = MAX_PIXEL_ERROR):
    """Per-pixel quality mask of some stars without the bundle's fixed band ranges.

    With stored errors this is error > ``max_pixel_error`` | non-finite | chip-gap zeros (so the
    interstellar ranges the loader masks stay visible to the diagnostic); without errors it is the
    bundle mask.
    """
    rows = np.asarray(rows)
    if ds.errors is None:
        return np.asarray(ds.mask[rows], dtype=bool)
    from .apogee import pixel_mask

    return pixel_mask(np.asarray(ds.spectra[rows]), np.asarray(ds.errors[rows]), (), max_pixel_error)


def _select(ds, stars):
    if stars == "field":
        return ds.field_index
    if stars == "all":
        return np.arange(ds.n_stars)
    raise ValueError(f"stars must be 'field' or 'all', not {stars!r}")


def _subsample(rows, max_n, rng):
    if max_n is not None and len(rows) > max_n:
        rows = np.sort(rng.choice(rows, int(max_n), replace=False))
    return rows


def find_bands(
    values,
    wavelength,
    threshold=None,
    *,
    nsigma: float = 5.0,
    baseline=None,
    merge_gap: int = 3,
    min_width: int = 2,
    pad: int = 0,
):
    """Contiguous pixel ranges where ``|values - baseline|`` exceeds ``threshold``.

    ``baseline`` defaults to the median of ``values``; ``threshold`` to ``nsigma`` normal-consistent
    MADs of ``values`` about it. Runs separated by at most ``merge_gap`` pixels are merged, runs
    narrower than ``min_width`` pixels dropped, and the kept ones widened by ``pad`` pixels.
    Returns ``(bands DataFrame, threshold, baseline)``; bands have start, stop (exclusive),
    wave_start, wave_stop, n_pixels, peak_pixel, peak_wavelength, peak_value.
    """
    v = np.asarray(values, float)
    finite = np.isfinite(v)
    if baseline is None:
        baseline = float(np.median(v[finite])) if finite.any() else 0.0
    if threshold is None:
        dev = np.abs(v[finite] - baseline)
        threshold = float(nsigma * 1.4826 * np.median(dev)) if finite.any() else np.inf
    flagged = finite & (np.abs(np.where(finite, v, baseline) - baseline) > threshold)
    idx = np.flatnonzero(flagged)
    runs = []
    if idx.size:
        start = prev = idx[0]
        for i in idx[1:]:
            if i - prev - 1 > merge_gap:
                runs.append((start, prev + 1))
                start = i
            prev = i
        runs.append((start, prev + 1))
    rows = []
    P = len(v)
    for a, b in runs:
        if b - a < min_width:
            continue
        a, b = max(0, a - pad), min(P, b + pad)
        seg = np.abs(np.nan_to_num(v[a:b] - baseline))
        k = a + int(np.argmax(seg))
        rows.append(
            {
                "start": int(a),
                "stop": int(b),
                "wave_start": float(wavelength[a]),
                "wave_stop": float(wavelength[b - 1]),
                "n_pixels": int(b - a),
                "peak_pixel": k,
                "peak_wavelength": float(wavelength[k]),
                "peak_value": float(v[k]),
            }
        )
    cols = ["start", "stop", "wave_start", "wave_stop", "n_pixels", "peak_pixel", "peak_wavelength", "peak_value"]
    return pd.DataFrame(rows, columns=cols), float(threshold), float(baseline)


def residual_spectrum(
    ds,
    low_rows,
    high_rows,
    *,
    n_components: int = N_COMPONENTS,
    seed: int = 0,
    mask: str = "auto",
    max_pixel_error: float = MAX_PIXEL_ERROR,
    progress: bool = False,
    chunk: int = 2048,
    max_iter: int = 30,
    tol: float = 1e-5,
    min_reference: int = 5,
    **pca_options,
):
    """Mean residual per pixel of ``high_rows`` from a MaskedPCA basis fitted on ``low_rows``.

    ``mask``: "auto" (per-pixel quality mask from the errors when stored, else the bundle mask),
    "bundle" (the bundle mask) or "quality". ``max_iter``/``tol`` are the MaskedPCA EM settings
    (looser than for the doppelganger rates: the residual spectrum is stable long before the EM
    objective stops moving). Pixels observed in fewer than ``min_reference`` reference stars are
    left out (NaN residual). Returns ``(residual, abs_residual, n_observed, pca)``.
    """
    from .compress import MaskedPCA

    low_rows, high_rows = np.asarray(low_rows), np.asarray(high_rows)

    def masks(rows):
        if mask == "bundle" or (mask == "auto" and ds.errors is None):
            return np.asarray(ds.mask[rows], dtype=bool)
        if mask in ("auto", "quality"):
            return quality_mask(ds, rows, max_pixel_error)
        raise ValueError(f"mask must be 'auto', 'bundle' or 'quality', not {mask!r}")

    if len(low_rows) <= n_components:
        raise ValueError(
            f"only {len(low_rows)} reference stars for a {n_components}-component PCA; "
            "loosen the threshold or lower n_components"
        )
    if len(high_rows) == 0:
        raise ValueError("no star in the comparison set; loosen the threshold")
    from threadpoolctl import threadpool_limits

    X = np.asarray(ds.spectra[low_rows], dtype=np.float32)
    M = masks(low_rows)
    # pixels (almost) never observed in the reference set cannot be modelled: leave them out
    poor = (~M).sum(0) < max(min_reference, 1)
    M |= poor[None, :]
    pca = MaskedPCA(n_components, random_state=seed, progress=progress, max_iter=max_iter, tol=tol, **pca_options)
    # thin matrix products (P × K): multi-threaded BLAS only adds contention (10× slower on 2 busy cores)
    with threadpool_limits(limits=1, user_api="blas"):
        pca.fit(np.where(M, 0, X).astype(np.float32), M)
    del X
    P = ds.n_pixels
    total = np.zeros(P)
    total_abs = np.zeros(P)
    count = np.zeros(P, np.int64)
    for a in range(0, len(high_rows), chunk):
        rows = high_rows[a : a + chunk]
        Xh = np.asarray(ds.spectra[rows], dtype=np.float64)
        Mh = masks(rows) | poor[None, :]
        Xh = np.where(Mh, 0.0, Xh)
        with threadpool_limits(limits=1, user_api="blas"):
            recon = pca.inverse_transform(pca.transform(Xh, Mh))
        r = np.where(Mh, 0.0, Xh - recon)
        total += r.sum(0)
        total_abs += np.abs(r).sum(0)
        count += (~Mh).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        residual = np.where(count > 0, total / count, np.nan)
        abs_residual = np.where(count > 0, total_abs / count, np.nan)
    return residual, abs_residual, count, pca


def _residual_diagnostic(
    which,
    ds,
    low_rows,
    high_rows,
    *,
    n_components,
    seed,
    statistic,
    threshold,
    nsigma,
    merge_gap,
    min_width,
    pad,
    mask,
    max_pixel_error,
    progress,
    settings,
):
    if statistic not in ("mean", "abs"):
        raise ValueError(f"statistic must be 'mean' or 'abs', not {statistic!r}")
    residual, abs_residual, count, _ = residual_spectrum(
        ds,
        low_rows,
        high_rows,
        n_components=n_components,
        seed=seed,
        mask=mask,
        max_pixel_error=max_pixel_error,
        progress=progress,
    )
    stat = residual if statistic == "mean" else abs_residual
    bands, thr, base = find_bands(
        stat, ds.wavelength, threshold, nsigma=nsigma, merge_gap=merge_gap, min_width=min_width, pad=pad
    )
    settings = dict(
        settings,
        n_components=n_components,
        seed=seed,
        mask=mask,
        nsigma=nsigma,
        merge_gap=merge_gap,
        min_width=min_width,
        pad=pad,
    )
    return ResidualDiagnostic(
        which,
        np.asarray(ds.wavelength),
        residual,
        abs_residual,
        count,
        bands,
        thr,
        base,
        statistic,
        int(len(low_rows)),
        int(len(high_rows)),
        ds.label,
        settings,
    )


def extinction_residuals(
    ds,
    n_components: int = N_COMPONENTS,
    low: float = EXTINCTION_LOW,
    high: float = EXTINCTION_HIGH,
    *,
    stars: str = "field",
    statistic: str = "mean",
    threshold: float | None = None,
    nsigma: float = 5.0,
    merge_gap: int = 3,
    min_width: int = 2,
    pad: int = 0,
    max_low: int | None = None,
    max_high: int | None = None,
    seed: int = 0,
    mask: str = "auto",
    max_pixel_error: float = MAX_PIXEL_ERROR,
    progress: bool = False,
) -> ResidualDiagnostic:
    """Paper App. A: interstellar bands from high-extinction residuals of a low-extinction PCA.

    Reference set: AK_TARG < ``low``; comparison set: AK_TARG > ``high`` (``stars`` = "field" or
    "all"; ``max_low``/``max_high`` subsample at random with ``seed``). Pixels where the mean
    residual (``statistic="mean"``, or mean |residual| with "abs") departs from its median over
    pixels by more than ``threshold`` (default ``nsigma`` robust sigmas) are flagged; flagged runs
    (merged across gaps ≤ ``merge_gap``, at least ``min_width`` wide, widened by ``pad``) are the
    suggested bands (``result.bands``, ``result.suggested_ranges``).
    """
    rng = np.random.default_rng(seed)
    rows = _select(ds, stars)
    ak = ds.stars["ak_targ"].to_numpy(float)[rows]
    low_rows = _subsample(rows[np.isfinite(ak) & (ak < low)], max_low, rng)
    high_rows = _subsample(rows[np.isfinite(ak) & (ak > high)], max_high, rng)
    return _residual_diagnostic(
        "extinction",
        ds,
        low_rows,
        high_rows,
        n_components=n_components,
        seed=seed,
        statistic=statistic,
        threshold=threshold,
        nsigma=nsigma,
        merge_gap=merge_gap,
        min_width=min_width,
        pad=pad,
        mask=mask,
        max_pixel_error=max_pixel_error,
        progress=progress,
        settings={
            "low": low,
            "high": high,
            "column": "ak_targ",
            "stars": stars,
            "reference": f"AK_TARG < {low}",
            "comparison": f"AK_TARG > {high}",
        },
    )


def rv_residuals(
    ds,
    n_components: int = N_COMPONENTS,
    low: float = RV_LOW,
    high: float = RV_HIGH,
    *,
    high_abs: bool = False,
    stars: str = "field",
    statistic: str = "mean",
    threshold: float | None = None,
    nsigma: float = 5.0,
    merge_gap: int = 3,
    min_width: int = 2,
    pad: int = 0,
    max_low: int | None = None,
    max_high: int | None = None,
    seed: int = 0,
    mask: str = "auto",
    max_pixel_error: float = MAX_PIXEL_ERROR,
    progress: bool = False,
) -> ResidualDiagnostic:
    """Paper App. B: radial-velocity systematics; reference |VHELIO_AVG| < ``low``, comparison
    VHELIO_AVG > ``high`` (|VHELIO_AVG| > ``high`` with ``high_abs=True``). Otherwise as
    :func:`extinction_residuals`."""
    rng = np.random.default_rng(seed)
    rows = _select(ds, stars)
    v = ds.stars["vhelio_avg"].to_numpy(float)[rows]
    fin = np.isfinite(v)
    low_rows = _subsample(rows[fin & (np.abs(v) < low)], max_low, rng)
    hv = np.abs(v) if high_abs else v
    high_rows = _subsample(rows[fin & (hv > high)], max_high, rng)
    comp = f"|VHELIO_AVG| > {high}" if high_abs else f"VHELIO_AVG > {high}"
    return _residual_diagnostic(
        "rv",
        ds,
        low_rows,
        high_rows,
        n_components=n_components,
        seed=seed,
        statistic=statistic,
        threshold=threshold,
        nsigma=nsigma,
        merge_gap=merge_gap,
        min_width=min_width,
        pad=pad,
        mask=mask,
        max_pixel_error=max_pixel_error,
        progress=progress,
        settings={
            "low": low,
            "high": high,
            "column": "vhelio_avg",
            "stars": stars,
            "reference": f"|VHELIO_AVG| < {low}",
            "comparison": comp,
        },
    )


# ====================================================================== App. C
_MJD = re.compile(r"^[5-6]\d{4}$")  # MJD 50000-69999 (1995-2049)


def visit_keys(visits: str, key: str = "date") -> frozenset:
    """The set of visit identifiers of one star from its comma-separated VISITS string.

    ``key="date"``: the MJD of each visit (DR16 visit names look like ``apo25m-5046-55938-246``,
    telescope-plate-MJD-fiber: the third token if it looks like an MJD, else the first token that
    does (5 digits, 50000–69999), else the whole name);
    ``key="name"``: the whole visit names.
    """
    if key not in ("date", "name"):
        raise ValueError(f"visit key must be 'date' or 'name', not {key!r}")
    out = set()
    for v in str(visits or "").split(","):
        v = v.strip()
        if not v or v.lower() == "nan":
            continue
        if key == "date":
            toks = re.split(r"[-.:/_ ]", v)
            if len(toks) >= 3 and _MJD.match(toks[2]):
                out.add(toks[2])
            else:
                dates = [t for t in toks if _MJD.match(t)]
                out.add(dates[0] if dates else v)
        else:
            out.add(v)
    return frozenset(out)


def visit_overlap(a: frozenset, b: frozenset) -> float:
    """Fraction of shared visits, 0.5 (|a∩b|/|a| + |a∩b|/|b|) as in the paper's code; NaN if either is empty."""
    if not a or not b:
        return float("nan")
    n = len(a & b)
    return 0.5 * (n / len(a) + n / len(b))


@dataclass
class VisitSimilarity:
    """Intra-cluster pair distances split by whether the two stars were observed together."""

    pairs: pd.DataFrame  # cluster, star_a, star_b, overlap, category, distance, similarity
    summary: dict
    label: str = "simulated"

    def to_frame(self) -> pd.DataFrame:
        return self.pairs.assign(data=self.label)


def _representation(ds, representation, k, seed, extra_mask_ranges=(), progress=False, pca_options=None):
    """(N, d) representation of all stars of ``ds`` used for the pair distances."""
    if isinstance(representation, np.ndarray):
        Z = np.asarray(representation, float)
        if Z.shape[0] != ds.n_stars:
            raise ValueError(f"representation has {Z.shape[0]} rows, the dataset {ds.n_stars} stars")
        return Z
    if representation == "spectra":
        return None  # pixel-space distances, computed pair by pair over commonly observed pixels
    if representation in ("pca", "rsca"):
        from threadpoolctl import threadpool_limits

        opts = dict(pca_options or {})
        if opts:  # non-default EM settings must not land in (or come from) the shared on-disk cache
            opts["use_cache"] = False
        with threadpool_limits(limits=1, user_api="blas"):
            comp = ds.compress(k, seed=seed, extra_mask_ranges=extra_mask_ranges, progress=progress, **opts)
        Z = np.asarray(comp.scores, float)
        if representation == "pca":
            return Z
        inp, variant = ds.rate_inputs("spectra", compression=comp), "transformed"
    elif representation in ("abundances", "abundances-rsca"):
        Z = ds.abundances(SPECIES)
        if np.isnan(Z).any():
            raise ValueError("some stars lack a measured abundance among the 21 species")
        if representation == "abundances":
            return Z
        inp, variant = ds.rate_inputs("abundances"), "scaled"
    else:
        raise ValueError(
            "representation must be 'rsca', 'pca', 'spectra', 'abundances', 'abundances-rsca' or "
            "an array, "
            f"not {representation!r}"
        )
    from .rsca import RSCA

    return RSCA(variant=variant).fit(inp.z_pop, inp.z_clust, inp.cluster_ids).transform(Z)


def _visit_summary(pairs: pd.DataFrame) -> dict:
    """Pair counts, similarities of together vs separate pairs (compared clusters only) and p-values."""
    from scipy import stats

    used = pairs[pairs["compared"].astype(bool)]
    tog = used.loc[used["category"] == "together", "similarity"].to_numpy(float)
    sep = used.loc[used["category"] == "separate", "similarity"].to_numpy(float)
    summary = {
        "n_pairs": int(len(pairs)),
        "n_together": int(len(tog)),
        "n_separate": int(len(sep)),
        "n_partial": int((pairs["category"] == "partial").sum()),
        "n_unknown": int((pairs["category"] == "unknown").sum()),
        "n_clusters_compared": int(used["cluster"].nunique()),
        "median_together": float(np.median(tog)) if len(tog) else float("nan"),
        "median_separate": float(np.median(sep)) if len(sep) else float("nan"),
        "mean_together": float(np.mean(tog)) if len(tog) else float("nan"),
        "mean_separate": float(np.mean(sep)) if len(sep) else float("nan"),
    }
    summary["median_ratio"] = (
        summary["median_together"] / summary["median_separate"] if len(tog) and len(sep) else float("nan")
    )
    if len(tog) and len(sep):
        summary["mannwhitney_p"] = float(stats.mannwhitneyu(tog, sep, alternative="less").pvalue)
        summary["ks_p"] = float(stats.ks_2samp(tog, sep).pvalue)
    else:
        summary["mannwhitney_p"] = summary["ks_p"] = float("nan")
    return summary


def visit_similarity(
    ds,
    representation="rsca",
    *,
    k: int = N_COMPONENTS,
    seed: int = 0,
    key: str = "date",
    normalise: str = "cluster",
    extra_mask_ranges=(),
    progress: bool = False,
    pca_options: dict | None = None,
) -> VisitSimilarity:
    """Paper App. C: intra-cluster similarity for siblings observed together vs separately.

    Every unordered pair of members of a cluster is classified from the stars' ``visits`` (sets of
    visit dates with ``key="date"``, visit names with ``key="name"``): overlap 1 → "together",
    0 → "separate", in between → "partial" (set aside, as in the paper), no visits → "unknown".
    Distances are Euclidean in ``representation``: "rsca" (RSCA fitted on K-component PCA scores
    of field and cluster stars, as in the paper's Fig. 8), "pca", "spectra" (flux differences over
    the pixels both stars have observed, rescaled to the full grid), "abundances-rsca" (scaled RSCA
    of the 21 abundances), "abundances", or an (N, d) array. The PCA is ``ds.compress(k, seed)``
    (cached on disk for bundles; ``pca_options`` such as ``max_iter`` bypass the cache).

    ``similarity`` = distance divided by the median pair distance of the same cluster
    (``normalise="cluster"``, default) or by the mean over all pairs (``"global"``, the paper's
    Fig. 8). The per-cluster scale matters: clusters differ in spread and in how they were observed
    (some entirely on one plate), so a global scale mixes "which cluster" with "observed together"
    and can report a difference where there is no shared systematic. For the same reason, with
    ``normalise="cluster"`` the comparison (``summary``) uses only clusters that have both
    together and separate pairs (``compared`` column of ``pairs``); a cluster observed entirely
    together carries no contrast.

    ``summary``: pair counts, median/mean similarity of each category, their ratio, the one-sided
    Mann–Whitney p-value (together closer than separate) and the two-sided KS p-value. Pairs share
    stars, so the p-values treat correlated pairs as independent: read them as a guide.

    Over 80 lines: a third of it is this docstring; the pair loop and its distance share the locals.
    """

    if normalise not in ("global", "cluster"):
        raise ValueError(f"normalise must be 'global' or 'cluster', not {normalise!r}")
    if "visits" not in ds.stars.columns:
        raise ValueError("the dataset has no 'visits' column")
    gap = ((ds.meta.get("provenance") or {}).get("unavailable") or {}).get("visits")
    if gap:  # the release has no visit names: say so rather than call every pair "unknown"
        raise ValueError(f"the shared-visits diagnostic (App. C) is off for this dataset: {gap}")
    Z = _representation(
        ds, representation, k, seed, extra_mask_ranges=extra_mask_ranges, progress=progress, pca_options=pca_options
    )
    st = ds.stars
    if Z is None:  # "spectra": RMS flux difference over the pixels observed in both stars, × sqrt(P)
        ci = ds.cluster_index
        X = np.asarray(ds.spectra[ci], dtype=np.float64)
        M = np.asarray(ds.effective_mask(extra_mask_ranges)[ci], dtype=bool)
        pos = {int(r): i for i, r in enumerate(ci)}

        def dist(i, j):
            a, b = pos[i], pos[j]
            ok = ~(M[a] | M[b])
            d = X[a, ok] - X[b, ok]
            return float(np.sqrt(np.mean(d * d) * X.shape[1])) if ok.any() else float("nan")
    else:

        def dist(i, j):
            return float(np.linalg.norm(Z[i] - Z[j]))

    keys = [visit_keys(v, key) for v in st["visits"]]
    ids = st["apogee_id"].to_numpy(dtype=object)
    rows = []
    for name in ds.cluster_names:
        members = np.flatnonzero(st["cluster"].to_numpy(dtype=object) == name)
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                i, j = members[x], members[y]
                ov = visit_overlap(keys[i], keys[j])
                cat = "unknown" if np.isnan(ov) else "together" if ov == 1.0 else "separate" if ov == 0.0 else "partial"
                rows.append((name, ids[i], ids[j], ov, cat, dist(i, j)))
    pairs = pd.DataFrame(rows, columns=["cluster", "star_a", "star_b", "overlap", "category", "distance"])
    if len(pairs):
        if normalise == "global":
            pairs["similarity"] = pairs["distance"] / pairs["distance"].mean()
            pairs["compared"] = True
        else:
            pairs["similarity"] = pairs["distance"] / pairs.groupby("cluster")["distance"].transform("median")
            cats = pairs.groupby("cluster")["category"].agg(lambda c: {"together", "separate"} <= set(c))
            pairs["compared"] = pairs["cluster"].map(cats).astype(bool)
    else:
        pairs["similarity"] = []
        pairs["compared"] = []
    summary = {
        "data": ds.label,
        "representation": representation if isinstance(representation, str) else "array",
        "k": k,
        "key": key,
        "normalise": normalise,
    } | _visit_summary(pairs)
    return VisitSimilarity(pairs, summary, ds.label)


# ====================================================================== CLI
def _cmd_diagnose(args) -> int:
    from .dataset import Dataset

    ds = Dataset.load(args.dataset)
    tag = f"[{ds.label} data: {ds.name}]"
    if args.which in ("dib", "rv"):
        fn = extinction_residuals if args.which == "dib" else rv_residuals
        kw = {}
        if args.low is not None:
            kw["low"] = args.low
        if args.high is not None:
            kw["high"] = args.high
        res = fn(
            ds,
            n_components=args.n_components,
            statistic=args.statistic,
            threshold=args.threshold,
            nsigma=args.nsigma,
            max_low=args.max_low,
            max_high=args.max_high,
            seed=args.seed,
            progress=not args.no_progress,
            **kw,
        )
        s = res.summary()
        print(f"{'App. A: interstellar bands' if args.which == 'dib' else 'App. B: radial-velocity systematics'} {tag}")
        print(
            f"reference {res.settings['reference']}: {res.n_low} stars; comparison "
            f"{res.settings['comparison']}: {res.n_high} stars; PCA K={args.n_components}"
        )
        print(
            f"peak |residual| {abs(s['peak_value']):.4g} at {s['peak_wavelength']:.1f} Å (pixel {s['peak_pixel']}); "
            f"threshold {res.threshold:.3g} around {res.baseline:.3g}"
        )
        if len(res.bands):
            print("suggested bands to mask (pixel start:stop, Å):")
            for b in res.bands.itertuples(index=False):
                print(
                    f"  {b.start}:{b.stop}  {b.wave_start:.1f}-{b.wave_stop:.1f} Å  peak {b.peak_value:+.4f} "
                    f"at {b.peak_wavelength:.1f} Å"
                )
            print("as --mask-ranges: " + ",".join(f"{a}:{b}" for a, b in res.suggested_ranges))
        else:
            print("no band exceeds the threshold")
        table = res.to_frame()
    else:
        res = visit_similarity(
            ds,
            args.representation,
            k=args.n_components,
            seed=args.seed,
            key=args.visit_key,
            normalise=args.normalise,
            progress=not args.no_progress,
        )
        s = res.summary
        print(f"App. C: sibling similarity observed together vs separately {tag}")
        rep = s["representation"] + (f" (K={s['k']})" if s["representation"] in ("pca", "rsca") else "")
        print(
            f"representation {rep}, similarity scale per {s['normalise']}; pairs: {s['n_together']} together, "
            f"{s['n_separate']} separate, {s['n_partial']} partial (set aside), {s['n_unknown']} without visits"
        )
        if s["normalise"] == "cluster":
            print(f"compared within the {s['n_clusters_compared']} clusters that have both kinds of pairs")
        print(
            f"median similarity together {s['median_together']:.3f}, separate {s['median_separate']:.3f} "
            f"(ratio {s['median_ratio']:.3f}); one-sided Mann-Whitney p (alternative: together closer) {s['mannwhitney_p']:.3g}, "
            f"KS p {s['ks_p']:.3g}"
        )
        table = res.to_frame()
    if args.out:
        with atomic_open(args.out, "w", newline="") as fh:
            table.to_csv(fh, index=False)
        print(f"wrote {args.out} ({len(table)} rows, labelled '{ds.label}')")
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "diagnose",
        help="systematics diagnostics of the paper's appendices (interstellar bands, RV, visits)",
        description="App. A (--which dib): residuals of high-extinction stars from a low-extinction PCA and the "
        "bands to mask. App. B (--which rv): the same for radial velocity. App. C (--which visits): "
        "sibling similarity observed together vs separately.",
    )
    p.add_argument("--dataset", required=True, help="bundle directory")
    p.add_argument("--which", required=True, choices=("dib", "rv", "visits"))
    p.add_argument("--out", default=None, help="CSV file for the per-pixel residuals / the pair table")
    p.add_argument("--n-components", type=int, default=N_COMPONENTS, help="PCA components (default 30)")
    p.add_argument(
        "--low",
        type=float,
        default=None,
        help=f"reference threshold (default AK_TARG < {EXTINCTION_LOW} / |VHELIO_AVG| < {RV_LOW})",
    )
    p.add_argument(
        "--high",
        type=float,
        default=None,
        help=f"comparison threshold (default AK_TARG > {EXTINCTION_HIGH} / VHELIO_AVG > {RV_HIGH})",
    )
    p.add_argument(
        "--statistic",
        choices=("mean", "abs"),
        default="mean",
        help="flag bands on the mean residual or the mean |residual|",
    )
    p.add_argument("--threshold", type=float, default=None, help="absolute flag threshold (default: nsigma MADs)")
    p.add_argument("--nsigma", type=float, default=5.0)
    p.add_argument("--max-low", type=int, default=None, help="subsample the reference stars")
    p.add_argument("--max-high", type=int, default=None, help="subsample the comparison stars")
    p.add_argument(
        "--representation",
        default="rsca",
        choices=("rsca", "pca", "spectra", "abundances-rsca", "abundances"),
        help="space of the pair distances for --which visits",
    )
    p.add_argument("--visit-key", choices=("date", "name"), default="date")
    p.add_argument(
        "--normalise",
        choices=("cluster", "global"),
        default="cluster",
        help="scale of the similarities: per cluster (default) or over all pairs (paper Fig. 8)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_diagnose)
