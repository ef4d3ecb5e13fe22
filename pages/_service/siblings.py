"""The Siblings page's data: ``rsca_core.siblings`` on the app's datasets and compression.

The embedding of a dataset (the RSCA map fitted on every cluster, on the exact K compression, the
one ``rsca siblings``/``evaluate`` use, as on the other pages) is cached per process, a few at most: one of the
paper-sized survey holds ~80 MB and would cost more to pickle into a shared cache than to rebuild.
Uploaded aspcapStar files are read, masked with the bundle's rule and projected by ``rsca_core``.
"""

from __future__ import annotations

import base64
import functools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .compute import compression
from .datasets import load, uid
from .errors import UserError
from .exports import download_name, name_part, settings_columns, settings_name, with_columns

#: Uploads: at most this many files per upload, each at most this many bytes (an aspcapStar file
#: of DR16 is ~0.4 MB).
MAX_UPLOAD_FILES = 10
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
#: Star ids offered by the type-ahead search.
MAX_OPTIONS = 40
#: Element lines marked on the spectra: each element's strongest lines of the simulator's line list.
LINES_PER_ELEMENT = 3


def _settings_key(s) -> tuple:
    return (s.ds, uid(s.ds), config.k_fit(), s.input, int(s.k), tuple(s.species) if s.input == "subset" else ())


@functools.lru_cache(maxsize=3)
def _embedding(key: tuple):
    from rsca_core.siblings import embed

    ds_key, _uid, _k_fit, input_, k, species = key
    ds = load(ds_key)
    comp = compression(ds_key, k) if input_ == "spectra" else None
    try:
        return embed(ds, k=k, input=input_, species=list(species) or None, compression=comp)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def embedding(s):
    """The Embedding of the settings' dataset and representation (map fitted on all clusters)."""
    return _embedding(_settings_key(s))


def star_options(key, search: str | None, current: str | None = None) -> list[dict]:
    """Up to MAX_OPTIONS star ids of dataset ``key`` containing ``search`` (case-insensitive),
    ``current`` first; a member's label names its cluster."""
    ds = load(key)
    ids = ds.star_column("apogee_id").astype(str)  # the columns it needs, not the whole table
    if search:
        hits = np.flatnonzero(ids.str.contains(str(search).strip(), case=False, regex=False).to_numpy())
    else:
        hits = np.arange(min(MAX_OPTIONS, len(ids)))
    rows = list(hits[:MAX_OPTIONS])
    if current:
        rows = list(np.flatnonzero(ids.to_numpy() == current)[:1]) + rows
    clusters = ds.star_column("cluster").astype(str).to_numpy()
    opts, seen = [], set()
    if current and current not in set(ids.iloc[rows]):  # not a star here: kept, so that the page can say so
        opts.append({"label": current, "value": current})
        seen.add(current)
    for r in rows:
        sid = ids.iloc[r]
        if sid not in seen:
            seen.add(sid)
            opts.append({"label": f"{sid} ({clusters[r]})" if clusters[r] else sid, "value": sid})
    return opts


def default_star(key) -> str:
    """A member of dataset ``key``'s largest cluster: a star with known siblings."""
    ds = load(key)
    sizes = ds.cluster_sizes()
    if len(sizes):
        name = sizes.idxmax()
        cl = ds.star_column("cluster")
        return str(ds.star_column("apogee_id")[cl == name].iloc[0])
    return str(ds.star_column("apogee_id").iloc[0])


def star_info(s, star: str) -> dict:
    ds = load(s.ds)
    emb = embedding(s)
    row = emb.index_of(star)
    kinds = {"apogee_id": str, "cluster": str, "teff": float, "logg": float, "fe_h": float}
    kinds |= {"vhelio_avg": float, "ak_targ": float}
    # one value of each column (a big bundle reads those columns alone, not its whole table)
    return {"row": row} | {name: kind(ds.star_column(name).iloc[row]) for name, kind in kinds.items()}


def spectrum(s, row: int) -> dict:
    ds = load(s.ds)
    return {
        "name": str(ds.star_column("apogee_id").iloc[row]),
        "flux": np.asarray(ds.spectra[row], float),
        "mask": np.asarray(ds.mask[row], bool),
    }


