"""The on-disk dataset bundle shared by the simulator, the APOGEE loader, the CLI and the app.

A bundle is a directory::

    meta.json        format version, n_stars, n_pixels, kind ("simulated" | "real"), uid,
                     provenance (simulator parameters or loader cut-flow); written LAST, so a
                     bundle whose writing was interrupted never loads as if complete
    stars.csv        one row per star: apogee_id, cluster ("" for field stars), teff, logg, fe_h,
                     x_h_c … x_h_ce (the 21 species), ak_targ, vhelio_avg, snr, visits, plus any
                     extra columns (e.g. ``true_*`` labels of the simulator)
    spectra.npy      (N, 8575) float32 pseudo-continuum-normalised flux (memory-mapped on load)
    mask.npy         (N, 8575) bool, True = missing / untrustworthy pixel (memory-mapped)
    errors.npy       optional (N, 8575) float32 flux errors (memory-mapped)
                     any of the three may instead be stored as ``<name>.zarr`` (chunked by rows,
                     compressed; ``rsca_core.scale.write_zarr``), read when the .npy file is absent
    wavelength.npy   (8575,) float64, Å
    cache/           cached compressions (``pca-*.npz``), reused for the same K, mask and seed

Cluster stars are the rows with a non-empty ``cluster``; they are never part of the field set.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .constants import (
    ABUNDANCE_COLUMNS,
    MISSING_VALUE,
    N_PIXELS,
    SPECIES,
    abundance_column,
    apogee_wavelength,
    canonical_species,
    ranges_to_mask,
)
from .fileio import atomic_open, jsonable

FORMAT_VERSION = 1
REQUIRED_COLUMNS = (
    "apogee_id",
    "cluster",
    "teff",
    "logg",
    "fe_h",
    *ABUNDANCE_COLUMNS,
    "ak_targ",
    "vhelio_avg",
    "snr",
    "visits",
)
STRING_COLUMNS = ("apogee_id", "cluster", "visits", "telescope", "field")
ARRAY_FILES = {
    "spectra": ("spectra.npy", np.float32),
    "mask": ("mask.npy", np.bool_),
    "errors": ("errors.npy", np.float32),
}


class BundleError(ValueError):
    """A dataset bundle is missing, truncated or inconsistent. The message names the file."""


def _npy_shape(path: Path):
    """Shape and dtype of a .npy file from its header, checking the file is not truncated."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except FileNotFoundError:
        raise BundleError(f"{path}: file missing") from None
    except Exception as exc:  # numpy raises ValueError for a bad magic string / header
        raise BundleError(f"{path}: not a valid .npy file ({exc})") from None
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise BundleError(f"{path}: truncated ({actual} bytes, expected {expected} for shape {shape})")
    return tuple(shape), dtype


@dataclass
class Compression:
    """A cached PCA compression of a bundle's spectra (fitted on field + cluster stars together)."""

    k: int
    seed: int
    components: np.ndarray  # (K, P)
    mean: np.ndarray  # (P,)
    explained_variance: np.ndarray  # (K,)
    scores: np.ndarray  # (N, K), one row per star of the bundle
    mask_key: str = ""
    path: Path | None = None
    #: Did the fit meet its stopping rule (None: not recorded, a cache file written before it was)?
    converged: bool | None = None
    n_iter: int | None = None  # passes the fit made
    last_change: float | None = None  # the change its stopping rule compared with tol, after the last pass

    def convergence_note(self) -> str | None:
        """A one-line warning when the fit stopped before its stopping rule was met, else None."""
        if self.converged is not False:
            return None
        return (
            f"the K={self.k} compression stopped after {self.n_iter} passes before converging "
            f"(last relative change {self.last_change:.1e}); its rates may still move"
        )

    def transform(self, spectra, mask=None) -> np.ndarray:
        """Scores of spectra that are not in the bundle, with this compression's components.

        The same least-squares fit of the observed pixels as ``MaskedPCA.transform``; for a bundle
        star it gives its stored score (to the fit's tolerance).
        """
        from .compress import MaskedPCA

        return MaskedPCA.from_components(self.components, self.mean).transform(spectra, mask)

    def truncate(self, k: int) -> Compression:
        """The leading ``k`` components (an approximation of a K=k fit when pixels are missing)."""
        if not 1 <= k <= self.k:
            raise ValueError(f"cannot truncate a K={self.k} compression to K={k}")
        return Compression(
            k,
            self.seed,
            self.components[:k],
            self.mean,
            self.explained_variance[:k],
            self.scores[:, :k],
            self.mask_key,
            self.path,
            self.converged,
            self.n_iter,
            self.last_change,
        )


