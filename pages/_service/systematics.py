"""The Systematics page: paper App. A-C through rsca_core.diagnostics, and the rate with extra bands masked."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rsca_core.constants import SPECIES
from rsca_core.fileio import jsonable

from .compute import compression, compute_rates, fit_map, rates
from .datasets import SEED, compression_ready, load
from .jobs import prepare_compression
from .settings import Settings


def paper_mask_ranges() -> tuple:
    from rsca_core import PAPER_MASK_RANGES

    return tuple(tuple(r) for r in PAPER_MASK_RANGES)


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
    """App. C: intra-cluster similarity of siblings observed together vs separately, in the RSCA space
    of the settings (fitted without CV on the selected clusters)."""
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
    return {
        "label": ds.label,
        "summary": jsonable(vs.summary),
        "together": pairs.loc[pairs["category"] == "together", "similarity"].to_numpy(float).tolist(),
        "separate": pairs.loc[pairs["category"] == "separate", "similarity"].to_numpy(float).tolist(),
    }


def rate_with_mask(s: Settings, mask: tuple, report=None) -> dict:
    """Global rate of the settings without and with extra masked pixel ranges (computes the
    masked compression if needed: minutes on a big survey, so call it from a background job)."""
    base = rates(replace(s, mask=()))["global_rate"] if compression_ready(s.ds) else None
    if mask and not compression_ready(s.ds, mask):
        prepare_compression(s.ds, report=report, mask=mask)
    masked = compute_rates(replace(s, mask=tuple(mask)))["global_rate"] if mask else base
    if base is None:
        base = compute_rates(replace(s, mask=()), allow_compute=True)["global_rate"]
    return {"without": base, "with": masked, "mask": [list(m) for m in mask]}