def fe_h(s) -> np.ndarray:
    """[Fe/H] of every star (NaN where not measured)."""
    return load(s.ds).star_column("fe_h").to_numpy(dtype=float)


def wavelength(s) -> np.ndarray:
    return np.asarray(load(s.ds).wavelength, float)


@functools.lru_cache(maxsize=1)
def element_lines() -> tuple:
    """(wavelength Å, element) of each element's LINES_PER_ELEMENT strongest atomic lines."""
    from rsca_core.simulate import line_list

    ll = line_list()
    atomic = np.flatnonzero(ll.kind == "atomic")
    out = []
    for el in sorted(set(ll.species[atomic])):
        rows = atomic[ll.species[atomic] == el]
        top = rows[np.argsort(-ll.log_tau[rows], kind="stable")[:LINES_PER_ELEMENT]]
        out += [(float(ll.wave[r]), str(el)) for r in top]
    return tuple(sorted(out))


def siblings_download(
    table: pd.DataFrame, s, what: str, query: str, label: str, pair_filter: bool = False, n: int | None = None
) -> dict:
    """The siblings (or candidates) table as a CSV download: no comment lines, the query and its
    settings as columns (``query``, ``data`` = simulated/real, dataset, input, K, pair filter), and
    a file name saying them (``what``: "star", "cluster" or "upload"; ``n``: siblings asked for)."""
    keep = ("data", "dataset", "dataset_uid", "input", "k", "species")
    meta = {"query": f"{what} {query}"} | {k: v for k, v in settings_columns(s, label).items() if k in keep}
    csv = with_columns(table.reset_index(), meta | {"pair_filter": int(bool(pair_filter))}).to_csv(index=False)
    rest = settings_name(s, keys=("input", "k")) + ("" if n is None else f"_n{n}") + ("_pf" if pair_filter else "_nopf")
    name = download_name("siblings", f"{what}-{name_part(query, 40)}", s.ds, rest, "csv")
    return {"content": csv, "filename": name, "type": "text/csv"}


def decode_uploads(contents, names) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(name, bytes) of the uploaded files within the caps, and a message per refused file."""
    contents = contents or []
    names = names or [f"file {i + 1}" for i in range(len(contents))]
    problems, files = [], []
    if len(contents) > MAX_UPLOAD_FILES:
        problems.append(f"{len(contents)} files uploaded: only the first {MAX_UPLOAD_FILES} are read")
    for name, content in list(zip(names, contents))[:MAX_UPLOAD_FILES]:
        try:
            data = base64.b64decode(str(content).split(",", 1)[1], validate=False)
        except (IndexError, ValueError):
            problems.append(f"{name}: could not be decoded")
            continue
        if len(data) > MAX_UPLOAD_BYTES:
            problems.append(f"{name}: {len(data) / 1e6:.1f} MB is over the {MAX_UPLOAD_BYTES / 1e6:.0f} MB limit")
            continue
        files.append((str(name), data))
    return files, problems


def project_uploads(s, files: list[tuple[str, bytes]], n: int = 50) -> tuple[list[dict], list[str]]:
    """Each readable aspcapStar file projected into the embedding, with its ``n`` nearest siblings.

    Returns (results, problems): a result has ``name``, ``coords`` and ``siblings`` (a DataFrame);
    a file that cannot be read gives one message naming it.
    """
    from rsca_core.siblings import project, read_spectra_files

    emb = embedding(s)
    if emb.compression is None:
        raise UserError("uploaded spectra are placed in RSCA space of spectra: choose input = spectra")
    results, problems = [], []
    with tempfile.TemporaryDirectory(prefix="rsca-upload-") as tmp:
        for i, (name, data) in enumerate(files):
            path = Path(tmp) / f"{i:02d}-{Path(name).name or 'upload.fits'}"
            path.write_bytes(data)
            try:
                _ids, flux, mask = read_spectra_files([path], emb.dataset)
                xy = project(emb, flux, mask)[0]
            except (ValueError, OSError) as exc:
                problems.append(str(exc).replace(str(path), name))
                continue
            results.append(
                {
                    "name": name,
                    "coords": xy,
                    "siblings": emb.siblings_of_point(xy, n=n),
                    "spectrum": {"name": name, "flux": flux[0], "mask": mask[0]},
                }
            )
    return results, problems
