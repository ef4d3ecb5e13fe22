"""The Systematics page: paper App. A-C through rsca_core.diagnostics, and the rate with extra bands masked."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np

from rsca_core.constants import SPECIES
from rsca_core.fileio import jsonable

from .compute import compression, compute_rates, fit_map
from .datasets import SEED, compression_ready, load
from .errors import UserError, short
from .jobs import compression_progress, prepare_compression
from .settings import MAX_MASK_RANGES, N_PIXELS, Settings, parse_mask

#: Units of the Systematics page's masked ranges: wavelength in Å (the default) or pixel indices.
MASK_UNITS = {"A": "Å", "px": "pixels"}
_WAVE_RANGE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*[-–]\s*(\d+(?:\.\d*)?)\s*$")


def paper_mask_ranges() -> tuple:
    from rsca_core import PAPER_MASK_RANGES

    return tuple(tuple(r) for r in PAPER_MASK_RANGES)


def _wavelength_grid(key) -> np.ndarray:
    w = np.asarray(load(key).wavelength, float)
    if w.ndim != 1 or len(w) < 2 or not np.all(np.diff(w) > 0):
        raise UserError(f"dataset {key!r}: its wavelength grid is not increasing; enter the masked ranges in pixels")
    return w


def parse_mask_text(key, text, unit="A") -> tuple:
    """Masked ranges as typed on the Systematics page, as pixel ranges ``((start, stop), …)`` (stop
    excluded), sorted and without duplicates; UserError naming the bad range.

    ``unit="A"``: wavelength ranges "15267-15280.5, …" in Å, inclusive: every pixel of the dataset's
    wavelength grid with start ≤ λ ≤ stop (a range reaching past the grid is cut at its ends; one
    holding no pixel is an error). ``unit="px"``: pixel ranges, as :func:`.settings.parse_mask`."""
    if unit == "px":
        return parse_mask(text)
    if unit != "A":
        raise UserError(f"masked ranges: unit must be one of {', '.join(MASK_UNITS.values())}")
    if text in (None, ""):
        return ()
    parts = [p for p in str(text).replace(";", ",").split(",") if p.strip()]
    if len(parts) > MAX_MASK_RANGES:
        raise UserError(f"at most {MAX_MASK_RANGES} wavelength ranges, not {len(parts)}")
    w = _wavelength_grid(key)
    out = []
    for p in parts:
        m = _WAVE_RANGE.match(p)
        if m is None:
            raise UserError(f"wavelength range {short(p, 24)!r} must look like START-STOP in Å (e.g. 15267-15280)")
        a, b = float(m.group(1)), float(m.group(2))
        if not a < b:
            raise UserError(f"wavelength range {a:g}-{b:g} Å: start must be below stop")
        start, stop = int(np.searchsorted(w, a, side="left")), int(np.searchsorted(w, b, side="right"))
        if stop <= start:
            raise UserError(
                f"wavelength range {a:g}-{b:g} Å holds no pixel of this dataset (grid {w[0]:.2f}-{w[-1]:.2f} Å)"
            )
        out.append((start, stop))
    return tuple(sorted(set(out)))


def mask_text(key, ranges, unit="A") -> str:
    """Pixel ranges written in ``unit`` for the page's text box: in Å, from the first pixel's
    wavelength (rounded down to 0.01 Å) to the last one's (rounded up), so that
    :func:`parse_mask_text` gives back exactly these pixels."""
    if unit == "px" or not ranges:
        return ", ".join(f"{a}-{b}" for a, b in ranges)
    w = _wavelength_grid(key)
    out = []
    for a, b in ranges:
        a, b = max(0, min(int(a), len(w) - 1)), max(1, min(int(b), len(w)))
        out.append(f"{math.floor(w[a] * 100) / 100:.2f}-{math.ceil(w[b - 1] * 100) / 100:.2f}")
    return ", ".join(out)


def residual_diagnostics(key, n_components: int = 30, max_stars: int = 3000, report=None) -> dict:
    """App. A (extinction) and App. B (radial velocity) residual spectra, as plain arrays."""
    from rsca_core import diagnostics

    ds = load(key)
    out = {"label": ds.label}
    steps = (("extinction", diagnostics.extinction_residuals), ("rv", diagnostics.rv_residuals))
    for i, (name, fn) in enumerate(steps):
        if report:
            report(i / len(steps), f"{name}: PCA of the quiet stars")
        try:
            r = fn(ds, n_components=n_components, max_low=max_stars, max_high=max_stars, seed=SEED)
        except ValueError as exc:
            out[name] = {"error": str(exc)}
            continue
        out[name] = {
            "wavelength": np.asarray(r.wavelength, float).tolist(),
            "residual": np.nan_to_num(np.asarray(r.residual, float), nan=0.0).tolist(),
            "bands": [[int(a), int(b)] for a, b in r.suggested_ranges],
            "summary": jsonable(r.summary()),
            "threshold": float(r.threshold),
            "baseline": float(r.baseline),
        }
    if report:
        report(1.0, "done")
    return out


def visit_comparison(s: Settings) -> dict:
    """App. C: distances between siblings observed together vs separately, in the RSCA space of the
    settings (fitted without CV on the selected clusters), each divided by the median pair distance
    of its cluster; only the clusters with pairs of both kinds, as in the summary's test."""
    from rsca_core import diagnostics

    ds = load(s.ds)
    model, _ri = fit_map(replace(s, top_n=None))
    if s.input == "spectra":
        z = compression(s.ds, s.k, s.mask).scores
    else:
        z = ds.abundances(list(SPECIES) if s.input == "abundances" else list(s.species))
    rep = np.asarray(model.transform(np.asarray(z, float)))
    vs = diagnostics.visit_similarity(ds, rep, k=s.k)
    pairs = vs.pairs
    if "compared" in pairs:  # the pairs the summary compares (clusters with both kinds of pairs)
        pairs = pairs[pairs["compared"].to_numpy(bool)]
    return {
        "label": ds.label,
        "summary": jsonable(vs.summary),
        "together": pairs.loc[pairs["category"] == "together", "similarity"].to_numpy(float).tolist(),
        "separate": pairs.loc[pairs["category"] == "separate", "similarity"].to_numpy(float).tolist(),
    }


