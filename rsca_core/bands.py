"""The calibration bands of issue 11: the paper's findings that the default simulated survey must
show, each as one function returning a :class:`BandResult` (value, band, met or not).

The bands (docs/simulator.md; the paper's value in brackets):

* spectra, K = 30, all axes, leave-one-cluster-out: 0.012–0.030 [0.0199] (:func:`spectra_rate`);
* top-4 axes within 35 % of all 30 [0.0180] (:func:`top4_plateau`); top-1 at least 3× all 30
  [0.096] (:func:`top1_contrast`);
* abundance subset Fe, Mg, Ni, Si, Al, C, N (transformed): 0.015–0.035 [0.023], with the spectra
  rate on the same stars below it (:func:`subset_rate`);
* K sweep with CV: best K in 20–40 (:func:`best_k`), K = 60 at least 15 % worse than the best
  (:func:`k60_overfit`);
* RSCA feature 1 tracks [Fe/H] (|r| ≥ 0.8, :func:`feature1_feh`), feature 2 tracks α ([Mg/Fe],
  |r| ≥ 0.5, :func:`feature2_alpha`); none of the top 3 features with |r(VHELIO_AVG)| > 0.3 while
  a later one trends with it (|r| ≥ 0.15, :func:`vhelio_features`).

Correlations are Pearson r over the field stars (the ``features`` experiment's table).
:func:`check_results` evaluates every band from ``reproduce``'s experiment results; the report's
band section shows its table. The App. A–C diagnostics band is checked by the tests in
``tests/test_diagnostics.py``, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Spectra, K = 30, all axes, with CV.
SPECTRA_RATE = (0.012, 0.030)
#: |top-4 − all| / all at most this.
TOP4_TOLERANCE = 0.35
#: top-1 rate at least this many times the all-axes rate.
TOP1_FACTOR = 3.0
#: Abundance subset, transformed.
SUBSET_RATE = (0.015, 0.035)
#: Best K of the cross-validated sweep.
BEST_K = (20, 40)
#: The K whose rate must show overfitting, and by how much it must exceed the best.
OVERFIT_K, OVERFIT_EXCESS = 60, 0.15
#: |r| of feature 1 with [Fe/H] and of feature 2 with [Mg/Fe], at least.
FEATURE1_FEH_R, FEATURE2_ALPHA_R = 0.8, 0.5
#: No top-3 feature above this |r(VHELIO_AVG)| ...
TOP3_VHELIO_MAX = 0.3
#: ... while a later feature reaches at least this |r(VHELIO_AVG)| (a trend, as the paper's Fig. 3).
LATER_VHELIO_MIN = 0.15


@dataclass(frozen=True)
class BandResult:
    """One band: ``value`` measured on the dataset, the ``band`` it must lie in (text), ``ok``
    (True/False, or None when the inputs needed were not computed) and a ``note`` saying how.

    Examples
    --------
    >>> spectra_rate(0.02)
    BandResult(name='spectra rate, K = 30, all axes', value=0.02, band='0.012–0.030', ok=True, note='')
    """

    name: str
    value: float | int
    band: str
    ok: bool | None
    note: str = ""


def _missing(*values) -> bool:
    return any(v is None or not math.isfinite(float(v)) for v in values)


def _unknown(name: str, band: str, note: str) -> BandResult:
    return BandResult(name, float("nan"), band, None, note)


def spectra_rate(rate_all: float, band=SPECTRA_RATE) -> BandResult:
    """Spectra rate (K = 30, all axes, with CV) inside ``band``.

    Examples
    --------
    >>> spectra_rate(0.0036).ok
    False
    """
    name, text = "spectra rate, K = 30, all axes", f"{band[0]:.3f}–{band[1]:.3f}"
    if _missing(rate_all):
        return _unknown(name, text, "not computed")
    return BandResult(name, float(rate_all), text, bool(band[0] <= rate_all <= band[1]))


def top4_plateau(rate_top4: float, rate_all: float, tolerance: float = TOP4_TOLERANCE) -> BandResult:
    """The top-4 axes keep the rate of all axes: |top4 − all| / all ≤ ``tolerance``.

    Examples
    --------
    >>> top4_plateau(0.018, 0.020).value
    0.1
    """
    name, text = "top-4 axes vs all axes (relative difference)", f"≤ {tolerance:.0%}"
    if _missing(rate_top4, rate_all) or rate_all <= 0:
        return _unknown(name, text, "not computed")
    rel = abs(float(rate_top4) - float(rate_all)) / float(rate_all)
    return BandResult(name, round(rel, 12), text, bool(rel <= tolerance), f"top-4 {rate_top4:.4f}, all {rate_all:.4f}")


def top1_contrast(rate_top1: float, rate_all: float, factor: float = TOP1_FACTOR) -> BandResult:
    """One axis is clearly worse than all of them: top1 / all ≥ ``factor``.

    Examples
    --------
    >>> top1_contrast(0.096, 0.0199).ok
    True
    """
    name, text = "top-1 axis / all axes", f"≥ {factor:g}×"
    if _missing(rate_top1, rate_all) or rate_all <= 0:
        return _unknown(name, text, "not computed")
    ratio = float(rate_top1) / float(rate_all)
    return BandResult(name, ratio, text, bool(ratio >= factor), f"top-1 {rate_top1:.4f}, all {rate_all:.4f}")


def subset_rate(rate_subset: float, rate_spectra: float, band=SUBSET_RATE) -> BandResult:
    """Abundance-subset rate inside ``band`` and the spectra rate (same stars) below it.

    Examples
    --------
    >>> subset_rate(0.023, 0.0199).ok, subset_rate(0.023, 0.025).ok
    (True, False)
    """
    name, text = "abundance subset rate; spectra below it", f"{band[0]:.3f}–{band[1]:.3f}, spectra < subset"
    if _missing(rate_subset):
        return _unknown(name, text, "not computed")
    in_band = band[0] <= rate_subset <= band[1]
    if _missing(rate_spectra):
        return BandResult(name, float(rate_subset), text, None, "spectra rate on the same stars not computed")
    below = rate_spectra < rate_subset
    return BandResult(
        name, float(rate_subset), text, bool(in_band and below), f"spectra {rate_spectra:.4f} on the same stars"
    )


def _sweep(ks, rates):
    ks = np.asarray(ks, float)
    rates = np.asarray(rates, float)
    ok = np.isfinite(ks) & np.isfinite(rates)
    return ks[ok].astype(int), rates[ok]


def best_k(ks, rates, band=BEST_K) -> BandResult:
    """The K of the lowest cross-validated rate lies in ``band``; a sweep that does not reach past
    the band's top cannot show where the rate turns up and gives ``ok=None``.

    Examples
    --------
    >>> best_k([10, 20, 30, 40, 60], [0.03, 0.02, 0.018, 0.022, 0.05]).value
    30
    """
    name, text = "best K (CV sweep)", f"{band[0]}–{band[1]}"
    ks, rates = _sweep(ks, rates)
    if not len(ks):
        return _unknown(name, text, "no K sweep")
    k = int(ks[np.argmin(rates)])
    note = f"K = {', '.join(map(str, ks))}"
    if ks.max() <= band[1]:
        return BandResult(name, k, text, None, note + f": the sweep stops at K = {ks.max()}")
    return BandResult(name, k, text, bool(band[0] <= k <= band[1]), note)


def k60_overfit(ks, rates, k: int = OVERFIT_K, excess: float = OVERFIT_EXCESS) -> BandResult:
    """Overfitting: the rate at K = ``k`` is at least ``1 + excess`` times the best rate.

    Examples
    --------
    >>> round(k60_overfit([10, 20, 30, 60], [0.03, 0.02, 0.018, 0.036]).value, 6)
    2.0
    """
    name, text = f"rate at K = {k} / best rate", f"≥ {1 + excess:g}×"
    ks, rates = _sweep(ks, rates)
    if k not in ks:
        return _unknown(name, text, f"K = {k} not in the sweep")
    ratio = float(rates[list(ks).index(k)] / rates.min())
    return BandResult(name, ratio, text, bool(ratio >= 1 + excess), f"best {rates.min():.4f}")


def feature1_feh(r: float, threshold: float = FEATURE1_FEH_R) -> BandResult:
    """|r| of RSCA feature 1 with [Fe/H] (field stars) at least ``threshold``.

    Examples
    --------
    >>> feature1_feh(-0.93).ok
    True
    """
    name, text = "|r(feature 1, [Fe/H])|", f"≥ {threshold:g}"
    if _missing(r):
        return _unknown(name, text, "not computed")
    return BandResult(name, abs(float(r)), text, bool(abs(r) >= threshold))


def feature2_alpha(r: float, threshold: float = FEATURE2_ALPHA_R) -> BandResult:
    """|r| of RSCA feature 2 with [Mg/Fe] (field stars) at least ``threshold``.

    Examples
    --------
    >>> feature2_alpha(0.44).ok
    False
    """
    name, text = "|r(feature 2, [Mg/Fe])|", f"≥ {threshold:g}"
    if _missing(r):
        return _unknown(name, text, "not computed")
    return BandResult(name, abs(float(r)), text, bool(abs(r) >= threshold))


def vhelio_features(r_by_feature, top: int = 3, top_max=TOP3_VHELIO_MAX, later_min=LATER_VHELIO_MIN) -> BandResult:
    """No feature among the first ``top`` with |r(VHELIO_AVG)| > ``top_max``, and a later one with
    |r| ≥ ``later_min``. ``r_by_feature``: r of features 1, 2, … in order. ``value`` is the
    largest top-``top`` |r|.

    Examples
    --------
    >>> vhelio_features([0.05, -0.66, 0.58, 0.1]).ok, vhelio_features([0.05, 0.1, 0.2, -0.3]).ok
    (False, True)
    """
    name, text = f"|r(VHELIO_AVG)| of features 1–{top}; a later one", f"≤ {top_max:g}; later ≥ {later_min:g}"
    r = np.abs(np.asarray(r_by_feature, float))
    if len(r) <= top or not np.isfinite(r[:top]).all():
        return _unknown(name, text, "too few features correlated")
    head, later = float(r[:top].max()), r[top:]
    j = int(np.nanargmax(later)) if np.isfinite(later).any() else -1
    lmax = float(later[j]) if j >= 0 else float("nan")
    ok = head <= top_max and j >= 0 and lmax >= later_min
    return BandResult(name, head, text, bool(ok), f"later: feature {top + 1 + j} |r| = {lmax:.2f}")


def check_results(results: dict, k: int = 30) -> list[BandResult]:
    """Every band from ``reproduce``'s experiment results (``{name: {"table": DataFrame, ...}}``):
    Table 1 (``top_n``), Fig. 4 (``ablation``, transformed), the K sweep (``k_sweep``, with CV) and
    the feature correlations (``features``). A band whose experiment was not run has ``ok=None``.
    """
    top = results.get("top_n", {}).get("table")
    r_all = r4 = r1 = None
    if top is not None and len(top) and int(top["k"].iloc[-1]) == k:
        t = top.set_index("axes")["mean"]
        r_all, r4, r1 = t.iloc[-1], t.get("top 4"), t.get("top 1")
    out = [spectra_rate(r_all), top4_plateau(r4, r_all), top1_contrast(r1, r_all)]
    ab = results.get("ablation", {}).get("table")
    sub = spec = None
    if ab is not None and len(ab):
        tr = ab[ab["variant"] == "transformed"].set_index("input")["mean"]
        sub, spec = tr.get("subset"), tr.get("spectra")
    out.append(subset_rate(sub, spec))
    ksw = results.get("k_sweep", {}).get("table")
    ks, rates = [], []
    if ksw is not None and len(ksw):
        cv = ksw[ksw["cv"].astype(bool)]
        ks, rates = cv["k"].to_numpy(), cv["global_rate"].to_numpy(float)
    out += [best_k(ks, rates), k60_overfit(ks, rates)]
    corr = results.get("features", {}).get("table")
    r_feh = r_alpha = None
    r_v = []
    if corr is not None and len(corr):
        c = corr.sort_values("axis")
        r_feh = c["fe_h"].iloc[0] if "fe_h" in c else None
        r_alpha = c["mg_fe"].iloc[1] if "mg_fe" in c and len(c) > 1 else None
        r_v = c["vhelio_avg"].to_numpy(float) if "vhelio_avg" in c else []
    out += [feature1_feh(r_feh), feature2_alpha(r_alpha), vhelio_features(r_v)]
    return out


def bands_table(bands: list[BandResult]) -> pd.DataFrame:
    """The bands as a table: ``band_name, value, band, ok, note`` (``ok``: "yes", "NO" or "not checked").

    Examples
    --------
    >>> bands_table([spectra_rate(0.02)])["ok"].tolist()
    ['yes']
    """
    return pd.DataFrame(
        {
            "band_name": [b.name for b in bands],
            "value": pd.Series([b.value for b in bands], dtype=object),  # best K stays an integer
            "band": [b.band for b in bands],
            "ok": ["not checked" if b.ok is None else ("yes" if b.ok else "NO") for b in bands],
            "note": [b.note for b in bands],
        }
    )
