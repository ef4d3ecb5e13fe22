"""The view settings of a page: :class:`Settings`, and the one parser of each setting for URLs
(never raising: bad values fall back with a message) and for controls (raising :class:`UserError`)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from urllib.parse import urlencode

import numpy as np

from rsca_core.constants import N_PIXELS, PAPER_SUBSET, SPECIES
from rsca_core.learners import METHODS

from . import config
from .config import K_MIN
from .datasets import cluster_names, compression_file_id, dataset_path, load, uid
from .errors import UserError, short

DEFAULT_K = 30
INPUTS = ("spectra", "abundances", "subset")
INPUT_LABELS = {"spectra": "spectra (PCA)", "abundances": "all 21 abundances", "subset": "abundance subset"}
MAX_PARAM_CHARS = 2000
ALL = "__all__"  # "every cluster" for pages without a cluster selector
WEIGHTS = ("none", "ivar")  # compression weights: plain PCA, or each pixel weighted by 1/σ² (capped)
METHOD_LABELS = {"rsca": "RSCA (the paper)", "rca": "RCA", "lda": "LDA", "nca": "NCA"}
MAX_MASK_RANGES = 40  # extra masked pixel ranges one view may ask for


@dataclass(frozen=True)
class Settings:
    ds: str = "default"
    input: str = "spectra"
    k: int = field(default_factory=lambda: min(DEFAULT_K, config.k_max()))
    species: tuple = PAPER_SUBSET
    clusters: tuple | None = None  # None = every cluster of the dataset
    cv: bool = True
    top_n: int | None = None  # None = all axes
    mask: tuple = ()  # extra [start, stop) pixel ranges (Systematics page)
    method: str = "rsca"  # rsca_core.learners.METHODS; top_n applies to "rsca" only
    weights: str = "none"  # "ivar": the flux-error-weighted PCA (spectra input, bundles with errors.npy)

    def key(self) -> str:
        """Cache key: every setting plus the dataset's uid, the compression size K_FIT and, for
        spectra, the identity of the exact compression's file (None until it is computed): a result
        computed from a compression is never answered for a refitted or upgraded one."""
        extra = {"uid": uid(self.ds), "k_fit": config.k_fit()}
        if self.input == "spectra":
            extra["compression"] = compression_file_id(self.ds, self.k, self.mask, self.weights)
        return json.dumps(asdict(self) | extra, sort_keys=True, default=list)


def settings_to_dict(s: Settings) -> dict:
    return asdict(s)


def settings_from_dict(d) -> Settings:
    """Settings from :func:`settings_to_dict` (a browser store or a cache key: anything may come),
    every value checked again as if it came from the controls; UserError if it is not valid."""
    try:
        mask = [f"{int(a)}-{int(b)}" for a, b in d["mask"]]
        clusters = ALL if d["clusters"] is None else [str(x) for x in d["clusters"]]
        species = [str(x) for x in d["species"]]
        args = (str(d["ds"]), str(d["input"]), d["k"], species, clusters, bool(d["cv"]), d["top_n"])
        method, weights = str(d.get("method", "rsca")), str(d.get("weights", "none"))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError("the page's stored settings are not valid: reload the page") from None
    return settings_from_controls(*args, mask=parse_mask(mask), method=method, weights=weights)


def settings_from_key(key: str) -> Settings:
    return settings_from_dict(json.loads(key))


def one(v):
    """A query value given several times keeps the last one."""
    return v[-1] if isinstance(v, list) and v else v


def parse_int(value, name, lo, hi) -> int:
    """``value`` as an int in lo…hi, or a UserError naming ``name``."""
    if isinstance(value, bool):
        raise UserError(f"{name} must be a whole number between {lo} and {hi}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise UserError(f"{name} must be a whole number between {lo} and {hi}, not {short(value)}")
        value = int(value)
    if isinstance(value, str):
        raw = value
        try:
            value = int(raw.strip()) if len(raw) < 30 else None
        except ValueError:
            value = None
        if value is None:
            raise UserError(f"{name} must be a whole number between {lo} and {hi}, not {short(raw)!r}")
    if not isinstance(value, (int, np.integer)):
        raise UserError(f"{name} must be a whole number between {lo} and {hi}")
    if not lo <= value <= hi:
        raise UserError(f"{name} = {value} is out of range: choose {lo}…{hi}")
    return int(value)


def parse_int_list(text, name, lo, hi, max_len=20) -> list[int]:
    parts = [p for p in str(text or "").replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise UserError(f"{name}: give at least one whole number")
    if len(parts) > max_len:
        raise UserError(f"{name}: at most {max_len} values")
    return sorted(set(parse_int(p, name, lo, hi) for p in parts))


def parse_species(values) -> tuple:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    if not isinstance(values, (list, tuple)):
        raise UserError("species: give a list of species names")
    lookup = {s.lower(): s for s in SPECIES}
    out, bad = [], []
    for v in values[: 4 * len(SPECIES)]:
        s = lookup.get(str(v).strip().lower())
        (out if s else bad).append(s or v)
    if bad:
        raise UserError(f"unknown species {', '.join(short(b, 20) for b in bad)}; choose among {', '.join(SPECIES)}")
    if not out:
        raise UserError("pick at least one species for the abundance subset")
    return tuple(dict.fromkeys(out))


def parse_clusters(key, values) -> tuple | None:
    """Validated training clusters (None = all). Unknown names are an error naming them."""
    if values is None:
        return None
    if isinstance(values, str):
        values = values.split(",")
    if not isinstance(values, (list, tuple)):
        raise UserError("clusters: give a list of cluster names")
    values = [str(v).strip() for v in values if str(v).strip()]
    names = cluster_names(key)
    known = set(names)
    bad = [v for v in values if v not in known]
    if bad:
        raise UserError(
            f"unknown cluster(s) {', '.join(short(b, 30) for b in bad[:5])}{' …' if len(bad) > 5 else ''} "
            f"in dataset {key!r}"
        )
    if len(set(values)) < 2:
        raise UserError(
            "select at least two clusters to train the map"
            + (" (none selected)" if not values else f" (only {values[0]} selected)")
        )
    vals = tuple(sorted(set(values)))
    return None if len(vals) == len(names) else vals


def parse_mask(value) -> tuple:
    """Extra masked pixel ranges "a-b, c-d" → ((a, b), (c, d)) sorted, without duplicates."""
    if value in (None, "", []):
        return ()
    if isinstance(value, str):
        parts = [p for p in value.replace(";", ",").split(",") if p.strip()]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise UserError("pixel ranges must look like START-STOP, START-STOP")
    if len(parts) > MAX_MASK_RANGES:
        raise UserError(f"at most {MAX_MASK_RANGES} pixel ranges, not {len(parts)}")
    out = []
    for p in parts:
        try:
            a, b = (int(x) for x in str(p).split("-"))
        except ValueError:
            raise UserError(f"pixel range {short(p, 20)!r} must look like START-STOP (e.g. 720-910)") from None
        if not 0 <= a < b <= N_PIXELS:
            raise UserError(f"pixel range {a}-{b} must satisfy 0 ≤ start < stop ≤ {N_PIXELS}")
        out.append((a, b))
    return tuple(sorted(set(out)))


def input_dims(input_: str, k: int, species=PAPER_SUBSET) -> int:
    """Number of axes of an input: K for spectra, 21 abundances, or the subset's species."""
    return {"spectra": int(k), "abundances": len(SPECIES), "subset": len(species)}[input_]


