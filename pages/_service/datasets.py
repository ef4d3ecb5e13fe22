"""Dataset bundles by a short *key* ("default" or a folder name under the data folder), never by a
path taken from a URL: listing, loading (memory-mapped, reloaded when the bundle changes), labels,
the Data page's overview, and the start-up build of the default survey."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import pandas as pd

from . import config
from .errors import UserError, short
from .flight import flight

log = logging.getLogger("rsca_lab")

SEED = 0  # the one compression seed of the app


def default_dataset_path() -> Path:
    """RSCA_DATASET if set, else ``default`` in the data folder (where the simulator builds it)."""
    return config.get().default_dataset


def read_meta(path) -> dict:
    """A bundle's ``meta.json`` (UserError naming the dataset if it is missing or unreadable)."""
    p = Path(path) / "meta.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(
            f"dataset {Path(path).name!r} is missing (no meta.json): build it on the Data page "
            "or with `python -m rsca_core simulate`"
        ) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"dataset {Path(path).name!r}: meta.json is unreadable ({type(exc).__name__})") from None


def dataset_paths() -> dict:
    """key -> bundle folder: "default" plus every bundle folder under the data folder (no file reads)."""
    out = {"default": default_dataset_path()}
    d = config.data_dir()
    if d.is_dir():
        for sub in sorted(d.iterdir()):
            if (
                sub.name not in out
                and ".tmp" not in sub.name
                and ".old-" not in sub.name
                and not sub.name.startswith(".")
                and (sub / "meta.json").is_file()
            ):
                out[sub.name] = sub
    return out


def dataset_choices() -> list[dict]:
    """The datasets offered in the menus: the default one plus every bundle under the data folder."""
    out = []
    for key, path in dataset_paths().items():
        try:
            label = f"{key} ({read_meta(path).get('kind', 'simulated')})"
        except UserError:
            label = f"{key} (missing)"
        out.append({"label": label, "value": key})
    return out


def dataset_path(key) -> Path:
    paths = dataset_paths()
    if isinstance(key, str) and key in paths:
        return paths[key]
    raise UserError(f"unknown dataset {short(key)!r}; available: {', '.join(paths)}")


class _Loaded:
    """The loaded bundles of this worker: at most MAX entries, one per folder (a changed bundle
    replaces its old version at once, so a stale copy read into memory is never kept). A bundle is
    loaded by one thread at a time: a request arriving while the worker's warm-up (or another
    request) loads it waits for that load instead of starting a second one."""

    MAX = 4
    lock = threading.Lock()
    items: OrderedDict = OrderedDict()  # path -> (stamp, cache_root, mmap, Dataset)

    @classmethod
    def _hit(cls, path: str, stamp: tuple, cache_root: str | None, mmap: bool):
        with cls.lock:
            hit = cls.items.get(path)
            if hit is not None and hit[:3] == (stamp, cache_root, mmap):
                cls.items.move_to_end(path)
                return hit[3]
            return None

    @classmethod
    def get(cls, path: str, stamp: tuple, cache_root: str | None, mmap: bool):
        from rsca_core import Dataset

        ds = cls._hit(path, stamp, cache_root, mmap)
        if ds is not None:
            return ds
        with flight.hold(("load", path)):
            ds = cls._hit(path, stamp, cache_root, mmap)  # loaded while this thread waited
            if ds is not None:
                return ds
            with cls.lock:
                cls.items.pop(path, None)
            ds = Dataset.load(path, mmap=mmap, cache_root=cache_root)
            with cls.lock:
                cls.items[path] = (stamp, cache_root, mmap, ds)
                while len(cls.items) > cls.MAX:
                    cls.items.popitem(last=False)
        return ds


def max_loaded() -> int:
    """How many bundles a worker keeps loaded at once."""
    return _Loaded.MAX