@dataclass
class RateInputs:
    """Everything ``doppelganger_rates`` needs, taken from one bundle."""

    z_pop: np.ndarray
    z_clust: np.ndarray
    cluster_ids: np.ndarray
    pop_vhelio: np.ndarray
    pop_ak: np.ndarray
    clust_vhelio: np.ndarray
    clust_ak: np.ndarray
    description: dict = field(default_factory=dict)
    #: the bundle rows of ``z_pop`` and ``z_clust`` (e.g. to draw them against a star-table column)
    pop_rows: np.ndarray | None = None
    clust_rows: np.ndarray | None = None

    def as_kwargs(self) -> dict:
        return dict(
            pop_vhelio=self.pop_vhelio, pop_ak=self.pop_ak, clust_vhelio=self.clust_vhelio, clust_ak=self.clust_ak
        )


class Dataset:
    """A survey: a star table, spectra, a missing-pixel mask and the wavelength grid.

    Construct in memory with ``Dataset(stars, spectra, mask, wavelength, meta=…)`` or load with
    :meth:`Dataset.load`. Large bundles are written incrementally with :meth:`Dataset.create`.
    """

    def __init__(
        self,
        stars: pd.DataFrame,
        spectra,
        mask,
        wavelength=None,
        *,
        errors=None,
        meta: dict | None = None,
        path: str | os.PathLike | None = None,
        cache_root: str | os.PathLike | None = None,
    ):
        #: The star table: a frame in memory, or (a big bundle loaded from its Parquet copy) columns
        #: read on first use; :attr:`stars` is the whole frame, :meth:`star_column` one column.
        self._table = stars if isinstance(stars, _StarTable) else _StarTable(_normalise_stars(stars))
        self.spectra = spectra
        self.mask = mask
        self.errors = errors
        self.wavelength = apogee_wavelength(spectra.shape[1]) if wavelength is None else np.asarray(wavelength)
        self.meta = dict(meta or {})
        self.meta.setdefault("kind", "simulated")
        self.path = Path(path) if path is not None else None
        #: Where compressions are cached: ``cache_root/<uid>/`` if given, else ``<bundle>/cache/``.
        self.cache_root = Path(cache_root) if cache_root is not None else None
        self._validate()

    # ------------------------------------------------------------------ basic properties
    def _validate(self, where: str = "dataset"):
        n = len(self._table)
        if self.spectra.ndim != 2 or self.spectra.shape[0] != n:
            raise BundleError(f"{where}: spectra shape {self.spectra.shape} does not match {n} stars")
        if self.mask.shape != self.spectra.shape:
            raise BundleError(f"{where}: mask shape {self.mask.shape} differs from spectra {self.spectra.shape}")
        if self.errors is not None and self.errors.shape != self.spectra.shape:
            raise BundleError(f"{where}: errors shape {self.errors.shape} differs from spectra {self.spectra.shape}")
        if self.wavelength.shape != (self.spectra.shape[1],):
            raise BundleError(
                f"{where}: wavelength has {self.wavelength.shape} entries, spectra have {self.spectra.shape[1]} pixels"
            )
        missing = [c for c in REQUIRED_COLUMNS if c not in self._table.columns]
        if missing:
            raise BundleError(f"{where}: star table lacks column(s) {', '.join(missing)}")
        if not self._table.checked:  # a Parquet copy is only written from a table that passed this check
            ids = self.star_column("apogee_id")
            if ids.duplicated().any():
                raise BundleError(f"{where}: duplicate apogee_id {ids[ids.duplicated()].iloc[0]!r}")

    @property
    def stars(self) -> pd.DataFrame:
        """The star table, one row per star (read whole on first use when the bundle was loaded from
        its Parquet copy; :meth:`star_column` reads a single column)."""
        return self._table.frame()

    def star_column(self, name: str) -> pd.Series:
        """One column of the star table, reading only that column of a big bundle's Parquet copy.

        The pages and the rates need a few columns (``cluster``, ``vhelio_avg``, ``ak_targ``,
        ``fe_h``) of a million-star table: this reads those alone, where :attr:`stars` reads all.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> from rsca_core.dataset import REQUIRED_COLUMNS
        >>> stars = pd.DataFrame({c: [0.0, 0.0] for c in REQUIRED_COLUMNS})
        >>> stars[["apogee_id", "cluster", "visits"]] = [["2M1", "M67", "1"], ["2M2", "", "1"]]
        >>> ds = Dataset(stars, np.zeros((2, 3), np.float32), np.zeros((2, 3), bool))
        >>> ds.star_column("cluster").tolist()
        ['M67', '']
        """
        try:
            return self._table.column(name)
        except KeyError:
            raise KeyError(f"{self.name}: the star table has no column {name!r}") from None

    @property
    def star_columns(self) -> tuple[str, ...]:
        """Names of the star table's columns (without reading any)."""
        return self._table.columns

    @property
    def n_stars(self) -> int:
        return len(self._table)

    @property
    def n_pixels(self) -> int:
        return self.spectra.shape[1]

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "simulated")

    @property
    def is_simulated(self) -> bool:
        return self.kind == "simulated"

    @property
    def label(self) -> str:
        """A short tag to put on every figure/table made from this dataset ("simulated" / "real")."""
        return "simulated" if self.is_simulated else "real"

    @property
    def name(self) -> str:
        return self.meta.get("name") or (self.path.name if self.path else "in-memory dataset")

    @property
    def is_cluster(self) -> np.ndarray:
        return (self.star_column("cluster") != "").to_numpy(dtype=bool)

    @property
    def field_index(self) -> np.ndarray:
        return np.flatnonzero(~self.is_cluster)

    @property
    def cluster_index(self) -> np.ndarray:
        return np.flatnonzero(self.is_cluster)

    @property
    def cluster_names(self) -> list[str]:
        """Cluster names, sorted."""
        return sorted(set(self.star_column("cluster")[self.is_cluster]))

    def cluster_sizes(self) -> pd.Series:
        return self.star_column("cluster")[self.is_cluster].value_counts().sort_index()

    def summary(self) -> dict:
        sizes = self.cluster_sizes()
        return {
            "name": self.name,
            "kind": self.kind,
            "n_stars": self.n_stars,
            "n_field": int((~self.is_cluster).sum()),
            "n_cluster_stars": int(self.is_cluster.sum()),
            "n_clusters": int(len(sizes)),
            "n_pixels": self.n_pixels,
            "missing_fraction": float(np.mean(self.mask[: min(2000, self.n_stars)])) if self.n_stars else 0.0,
            "uid": self.meta.get("uid", ""),
        }

    # ------------------------------------------------------------------ labels
    def abundances(self, species=SPECIES, rows=None) -> np.ndarray:
        """[X/H] of the given species as an (n, len(species)) float array; −9999.99 becomes NaN."""
        cols = [abundance_column(s) for s in species]
        idx = slice(None) if rows is None else rows
        a = np.empty((np.arange(self.n_stars)[idx].size, len(cols)))
        for j, c in enumerate(cols):  # column by column: a big bundle's copy reads only these
            a[:, j] = self.star_column(c).to_numpy(dtype=float)[idx]
        a[a <= MISSING_VALUE + 1] = np.nan
        return a

    # ------------------------------------------------------------------ I/O
    @classmethod
    def load(cls, path, mmap: bool = True, cache_root: str | os.PathLike | None = None) -> Dataset:
        """Load a bundle; arrays are memory-mapped. Raises :class:`BundleError` naming the bad file."""
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"{path}: no such dataset directory")
        meta_path = path / "meta.json"
        if not meta_path.exists():
            raise BundleError(
                f"{meta_path}: missing - the bundle is incomplete (interrupted write?) or not a dataset bundle"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"{meta_path}: unreadable ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != "rsca-bundle":
            raise BundleError(f"{meta_path}: not an RSCA Lab bundle description")
        if int(meta.get("version", 0)) > FORMAT_VERSION:
            raise BundleError(
                f"{meta_path}: format version {meta.get('version')} is newer than this "
                f"RSCA Lab understands ({FORMAT_VERSION})"
            )
        n, p = int(meta["n_stars"]), int(meta["n_pixels"])
        arrays = {}
        for key, (fname, dtype) in ARRAY_FILES.items():
            fpath = path / fname
            if not fpath.exists() and (path / f"{key}.zarr").exists():
                arrays[key] = _open_zarr(path / f"{key}.zarr", (n, p), dtype)
                continue
            if key == "errors" and not fpath.exists():
                arrays[key] = None
                continue
            shape, dt = _npy_shape(fpath)
            if shape != (n, p):
                raise BundleError(f"{fpath}: shape {shape}, expected ({n}, {p}) from meta.json")
            if dt != np.dtype(dtype):
                raise BundleError(f"{fpath}: dtype {dt}, expected {np.dtype(dtype)}")
            arrays[key] = np.load(fpath, mmap_mode="r" if mmap else None)
        wpath = path / "wavelength.npy"
        shape, _ = _npy_shape(wpath)
        if shape != (p,):
            raise BundleError(f"{wpath}: shape {shape}, expected ({p},)")
        wavelength = np.load(wpath)
        spath = path / "stars.csv"
        if not spath.exists():
            raise BundleError(f"{spath}: file missing")
        stars_cache = _stars_cache_path(spath, meta, path, cache_root)
        stars = _open_stars_cache(stars_cache, spath, n)
        if stars is None:
            stars = _read_stars_csv(spath, n)
        try:
            ds = cls(
                stars,
                arrays["spectra"],
                arrays["mask"],
                wavelength,
                errors=arrays["errors"],
                meta=meta,
                path=path,
                cache_root=cache_root,
            )
        except BundleError as exc:
            raise BundleError(f"{path}: {exc}") from None
        if not isinstance(stars, _StarTable) and n >= STARS_CACHE_MIN_ROWS:
            _write_stars_cache(stars_cache, ds.stars)  # only a table that passed the checks is kept
        return ds

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the bundle to ``path`` atomically (a temporary directory renamed at the end)."""
        path = Path(path)
        with Dataset.create(
            path, self.n_stars, self.n_pixels, with_errors=self.errors is not None, overwrite=overwrite
        ) as w:
            for start in range(0, self.n_stars, 4096):
                sl = slice(start, start + 4096)
                w.spectra[sl] = self.spectra[sl]
                w.mask[sl] = self.mask[sl]
                if self.errors is not None:
                    w.errors[sl] = self.errors[sl]
            w.finish(
                self.stars,
                self.wavelength,
                {k: v for k, v in self.meta.items() if k not in ("uid", "format", "version", "n_stars", "n_pixels")},
            )
        self.path = path
        return path

    @staticmethod
    def create(
        path, n_stars: int, n_pixels: int = N_PIXELS, with_errors: bool = True, overwrite: bool = False
    ) -> BundleWriter:
        """Start writing a bundle incrementally: fill ``writer.spectra[i] = …`` then ``writer.finish(stars, …)``."""
        return BundleWriter(Path(path), n_stars, n_pixels, with_errors, overwrite)

    # ------------------------------------------------------------------ compression
    def mask_key(self, extra_mask_ranges=()) -> str:
        ranges = sorted((int(a), int(b)) for a, b in (extra_mask_ranges or ()))
        return hashlib.sha1(json.dumps([self.meta.get("uid", ""), ranges]).encode()).hexdigest()[:12]

    def effective_mask(self, extra_mask_ranges=()):
        """The bundle mask with extra [start, stop) pixel ranges masked for every star (lazy if none)."""
        if not extra_mask_ranges:
            return self.mask
        return _OredMask(self.mask, ranges_to_mask(extra_mask_ranges, self.n_pixels))

    def cache_dir(self) -> Path:
        """Folder of this dataset's cached compressions (see ``cache_root``)."""
        if self.cache_root is not None:
            d = self.cache_root / (self.meta.get("uid") or "memory")
        elif self.path is not None:
            d = self.path / "cache"
        else:
            d = Path(tempfile.gettempdir()) / "rsca-cache" / (self.meta.get("uid") or "memory")
        return d

    def compression_path(self, k: int, seed: int = 0, extra_mask_ranges=(), **pca_options) -> Path:
        """Where the compression for this K, seed, mask (and non-default MaskedPCA options) is cached.

        The name ends with the fitting algorithm's version (``compress.ALGORITHM_VERSION``): a
        compression cached by an older algorithm is not served (it is recomputed beside it).
        """
        from .compress import ALGORITHM_VERSION

        opts = ""
        if pca_options:
            opts = "-" + hashlib.sha1(json.dumps(sorted(pca_options.items()), default=str).encode()).hexdigest()[:8]
        key = f"{self.mask_key(extra_mask_ranges)}{opts}-a{ALGORITHM_VERSION}"
        return self.cache_dir() / f"pca-k{int(k)}-seed{int(seed)}-{key}.npz"

    def has_compression(self, k: int, seed: int = 0, extra_mask_ranges=(), **pca_options) -> bool:
        """Is :meth:`compress` with these arguments cached on disk (so it returns at once)?"""
        return bool(self.meta.get("uid")) and self.compression_path(k, seed, extra_mask_ranges, **pca_options).exists()

    def compress(
        self,
        k: int,
        seed: int = 0,
        extra_mask_ranges=(),
        progress: bool | Callable[[int, float, float], None] = False,
        use_cache: bool = True,
        *,
        arrays=None,
        **pca_options,
    ) -> Compression:
        """PCA-with-missing-values compression of all spectra, cached on disk beside the bundle.

        This is *the* compression at K: the CLI, the experiments, the reports, the siblings and the
        dashboard all take their K-dimensional scores from here (an exact K = k fit, never the leading
        k axes of a larger fit). A cached result is reused when the same ``k``, effective mask, ``seed``
        and MaskedPCA options are asked again.

        ``progress``: ``True`` for a bar on stderr, or a callable ``progress(pass_index, rel_change,
        tol)`` called as the fit starts and after each EM pass (see ``MaskedPCA``); not called when the
        result comes from the cache. When a fit stops at ``max_iter`` before its stopping rule is met,
        one ``sklearn.exceptions.ConvergenceWarning`` is given (weighted or not), and the cache file
        records it (``Compression.converged``), so a later reader can say so too.

        ``arrays``: the same spectra and effective mask in another form to fit from, e.g. the dask
        arrays of ``rsca_core.scale.dask_arrays`` (the fit then runs on the current dask scheduler).
        """
        from .compress import MaskedPCA

        k = int(k)
        key = self.mask_key(extra_mask_ranges)
        fpath = self.compression_path(k, seed, extra_mask_ranges, **pca_options)
        if use_cache and self.meta.get("uid") and fpath.exists():
            try:
                with np.load(fpath) as z:
                    comp = Compression(
                        k, int(seed), z["components"], z["mean"], z["explained_variance"], z["scores"], key, fpath
                    )
                    if "converged" in z.files:
                        comp.converged = bool(z["converged"])
                        comp.n_iter, comp.last_change = int(z["n_iter"]), float(z["last_change"])
                if comp.scores.shape == (self.n_stars, k):
                    return comp
            except Exception:
                pass  # unreadable cache entry: recompute and overwrite it
        weighted = pca_options.get("weights") is not None
        if weighted and self.errors is None:
            raise ValueError(
                f"{self.name}: weights={pca_options['weights']!r} needs the flux errors (errors.npy); this bundle has none"
            )
        pca = MaskedPCA(k, random_state=seed, progress=progress, **pca_options)
        spectra, mask = arrays if arrays is not None else (self.spectra, self.effective_mask(extra_mask_ranges))
        scores = pca.fit_transform(spectra, mask, errors=self.errors if weighted else None)
        comp = Compression(
            k,
            int(seed),
            pca.components_.astype(np.float32),
            pca.mean_,
            pca.explained_variance_,
            scores,
            key,
            None,
            bool(pca.converged_),
            int(pca.n_iter_),
            float(pca.last_change_),
        )
        if not comp.converged:
            from sklearn.exceptions import ConvergenceWarning

            note = comp.convergence_note()
            if weighted:
                note = note.replace(f"the K={k} ", f"the {pca_options['weights']}-weighted K={k} ", 1)
            warnings.warn(
                f"{self.name}: {note} (tol={pca.tol:g}, max_iter={pca.max_iter})",
                ConvergenceWarning,
                stacklevel=2,
            )
        if use_cache and self.meta.get("uid"):
            try:
                with atomic_open(fpath, "wb") as fh:
                    np.savez(
                        fh,
                        components=comp.components,
                        mean=comp.mean,
                        explained_variance=comp.explained_variance,
                        scores=comp.scores,
                        converged=comp.converged,
                        n_iter=comp.n_iter,
                        last_change=comp.last_change,
                    )
                comp.path = fpath
            except OSError:
                pass  # read-only location: the result is still returned
        return comp

    def rate_inputs(
        self,
        input: str = "spectra",
        k: int = 30,
        seed: int = 0,
        species=None,
        extra_mask_ranges=(),
        progress: bool = False,
        *,
        rows=None,
        clusters=None,
        compression: Compression | None = None,
    ) -> RateInputs:
        """Field/cluster representations plus pair-filter metadata for ``doppelganger_rates``.

        The one place where the inputs of a rate are built (CLI, experiments, diagnostics, dashboard).

        Parameters
        ----------
        input : {"spectra", "abundances", "subset"}
            PCA scores of the spectra (K components), the 21 abundances, or the abundance ``species``
            (default the paper's Fe, Mg, Ni, Si, Al, C, N).
        k, seed, extra_mask_ranges, progress
            The compression (``input="spectra"``): see :meth:`compress`.
        species : list of str, optional
            The species of ``input="subset"``.
        rows : bool array (n_stars,), optional
            Only these stars (e.g. a random subset in an experiment).
        clusters : list of str, optional
            Only these training clusters (their members); the field is unchanged.
        compression : Compression, optional
            Scores to use instead of :meth:`compress` (e.g. one already in memory).

        Stars lacking a used abundance are left out; ``description["n_left_out"]`` counts them.

        Over 80 lines only through this docstring.
        """
        from .constants import PAPER_SUBSET

        keep = np.ones(self.n_stars, bool)
        if input == "spectra":
            comp = compression or self.compress(k, seed=seed, extra_mask_ranges=extra_mask_ranges, progress=progress)
            if comp.scores.shape[0] != self.n_stars:
                raise ValueError(f"the compression has {comp.scores.shape[0]} rows, the dataset {self.n_stars} stars")
            z = comp.scores
            desc = {"input": "spectra", "k": int(comp.k), "seed": int(comp.seed)}
        elif input in ("abundances", "subset"):
            sp = list(SPECIES) if input == "abundances" else list(species or PAPER_SUBSET)
            z = self.abundances(sp)
            keep &= ~np.isnan(z).any(axis=1)
            desc = {"input": input, "species": [canonical_species(x) for x in sp]}
        else:
            raise ValueError(f"input must be 'spectra', 'abundances' or 'subset', not {input!r}")
        if rows is not None:
            keep &= np.asarray(rows, bool)
        cl = self.star_column("cluster")
        isc = (cl != "").to_numpy(dtype=bool)
        if clusters is not None:
            wanted = {str(c) for c in clusters}
            unknown = wanted - set(cl[isc])
            if unknown:
                raise ValueError(f"{self.name}: no cluster named {', '.join(sorted(unknown))}")
            isc_keep = isc & cl.isin(wanted).to_numpy(dtype=bool)
        else:
            isc_keep = isc
        fi, ci = np.flatnonzero(keep & ~isc), np.flatnonzero(keep & isc_keep)
        if len(fi) == 0:
            raise ValueError(f"{self.name}: no field star left for the {input} representation")
        cid = cl.iloc[ci].to_numpy(dtype=object)  # the cluster rows' names only (no object per field star)
        vh, ak = self.star_column("vhelio_avg").to_numpy(float), self.star_column("ak_targ").to_numpy(float)
        desc |= {
            "n_field": int(len(fi)),
            "n_cluster_stars": int(len(ci)),
            "n_left_out": int(self.n_stars - keep.sum()),
        }
        return RateInputs(
            z_pop=np.asarray(_take_rows(z, fi), dtype=float),
            z_clust=np.asarray(z[ci], dtype=float),
            cluster_ids=cid,
            pop_vhelio=vh[fi],
            pop_ak=ak[fi],
            clust_vhelio=vh[ci],
            clust_ak=ak[ci],
            description=desc | {"dataset": self.name, "kind": self.kind},
            pop_rows=fi,
            clust_rows=ci,
        )


def _take_rows(z: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``z[rows]``, as a view when the rows are one contiguous run (the field of most bundles: a
    million stars' scores are then not copied for every rate)."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return z[rows[0] : rows[-1] + 1]
    return z[rows]


def _open_zarr(zpath: Path, shape, dtype):
    """A bundle array stored as Zarr (read-only, rows read on access), checked against meta.json."""
    try:
        import zarr
    except ImportError:
        raise BundleError(
            f"{zpath}: reading Zarr bundles needs the [scale] extra (pip install rsca-lab[scale])"
        ) from None
    try:
        arr = zarr.open_array(str(zpath), mode="r")
    except Exception as exc:
        raise BundleError(f"{zpath}: not a readable Zarr array ({exc})") from None
    if tuple(arr.shape) != tuple(shape):
        raise BundleError(f"{zpath}: shape {tuple(arr.shape)}, expected {tuple(shape)} from meta.json")
    if np.dtype(arr.dtype) != np.dtype(dtype):
        raise BundleError(f"{zpath}: dtype {arr.dtype}, expected {np.dtype(dtype)}")
    return arr


class _OredMask:
    """Lazy ``mask | pixel_mask[None, :]`` that slices like an array, without copying N × P."""

    def __init__(self, mask, pixel_mask):
        self._mask, self._pix = mask, pixel_mask
        self.shape, self.dtype, self.ndim = mask.shape, np.dtype(bool), 2

    def __getitem__(self, idx):
        if isinstance(idx, tuple):
            raise TypeError("only row indexing is supported")
        return self._mask[idx] | self._pix

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self._mask) | self._pix[None, :]
        return out if dtype is None else out.astype(dtype)


class BundleWriter:
    """Writes a bundle into a temporary sibling directory; ``finish`` renames it into place."""

    def __init__(self, path: Path, n_stars: int, n_pixels: int, with_errors: bool, overwrite: bool):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: already exists (pass overwrite=True / --overwrite to replace it)")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
        os.chmod(self.tmp, 0o755)  # mkdtemp makes it private; a bundle is readable like any other file
        self.n_stars, self.n_pixels = int(n_stars), int(n_pixels)
        shape = (self.n_stars, self.n_pixels)
        fmt = np.lib.format
        self.spectra = fmt.open_memmap(self.tmp / "spectra.npy", mode="w+", dtype=np.float32, shape=shape)
        self.mask = fmt.open_memmap(self.tmp / "mask.npy", mode="w+", dtype=np.bool_, shape=shape)
        self.errors = (
            fmt.open_memmap(self.tmp / "errors.npy", mode="w+", dtype=np.float32, shape=shape) if with_errors else None
        )
        self._done = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self._done:
            self.abort()
        return False

    def abort(self):
        for arr in (self.spectra, self.mask, self.errors):
            if arr is not None:
                del arr
        self.spectra = self.mask = self.errors = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def finish(self, stars: pd.DataFrame, wavelength=None, meta: dict | None = None) -> Path:
        stars = _normalise_stars(stars)
        if len(stars) != self.n_stars:
            raise ValueError(f"star table has {len(stars)} rows, bundle was created for {self.n_stars}")
        missing = [c for c in REQUIRED_COLUMNS if c not in stars.columns]
        if missing:
            raise ValueError(f"star table lacks column(s) {', '.join(missing)}")
        wavelength = apogee_wavelength(self.n_pixels) if wavelength is None else np.asarray(wavelength, float)
        for arr in (self.spectra, self.mask, self.errors):
            if arr is not None:
                arr.flush()
        self.spectra = self.mask = self.errors = None
        np.save(self.tmp / "wavelength.npy", wavelength)
        stars.to_csv(self.tmp / "stars.csv", index=False)
        full_meta = dict(meta or {})
        full_meta.update(
            format="rsca-bundle",
            version=FORMAT_VERSION,
            n_stars=self.n_stars,
            n_pixels=self.n_pixels,
            uid=uuid.uuid4().hex,
        )
        full_meta.setdefault("kind", "simulated")
        (self.tmp / "meta.json").write_text(json.dumps(jsonable(full_meta), indent=2))
        if self.path.exists():
            old = self.path.with_name(self.path.name + ".old-" + uuid.uuid4().hex[:6])
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        self._done = True
        return self.path


#: Star tables of at least this many rows are also kept in the bundle's cache folder as Parquet
#: (``stars-<stamp>.parquet``, the stamp being the size and time of ``stars.csv``), written once the
#: table has passed the checks of :class:`Dataset`. A load from the copy reads its schema only; each
#: column is read when first used (a page needs a few of the ~30), so the dashboard's first view of a
#: survey of a million stars does not wait for the whole table.
STARS_CACHE_MIN_ROWS = 100_000


def _stars_cache_path(spath: Path, meta: dict, path: Path, cache_root) -> Path | None:
    try:
        st = spath.stat()
    except OSError:
        return None
    # "checked": copies written before they were only made from tables that passed the checks are not used
    stamp = hashlib.sha1(f"{st.st_size}-{st.st_mtime_ns}-{FORMAT_VERSION}-checked".encode()).hexdigest()[:12]
    folder = Path(cache_root) / (meta.get("uid") or "memory") if cache_root is not None else path / "cache"
    return folder / f"stars-{stamp}.parquet"


def _read_stars_csv(spath: Path, n: int) -> pd.DataFrame:
    """``stars.csv`` as a frame of ``n`` rows (BundleError naming the file otherwise)."""
    try:
        stars = pd.read_csv(
            spath,
            dtype={c: str for c in STRING_COLUMNS},
            keep_default_na=False,
            low_memory=False,
            na_values={c: ["", "nan", "NaN"] for c in _numeric_guess(spath)},
        )
    except Exception as exc:
        raise BundleError(f"{spath}: unreadable ({exc})") from None
    if len(stars) != n:
        raise BundleError(f"{spath}: {len(stars)} rows, expected {n} from meta.json")
    return stars


def _open_stars_cache(cpath: Path | None, spath: Path, n: int) -> _StarTable | None:
    """The cached star table as a :class:`_StarTable` reading columns on demand, if the copy is
    there, readable and of ``n`` rows with every required column (else None: read the CSV)."""
    if cpath is None or not cpath.exists():
        return None
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with open(cpath, "rb") as fh:
            # mapped, not read: a replaced copy stays readable, and every read has its own position
            # (threads, and processes forked from this one, never move each other's)
            data = pa.py_buffer(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        info = pq.ParquetFile(pa.BufferReader(data))
        names = tuple(info.schema_arrow.names)
        rows = info.metadata.num_rows
    except Exception:  # unreadable or truncated copy, or no pyarrow: the CSV is the truth
        return None
    if rows != n or any(c not in names for c in REQUIRED_COLUMNS):
        return None
    return _StarTable(None, parquet=data, columns=names, n=n, csv=(spath, _file_stamp(spath)))


def _file_stamp(path: Path) -> tuple:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class _StarTable:
    """The star table of a :class:`Dataset`: a frame in memory, or the bundle's Parquet copy (mapped
    into memory) read one column at a time on first use, the whole frame only when asked for. A
    column the copy cannot give is read from ``stars.csv`` instead, if that file has not changed
    since the load (else BundleError: a table is never mixed from two versions of the bundle).
    Thread-safe; no lock is held while a column is read."""

    def __init__(self, frame: pd.DataFrame | None, *, parquet=None, columns=(), n: int = 0, csv=None):
        self._frame = frame
        self._data = parquet  # a pyarrow buffer over the mapped copy
        self.columns = tuple(frame.columns) if frame is not None else tuple(columns)
        self._n = len(frame) if frame is not None else int(n)
        self._csv = csv  # (path, (size, mtime)) of stars.csv at load time
        #: a Parquet copy is written only from a table that passed Dataset's checks
        self.checked = frame is None
        self._cols: dict[str, pd.Series] = {}  # at most one entry per column of the file
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._n

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            frame = self._read(None)
            with self._lock:
                if self._frame is None:
                    self._frame, self._cols, self._data = frame, {}, None
        return self._frame

    def column(self, name: str) -> pd.Series:
        frame = self._frame
        if frame is not None:
            return frame[name]
        if name not in self.columns:
            raise KeyError(name)
        col = self._cols.get(name)
        if col is None:
            read = self._read([name])
            with self._lock:
                if self._frame is not None:
                    return self._frame[name]
                col = self._cols.setdefault(name, read[name])
        return col

    def _read(self, columns) -> pd.DataFrame:
        data = self._data
        if data is not None:
            try:
                import pyarrow as pa

                # one thread, no pre-buffering: under OMP_NUM_THREADS=1 (the web workers) Arrow's
                # threaded read of a million-row table took 3–6 s instead of ~0.4 s
                out = pd.read_parquet(pa.BufferReader(data), columns=columns, use_threads=False, pre_buffer=False)
                if len(out) == self._n:
                    return out
            except Exception:
                pass
        spath, stamp = self._csv
        if not spath.exists() or _file_stamp(spath) != stamp:
            raise BundleError(f"{spath}: changed since the bundle was loaded, and its cached copy is unreadable")
        frame = _normalise_stars(_read_stars_csv(spath, self._n))
        with self._lock:
            self._frame, self._cols, self._data = frame, {}, None
        return frame if columns is None else frame[columns]

    def __getstate__(self):
        return {"frame": self.frame()}

    def __setstate__(self, state):
        self.__init__(state["frame"])


def _write_stars_cache(cpath: Path | None, stars: pd.DataFrame) -> None:
    """Keep the normalised star table as Parquet beside the compressions (nothing when read-only);
    older copies of the same bundle's table are removed."""
    if cpath is None:
        return
    try:
        cpath.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(cpath, "wb") as fh:
            stars.to_parquet(fh, index=False)
        for old in cpath.parent.glob("stars-*.parquet"):
            if old != cpath:
                old.unlink(missing_ok=True)
    except (OSError, ValueError, ImportError):
        pass  # a read-only bundle, or a column Parquet cannot hold: the CSV is read each time


def _numeric_guess(spath: Path):
    """Column names of stars.csv that are not string columns (so that "" means NaN there)."""
    with open(spath) as fh:
        header = fh.readline().strip().split(",")
    return [c for c in header if c not in STRING_COLUMNS]


def _normalise_stars(stars: pd.DataFrame) -> pd.DataFrame:
    """A new frame (the caller's is not modified) with a 0…n−1 index and the string columns as
    stripped strings, "" for a missing value. A column already in that form is left as it is (a
    million-row table is then not converted again on every load)."""
    stars = stars.reset_index(drop=True)  # a new frame: assigning a column below leaves the caller's alone
    for c in STRING_COLUMNS:
        if c in stars.columns:
            col = stars[c]
            if (
                pd.api.types.is_string_dtype(col.dtype)
                and pd.api.types.infer_dtype(col, skipna=False) == "string"
                and not col.isin(["nan", "None"]).any()
                and col.str.strip().equals(col)
            ):
                continue  # all strings, none to blank or strip
            col = col.astype(object).where(col.notna(), "").astype(str)
            stars[c] = col.replace({"nan": "", "None": ""}).str.strip()
    return stars