def top_n_range(input_: str, k: int, species=PAPER_SUBSET) -> tuple[int, int]:
    """The one valid range of top-N (axes kept), for the controls, their help text and the URL: 1 to
    the input's number of axes; "all" (blank) keeps every axis."""
    return 1, input_dims(input_, k, species)


def parse_top(value, input_: str, k: int, species=PAPER_SUBSET) -> int | None:
    """top-N from a control or a URL: None (every axis) for blank or "all"; else a whole number in
    :func:`top_n_range`, or a UserError naming that range (so 0 is refused as -1 is)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
        return None
    lo, hi = top_n_range(input_, k, species)
    return parse_int(value, "top-N", lo, hi)


def top_note(input_: str, k: int, species=PAPER_SUBSET) -> str:
    """The help text under the top-N box, with its range."""
    lo, hi = top_n_range(input_, k, species)
    return f"{lo}–{hi}; blank = all axes"


def parse_method(value) -> str:
    """One of :data:`rsca_core.learners.METHODS` (case-insensitive), or a UserError naming ``method``."""
    m = str(value).strip().lower() if isinstance(value, str) else None
    if m not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, not {short(value)!r}")
    return m


def parse_weights(value) -> str:
    """ "none" or "ivar" (the flux-error-weighted compression), or a UserError naming ``weights``."""
    w = str(value).strip().lower() if isinstance(value, str) else None
    if w not in WEIGHTS:
        raise UserError(f"weights must be one of {', '.join(WEIGHTS)}, not {short(value)!r}")
    return w


def check_weights(key, weights: str) -> str:
    """``weights`` if the dataset can use it: "ivar" needs the bundle's flux errors (errors.npy)."""
    if weights == "ivar" and load(key).errors is None:
        raise UserError(f"use flux errors: dataset {key!r} stores no flux errors (errors.npy)")
    return weights


def _raise(msg):
    raise UserError(msg)


def _parse_cv(v) -> bool:
    table = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}
    key = str(v).lower()
    return table[key] if key in table else _raise(f"cv must be 1 or 0, not {short(v)!r}")


