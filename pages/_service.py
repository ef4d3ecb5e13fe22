"""The one door between the dashboard pages and ``rsca_core``.

Every page asks this module for data; nothing else in ``pages/`` imports ``rsca_core``. It

* finds and loads dataset bundles (by a short *key*, never by a path taken from a URL);
* parses and validates the page settings (from a URL query string or from the controls) and turns
  bad values into :class:`UserError` messages for the page;
* runs the expensive computations and caches them with flask-caching, keyed by the dataset's uid
  plus every parameter (SimpleCache per process by default, a shared filesystem or Redis cache by
  environment variable, see ``app.py``);
* hands out the background-callback manager (diskcache) for long runs.

It holds no mutable module state apart from caches (memoisation only).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import os
import tempfile
import traceback
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from flask_caching import Cache

from rsca_core.constants import PAPER_SUBSET, SPECIES
from rsca_core.metrics import distance_histogram

log = logging.getLogger("rsca_lab")

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP_CSS_URL = "/vendor/bootstrap/bootstrap.min.css"

K_MIN, K_MAX = 2, 60
DEFAULT_K = 30
SEED = 0
INPUTS = ("spectra", "abundances", "subset")
INPUT_LABELS = {"spectra": "spectra (PCA)", "abundances": "all 21 abundances", "subset": "abundance subset"}
MAX_PARAM_CHARS = 2000
ALL = "__all__"  # "every cluster" for pages without a cluster selector

cache = Cache()


class UserError(ValueError):
    """A problem the user can fix (bad input, missing dataset): shown as a message in the page."""


# ---------------------------------------------------------------------------------------------
# configuration, caches, health
# ---------------------------------------------------------------------------------------------
def k_fit() -> int:
    """Size of the one compression per dataset that every K <= k_fit() is cut from (RSCA_K_FIT,
    default 60; a smaller value makes a quick demo or test set-up, and caps K)."""
    try:
        return max(K_MIN, int(os.environ.get("RSCA_K_FIT", K_MAX)))
    except ValueError:
        return K_MAX


def k_max() -> int:
    """Largest K offered: 60 (the paper's range), or less when RSCA_K_FIT is smaller."""
    return min(K_MAX, k_fit())


def state_dir() -> Path:
    """Where the app keeps its result cache (filesystem type) and background-job store:
    RSCA_STATE_DIR, else RSCA_CACHE_DIR (which rsca_core also uses for compressions, in per-dataset
    sub-folders), else a temporary folder."""
    d = os.environ.get("RSCA_STATE_DIR") or os.environ.get("RSCA_CACHE_DIR")
    return Path(d) if d else Path(tempfile.gettempdir()) / "rsca-lab"


def cache_config() -> dict:
    kind = os.environ.get("RSCA_CACHE_TYPE", "simple").strip().lower()
    timeout = int(os.environ.get("RSCA_CACHE_TIMEOUT", "86400"))
    base = {
        "CACHE_DEFAULT_TIMEOUT": timeout,
        "CACHE_IGNORE_ERRORS": True,
        "CACHE_THRESHOLD": int(os.environ.get("RSCA_CACHE_THRESHOLD", "300")),
        "CACHE_KEY_PREFIX": "rsca_",
    }
    if kind in ("simple", "simplecache"):
        return base | {"CACHE_TYPE": "SimpleCache"}
    if kind in ("filesystem", "filesystemcache", "fs"):
        d = state_dir() / "results"
        d.mkdir(parents=True, exist_ok=True)
        return base | {"CACHE_TYPE": "FileSystemCache", "CACHE_DIR": str(d)}
    if kind in ("redis", "rediscache"):
        url = os.environ.get("RSCA_REDIS_URL")
        if not url:
            raise RuntimeError("RSCA_CACHE_TYPE=redis needs RSCA_REDIS_URL (e.g. redis://localhost:6379/0)")
        return base | {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": url}
    if kind in ("null", "none", "off"):
        return base | {"CACHE_TYPE": "NullCache"}
    raise RuntimeError(f"RSCA_CACHE_TYPE={kind!r}: expected simple, filesystem, redis or none")


def init_app(server) -> None:
    """Attach the result cache and the local Bootstrap stylesheet route to the Flask server."""
    import flask
    import flask_bootstrap

    cache.init_app(server, config=cache_config())
    css_dir = Path(flask_bootstrap.__file__).parent / "static" / "bootstrap5" / "css"

    @server.route("/vendor/bootstrap/<path:name>")
    def _bootstrap_css(name):  # served from the installed Bootstrap-Flask package: no CDN
        if name not in ("bootstrap.min.css", "bootstrap.min.css.map"):
            flask.abort(404)
        resp = flask.send_from_directory(css_dir, name, max_age=86400)
        return resp


def background_manager(cached: bool = False):
    """diskcache-backed manager for background callbacks (shared by all workers on the machine).

    ``cached=True`` returns a manager whose finished results are cached on disk and shared between
    users and workers (keyed by the callback's arguments plus the dataset registry state)."""
    import diskcache

    d = state_dir() / "jobs"
    d.mkdir(parents=True, exist_ok=True)
    handle = diskcache.Cache(str(d))
    cls = _safe_manager_class()
    if cached:
        return cls(handle, cache_by=[_registry_fingerprint], expire=7 * 86400)
    return cls(handle)


@functools.lru_cache(maxsize=1)
def _safe_manager_class():
    """DiskcacheManager that tolerates a job process vanishing while it is being terminated
    (dash 4.4 lets psutil.NoSuchProcess escape from ``process.children()`` as an HTTP 500)."""
    import psutil
    from dash import DiskcacheManager

    class SafeDiskcacheManager(DiskcacheManager):
        def terminate_job(self, job):
            with contextlib.suppress(psutil.NoSuchProcess):
                super().terminate_job(job)

    return SafeDiskcacheManager


def progress_reporter(set_progress):
    """``report(fraction, text)`` for a background job: best effort (a busy job store must not
    fail the job)."""

    def report(fraction, text):
        with contextlib.suppress(Exception):
            set_progress((int(round(100 * max(0.0, min(1.0, fraction)))), str(text)[:80]))

    return report


def _registry_fingerprint() -> str:
    """Changes whenever a dataset bundle is rebuilt (its uid changes) or its compression appears,
    so cached job results (including "not compressed yet" messages) go stale."""
    parts = [f"kfit={k_fit()}"]
    for key, path in _dataset_paths().items():
        try:
            ready = load(key).has_compression(k_fit(), SEED)
            parts.append(f"{key}:{_read_meta(path).get('uid', '')}:{int(ready)}")
        except Exception:
            parts.append(key)
    return "|".join(parts)


def health() -> dict:
    try:
        import rsca_core  # noqa: F401

        core = True
    except Exception:
        core = False
    out = {"status": "ok", "core": core}
    try:
        meta = _read_meta(default_dataset_path())
        out["dataset"] = {"kind": meta.get("kind"), "uid": meta.get("uid"), "n_stars": meta.get("n_stars")}
    except Exception as exc:
        out["dataset"] = {"error": str(exc)}
    return out


def describe_error(exc: BaseException) -> str:
    """One line for the page. Unexpected errors are logged with their traceback, not shown."""
    if isinstance(exc, (UserError, ValueError, FileNotFoundError, KeyError)):
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return msg[:500]
    log.error("unexpected error in a callback:\n%s", "".join(traceback.format_exception(exc)))
    return f"Internal error ({type(exc).__name__}); the server log has the details."


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------
def default_dataset_path() -> Path:
    """RSCA_DATASET if set, else ``default`` in data_dir() (where rsca_core.simulate builds it)."""
    env = os.environ.get("RSCA_DATASET")
    return Path(env).resolve() if env else data_dir() / "default"


def data_dir() -> Path:
    return Path(os.environ.get("RSCA_DATA_DIR") or ROOT / "data").resolve()


def _read_meta(path) -> dict:
    p = Path(path) / "meta.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(
            f"dataset {Path(path).name!r} is missing ({p} not found): build it on the Data page "
            "or with `python -m rsca_core simulate`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"dataset {Path(path).name!r}: {p} is unreadable ({exc})") from None


def _dataset_paths() -> dict:
    """key -> bundle folder: "default" plus every bundle folder under data_dir() (no file reads)."""
    default = default_dataset_path()
    out = {"default": default}
    d = data_dir()
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
    """The datasets offered in the menus: the default one plus every bundle under data_dir()."""
    out = []
    for key, path in _dataset_paths().items():
        try:
            label = f"{key} ({_read_meta(path).get('kind', 'simulated')})"
        except UserError:
            label = f"{key} (missing)"
        out.append({"label": label, "value": key, "path": path})
    return out


def dataset_path(key) -> Path:
    paths = _dataset_paths()
    if isinstance(key, str) and key in paths:
        return paths[key]
    raise UserError(f"unknown dataset {_short(key)!r}; available: {', '.join(paths)}")


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, stamp: float):
    from rsca_core import Dataset

    root = os.environ.get("RSCA_CACHE_DIR")
    return Dataset.load(path, cache_root=root or None)


def load(key):
    """The loaded Dataset of a key (memory-mapped; reloaded when the bundle is rebuilt)."""
    path = dataset_path(key)
    meta = path / "meta.json"
    try:
        stamp = meta.stat().st_mtime
    except FileNotFoundError:
        raise UserError(
            f"dataset {key!r} is missing ({meta} not found): build it on the Data page "
            "or with `python -m rsca_core simulate`"
        ) from None
    try:
        return _load_cached(str(path), stamp)
    except ImportError as exc:
        raise UserError(f"the RSCA engine is not available ({exc})") from None
    except ValueError as exc:  # BundleError is a ValueError
        raise UserError(str(exc)) from None


def uid(key) -> str:
    ds = load(key)
    return ds.meta.get("uid") or str(ds.path)


def dataset_label(key) -> str:
    """ "simulated" or "real"."""
    return load(key).label


def cluster_names(key) -> list[str]:
    return load(key).cluster_names


def ensure_default_dataset(progress: bool = True) -> Path:
    """Build the default simulated bundle if missing (python app.py), then the PCA it needs."""
    path = default_dataset_path()
    if not (path / "meta.json").exists():
        if os.environ.get("RSCA_DATASET"):
            raise UserError(f"{path}: no dataset there (RSCA_DATASET)")
        from rsca_core import simulate

        simulate.ensure_default_dataset(path, progress=progress)
    ds = load("default")
    if not compression_ready("default"):
        log.info("computing the K=%d PCA compression of %s once (cached on disk)", k_fit(), path)
        ds.compress(k_fit(), seed=SEED, progress=progress)
    return path


# ---------------------------------------------------------------------------------------------
# settings: query string <-> Settings <-> controls
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    ds: str = "default"
    input: str = "spectra"
    k: int = field(default_factory=lambda: min(DEFAULT_K, k_max()))
    species: tuple = PAPER_SUBSET
    clusters: tuple | None = None  # None = every cluster of the dataset
    cv: bool = True
    top_n: int | None = None  # None = all axes
    mask: tuple = ()  # extra [start, stop) pixel ranges (Systematics page)

    def key(self) -> str:
        return json.dumps(asdict(self) | {"uid": uid(self.ds)}, sort_keys=True, default=list)


def _short(v, n=60) -> str:
    s = str(v)
    return s if len(s) <= n else s[:n] + "…"


def _one(v):
    """A query value given several times keeps the last one."""
    return v[-1] if isinstance(v, list) else v


def parse_int(value, name, lo, hi) -> int:
    if isinstance(value, bool):
        raise UserError(f"{name} must be a whole number between {lo} and {hi}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise UserError(f"{name} must be a whole number between {lo} and {hi}, not {_short(value)}")
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise UserError(f"{name} must be a whole number between {lo} and {hi}, not {_short(value)!r}") from None
    if not isinstance(value, (int, np.integer)):
        raise UserError(f"{name} must be a whole number between {lo} and {hi}")
    if not lo <= value <= hi:
        raise UserError(f"{name} = {value} is out of range: choose {lo}…{hi}")
    return int(value)


def parse_species(values) -> tuple:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    lookup = {s.lower(): s for s in SPECIES}
    out, bad = [], []
    for v in values or []:
        s = lookup.get(str(v).strip().lower())
        (out if s else bad).append(s or v)
    if bad:
        raise UserError(f"unknown species {', '.join(_short(b, 20) for b in bad)}; choose among {', '.join(SPECIES)}")
    if not out:
        raise UserError("pick at least one species for the abundance subset")
    return tuple(dict.fromkeys(out))


def parse_clusters(key, values) -> tuple | None:
    """Validated training clusters (None = all). Unknown names are an error naming them."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [v for v in values.split(",")]
    values = [str(v).strip() for v in values if str(v).strip()]
    names = cluster_names(key)
    bad = [v for v in values if v not in names]
    if bad:
        raise UserError(
            f"unknown cluster(s) {', '.join(_short(b, 30) for b in bad[:5])}"
            f"{' …' if len(bad) > 5 else ''} in dataset {key!r}"
        )
    if len(values) < 2:
        raise UserError(
            "select at least two clusters to train the map"
            + (" (none selected)" if not values else f" (only {values[0]} selected)")
        )
    vals = tuple(sorted(set(values)))
    return None if len(vals) == len(names) else vals


def parse_mask(value) -> tuple:
    if value in (None, "", []):
        return ()
    if isinstance(value, str):
        parts = [p for p in value.replace(";", ",").split(",") if p.strip()]
    else:
        parts = list(value)
    out = []
    for p in parts:
        try:
            a, b = (int(x) for x in str(p).split("-"))
        except ValueError:
            raise UserError(f"pixel range {_short(p, 20)!r} must look like START-STOP (e.g. 720-910)") from None
        if not 0 <= a < b <= 8575:
            raise UserError(f"pixel range {a}-{b} must satisfy 0 ≤ start < stop ≤ 8575")
        out.append((a, b))
    return tuple(sorted(set(out)))


def settings_from_query(query: dict, defaults: Settings | None = None) -> tuple[Settings, list[str]]:
    """Settings from a URL query (as given to a page's ``layout(**query)``), never raising.

    Bad or tampered values fall back to the defaults, and each one gives a message."""
    s = defaults or Settings()
    problems: list[str] = []
    q = {k: _one(v) for k, v in (query or {}).items()}
    for k, v in q.items():
        if isinstance(v, str) and len(v) > MAX_PARAM_CHARS:
            problems.append(f"URL parameter {k!r} is too long; ignored")
            q[k] = None

    def take(name, fn):
        nonlocal s
        if q.get(name) in (None,):
            return
        try:
            s = replace(s, **{name if name != "top" else "top_n": fn(q[name])})
        except UserError as exc:
            problems.append(f"URL parameter {name}: {exc}; using the default")

    if q.get("ds") is not None:
        try:
            dataset_path(q["ds"])
            s = replace(s, ds=str(q["ds"]))
        except UserError as exc:
            problems.append(f"URL parameter ds: {exc}")
    take(
        "input", lambda v: v if v in INPUTS else _raise(f"input must be one of {', '.join(INPUTS)}, not {_short(v)!r}")
    )
    take("k", lambda v: parse_int(v, "K", K_MIN, k_max()))
    take("species", parse_species)
    take(
        "cv",
        lambda v: (
            {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}.get(str(v).lower())
            if str(v).lower() in ("1", "true", "on", "0", "false", "off")
            else _raise(f"cv must be 1 or 0, not {_short(v)!r}")
        ),
    )
    take("top", lambda v: None if str(v).lower() in ("", "all") else parse_int(v, "top-N", 1, K_MAX))
    take("mask", parse_mask)
    if q.get("clusters") is not None:
        try:
            s = replace(s, clusters=parse_clusters(s.ds, q["clusters"]))
        except UserError as exc:
            problems.append(f"URL parameter clusters: {exc}; using all clusters")
    return s, problems


def _raise(msg):
    raise UserError(msg)


def settings_to_query(s: Settings, keys=("ds", "input", "k", "species", "clusters", "cv", "top")) -> str:
    """The query string of a view (only values that differ from the defaults)."""
    d = Settings()
    q = {}
    if "ds" in keys and s.ds != d.ds:
        q["ds"] = s.ds
    if "input" in keys and s.input != d.input:
        q["input"] = s.input
    if "k" in keys and s.k != d.k:
        q["k"] = s.k
    if "species" in keys and s.species != d.species and s.input == "subset":
        q["species"] = ",".join(s.species)
    if "clusters" in keys and s.clusters is not None:
        q["clusters"] = ",".join(s.clusters)
    if "cv" in keys and s.cv != d.cv:
        q["cv"] = int(s.cv)
    if "top" in keys and s.top_n is not None:
        q["top"] = s.top_n
    if "mask" in keys and s.mask:
        q["mask"] = ",".join(f"{a}-{b}" for a, b in s.mask)
    return ("?" + urlencode(q, safe=",")) if q else ""


def settings_from_controls(ds, input_, k, species, clusters, cv, top_n, mask=()) -> Settings:
    """Settings from control values; raises UserError with a message for the page."""
    if ds is None:
        raise UserError("choose a dataset")
    dataset_path(ds)
    load(ds)
    if input_ not in INPUTS:
        raise UserError(f"input must be one of {', '.join(INPUTS)}")
    if k is None or k == "":
        raise UserError(f"K must be a whole number between {K_MIN} and {k_max()}")
    k = parse_int(k, "K", K_MIN, k_max())
    sp = parse_species(species) if input_ == "subset" else PAPER_SUBSET
    dims = {"spectra": k, "abundances": len(SPECIES), "subset": len(sp)}[input_]
    if top_n in (None, "", "all", 0, "0"):
        top = None
    else:
        top = parse_int(top_n, "top-N", 1, dims)
    cl = None if clusters == ALL else parse_clusters(ds, clusters if clusters is not None else [])
    cvb = bool(cv) if not isinstance(cv, list) else bool(cv)
    return Settings(ds=ds, input=input_, k=k, species=sp, clusters=cl, cv=cvb, top_n=top, mask=tuple(mask))


# ---------------------------------------------------------------------------------------------
# computations
# ---------------------------------------------------------------------------------------------
def compression_ready(key, mask=()) -> bool:
    """Is the dataset's K=k_fit() compression (for this extra mask) cached on disk?"""
    return load(key).has_compression(k_fit(), SEED, mask)


@functools.lru_cache(maxsize=6)
def _compression(path: str, uid_: str, kf: int, seed: int, mask: tuple):
    return _load_cached_path(path).compress(kf, seed=seed, extra_mask_ranges=mask)


def _load_cached_path(path):
    meta = Path(path) / "meta.json"
    return _load_cached(str(path), meta.stat().st_mtime)


def compression(key, k: int, mask=(), allow_compute: bool = False):
    """The leading ``k`` PCA components of the dataset's one K=k_fit() compression (seed 0).

    Computing that compression takes minutes on a big survey; unless ``allow_compute`` (background
    jobs, start-up), a missing one is a UserError asking to prepare it on the Data page."""
    ds = load(key)
    if not allow_compute and not compression_ready(key, mask):
        raise UserError(
            f"the spectra of dataset {key!r} are not compressed yet (K={k_fit()}"
            f"{', extra mask ' + str(list(mask)) if mask else ''}); prepare it on the Data page "
            f"or run `python -m rsca_core compress --dataset {ds.path} --k {k_fit()}`"
        )
    comp = _compression(str(ds.path), uid(key), k_fit(), SEED, tuple(mask))
    return comp.truncate(int(k)) if int(k) < comp.k else comp


def rate_inputs(s: Settings, allow_compute: bool = False):
    """RateInputs of the settings (rsca_core's one builder), restricted to the selected clusters."""
    ds = load(s.ds)
    comp = compression(s.ds, s.k, s.mask, allow_compute=allow_compute) if s.input == "spectra" else None
    try:
        ri = ds.rate_inputs(s.input, k=s.k, seed=SEED, species=s.species, clusters=s.clusters, compression=comp)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    ri.description |= {"dataset": s.ds}
    if s.input == "spectra":
        ri.description["pca"] = f"leading {s.k} of K={k_fit()}"
    return ri


def _compute_rates(s: Settings) -> dict:
    from rsca_core import doppelganger_rates

    ri = rate_inputs(s)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = doppelganger_rates(ri.z_pop, ri.z_clust, ri.cluster_ids, **ri.as_kwargs(), cv=s.cv, top_n=s.top_n)
    per = res.per_cluster.reset_index(drop=True).copy()
    hists = {}
    for name in per["cluster"]:
        intra = res.intra_distances.get(name, np.empty(0))
        inter = res.inter_distances.get(name, np.empty(0))
        hists[name] = distance_histogram(intra, inter)
    return {
        "global_rate": float(res.global_rate),
        "per_cluster": per,
        "hists": hists,
        "n_field": int(len(ri.z_pop)),
        "n_cluster_stars": int(len(ri.z_clust)),
        "dims": int(ri.z_pop.shape[1]),
        "label": dataset_label(s.ds),
        "settings": asdict(s),
        "description": ri.description,
        "warnings": list(dict.fromkeys(str(w.message) for w in caught)),
    }


def rates(s: Settings) -> dict:
    """Doppelganger rates of the settings (global, per cluster, distance histograms), cached."""
    return _rates_cached(s.key())


@cache.memoize()
def _rates_cached(key: str) -> dict:
    d = json.loads(key)
    d.pop("uid")
    return _compute_rates(settings_from_dict(d))


def settings_to_dict(s: Settings) -> dict:
    return asdict(s)


def settings_from_dict(d) -> Settings:
    return Settings(
        ds=d["ds"],
        input=d["input"],
        k=d["k"],
        species=tuple(d["species"]),
        clusters=None if d["clusters"] is None else tuple(d["clusters"]),
        cv=d["cv"],
        top_n=d["top_n"],
        mask=tuple(tuple(m) for m in d["mask"]),
    )


def fit_map(s: Settings):
    """The RSCA map fitted (without CV) on the selected clusters, plus its inputs."""
    from rsca_core import RSCA

    ri = rate_inputs(s)
    model = RSCA(top_n=s.top_n).fit(ri.z_pop, ri.z_clust, ri.cluster_ids)
    return model, ri


def features(s: Settings, n_features: int = 3) -> dict:
    """Top RSCA features vs [Fe/H] and VHELIO (field density + cluster members), cached."""
    return _features_cached(s.key(), n_features)


@cache.memoize()
def _features_cached(key: str, n_features: int) -> dict:
    d = json.loads(key)
    d.pop("uid")
    s = settings_from_dict(d)
    ds = load(s.ds)
    model, ri = fit_map(s)
    yf = np.asarray(model.transform(ri.z_pop))
    yc = np.asarray(model.transform(ri.z_clust))
    nf = min(n_features, yf.shape[1])
    st = ds.stars
    fi = ds.field_index
    feh_f = st["fe_h"].to_numpy(float)[fi]
    vh_f = st["vhelio_avg"].to_numpy(float)[fi]
    cmask = st["cluster"].isin(set(ri.cluster_ids)).to_numpy()  # hash lookup: np.isin on 20k strings is slow
    # the cluster rows of rate_inputs are in bundle order, like cmask's
    feh_c = st["fe_h"].to_numpy(float)[cmask]
    vh_c = st["vhelio_avg"].to_numpy(float)[cmask]
    out = {"label": dataset_label(s.ds), "features": [], "scales": np.asarray(model.scales_, float)[:nf]}

    def dens(x, y):
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if x.size == 0:
            return None
        xr = np.percentile(x, [0.5, 99.5])
        yr = np.percentile(y, [0.5, 99.5])
        if xr[0] == xr[1]:
            xr = xr + np.array([-0.5, 0.5])
        if yr[0] == yr[1]:
            yr = yr + np.array([-0.5, 0.5])
        nb = int(np.clip(np.sqrt(x.size) / 1.5, 15, 70))
        h, xe, ye = np.histogram2d(x, y, bins=(nb, max(10, int(nb * 0.7))), range=(xr, yr))
        return {"counts": h.T, "x": 0.5 * (xe[1:] + xe[:-1]), "y": 0.5 * (ye[1:] + ye[:-1])}

    for i in range(nf):
        out["features"].append(
            {
                "index": i,
                "field": dens(feh_f, yf[:, i]),
                "clusters": {"x": feh_c, "y": yc[:, i], "name": np.asarray(ri.cluster_ids)},
            }
        )
    out["vhelio"] = {
        "field": dens(vh_f, yf[:, 0]),
        "clusters": {"x": vh_c, "y": yc[:, 0], "name": np.asarray(ri.cluster_ids)},
    }
    return out


def rates_csv(s: Settings) -> str:
    r = rates(s)
    per = r["per_cluster"].copy()
    header = (
        f"# RSCA Lab per-cluster doppelganger rates - {r['label'].upper()} data\n"
        f"# dataset={s.ds} uid={uid(s.ds)} input={s.input} k={s.k if s.input == 'spectra' else ''} "
        f"cv={int(s.cv)} top_n={s.top_n or 'all'} global_rate={r['global_rate']:.6g}\n"
    )
    per.insert(0, "data", r["label"])
    return header + per.to_csv(index=False)


def map_npz(s: Settings) -> bytes:
    """The fitted map (no CV, selected clusters) as an .npz: y = x @ W.T + b for complete spectra."""
    model, ri = fit_map(s)
    arrays = {
        "rsca_mean": model.mean_,
        "rsca_components": model.components_,
        "scales": model.scales_,
        "weights": model.weights_,
        "order": model.order_,
        "training_clusters": np.asarray(sorted(set(ri.cluster_ids)), dtype=str),
        "settings": np.asarray(json.dumps(asdict(s) | {"uid": uid(s.ds), "kind": dataset_label(s.ds)})),
        "data_kind": np.asarray(dataset_label(s.ds)),
    }
    if s.input == "spectra":
        comp = compression(s.ds, s.k, s.mask)
        pcs = np.asarray(comp.components, float)
        R = np.asarray(model.components_, float)
        m = np.asarray(comp.mean, float)
        W = R @ pcs  # z = (x - m) @ P.T ; y = (z - mu) @ R.T
        b = -(m @ pcs.T + np.asarray(model.mean_, float)) @ R.T
        arrays |= {
            "pca_components": pcs,
            "pca_mean": np.asarray(comp.mean, float),
            "wavelength": load(s.ds).wavelength,
            "W": W,
            "b": b,
        }
    else:
        arrays |= {"species": np.asarray(list(SPECIES) if s.input == "abundances" else list(s.species))}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def paper_value(s: Settings) -> str:
    if s.input == "spectra":
        return "0.020 (spectra, K = 30)" if s.k == 30 else "0.020 (spectra, at K = 30)"
    if s.input == "subset":
        return "0.023 (best abundance subset)"
    return "not quoted for all 21 abundances"


# ---------------------------------------------------------------------------------------------
# Inside RSCA (teaching)
# ---------------------------------------------------------------------------------------------
STEP_NAMES = ("1. Compress", "2. Sphere", "3. Reparametrize", "4. Rescale")


def inside_steps(s: Settings, max_field: int = 3000) -> dict:
    """The four steps of Fig. 1 on the first two PCA components of the dataset (cached)."""
    return _inside_cached(s.key(), max_field)


@cache.memoize()
def _inside_cached(key: str, max_field: int) -> dict:
    from rsca_core import RSCA

    d = json.loads(key)
    d.pop("uid")
    s = replace(settings_from_dict(d), input="spectra", k=2, top_n=None)
    ri = rate_inputs(s)
    model = RSCA().fit(ri.z_pop, ri.z_clust, ri.cluster_ids)
    rng = np.random.default_rng(0)
    sub = np.sort(rng.choice(len(ri.z_pop), size=min(max_field, len(ri.z_pop)), replace=False))

    def steps(z):
        s1 = (z - model.mean_) @ np.asarray(model.sphere_).T
        s2 = s1 @ np.asarray(model.rotation_).T
        s3 = np.asarray(model.transform(z))
        return [np.asarray(z, float), s1, s2, s3]

    return {
        "field": steps(ri.z_pop[sub]),
        "clusters": steps(ri.z_clust),
        "names": np.asarray(ri.cluster_ids),
        "sigma_c": np.asarray(model.sigma_c_, float),
        "scales": np.asarray(model.scales_, float),
        "order": np.asarray(model.order_),
        "label": dataset_label(s.ds),
        "n_field": int(len(ri.z_pop)),
    }


def axis_vectors(s: Settings, n_axes: int = 5) -> dict:
    """Each RSCA output axis as a vector in wavelength space (spectra input only), cached."""
    return _axes_cached(replace(s, input="spectra").key(), n_axes)


@cache.memoize()
def _axes_cached(key: str, n_axes: int) -> dict:
    d = json.loads(key)
    d.pop("uid")
    s = settings_from_dict(d)
    model, _ri = fit_map(replace(s, top_n=None))
    comp = compression(s.ds, s.k, s.mask)
    vec = model.spectral_components(np.asarray(comp.components, float))
    n = min(n_axes, vec.shape[0])
    ds = load(s.ds)
    return {
        "wavelength": np.asarray(ds.wavelength, float),
        "vectors": vec[:n],
        "scales": np.asarray(model.scales_, float)[:n],
        "label": dataset_label(s.ds),
        "k": s.k,
    }


# ---------------------------------------------------------------------------------------------
# Data page and background jobs
# ---------------------------------------------------------------------------------------------
def dataset_overview(key) -> dict:
    """What a dataset is: kind, provenance, counts, cut-flow, cluster sizes, compression status."""
    ds = load(key)
    summ = ds.summary()
    prov = ds.meta.get("provenance") or {}
    cut = prov.get("cutflow") if isinstance(prov, dict) else None
    sizes = ds.cluster_sizes().rename_axis("cluster").reset_index(name="n_stars")
    return {
        "summary": summ,
        "meta": {k: v for k, v in ds.meta.items() if k != "provenance"},
        "provenance": prov,
        "cutflow": pd.DataFrame(cut) if cut else None,
        "sizes": sizes,
        "path": str(ds.path),
        "label": ds.label,
        "compression_ready": compression_ready(key),
        "k_fit": k_fit(),
    }


class ProgressStream(io.TextIOBase):
    """A stderr stand-in that turns tqdm's "n/total" output into ``report(fraction, text)`` calls."""

    _pat = None

    def __init__(self, report, min_interval: float = 0.5):
        import re
        import time

        self._re = re.compile(r"(?:([^:|\r\n]*):\s*)?\s*(\d+)%\|[^|]*\|\s*(\d+)/(\d+)")
        self._report, self._min, self._time, self._last = report, min_interval, time.monotonic, 0.0

    last_error = ""

    def write(self, text):
        for line in text.replace("\r", "\n").splitlines():
            if line.startswith("error:"):
                self.last_error = line[6:].strip()
        m = next(reversed(list(self._re.finditer(text))), None)
        if m:
            now = self._time()
            done, total = int(m.group(3)), int(m.group(4))
            if now - self._last >= self._min or done >= total:
                self._last = now
                desc = (m.group(1) or "").strip()
                self._report(done / total if total else 0.0, f"{desc} {done}/{total}".strip())
        return len(text)

    def flush(self):
        pass


def run_with_progress(fn, report, *args, **kwargs):
    """Call ``fn`` (which draws tqdm bars on stderr) reporting its progress through ``report``."""
    import contextlib

    stream = ProgressStream(report)
    with contextlib.redirect_stderr(stream):
        out = fn(*args, **kwargs)
    if stream.last_error and out not in (None, 0):
        raise UserError(stream.last_error)
    return out


def prepare_compression(key, report=None, mask=()):
    """Compute (and cache on disk) the dataset's K=k_fit() compression; for a background job."""
    ds = load(key)
    if report is None:
        return ds.compress(k_fit(), seed=SEED, extra_mask_ranges=mask)
    return run_with_progress(ds.compress, report, k_fit(), seed=SEED, extra_mask_ranges=mask, progress=True)


def _simulate_parser():
    """The argparse parser of ``python -m rsca_core simulate`` (UserError if the simulator is absent)."""
    import argparse

    try:
        from rsca_core import cli

        parser = cli.build_parser()
    except Exception as exc:
        raise UserError(f"the RSCA engine's CLI is not available ({exc})") from None
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and "simulate" in action.choices:
            return action.choices["simulate"]
    raise UserError("the survey simulator (rsca_core.simulate) is not installed in this build")


_NOT_EFFECTS = {"out", "n_field", "seed", "format", "overwrite", "progress", "quiet", "help", "func", "force"}


def simulate_options() -> dict:
    """The switchable effects of the simulator, read from its CLI options (boolean flags)."""
    import argparse

    sp = _simulate_parser()
    switches = []
    for a in sp._actions:
        if a.dest in _NOT_EFFECTS or not a.option_strings:
            continue
        flag = max(a.option_strings, key=len)
        help_ = (a.help or a.dest.replace("_", " ")).split(";")[0].split(". ")[0]
        if isinstance(a, argparse.BooleanOptionalAction):
            pos = next(o for o in a.option_strings if not o.startswith("--no-"))
            switches.append({"flag": pos, "label": help_, "default": bool(a.default), "kind": "bool-optional"})
        elif isinstance(a, argparse._StoreFalseAction):  # e.g. --no-dibs: checkbox "dibs" on by default
            switches.append({"flag": flag, "label": help_, "default": True, "kind": "store-false"})
        elif isinstance(a, argparse._StoreTrueAction):
            switches.append({"flag": flag, "label": help_, "default": False, "kind": "store-true"})
    return {"switches": switches}


def build_simulated(name: str, n_field: int, seed: int, flags: dict, report=None) -> Path:
    """Run the simulator into data_dir()/name with the chosen effects (for a background job)."""
    from rsca_core import cli

    kinds = {o["flag"]: o for o in simulate_options()["switches"]}
    out = data_dir() / name
    if out.exists():
        raise UserError(f"{out} already exists: choose another name")
    argv = ["simulate", "--out", str(out), "--n-field", str(int(n_field)), "--seed", str(int(seed))]
    for flag, on in flags.items():
        o = kinds.get(flag)
        if o is None:
            raise UserError(f"unknown simulator option {_short(flag, 30)}")
        if o["kind"] == "bool-optional":
            argv.append(flag if on else "--no-" + flag[2:])
        elif o["kind"] == "store-false" and not on or o["kind"] == "store-true" and on:
            argv.append(flag)
    rc = run_with_progress(cli.main, report or (lambda f, t: None), argv)
    if rc:
        raise UserError(f"the simulator failed (exit code {rc}); see the server log")
    return out


# ---------------------------------------------------------------------------------------------
# Systematics (paper App. A-C through rsca_core.diagnostics)
# ---------------------------------------------------------------------------------------------
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
        sub = (lambda f, t, i=i, name=name: report((i + f) / len(steps), f"{name}: {t}")) if report else None
        try:
            kw = dict(n_components=n_components, max_low=max_stars, max_high=max_stars, seed=SEED)
            r = run_with_progress(fn, sub, ds, progress=True, **kw) if sub else fn(ds, **kw)
        except ValueError as exc:
            out[name] = {"error": str(exc)}
            continue
        out[name] = {
            "wavelength": np.asarray(r.wavelength, float).tolist(),
            "residual": np.nan_to_num(np.asarray(r.residual, float), nan=0.0).tolist(),
            "bands": r.suggested_ranges,
            "summary": _plain(r.summary()),
            "threshold": float(r.threshold),
            "baseline": float(r.baseline),
        }
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
        "summary": _plain(vs.summary),
        "together": pairs.loc[pairs["category"] == "together", "similarity"].to_numpy(float).tolist(),
        "separate": pairs.loc[pairs["category"] == "separate", "similarity"].to_numpy(float).tolist(),
    }


def rate_with_mask(s: Settings, mask: tuple, report=None) -> dict:
    """Global rate of the settings without and with extra masked pixel ranges (computes the
    masked compression if needed: minutes on a big survey, so call it from a background job)."""
    base = rates(replace(s, mask=()))["global_rate"] if compression_ready(s.ds) else None
    if mask and not compression_ready(s.ds, mask):
        prepare_compression(s.ds, report=report, mask=mask)
    masked = _compute_rates(replace(s, mask=tuple(mask)))["global_rate"] if mask else base
    if base is None:
        base = _compute_rates(replace(s, mask=()))["global_rate"]
    return {"without": base, "with": masked, "mask": [list(m) for m in mask]}


def _plain(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (np.floating, float)):
            v = None if not np.isfinite(v) else float(v)
        elif isinstance(v, (np.bool_,)):
            v = bool(v)
        elif not isinstance(v, (int, str, bool, type(None), list, tuple, dict)):
            v = str(v)
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------
# Curves (rsca_core.experiments), for background jobs
# ---------------------------------------------------------------------------------------------
EXPERIMENTS = ("k_sweep", "top_n", "data_size", "ablation")


class _JobProgress:
    """Passed as ``progress=`` to rsca_core.experiments: counts units, reports a fraction."""

    def __init__(self, total, report, what):
        import time

        self.n, self.total, self.report, self.what = 0, max(1, int(total)), report, what
        self._time, self._last = time.monotonic, 0.0

    def update(self, n=1):
        self.n += n
        now = self._time()
        if self.report and (now - self._last > 0.5 or self.n >= self.total):
            self._last = now
            self.report(min(1.0, self.n / self.total), f"{self.what}: {self.n}/{self.total}")


def parse_int_list(text, name, lo, hi, max_len=20) -> list[int]:
    parts = [p for p in str(text or "").replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise UserError(f"{name}: give at least one whole number")
    if len(parts) > max_len:
        raise UserError(f"{name}: at most {max_len} values")
    return sorted(set(parse_int(p, name, lo, hi) for p in parts))


def run_experiment(name: str, key, params: dict, report=None):
    """Run one of the paper's experiments on a dataset; returns (table DataFrame, plotly Figure).

    Spectra compressions are cut from the dataset's K=k_fit() one (``truncate_from``), except the
    extra seeds of the top-N table, which need compressions of their own (slow on big surveys)."""
    from rsca_core import experiments, plotting

    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {_short(name)!r}")
    ds = load(key)
    kf = k_fit()
    if not compression_ready(key):
        raise UserError(f"the spectra of dataset {key!r} are not compressed yet: prepare it on the Data page")
    report = report or (lambda f, t: None)
    if name == "k_sweep":
        ks = parse_int_list(params.get("ks"), "K values", K_MIN, k_max())
        bar = _JobProgress(2 * len(ks), report, "K sweep")
        table = experiments.k_sweep(ds, ks=ks, truncate_from=kf, progress=bar)
        fig = plotting.fig_k_sweep(table, ds.label)
    elif name == "top_n":
        k = parse_int(params.get("k"), "K", 2, k_max())
        n_seeds = parse_int(params.get("n_seeds"), "seeds", 1, 20)
        ns = [n for n in range(1, 8) if n < k]
        bar = _JobProgress(n_seeds, report, f"top-N table, {n_seeds} compression seed(s)")
        table = experiments.top_n_table(
            ds, k=k, ns=ns, n_seeds=n_seeds, truncate_from=kf if k <= kf else None, progress=bar
        )
        fig = plotting.fig_top_n(table, ds.label)
    elif name == "data_size":
        ks = parse_int_list(params.get("ks"), "K values", K_MIN, k_max(), max_len=5)
        n_trials = parse_int(params.get("n_trials"), "trials", 1, 500)
        n_usable = int((ds.cluster_sizes() >= 2).sum())
        counts = experiments.default_cluster_counts(n_usable)
        bar = _JobProgress(len(ks) * len(counts) * n_trials, report, "data-size curve")
        table = experiments.data_size_curve(
            ds, ks=ks, n_clusters=counts, n_trials=n_trials, truncate_from=kf, progress=bar
        )
        fig = plotting.fig_data_size(table, ds.label)
    else:
        k = parse_int(params.get("k"), "K", 2, k_max())
        sub = parse_species(params.get("species") or PAPER_SUBSET)
        bar = _JobProgress(3 * 3, report, "ablation")
        table = experiments.ablation(ds, k=k, subset=sub, truncate_from=kf if k <= kf else None, progress=bar)
        fig = plotting.fig_ablation(table, ds.label)
    return table, fig
