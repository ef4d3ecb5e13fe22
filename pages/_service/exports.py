"""Downloads: the per-cluster rates as CSV and the fitted map as ``.npz`` (written by rsca_core.export),
and the one rule for every download's file name and for a CSV's metadata.

A downloaded CSV has no comment lines: its settings are columns (the same value on every row), so it
reads as it is with pandas, R or a spreadsheet. Its file name says the page, what it holds and every
setting that changes it, so two downloads of different views never overwrite each other.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict

import pandas as pd

from rsca_core.constants import SPECIES
from rsca_core.export import map_arrays, map_npz_bytes

from .compute import compression, fit_map, rates
from .datasets import dataset_label, load, uid
from .settings import Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def name_part(value, max_len: int = 60) -> str:
    """``value`` as a piece of a file name: letters, digits, ``.``, ``_``, ``+`` and ``-`` only
    (others become ``-``), at most ``max_len`` characters (a longer one ends in a short hash of it).

    Examples
    --------
    >>> name_part("2M0000 2794/4015038"), name_part("5, 10,15")
    ('2M0000-2794-4015038', '5-10-15')
    """
    text = _UNSAFE.sub("-", str(value)).strip("-") or "none"
    if len(text) <= max_len:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:6]
    return text[: max_len - 7] + "-" + digest


def _ranges(mask) -> str:
    text = "+".join(f"{a}-{b}" for a, b in mask)
    return text if len(mask) <= 3 else f"{len(mask)}ranges-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def settings_name(s: Settings, keys=("input", "k", "method", "top", "cv", "clusters", "mask", "weights")) -> str:
    """The settings of a view, as the part of a file name after the dataset, e.g.
    ``spectra_K30_rsca_top-all_cv_mask-none_weights-none`` (only the ``keys`` asked for; K only for
    spectra, the species of an abundance subset, the trained clusters only when not all).

    Examples
    --------
    >>> settings_name(Settings(k=12, top_n=3, cv=False, mask=((720, 910),)))
    'spectra_K12_rsca_top-3_nocv_mask-720-910_weights-none'
    """
    parts = []
    if "input" in keys:
        parts.append(s.input if s.input != "subset" else "subset-" + ".".join(s.species))
    if "k" in keys and s.input == "spectra":
        parts.append(f"K{s.k}")
    if "method" in keys:
        parts.append(s.method)
    if "top" in keys and s.method == "rsca":
        parts.append(f"top-{s.top_n or 'all'}")
    if "cv" in keys:
        parts.append("cv" if s.cv else "nocv")
    if "clusters" in keys and s.clusters is not None:
        joined = ",".join(s.clusters)
        parts.append(f"{len(s.clusters)}clusters-{hashlib.sha1(joined.encode()).hexdigest()[:6]}")
    if "mask" in keys:
        parts.append("mask-" + (_ranges(s.mask) if s.mask else "none"))
    if "weights" in keys and s.input == "spectra":
        parts.append(f"weights-{s.weights}")
    return "_".join(name_part(p, 80) for p in parts)


def download_name(page: str, what: str, ds: str, rest: str, ext: str) -> str:
    """``rsca-{page}-{what}_{simulated|real}_{dataset}_{rest}.{ext}``: the one form of every
    download's file name (``rest``: :func:`settings_name` or the page's own parameters)."""
    head = f"rsca-{name_part(page)}-{name_part(what)}_{name_part(dataset_label(ds))}_{name_part(ds)}"
    return f"{head}_{rest}.{ext}" if rest else f"{head}.{ext}"


def settings_columns(s: Settings, label: str) -> dict:
    """The settings of a view as CSV columns (one value each, repeated on every row)."""
    return {
        "data": label,
        "dataset": s.ds,
        "dataset_uid": uid(s.ds),
        "input": s.input,
        "k": s.k if s.input == "spectra" else "",
        "species": ";".join(s.species) if s.input == "subset" else "",
        "method": s.method,
        "top_n": (s.top_n or "all") if s.method == "rsca" else "",
        "cv": int(s.cv),
        "clusters_trained": "all" if s.clusters is None else ";".join(s.clusters),
        "mask": ";".join(f"{a}-{b}" for a, b in s.mask),
        "weights": s.weights if s.input == "spectra" else "",
    }


def with_columns(table: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """``table`` with ``columns`` (name → one value) appended, unless it has a column of that name."""
    out = table.copy()
    for name, value in columns.items():
        if name not in out.columns:
            out[name] = value
    return out


def rates_csv(s: Settings) -> str:
    """The per-cluster rates of a view, one row per cluster; its settings and global rate as columns."""
    r = rates(s)
    meta = settings_columns(s, r["label"]) | {"global_rate": r["global_rate"]}
    return with_columns(r["per_cluster"], meta).to_csv(index=False)


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