_QUERY_PARSERS = (
    ("input", lambda v: v if v in INPUTS else _raise(f"input must be one of {', '.join(INPUTS)}, not {short(v)!r}")),
    ("k", lambda v: parse_int(v, "K", K_MIN, config.k_max())),
    ("species", parse_species),
    ("cv", _parse_cv),
    ("mask", parse_mask),
    ("method", parse_method),
    ("weights", parse_weights),
)


def settings_from_query(query: dict, defaults: Settings | None = None) -> tuple[Settings, list[str]]:
    """Settings from a URL query (as given to a page's ``layout(**query)``), never raising.

    Bad or tampered values fall back to the defaults, and each one gives a message."""
    from dataclasses import replace

    s = defaults or Settings()
    problems: list[str] = []
    q = {k: one(v) for k, v in (query or {}).items()}
    for k, v in q.items():
        if isinstance(v, str) and len(v) > MAX_PARAM_CHARS:
            problems.append(f"URL parameter {short(k, 20)!r} is too long; ignored")
            q[k] = None
    if q.get("ds") is not None:
        try:
            dataset_path(q["ds"])
            s = replace(s, ds=str(q["ds"]))
        except UserError as exc:
            problems.append(f"URL parameter ds: {exc}")
    for name, fn in _QUERY_PARSERS:
        if q.get(name) is None:
            continue
        try:
            s = replace(s, **{"top_n" if name == "top" else name: fn(q[name])})
        except UserError as exc:
            problems.append(f"URL parameter {name}: {exc}; using the default")
    if q.get("top") is not None:  # after input, K and species: its range is the input's axes
        try:
            s = replace(s, top_n=parse_top(q["top"], s.input, s.k, s.species))
        except UserError as exc:
            problems.append(f"URL parameter top: {exc}; using all axes")
    if q.get("clusters") is not None:
        try:
            s = replace(s, clusters=parse_clusters(s.ds, q["clusters"]))
        except UserError as exc:
            problems.append(f"URL parameter clusters: {exc}; using all clusters")
    try:
        check_weights(s.ds, s.weights)
    except UserError as exc:
        problems.append(f"URL parameter weights: {exc}; using the plain compression")
        s = replace(s, weights="none")
    if s.method != "rsca" and s.top_n is not None:
        problems.append(f"URL parameter top: top-N applies to RSCA only, not {s.method.upper()}; ignored")
        s = replace(s, top_n=None)
    return s, problems


def settings_to_query(
    s: Settings, keys=("ds", "input", "k", "species", "clusters", "cv", "top", "method", "weights")
) -> str:
    """The query string of a view (only values that differ from the defaults)."""
    d = Settings()
    wanted = {
        "ds": (s.ds != d.ds, s.ds),
        "input": (s.input != d.input, s.input),
        "k": (s.k != d.k, s.k),
        "species": (s.species != d.species and s.input == "subset", ",".join(s.species)),
        "clusters": (s.clusters is not None, ",".join(s.clusters or ())),
        "cv": (s.cv != d.cv, int(s.cv)),
        "top": (s.top_n is not None, s.top_n),
        "mask": (bool(s.mask), ",".join(f"{a}-{b}" for a, b in s.mask)),
        "method": (s.method != d.method, s.method),
        "weights": (s.weights != d.weights, s.weights),
    }
    q = {name: value for name, (differs, value) in wanted.items() if name in keys and differs}
    return ("?" + urlencode(q, safe=",")) if q else ""


def settings_from_controls(
    ds, input_, k, species, clusters, cv, top_n, mask=(), method="rsca", weights="none", notes=None
) -> Settings:
    """Settings from control values; raises UserError with a message for the page.

    ``top_n`` is ignored (the page disables its control) unless ``method`` is "rsca"; ``weights``
    (the compression's) unless the input is spectra. With a list ``notes``, a top-N out of its range
    is answered as in a URL: all axes, and the message appended to ``notes`` (else it raises)."""
    if ds is None:
        raise UserError("choose a dataset")
    dataset_path(ds)
    load(ds)
    if input_ not in INPUTS:
        raise UserError(f"input must be one of {', '.join(INPUTS)}")
    if k is None or k == "":
        raise UserError(f"K must be a whole number between {K_MIN} and {config.k_max()}")
    k = parse_int(k, "K", K_MIN, config.k_max())
    sp = parse_species(species) if input_ == "subset" else PAPER_SUBSET
    method = parse_method(method if method is not None else "rsca")
    try:
        top = parse_top(top_n, input_, k, sp) if method == "rsca" else None
    except UserError as exc:
        if notes is None:
            raise
        notes.append(f"{exc}; using all axes")
        top = None
    cl = None if clusters == ALL else parse_clusters(ds, clusters if clusters is not None else [])
    w = check_weights(ds, parse_weights(weights or "none")) if input_ == "spectra" else "none"
    return Settings(
        ds=ds,
        input=input_,
        k=k,
        species=sp,
        clusters=cl,
        cv=bool(cv),
        top_n=top,
        mask=tuple(mask),
        method=method,
        weights=w,
    )