def rate_with_mask(s: Settings, mask: tuple, report=None) -> dict:
    """Global rate of the settings without and with extra masked pixel ranges (for a background job).

    The masked compression is computed in the job and never written to disk (each distinct mask
    would otherwise leave a compression behind for good); the job's result is what is kept."""
    if not mask:
        raise UserError("enter at least one pixel range to mask")
    report = report or (lambda f, t: None)
    if s.input == "spectra" and not compression_ready(s.ds, k=s.k):
        prepare_compression(s.ds, report=lambda f, t: report(0.4 * f, t), k=s.k)
    report(0.4, "rates without the extra mask")
    base = compute_rates(replace(s, mask=()))["global_rate"]
    what = f"compressing K={s.k} with {len(mask)} extra masked range(s)"
    pca = load(s.ds).compress(
        s.k,
        seed=SEED,
        extra_mask_ranges=tuple(mask),
        use_cache=False,
        progress=compression_progress(report, what, 0.45, 0.95),
    )
    report(0.95, "rates with the extra mask")
    masked = compute_rates(replace(s, mask=tuple(mask)), pca=pca)["global_rate"]
    report(1.0, "done")
    return {"without": base, "with": masked, "mask": [list(m) for m in mask]}


MAX_SUGGESTED_BANDS = 500  # App. A/B bands one residual panel may carry


def _panel(d) -> dict:
    if not isinstance(d, dict):
        raise UserError("the stored residuals are not valid: recompute them")
    if "error" in d:
        return {"error": str(d["error"])[:500]}
    try:
        w = np.asarray(d["wavelength"], float)
        r = np.asarray(d["residual"], float)
        bands = [(int(a), int(b)) for a, b in d["bands"]]
    except (KeyError, TypeError, ValueError):
        raise UserError("the stored residuals are not valid: recompute them") from None
    if w.ndim != 1 or w.shape != r.shape or len(w) > N_PIXELS or len(w) < 2:
        raise UserError("the stored residuals are not valid: recompute them")
    if len(bands) > MAX_SUGGESTED_BANDS or any(not 0 <= a < b <= len(w) for a, b in bands):
        raise UserError("the stored residual bands are not valid: recompute them")
    summary = d.get("summary") if isinstance(d.get("summary"), dict) else {}
    return {"wavelength": w, "residual": r, "bands": bands, "summary": summary}


def check_residuals(resid) -> dict:
    """The App. A/B result a page sent back (a browser store: anything may come), checked and made
    plain: ``{"extinction": panel, "rv": panel}`` with missing panels left out; UserError if forged."""
    if resid in (None, {}):
        return {}
    if not isinstance(resid, dict):
        raise UserError("the stored residuals are not valid: recompute them")
    if "error" in resid:
        raise UserError(str(resid["error"])[:500])
    return {k: _panel(resid[k]) for k in ("extinction", "rv") if resid.get(k) is not None}
