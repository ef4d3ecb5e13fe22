"""The expensive computations of the pages, through ``rsca_core``, cached with flask-caching.

Every cached result is keyed by :meth:`Settings.key` (every setting, the dataset's uid and K_FIT),
so a rebuilt bundle never serves a stale result. The compression at K is always the exact K fit
(``Dataset.compress``); a preview cut from another one is keyed and labelled as such. The cache backend is
chosen by RSCA_CACHE_TYPE (see :mod:`.config`); :func:`init_cache` attaches it to the server.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import asdict, replace

import numpy as np
from flask_caching import Cache

from rsca_core.metrics import distance_histogram

from . import config, first_views
from .datasets import SEED, compression_file_id, compression_ready, dataset_label, load, pca_options, ready_ks, uid
from .errors import UserError
from .flight import flight
from .settings import METHOD_LABELS, Settings, settings_from_key

cache = Cache()
STEP_NAMES = ("1. Compress", "2. Sphere", "3. Reparametrize", "4. Rescale")


def init_cache(server) -> None:
    cache.init_app(server, config=config.cache_config())


class CompressionNotReady(UserError):
    """The exact compression a setting needs is not on disk yet (a page computes it in the background)."""


@functools.lru_cache(maxsize=6)
def _compression(key: str, uid_: str, k: int, seed: int, mask: tuple, weights: str = "none", file_id=None):
    # file_id (datasets.compression_file_id) keys the copy: a refitted file is read again
    return load(key).compress(k, seed=seed, extra_mask_ranges=mask, **pca_options(weights))


def compression(key, k: int, mask=(), allow_compute: bool = False, weights: str = "none"):
    """The dataset's exact K = ``k`` compression (seed 0; plain, or weighted by the flux errors with
    ``weights="ivar"``): ``Dataset.compress``, the one definition of "the compression at K" that
    ``evaluate``, the experiments and the reports use, so a page's rate equals the CLI's.

    Computing one takes up to minutes on a big survey; unless ``allow_compute`` (background jobs,
    start-up), a missing one raises :class:`CompressionNotReady` (pages then compute it in the
    background through the job queue and show a labelled preview meanwhile, see :func:`preview_rates`)."""
    k = int(k)
    if not allow_compute and not compression_ready(key, mask, weights, k=k):
        what = "flux-error-weighted " if weights != "none" else ""
        raise CompressionNotReady(
            f"the exact {what}K = {k} compression of dataset {key!r}"
            f"{' with extra mask ' + str(list(mask)) if mask else ''} is not computed yet: Explore computes it "
            f"in the background when you choose this K, or run `rsca compress --dataset <folder> --k {k}`"
        )
    args = (key, uid(key), k, SEED, tuple(mask), weights, compression_file_id(key, k, mask, weights))
    with flight.hold(("compression", *args)):  # read (or fitted) once, however many requests ask at once
        return _compression(*args)


def preview_source(key, k: int, mask=(), weights: str = "none") -> tuple[int, str] | None:
    """The ready compression a labelled preview of (``k``, ``weights``) is cut from while its exact
    one is computed, as (K, weights): the same weights at the smallest ready K > k, else the plain
    exact K = k, else the plain one at the smallest ready K > k; None if there is none."""
    k = int(k)
    for w in dict.fromkeys((weights, "none")):
        if w != weights and compression_ready(key, mask, w, k=k):
            return k, w
        above = [kk for kk in ready_ks(key, mask, w) if kk > k]
        if above:
            return above[0], w
    return None


def preview_text(k: int, k_from: int, w_from: str, weights: str) -> str:
    """The label of a preview: what it is cut from, and that the exact compression is coming."""
    exact = f"the exact {'flux-error-weighted ' if weights != 'none' else ''}K = {k} compression is being computed"
    if k_from == k:  # the plain exact K stands in for the weighted one
        return f"PREVIEW — UNWEIGHTED PCA (K = {k}); {exact}; this rate is replaced when it is ready"
    w = "flux-error-weighted " if w_from != "none" else ("unweighted " if weights != "none" else "")
    return f"PREVIEW — leading {k} axes of the {w}K = {k_from} fit; {exact}; this rate is replaced when it is ready"


def preview_rates(s: Settings) -> dict:
    """Rates of ``s`` from the best ready stand-in compression (:func:`preview_source`), labelled:
    ``result["preview"]`` holds the source and the label. UserError when nothing is ready at all."""
    src = preview_source(s.ds, s.k, s.mask, s.weights)
    if src is None:
        raise CompressionNotReady(
            f"the K = {s.k} compression of dataset {s.ds!r} is being computed (no other compression of "
            "this dataset is ready to preview from)"
        )
    key = s.key()
    with flight.hold(("preview", key, *src)):
        return _preview_cached(key, *src)


@cache.memoize()
def _preview_cached(key: str, k_from: int, w_from: str) -> dict:
    s = settings_from_key(key)
    comp = compression(s.ds, k_from, s.mask, weights=w_from)
    r = compute_rates(replace(s, weights=w_from), pca=comp)
    r["preview"] = {"k_from": int(k_from), "weights_from": w_from, "text": preview_text(s.k, k_from, w_from, s.weights)}
    r["description"]["pca"] = f"preview: leading {s.k} of K={k_from}" + (
        "" if w_from == "none" else f", {w_from}-weighted"
    )
    return r


def rate_inputs(s: Settings, allow_compute: bool = False, pca=None):
    """RateInputs of the settings (rsca_core's one builder), restricted to the selected clusters.

    ``pca``: a Compression to use instead of the exact K one (e.g. one with extra bands masked, or
    the source of a labelled preview); its leading K axes are used."""
    ds = load(s.ds)
    comp = None
    if s.input == "spectra":
        comp = (
            compression(s.ds, s.k, s.mask, allow_compute=allow_compute, weights=s.weights)
            if pca is None
            else (pca if pca.k == s.k else pca.truncate(s.k))
        )
    try:
        ri = ds.rate_inputs(s.input, k=s.k, seed=SEED, species=s.species, clusters=s.clusters, compression=comp)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    ri.description |= {"dataset": s.ds}
    if s.input == "spectra":
        ri.description["pca"] = f"exact K={s.k}" + ("" if s.weights == "none" else f", {s.weights}-weighted")
        note = comp.convergence_note()
        if note:
            ri.description["convergence"] = note
    return ri


def compute_rates(s: Settings, allow_compute: bool = False, pca=None) -> dict:
    """Doppelganger rates of the settings (global, per cluster, distance histograms), uncached."""
    from rsca_core import doppelganger_rates

    ri = rate_inputs(s, allow_compute=allow_compute, pca=pca)
    with warnings.catch_warnings(record=True) as caught:
        if ri.description.get("convergence"):
            warnings.warn(ri.description["convergence"], stacklevel=1)
        warnings.simplefilter("always")
        res = doppelganger_rates(
            ri.z_pop,
            ri.z_clust,
            ri.cluster_ids,
            **ri.as_kwargs(),
            cv=s.cv,
            top_n=s.top_n,
            method=s.method,
            random_state=SEED,
            keep_distances="histogram",  # each cluster's counts, not its distances: memory flat in the field size
        )
    per = res.per_cluster.reset_index(drop=True).copy()
    empty = np.empty(0)
    hists = {name: res.histograms.get(name) or distance_histogram(empty, empty) for name in per["cluster"]}
    return {
        "global_rate": float(res.global_rate),
        "rate_spread": res.rate_spread,  # sd over the clusters resampled (metrics.rate_spread)
        "per_cluster": per,
        "hists": hists,
        "n_field": int(len(ri.z_pop)),
        "n_cluster_stars": int(len(ri.z_clust)),
        "dims": int(ri.z_pop.shape[1]),
        "label": dataset_label(s.ds),
        "settings": asdict(s),
        "description": ri.description | {"method": s.method},
        "warnings": list(dict.fromkeys(str(w.message) for w in caught)),
    }


def rates(s: Settings) -> dict:
    """Doppelganger rates of the settings, cached."""
    key = s.key()
    with flight.hold(("rates", key)):  # a request during the warm-up waits for its computation, then reads the cache
        return _rates_cached(key)


@cache.memoize()
def _rates_cached(key: str) -> dict:
    return _rates_kept(key)[0]


def _rates_kept(key: str) -> tuple[dict, bool]:
    """The rates of ``key``, from (or into) the first views on disk when it is a default view."""
    return first_views.keep("rates", key, lambda: compute_rates(settings_from_key(key)))


def fit_map(s: Settings):
    """The RSCA map fitted (without CV) on the selected clusters, plus its inputs (RSCA settings only)."""
    from rsca_core import RSCA

    if s.method != "rsca":
        raise UserError(f"the map download is for RSCA; the settings ask for method {s.method!r}")
    ri = rate_inputs(s)
    model = RSCA(top_n=s.top_n).fit(ri.z_pop, ri.z_clust, ri.cluster_ids)
    return model, ri


#: Cluster members drawn one by one in a feature panel, at most (a random sample beyond, said in the
#: panel's title): a survey's field is drawn as a 2-D histogram of all its stars, never star by star.
MAX_MEMBERS_DRAWN = 5000


#: Feature panels drawn (the top RSCA features).
N_FEATURES = 3


def features(s: Settings, n_features: int = N_FEATURES, max_members: int = MAX_MEMBERS_DRAWN) -> dict:
    """Top RSCA features (or the first output axes of another method) vs [Fe/H] and VHELIO (field
    density of all field stars + at most ``max_members`` cluster members drawn), cached. ``scales``
    is None for a method other than RSCA; ``members`` = {"shown", "of"} counts the drawn members."""
    key = s.key()
    with flight.hold(("features", key, n_features, max_members)):
        return _features_cached(key, n_features, max_members)


def _density(x, y) -> dict | None:
    """2-D histogram of the finite (x, y) pairs over their central 99 % (for a heat map)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return None
    xr, yr = np.percentile(x, [0.5, 99.5]), np.percentile(y, [0.5, 99.5])
    if xr[0] == xr[1]:
        xr = xr + np.array([-0.5, 0.5])
    if yr[0] == yr[1]:
        yr = yr + np.array([-0.5, 0.5])
    nb = int(np.clip(np.sqrt(x.size) / 1.5, 15, 70))
    h, xe, ye = np.histogram2d(x, y, bins=(nb, max(10, int(nb * 0.7))), range=(xr, yr))
    return {
        "counts": h.T,
        "x": 0.5 * (xe[1:] + xe[:-1]),
        "y": 0.5 * (ye[1:] + ye[:-1]),
        "n": int(x.size),  # field stars with both values; the bins hold those in the central 99 %
        "n_binned": int(h.sum()),
    }


def members_note(f: dict) -> str:
    """What a feature panel's coloured markers are (for its title): every cluster member, or a
    sample of them, said with both counts."""
    m = f.get("members")
    if not m or m["shown"] == m["of"]:
        return "members coloured"
    return f"{m['shown']:,} of {m['of']:,} cluster members shown (random sample), coloured"


def member_sample(n: int, max_members: int) -> np.ndarray:
    """Positions of the cluster members drawn: all of them, or a seeded random sample of
    ``max_members`` in their order (the same sample on every worker)."""
    if n <= max_members:
        return np.arange(n)
    return np.sort(np.random.default_rng(SEED).choice(n, size=max_members, replace=False))


def keep_first_view(s: Settings) -> bool:
    """Compute (or find) the default view ``s``'s rates and panels in the store of first views, past
    the result cache (:mod:`.first_views`; ``app.py --prepare-only``): True when both are on disk."""
    key = s.key()
    return _rates_kept(key)[1] and _features_kept(key, N_FEATURES, MAX_MEMBERS_DRAWN)[1]


@cache.memoize()
def _features_cached(key: str, n_features: int, max_members: int = MAX_MEMBERS_DRAWN) -> dict:
    return _features_kept(key, n_features, max_members)[0]


def _features_kept(key: str, n_features: int, max_members: int) -> tuple[dict, bool]:
    """The feature panels of ``key``, from (or into) the first views on disk when it is a default view."""
    return first_views.keep(
        "features",
        key,
        lambda: compute_features(settings_from_key(key), n_features, max_members),
        n_features,
        max_members,
    )


def compute_features(s: Settings, n_features: int = N_FEATURES, max_members: int = MAX_MEMBERS_DRAWN) -> dict:
    """The feature panels of :func:`features`, uncached."""
    ds = load(s.ds)
    # only the n_features leading axes are drawn: the field (a million stars on a big survey) is
    # projected on those alone
    if s.method == "rsca":
        model, ri = fit_map(s)
        yc = np.asarray(model.transform(ri.z_clust))
        yf = np.asarray(model.transform(ri.z_pop, top_n=min(n_features, yc.shape[1])))
        scales = np.asarray(model.scales_, float)
    else:  # the method's linear map fitted on every selected cluster (no CV), as fit_map does for RSCA
        from rsca_core.learners import linear_map

        ri = rate_inputs(s)
        M = linear_map(s.method, ri.z_clust, ri.cluster_ids, random_state=SEED)
        yf, yc, scales = ri.z_pop @ M[:n_features].T, ri.z_clust @ M.T, None
    nf = min(n_features, yf.shape[1])
    # the star table's columns alone (a big bundle's copy reads just these) at the rows of
    # rate_inputs; no Python object per field star
    feh, vh = ds.star_column("fe_h").to_numpy(float), ds.star_column("vhelio_avg").to_numpy(float)
    fi = ri.pop_rows
    drawn = member_sample(len(ri.clust_rows), max_members)
    rows = ri.clust_rows[drawn]
    names = np.asarray(ri.cluster_ids)[drawn]
    ids = ds.star_column("apogee_id").iloc[rows].to_numpy(dtype=object).astype(str)  # click-through to Siblings
    yc = yc[drawn]
    out = {
        "label": dataset_label(s.ds),
        "features": [],
        "scales": None if scales is None else scales[:nf],
        "method": s.method,
        "members": {"shown": int(len(drawn)), "of": int(len(ri.clust_rows))},
    }
    for i in range(nf):
        out["features"].append(
            {
                "index": i,
                "field": _density(feh[fi], yf[:, i]),
                "clusters": {"x": feh[rows], "y": yc[:, i], "name": names, "id": ids},
            }
        )
    out["vhelio"] = {
        "field": _density(vh[fi], yf[:, 0]),
        "clusters": {"x": vh[rows], "y": yc[:, 0], "name": names, "id": ids},
    }
    return out


def paper_value(s: Settings) -> str:
    """The paper's rate for this setting, said for what it is: RSCA's (the paper ran no other method)."""
    if s.method != "rsca":
        return "RSCA only: the paper ran no " + METHOD_LABELS.get(s.method, s.method)
    if s.input == "spectra":
        return "0.020 (spectra, K = 30)" if s.k == 30 else "0.020 (spectra, at K = 30)"
    if s.input == "subset":
        return "0.023 (best abundance subset)"
    return "not quoted for all 21 abundances"


def inside_steps(s: Settings, max_field: int = 3000) -> dict:
    """The four steps of Fig. 1 on the first two PCA components of the dataset (cached): each step's
    coordinates of a sample of ``max_field`` field stars and of every cluster star, the whole field's
    covariance after each step, and the fitted σc (reparametrized order), σ and order (output order)."""
    return _inside_cached(s.key(), max_field)


@cache.memoize()
def _inside_cached(key: str, max_field: int) -> dict:
    from rsca_core import RSCA

    s = replace(settings_from_key(key), input="spectra", k=2, top_n=None)
    ri = rate_inputs(s)
    model = RSCA().fit(ri.z_pop, ri.z_clust, ri.cluster_ids)
    rng = np.random.default_rng(0)
    sub = np.sort(rng.choice(len(ri.z_pop), size=min(max_field, len(ri.z_pop)), replace=False))
    whole = model.transform_steps(ri.z_pop)  # the whole field: its covariance after each step
    return {
        "field": [np.asarray(z, float)[sub] for z in whole],
        "field_cov": [np.cov(np.asarray(z, float).T) for z in whole],
        "clusters": [np.asarray(z, float) for z in model.transform_steps(ri.z_clust)],
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
    s = settings_from_key(key)
    model, _ri = fit_map(replace(s, top_n=None))
    comp = compression(s.ds, s.k, s.mask, weights=s.weights)
    vec = model.spectral_components(np.asarray(comp.components, float))
    n = min(n_axes, vec.shape[0])
    return {
        "wavelength": np.asarray(load(s.ds).wavelength, float),
        "vectors": vec[:n],
        "scales": np.asarray(model.scales_, float)[:n],
        "label": dataset_label(s.ds),
        "k": s.k,
    }


def distance_grid(r: dict):
    """The Fig. 9/10 grid (rsca_core.plotting's one builder) of a :func:`rates` result."""
    from rsca_core import plotting

    res = plotting.distance_histogram_result(
        r["per_cluster"], r["hists"], r["label"], input=r["settings"]["input"], global_rate=r["global_rate"]
    )
    return plotting.fig_distance_histograms(res, r["label"])
