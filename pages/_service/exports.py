"""Downloads: the per-cluster rates as CSV and the fitted map as ``.npz`` (written by rsca_core.export)."""

from __future__ import annotations

from dataclasses import asdict

from rsca_core.constants import SPECIES
from rsca_core.export import map_arrays, map_npz_bytes

from .compute import compression, fit_map, rates
from .datasets import dataset_label, load, uid
from .settings import Settings


def rates_csv(s: Settings) -> str:
    r = rates(s)
    per = r["per_cluster"].copy()
    header = (
        f"# RSCA Lab per-cluster doppelganger rates - {r['label'].upper()} data\n"
        f"# dataset={s.ds} uid={uid(s.ds)} input={s.input} k={s.k if s.input == 'spectra' else ''} "
        f"cv={int(s.cv)} top_n={s.top_n or 'all'} method={s.method} weights={s.weights} global_rate={r['global_rate']:.6g}\n"
    )
    per.insert(0, "data", r["label"])
    per.insert(1, "method", s.method)
    return header + per.to_csv(index=False)


def map_npz(s: Settings) -> bytes:
    """The fitted map (no CV, selected clusters) as an .npz: y = x @ W.T + b for complete spectra."""
    model, ri = fit_map(s)
    kind = dataset_label(s.ds)
    settings = asdict(s) | {"uid": uid(s.ds), "kind": kind}
    if s.input == "spectra":
        arrays = map_arrays(
            model,
            ri.cluster_ids,
            kind,
            settings,
            compression=compression(s.ds, s.k, s.mask, weights=s.weights),
            wavelength=load(s.ds).wavelength,
        )
    else:
        species = list(SPECIES) if s.input == "abundances" else list(s.species)
        arrays = map_arrays(model, ri.cluster_ids, kind, settings, species=species)
    return map_npz_bytes(arrays)