def bundle_stamp(path: Path) -> tuple:
    """(name, size, mtime) of every file of a bundle: changes when any file is rebuilt or truncated."""
    out = []
    for f in sorted(Path(path).iterdir()):
        if f.is_file():
            st = f.stat()
            out.append((f.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def load(key):
    """The loaded Dataset of a key, reloaded when a file of the bundle changes (size or time).

    A bundle smaller than RSCA_MMAP_ABOVE_MB is read into memory, so a file truncated or rewritten
    under the running app gives a message at the next request instead of a SIGBUS in a worker; a
    larger one is memory-mapped (the check still catches a change before the next request uses it)."""
    path = dataset_path(key)
    if not (path / "meta.json").is_file():
        raise UserError(
            f"dataset {key!r} is missing (no meta.json): build it on the Data page or with `python -m rsca_core simulate`"
        )
    cfg = config.get()
    try:
        stamp = bundle_stamp(path)
        mmap = sum(size for _name, size, _t in stamp) >= cfg.mmap_above_mb * 2**20
        return _Loaded.get(str(path), stamp, str(cfg.cache_dir) if cfg.cache_dir else None, mmap)
    except ImportError as exc:
        raise UserError(f"the RSCA engine is not available ({exc})") from None
    except (ValueError, OSError, EOFError) as exc:  # BundleError is a ValueError; a truncated file
        raise UserError(f"dataset {key!r}: {exc}") from None


def uid(key) -> str:
    ds = load(key)
    return ds.meta.get("uid") or str(ds.path)


def dataset_label(key) -> str:
    """ "simulated" or "real"."""
    return load(key).label


def cluster_names(key) -> list[str]:
    return load(key).cluster_names


def has_errors(key) -> bool:
    """Does the dataset's bundle store flux errors (errors.npy), so a weighted compression is possible?"""
    return load(key).errors is not None


def prepared_ks() -> tuple[int, ...]:
    """The K values whose compressions are prepared with a dataset (at start-up, in the Docker build,
    by the Data page's "Prepare"): K = 2 (Inside RSCA), the pages' default K = 30 and K_FIT, the
    largest K offered, from which a preview of any other K is cut while its own fit is computed."""
    from .settings import DEFAULT_K

    kf = config.k_fit()
    return tuple(sorted({2, min(DEFAULT_K, kf), kf}))


def pca_options(weights="none") -> dict:
    """The MaskedPCA options of the app's compressions: {} (plain) or {"weights": "ivar"}."""
    return {} if weights in (None, "none") else {"weights": weights}


def compression_file_id(key, k: int, mask=(), weights="none") -> str | None:
    """The identity of dataset ``key``'s exact K = ``k`` compression file — name (which carries the
    fitting algorithm's version), size, time in ns, inode — or None when it is not on disk: a
    refitted or upgraded compression is a new identity, so nothing computed from the old one is
    answered for it (cache keys, this worker's copy, the first views on disk)."""
    path = load(key).compression_path(int(k), SEED, tuple(mask), **pca_options(weights))
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def compression_ready(key, mask=(), weights="none", k=None) -> bool:
    """Is the dataset's exact K = ``k`` compression (seed 0, this extra mask and weights) cached on
    disk? ``k=None``: every K of :func:`prepared_ks`."""
    ds = load(key)
    ks = prepared_ks() if k is None else (int(k),)
    return all(ds.has_compression(kk, SEED, tuple(mask), **pca_options(weights)) for kk in ks)


def ready_ks(key, mask=(), weights="none") -> list[int]:
    """The K values (2 … K_FIT) whose exact compression is on disk, ascending."""
    ds = load(key)
    opts = pca_options(weights)
    return [k for k in range(2, config.k_fit() + 1) if ds.has_compression(k, SEED, tuple(mask), **opts)]


def ensure_default_dataset(progress: bool = True) -> Path:
    """Build the default simulated bundle if missing or built by an older simulator (``python app.py``),
    then the compressions of :func:`prepared_ks` (any other K is computed in the background when a page
    asks for it). A bundle named by RSCA_DATASET is the operator's: never rebuilt."""
    path = default_dataset_path()
    if config.get().dataset is not None:
        if not (path / "meta.json").exists():
            raise UserError(f"{path}: no dataset there (RSCA_DATASET)")
    else:
        from rsca_core import simulate

        simulate.ensure_default_dataset(path, progress=progress)
    ds = load("default")
    for k in prepared_ks():
        if not ds.has_compression(k, SEED):
            log.info("computing the K=%d PCA compression of %s once (cached on disk)", k, path)
            ds.compress(k, seed=SEED, progress=progress)
    return path


def dataset_overview(key) -> dict:
    """What a dataset is: kind, provenance, counts, cut-flow, cluster sizes, compression status."""
    ds = load(key)
    prov = ds.meta.get("provenance") or {}
    cut = prov.get("cutflow") if isinstance(prov, dict) else None
    sizes = ds.cluster_sizes().rename_axis("cluster").reset_index(name="n_stars")
    return {
        "summary": ds.summary(),
        "meta": {k: v for k, v in ds.meta.items() if k != "provenance"},
        "provenance": prov,
        "cutflow": pd.DataFrame(cut) if cut else None,
        "sizes": sizes,
        "folder": Path(ds.path).name,
        "label": ds.label,
        "compression_ready": compression_ready(key),
        "k_fit": config.k_fit(),
        "prepared_ks": list(prepared_ks()),
        "ready_ks": ready_ks(key),
    }
