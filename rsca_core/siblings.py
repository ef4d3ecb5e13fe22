"""Chemical siblings: the stars alike in RSCA space, star by star.

The doppelganger rate measures how well a representation separates clusters from the field; this
module uses the same representation to answer an astronomer's questions about single stars:

* :func:`embed` fits the RSCA map on the bundle's clusters (no cross-validation) on exactly the
  representation ``python -m rsca_core evaluate`` rates (``Dataset.rate_inputs``: the cached
  compression at K for spectra) and places every star of the bundle in RSCA space
  (an :class:`Embedding`);
* :meth:`Embedding.siblings` lists a star's nearest other stars (Euclidean, through
  scikit-learn `NearestNeighbors`) with a *sibling score* read off the known cluster pairs;
* :meth:`Embedding.candidates` lists field stars near a cluster, beside the number of chance
  doppelgangers expected among them from the cluster's leave-one-cluster-out rate;
* :func:`project` places spectra that are not in the bundle (aspcapStar files of new stars) in the
  same space, through the compression's masked least-squares transform and the map;
* :func:`write_catalogue` / :func:`read_catalogue` store RSCA coordinates as FITS, parquet or CSV
  with the settings that made them.

No web framework here; the CLI commands are registered by :func:`add_cli`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .cli_core import positive_int
from .constants import MAX_DAK, MAX_DVHELIO, MAX_PIXEL_ERROR, PAPER_MASK_RANGES, canonical_species
from .fileio import atomic_write, atomic_write_text, jsonable

__all__ = [
    "Embedding",
    "Candidates",
    "embed",
    "project",
    "mask_rule",
    "read_spectra_files",
    "write_catalogue",
    "read_catalogue",
    "SIBLING_COLUMNS",
    "COORD_PREFIX",
]

#: Columns of :meth:`Embedding.siblings`, in order.
SIBLING_COLUMNS = (
    "apogee_id",
    "distance",
    "sibling_score",
    "d_fe_h",
    "d_teff",
    "d_logg",
    "d_vhelio",
    "d_ak",
    "cluster",
)
#: (difference column, star-table column): differences are sibling minus star.
LABEL_DIFFERENCES = (
    ("d_fe_h", "fe_h"),
    ("d_teff", "teff"),
    ("d_logg", "logg"),
    ("d_vhelio", "vhelio_avg"),
    ("d_ak", "ak_targ"),
)
#: Catalogue columns of the RSCA coordinates are ``rsca_1 … rsca_N`` (axis 1 = most discriminative).
COORD_PREFIX = "rsca_"
#: Settings stored with a catalogue (FITS header keyword for each).
CATALOGUE_KEYWORDS = {
    "k": "K",
    "input": "INPUT",
    "seed": "SEED",
    "top_n": "TOPN",
    "simulated": "SIMULATD",
    "kind": "KIND",
    "dataset": "DATASET",
    "uid": "DATAUID",
    "species": "SPECIES",
    "clusters": "CLUSTERS",
}
#: Bound on the rounding of the squared distances scikit-learn's searches return, relative to the
#: largest squared norm (a tree, or a brute-force |x|² + |q|² − 2 x·q, is exact to ~1e-15 of that): stars this close to the cut are decided by exact distances.
DISTANCE_TOLERANCE = 1e-12


#: Leaf size of the k-d tree: single-point queries at 150,000 stars are ~2× faster than the default 30.
LEAF_SIZE = 100


class NeighbourIndex:
    """scikit-learn ``NearestNeighbors`` (a k-d tree) over the coordinates' informative axes.

    RSCA gives the axes that carry no information (intra-cluster spread ≥ the field's) weight 0:
    those columns are 0 for every star and are left out of the tree (a query point's values there
    add the same amount to every squared distance, which the radius query accounts for).
    Single-point k-d tree queries run on one thread: no thread-pool start-up per query.
    """

    def __init__(self, coords: np.ndarray):
        from sklearn.neighbors import NearestNeighbors

        coords = np.asarray(coords, dtype=float)
        cols = np.flatnonzero(np.any(coords != 0, axis=0))
        self.columns = cols if len(cols) else np.arange(min(1, coords.shape[1]))
        self.rest = np.setdiff1d(np.arange(coords.shape[1]), self.columns)
        self.nn = NearestNeighbors(algorithm="kd_tree", leaf_size=LEAF_SIZE).fit(coords[:, self.columns])
        self.n = len(coords)
        self.max_sq = float(np.max((coords * coords).sum(axis=1), initial=0.0))

    def slack2(self, point: np.ndarray) -> float:
        """Rounding bound of a squared distance to ``point`` (see DISTANCE_TOLERANCE)."""
        return DISTANCE_TOLERANCE * (self.max_sq + float((point * point).sum()))

    def kneighbors(self, point: np.ndarray, k: int):
        """(distances over the informative axes, rows) of the ``k`` nearest, by the tree."""
        d, i = self.nn.kneighbors(point[:, self.columns], k)
        return d[0], i[0]

    def within(self, point: np.ndarray, radius: float) -> np.ndarray:
        """Rows whose (full) distance to ``point`` is at most ``radius``, by the tree."""
        c2 = float((point[:, self.rest] ** 2).sum())
        if radius**2 < c2:
            return np.zeros(0, dtype=np.intp)
        return self.nn.radius_neighbors(point[:, self.columns], np.sqrt(radius**2 - c2), return_distance=False)[0]


def _search(index: NeighbourIndex, coords, rows, point, n, exclude):
    """The ``n`` rows of ``coords`` nearest ``point`` among ``rows`` (sorted; ``index`` holds
    ``coords[rows]``), but position ``exclude`` of ``rows``: (rows, exact distances).

    One k-nearest query for n (+1 for ``exclude``) + 1 neighbours; when the last two are closer than
    the search's rounding, a radius query collects every point that may be tied with the n-th.
    Exact distances (:func:`exact_distances`) and row numbers then decide the order.
    """
    m = n + (exclude is not None)
    k = min(index.n, m + 1)
    dist, idx = index.kneighbors(point, k)
    slack2 = index.slack2(point)
    last = dist[min(m, k) - 1]
    if k > m and dist[m] ** 2 - last**2 > 2 * slack2:
        cand = idx[:m]  # no other point can be as close as the m-th: the set is settled
    else:
        c2 = float((point[:, index.rest] ** 2).sum())
        cand = index.within(point, np.sqrt(last**2 + c2 + 2 * slack2))
    if exclude is not None:
        cand = cand[cand != exclude]
    cand = rows[cand]
    d = exact_distances(coords[cand], point[0])
    order = np.lexsort((cand, d))[:n]
    return cand[order], d[order]


def pair_distances(Y: np.ndarray) -> np.ndarray:
    """Distances of every pair of rows of ``Y`` (i < j, row-major order).

    Examples
    --------
    >>> pair_distances(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])).tolist()
    [5.0, 1.0, 4.242640687119285]
    """
    Y = np.asarray(Y, dtype=float)
    i, j = np.triu_indices(len(Y), k=1)
    diff = Y[i] - Y[j]
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def exact_distances(coords: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Euclidean distances of the rows of ``coords`` to ``point``: the one formula every distance here uses.

    Examples
    --------
    >>> exact_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.zeros(2)).tolist()
    [0.0, 5.0]
    """
    diff = np.asarray(coords, dtype=float) - np.asarray(point, dtype=float)
    return np.sqrt((diff * diff).sum(axis=1))  # row by row: a row's value does not depend on the others


@dataclass
class Candidates:
    """Field stars near a cluster in RSCA space, with the honest false-positive count beside them.

    Attributes
    ----------
    cluster : str
    table : DataFrame
        One row per candidate (index = bundle row), nearest first: ``apogee_id``, ``distance`` (to
        the members' median position), ``d_fe_h``, ``d_teff``, ``d_logg``, ``d_vhelio``, ``d_ak``
        (candidate minus the members' median label).
    radius : float
        The cluster's median intra-cluster distance in this embedding.
    centre : ndarray
        The members' coordinate-wise median position.
    n_members, n_searched : int
        Cluster stars, and field stars searched (all, or those passing the pair filter).
    loo_rate : float
        The cluster's leave-one-cluster-out doppelganger rate (NaN if undefined).
    expected_chance : float
        ``loo_rate × n_searched``: chance doppelgangers expected among the candidates (see
        :meth:`Embedding.candidates`).
    expected_chance_sd : float
        Binomial standard deviation ``sqrt(n_searched · rate · (1 − rate))`` of that count.
    pair_filter : bool
    """

    cluster: str
    table: pd.DataFrame
    radius: float
    centre: np.ndarray
    n_members: int
    n_searched: int
    loo_rate: float
    expected_chance: float
    expected_chance_sd: float
    pair_filter: bool = False

    @property
    def n_candidates(self) -> int:
        return len(self.table)

    def to_dict(self) -> dict:
        """Plain-JSON summary and candidate list."""
        return jsonable(
            {
                "cluster": self.cluster,
                "n_members": self.n_members,
                "radius": self.radius,
                "n_searched": self.n_searched,
                "pair_filter": self.pair_filter,
                "n_candidates": self.n_candidates,
                "loo_rate": self.loo_rate,
                "expected_chance": self.expected_chance,
                "expected_chance_sd": self.expected_chance_sd,
                "candidates": self.table.reset_index(),
            }
        )


class Embedding:
    """Every star of a survey in RSCA space, with the fit that put it there.

    Made by :func:`embed` from a bundle, or directly from arrays (any coordinates and a star table),
    e.g. for synthetic data or coordinates computed elsewhere.

    Parameters
    ----------
    coords : (n_stars, n_axes) array
        RSCA coordinates, rows in the star table's order (axis 0 = most discriminative).
    stars : DataFrame
        ``apogee_id`` and ``cluster`` ("" for field stars) are required; ``fe_h``, ``teff``,
        ``logg``, ``vhelio_avg``, ``ak_targ`` are used when present (NaN otherwise).
    rsca : RSCA, optional
        The fitted map.
    compression : Compression, optional
        The PCA compression of the spectra (None for abundance inputs).
    dataset : Dataset, optional
    features : (n_stars, K) array, optional
        The representation the map was fitted on (needed for leave-one-cluster-out rates).
    settings : dict, optional
        How the embedding was made (k, input, species, clusters, top_n, seed, kind, simulated, ...).
    training_clusters : sequence of str, optional
        Clusters whose member pairs are the "known sibling pairs" (default: every cluster with
        at least two stars).
    loo_rates : DataFrame, optional
        Per-cluster leave-one-cluster-out rates when ``features`` are not given: columns
        ``cluster``, ``rate`` (pair-filtered) and optionally ``rate_unfiltered``.

    Examples
    --------
    >>> stars = pd.DataFrame({"apogee_id": list("abcde"), "cluster": ["", "", "", "M", "M"],
    ...                       "fe_h": [0.0, 0.1, -0.2, 0.05, 0.05]})
    >>> emb = Embedding(np.array([[0.0], [1.0], [3.0], [0.2], [0.6]]), stars)
    >>> t = emb.siblings("a", n=2)
    >>> t["apogee_id"].tolist(), t["distance"].round(3).tolist(), t["sibling_score"].tolist()
    (['d', 'e'], [0.2, 0.6], [1.0, 0.0])
    """

    def __init__(
        self,
        coords,
        stars: pd.DataFrame,
        *,
        rsca=None,
        compression=None,
        dataset=None,
        features=None,
        settings: dict | None = None,
        training_clusters: Sequence[str] | None = None,
        loo_rates: pd.DataFrame | None = None,
    ):
        coords = np.asarray(coords, dtype=float)
        if coords.ndim != 2:
            raise ValueError(f"coords must be 2-D (stars × axes), got shape {coords.shape}")
        if np.isinf(coords).any():
            raise ValueError("coords contain inf values")
        for col in ("apogee_id", "cluster"):
            if col not in stars.columns:
                raise ValueError(f"star table lacks column {col!r}")
        if len(stars) != len(coords):
            raise ValueError(f"star table has {len(stars)} rows, coords {len(coords)}")
        self.coords = coords
        #: Stars with coordinates (a star lacking an abundance of an abundance input has NaN ones).
        self.valid = ~np.isnan(coords).any(axis=1)
        self._valid_rows = np.flatnonzero(self.valid)
        self.stars = stars.reset_index(drop=True)
        self.apogee_id = self.stars["apogee_id"].astype(str).to_numpy(dtype=object)
        self.cluster = self.stars["cluster"].fillna("").astype(str).to_numpy(dtype=object)
        self.rsca = rsca
        self.compression = compression
        self.dataset = dataset
        self.features = None if features is None else np.asarray(features, dtype=float)
        self.settings = dict(settings or {})
        sizes = pd.Series(self.cluster[self.cluster != ""]).value_counts()
        if training_clusters is None:
            training_clusters = sorted(sizes.index[sizes >= 2])
        self.training_clusters = [str(c) for c in training_clusters]
        self._loo_given = loo_rates
        self._row_of: dict | None = None
        self._nn = None
        self._labels: dict[str, np.ndarray] = {}  # one entry per label column used
        self._intra_sorted: np.ndarray | None = None
        self._loo: dict[tuple, float] = {}  # at most two entries per cluster of the bundle

    # ------------------------------------------------------------------ basics
    @property
    def n_stars(self) -> int:
        return len(self.coords)

    @property
    def n_axes(self) -> int:
        return self.coords.shape[1]

    @property
    def label(self) -> str:
        """ "simulated" or "real", for every table and figure made from this embedding."""
        return "simulated" if self.settings.get("simulated", True) else "real"

    def index_of(self, star) -> int:
        """Bundle row of ``star`` (an apogee_id or a row index); ValueError naming it otherwise."""
        if isinstance(star, (int, np.integer)) and not isinstance(star, (bool, np.bool_)):
            if not 0 <= int(star) < self.n_stars:
                raise ValueError(f"star row {int(star)} is out of range 0..{self.n_stars - 1}")
            return int(star)
        if self._row_of is None:
            self._row_of = {sid: i for i, sid in enumerate(self.apogee_id)}
        key = str(star).strip()
        if key not in self._row_of and key.isdigit():
            return self.index_of(int(key))  # a row number typed as text (the CLI's --star 12)
        if key not in self._row_of:
            where = self.settings.get("dataset") or "this embedding"
            raise ValueError(f"unknown star {key!r}: no apogee_id {key!r} in {where}")
        return self._row_of[key]

    def to_frame(self) -> pd.DataFrame:
        """``apogee_id`` and ``rsca_1 … rsca_N``, in bundle order (the catalogue's columns)."""
        cols = {f"{COORD_PREFIX}{j + 1}": self.coords[:, j] for j in range(self.n_axes)}
        return pd.DataFrame({"apogee_id": self.apogee_id.astype(str), **cols})

    def catalogue_meta(self) -> dict:
        """The settings stored with a catalogue (plain JSON)."""
        keys = ("k", "input", "species", "clusters", "top_n", "seed", "kind", "simulated", "dataset", "uid")
        meta = {k: self.settings.get(k) for k in keys}
        meta["n_axes"] = self.n_axes
        meta["producer"] = "rsca_core.siblings.embed"
        return jsonable(meta)

    def _label_values(self, column: str) -> np.ndarray:
        """A label column as floats (NaN where absent), converted once (the few label columns)."""
        if column not in self._labels:
            if column not in self.stars.columns:
                self._labels[column] = np.full(self.n_stars, np.nan)
            else:
                self._labels[column] = pd.to_numeric(self.stars[column], errors="coerce").to_numpy(dtype=float)
        return self._labels[column]

    # ------------------------------------------------------------------ neighbours
    @property
    def neighbour_index(self):
        """The :class:`NeighbourIndex` over the stars with coordinates (scikit-learn k-d tree),
        built on first use; its positions are rows of ``_valid_rows``."""
        if self._nn is None:
            self._nn = NeighbourIndex(self.coords[self._valid_rows])
        return self._nn

    def nearest(self, point, n: int = 50, *, exclude: int | None = None, allowed=None):
        """Rows and distances of the ``n`` stars nearest ``point``, ties broken by bundle order.

        ``exclude`` is a row left out (the star itself); ``allowed`` an optional boolean mask of the
        rows that may be returned (then the search runs among those stars only, so n of them come
        back whenever n are allowed). scikit-learn finds the neighbours; every star that could be
        tied with the n-th (within the search's rounding) is compared by its exact distance
        (:func:`exact_distances`) and row number. Fewer than ``n`` rows come back only if fewer
        stars are allowed.
        """
        n = int(n)
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        point = np.asarray(point, dtype=float).reshape(1, -1)
        if point.shape[1] != self.n_axes:
            raise ValueError(f"point has {point.shape[1]} coordinates, the embedding {self.n_axes}")
        none = np.zeros(0, dtype=np.intp), np.zeros(0)
        if allowed is None:
            rows = self._valid_rows
            pos = None if exclude is None else int(np.searchsorted(rows, exclude))
            if pos is not None and (pos == len(rows) or rows[pos] != exclude):
                pos = None  # the excluded star has no coordinates anyway
            n = min(n, len(rows) - (pos is not None))
            if n < 1:
                return none
            return _search(self.neighbour_index, self.coords, rows, point, n, pos)
        ok = np.asarray(allowed, dtype=bool) & self.valid
        if exclude is not None:
            ok[exclude] = False
        rows = np.flatnonzero(ok)
        if len(rows) == 0:
            return none
        return _search(NeighbourIndex(self.coords[rows]), self.coords, rows, point, min(n, len(rows)), None)

    def pair_filter_mask(self, row: int, max_dvhelio: float = MAX_DVHELIO, max_dak: float = MAX_DAK) -> np.ndarray:
        """Stars with |ΔVHELIO_AVG| < 5 km/s and |ΔAK_TARG| < 0.05 from star ``row`` (the rate's filter)."""
        v, ak = self._label_values("vhelio_avg"), self._label_values("ak_targ")
        with np.errstate(invalid="ignore"):
            return (np.abs(v - v[row]) < max_dvhelio) & (np.abs(ak - ak[row]) < max_dak)

    @property
    def intra_distances(self) -> np.ndarray:
        """Sorted distances of every known sibling pair: member pairs of each training cluster."""
        if self._intra_sorted is None:
            parts = []
            for name in self.training_clusters:
                parts.append(pair_distances(self.coords[(self.cluster == name) & self.valid]))
            self._intra_sorted = np.sort(np.concatenate(parts)) if parts else np.zeros(0)
        return self._intra_sorted

    def sibling_score(self, distance) -> np.ndarray:
        """Fraction of known sibling pairs (:attr:`intra_distances`) strictly farther apart than ``distance``.

        1 means closer than every known member pair, 0 farther than all of them; NaN without pairs.
        The map is fitted on these clusters (no cross-validation), so their pairs are in-sample.
        """
        d = np.asarray(distance, dtype=float)
        pairs = self.intra_distances
        if len(pairs) == 0:
            return np.full(d.shape, np.nan)
        return 1.0 - np.searchsorted(pairs, d, side="right") / len(pairs)

    def siblings(self, star, n: int = 50, pair_filter: bool = False) -> pd.DataFrame:
        """The ``n`` nearest other stars of ``star`` (apogee_id or row index) in RSCA space.

        Returns a DataFrame indexed by bundle row ("row") with :data:`SIBLING_COLUMNS`:
        ``distance`` (Euclidean in RSCA space), ``sibling_score`` (:meth:`sibling_score`), the
        label differences ``d_*`` (sibling minus star) and the sibling's ``cluster`` ("" = field).
        Nearest first; equal distances in bundle order. ``pair_filter=True`` keeps only stars with
        |ΔVHELIO_AVG| < 5 km/s and |ΔAK_TARG| < 0.05 (still n of them when that many pass).
        """
        row = self.index_of(star)
        if not self.valid[row]:
            raise ValueError(
                f"star {self.apogee_id[row]!r} has no RSCA coordinates: it lacks a value of the "
                f"{self.settings.get('input', 'input')} representation"
            )
        allowed = self.pair_filter_mask(row) if pair_filter else None
        rows, dist = self.nearest(self.coords[row], n, exclude=row, allowed=allowed)
        return self._neighbour_table(rows, dist, {c: self._label_values(c)[row] for _, c in LABEL_DIFFERENCES})

    def siblings_of_point(self, point, n: int = 50, labels: dict | None = None) -> pd.DataFrame:
        """Like :meth:`siblings` for a position that is not a bundle star (e.g. from :func:`project`).

        ``labels`` may give the new star's ``fe_h``, ``teff``, ``logg``, ``vhelio_avg``, ``ak_targ``
        for the ``d_*`` columns (NaN where missing).
        """
        rows, dist = self.nearest(point, n)
        labels = labels or {}
        return self._neighbour_table(rows, dist, {c: float(labels.get(c, np.nan)) for _, c in LABEL_DIFFERENCES})

    def _neighbour_table(self, rows, dist, ref: dict) -> pd.DataFrame:
        cols = {
            "apogee_id": self.apogee_id[rows].astype(str),
            "distance": dist,
            "sibling_score": self.sibling_score(dist),
        }
        for dcol, col in LABEL_DIFFERENCES:
            cols[dcol] = self._label_values(col)[rows] - ref[col]
        cols["cluster"] = self.cluster[rows].astype(str)
        return pd.DataFrame(cols, index=pd.Index(rows, name="row"), columns=list(SIBLING_COLUMNS))

    # ------------------------------------------------------------------ clusters
    def loo_rate(self, cluster: str, pair_filter: bool = True) -> float:
        """The cluster's leave-one-cluster-out doppelganger rate on this embedding's representation.

        ``doppelganger_rates(cv=True)`` over the training clusters plus ``cluster``: the cluster's
        fold is the map fitted on every other training cluster. With ``pair_filter=True`` (the
        rate's definition, SPEC §2) only (member, field star) pairs with |ΔVHELIO_AVG| < 5 km/s and
        |ΔAK_TARG| < 0.05 count; for the default embedding (all clusters) this is exactly the rate
        ``python -m rsca_core evaluate`` prints. ``pair_filter=False`` counts every pair.
        NaN when undefined. Computed once per embedding for all training clusters.
        """
        key = (str(cluster), bool(pair_filter))
        if key in self._loo:
            return self._loo[key]
        if self.features is None:
            given = self._loo_given
            if given is None:
                raise ValueError("this embedding has no representation to rate; pass loo_rates")
            col = "rate" if pair_filter or "rate_unfiltered" not in given.columns else "rate_unfiltered"
            hit = given.loc[given["cluster"].astype(str) == key[0], col]
            self._loo[key] = float(hit.iloc[0]) if len(hit) else float("nan")
            return self._loo[key]
        import warnings

        from .metrics import doppelganger_rates

        names = set(self.training_clusters) | {key[0]}
        fi = np.flatnonzero((self.cluster == "") & self.valid)
        ci = np.flatnonzero(np.isin(self.cluster, list(names)) & self.valid)
        meta = {}
        if pair_filter:
            v, ak = self._label_values("vhelio_avg"), self._label_values("ak_targ")
            meta = dict(pop_vhelio=v[fi], pop_ak=ak[fi], clust_vhelio=v[ci], clust_ak=ak[ci])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an undefined rate is reported as NaN
            res = doppelganger_rates(
                self.features[fi],
                self.features[ci],
                self.cluster[ci],
                cv=True,
                top_n=self.settings.get("top_n"),
                keep_distances=False,
                **meta,
            )
        for name, rate in zip(res.per_cluster["cluster"].astype(str), res.per_cluster["rate"].astype(float)):
            if names == set(self.training_clusters) or name == key[0]:  # one call rates every training cluster
                self._loo[(name, key[1])] = float(rate)
        return self._loo[key]

    def candidates(self, cluster: str, pair_filter: bool = False) -> Candidates:
        """Field stars that may have escaped ``cluster``, and how many of them chance alone would give.

        Rule: the centre is the coordinate-wise median of the members' RSCA coordinates; the radius is
        the cluster's median intra-cluster distance (median over its member pairs, in this
        embedding); a candidate is a field star strictly closer than the radius to the centre. With
        ``pair_filter=True`` only field stars with |VHELIO_AVG − members' median| < 5 km/s and
        |AK_TARG − members' median| < 0.05 are searched.

        Expected chance doppelgangers: the leave-one-cluster-out rate r (:meth:`loo_rate`, with the
        pair filter exactly when the search uses it) is the fraction of (member, field star) pairs
        closer than the median intra-cluster distance under a map that never saw the cluster, i.e.
        the probability that an unrelated field star lands within that distance of a member. Taken
        as the probability that an unrelated field star becomes a candidate, it gives
        ``expected_chance = r × n_searched`` (binomial sd ``sqrt(n_searched · r · (1 − r))``): the
        count chance alone gives a cluster the map has not learned (the embedding's own map was
        fitted with the cluster, whose pairs are therefore in-sample). Candidates well beyond that
        count are what chance does not explain.
        """
        name = str(cluster).strip()
        members = np.flatnonzero((self.cluster == name) & self.valid)
        if not (self.cluster == name).any():
            known = sorted(set(self.cluster[self.cluster != ""]))
            shown = ", ".join(known[:8]) + (" …" if len(known) > 8 else "")
            raise ValueError(f"unknown cluster {name!r}; clusters here: {shown or 'none'}")
        if len(members) < 2:
            raise ValueError(f"cluster {name!r} has fewer than two stars with coordinates: no intra-cluster distance")
        radius = float(np.median(pair_distances(self.coords[members])))
        centre = np.median(self.coords[members], axis=0)
        searched = (self.cluster == "") & self.valid
        labels = {c: self._label_values(c) for _, c in LABEL_DIFFERENCES}
        ref = {
            c: float(np.nanmedian(v[members])) if np.isfinite(v[members]).any() else np.nan for c, v in labels.items()
        }
        if pair_filter:
            with np.errstate(invalid="ignore"):
                searched &= np.abs(labels["vhelio_avg"] - ref["vhelio_avg"]) < MAX_DVHELIO
                searched &= np.abs(labels["ak_targ"] - ref["ak_targ"]) < MAX_DAK
        index = self.neighbour_index
        inside = self._valid_rows[index.within(centre[None], np.sqrt(radius**2 + 2 * index.slack2(centre[None])))]
        inside = inside[searched[inside]]
        d = exact_distances(self.coords[inside], centre)
        keep = d < radius
        rows, d = inside[keep], d[keep]
        order = np.lexsort((rows, d))
        rows, d = rows[order], d[order]
        table = pd.DataFrame(
            {"apogee_id": self.apogee_id[rows].astype(str), "distance": d}, index=pd.Index(rows, name="row")
        )
        for dcol, col in LABEL_DIFFERENCES:
            table[dcol] = labels[col][rows] - ref[col]
        rate = self.loo_rate(name, pair_filter=pair_filter)
        n_searched = int(searched.sum())
        expected = rate * n_searched
        sd = float(np.sqrt(n_searched * rate * (1 - rate))) if np.isfinite(rate) else float("nan")
        return Candidates(name, table, radius, centre, len(members), n_searched, rate, expected, sd, bool(pair_filter))


# ====================================================================== building an embedding
def embed(
    dataset,
    k: int = 30,
    input: str = "spectra",
    species=None,
    clusters=None,
    top_n: int | None = None,
    seed: int = 0,
    *,
    compression=None,
) -> Embedding:
    """Fit the RSCA map on a bundle's clusters (no cross-validation) and place every star in RSCA space.

    Parameters
    ----------
    dataset : Dataset or path
        The bundle (a path is loaded with ``Dataset.load``).
    k : int
        PCA components for ``input="spectra"``: the cached ``dataset.compress(k, seed)``, the same
        compression ``python -m rsca_core evaluate --k K`` uses.
    input : {"spectra", "abundances", "subset"}
        The representation, as in ``Dataset.rate_inputs``; ``species`` for "subset".
    clusters : sequence of str, optional
        Train the map on these clusters only (default: every cluster); every star is placed.
    top_n : int, optional
        Keep the ``top_n`` most discriminative axes.
    seed : int
        Compression seed.
    compression : Compression, optional
        Use this compression of the dataset's spectra instead of ``dataset.compress(k, seed)``
        (e.g. one the caller already holds); its K is then the embedding's.

    Returns
    -------
    Embedding
        ``coords`` (n_stars × n_axes, bundle order), ``apogee_id``, ``rsca`` (the fitted map),
        ``compression`` (None for abundances), ``dataset``, ``features`` and ``settings``.

    Examples
    --------
    A small simulated survey; a bundle star's own spectrum projects back onto its coordinates:

    >>> import tempfile
    >>> from rsca_core.simulate import simulate
    >>> emb = embed(simulate(tempfile.mkdtemp() + "/survey", n_field=200, seed=1, progress=False), k=4)
    >>> emb.coords.shape, emb.label, len(emb.training_clusters)
    ((385, 4), 'simulated', 22)
    >>> list(emb.siblings(emb.apogee_id[0], n=3).columns[:3])
    ['apogee_id', 'distance', 'sibling_score']
    >>> xy = project(emb, emb.dataset.spectra[:2], emb.dataset.mask[:2])
    >>> bool(np.abs(xy - emb.coords[:2]).max() < 1e-3 * np.median(emb.intra_distances))
    True
    """
    from .dataset import Dataset
    from .rsca import RSCA

    ds = dataset if isinstance(dataset, Dataset) else Dataset.load(dataset)
    if input != "spectra":
        compression = None
    elif compression is None:
        compression = ds.compress(k, seed=seed)
    # the fit: exactly the inputs ``evaluate`` builds (Dataset.rate_inputs), on the training clusters
    inputs = ds.rate_inputs(input, k=k, seed=seed, species=species, clusters=clusters, compression=compression)
    model = RSCA(top_n=top_n).fit(inputs.z_pop, inputs.z_clust, inputs.cluster_ids)
    # every star placed: the compression's scores, or the abundances (NaN rows where one is missing)
    if compression is not None:
        features = np.asarray(compression.scores, dtype=float)
    else:
        features = ds.abundances(inputs.description["species"])
    ok = ~np.isnan(features).any(axis=1)
    placed = model.transform(features[ok])
    coords = np.full((ds.n_stars, placed.shape[1]), np.nan)
    coords[ok] = placed
    sizes = pd.Series(np.asarray(inputs.cluster_ids, dtype=object).astype(str)).value_counts()
    training = sorted(str(c) for c in sizes.index[sizes >= 2])
    settings = {
        "k": int(inputs.z_pop.shape[1]),
        "input": input,
        "species": inputs.description.get("species"),
        "clusters": training,
        "top_n": top_n,
        "seed": int(compression.seed if compression is not None else seed),
        "kind": ds.label,
        "simulated": bool(ds.is_simulated),
        "dataset": ds.name,
        "uid": ds.meta.get("uid", ""),
    }
    return Embedding(
        coords,
        ds.stars,
        rsca=model,
        compression=compression,
        dataset=ds,
        features=features,
        settings=settings,
        training_clusters=training,
    )


# ====================================================================== new spectra
def project(embedding: Embedding, spectra, mask=None) -> np.ndarray:
    """RSCA coordinates of spectra that are not in the bundle.

    Each spectrum is compressed by the embedding's PCA exactly as ``MaskedPCA.transform`` does
    (least-squares fit of its observed pixels by the stored components around the stored mean),
    then mapped by the fitted RSCA. ``spectra`` is (m, n_pixels) or one spectrum; ``mask`` the same
    shape, True = missing (build it with :func:`mask_rule` / :func:`read_spectra_files`).
    For a bundle star's own spectrum and mask this reproduces its row of ``embedding.coords`` (to
    the compression's convergence); :func:`embed`'s example shows it.
    """
    comp = embedding.compression
    if comp is None or embedding.rsca is None:
        raise ValueError(
            "project needs an embedding of spectra (input='spectra'); "
            f"this one is of {embedding.settings.get('input', 'another representation')}"
        )
    X = np.asarray(spectra, dtype=float)
    if X.ndim == 1:
        X = X[None, :]
        mask = None if mask is None else np.asarray(mask, dtype=bool)[None, :]
    scores = comp.transform(X, None if mask is None else np.asarray(mask, dtype=bool))
    return embedding.rsca.transform(scores, top_n=embedding.settings.get("top_n"))


def mask_rule(dataset) -> tuple[tuple, float]:
    """(pixel ranges masked for every star, largest trusted pixel error) of a bundle.

    Read from the bundle's provenance (the DR16 loader's ``mask_ranges`` / ``max_pixel_error``, the
    simulator's ``config.mask_ranges``), else the paper's interstellar bands and 0.05.
    """
    prov = (getattr(dataset, "meta", None) or {}).get("provenance") or {}
    ranges = prov.get("mask_ranges")
    if ranges is None:
        ranges = (prov.get("config") or {}).get("mask_ranges", PAPER_MASK_RANGES)
    max_err = float(prov.get("max_pixel_error", MAX_PIXEL_ERROR))
    return tuple(tuple(int(v) for v in r) for r in ranges), max_err


ASPCAP_ID = re.compile(r"^aspcapStar-[^-]+-(.+)\.fits(?:\.gz)?$")
MWMSTAR_ID = re.compile(r"^mwmStar-[^-]+-(\d+)\.fits")


def star_id_from_path(path) -> str:
    """The APOGEE_ID in an aspcapStar file name (``aspcapStar-r12-2M00000002+7417074.fits``), else the stem.

    Examples
    --------
    >>> star_id_from_path("x/aspcapStar-r12-2M00000002+7417074.fits")
    '2M00000002+7417074'
    >>> star_id_from_path("mystar.fits")
    'mystar'
    >>> star_id_from_path("spectra/star/34/12/mwmStar-0.6.0-123412.fits[4]")
    'sdss_id:123412'
    """
    name = Path(str(path).split("[")[0]).name
    m = ASPCAP_ID.match(name)
    if m:
        return m.group(1)
    m = MWMSTAR_ID.match(name)
    return f"sdss_id:{m.group(1)}" if m else name.split(".")[0]


def read_spectrum_file(spec, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Flux and error of one spectrum file: an aspcapStar (DR16/DR17), or an SDSS-V mwmStar (DR19).

    An mwmStar file is read as ``flux / continuum`` from its APOGEE row at APO (HDU 3) or, when that
    row is empty, at LCO (HDU 4); ``file.fits[4]`` picks the HDU (see ``rsca_core.apogee.read_mwmstar``).
    """
    from .apogee.fitsio import SpectrumFileError, read_aspcapstar, read_mwmstar, split_hdu_spec

    path, hdu = split_hdu_spec(str(spec))
    if not Path(path).name.startswith("mwmStar"):
        return read_aspcapstar(path, n_pixels)
    if hdu is not None:
        return read_mwmstar(str(spec), n_pixels)
    try:
        return read_mwmstar(f"{path}[3]", n_pixels)
    except SpectrumFileError as apo:
        try:
            return read_mwmstar(f"{path}[4]", n_pixels)
        except SpectrumFileError:
            raise apo from None


def read_spectra_files(paths, dataset=None, n_pixels: int | None = None):
    """Read aspcapStar (HDU 1 flux, HDU 2 error) or mwmStar files and mask them with the bundle's rule.

    Returns ``(ids, flux, mask)``: ids from the file names, (m, n_pixels) float32 flux and the bool
    missing-pixel mask (``rsca_core.apogee.pixel_mask`` with :func:`mask_rule` of ``dataset``).
    A missing or bad file raises FileNotFoundError / ValueError with one line naming it.
    """
    from .constants import N_PIXELS
    from .selection import pixel_mask

    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no spectrum files given")
    n_pixels = int(n_pixels or (dataset.n_pixels if dataset is not None else N_PIXELS))
    ranges, max_err = mask_rule(dataset)
    flux = np.empty((len(paths), n_pixels), dtype=np.float32)
    mask = np.empty((len(paths), n_pixels), dtype=bool)
    for i, p in enumerate(paths):
        f, e = read_spectrum_file(p, n_pixels)
        flux[i] = f
        mask[i] = pixel_mask(f, e, ranges, max_err)
        if mask[i].all():
            raise ValueError(f"{p}: every pixel is missing or untrustworthy (error > {max_err})")
    return [star_id_from_path(p) for p in paths], flux, mask


# ====================================================================== catalogues
def _catalogue_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] in ([".fits"], [".fit"]) or suffixes[-2:] == [".fits", ".gz"]:
        return "fits"
    if suffixes[-1:] in ([".parquet"], [".pq"]):
        return "parquet"
    if suffixes[-1:] == [".csv"]:
        return "csv"
    raise ValueError(f"{path}: unknown catalogue format; use a .fits, .parquet or .csv file name")


def sidecar_path(path) -> Path:
    """The JSON file holding a CSV catalogue's settings: ``FILE.csv.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_catalogue(table: pd.DataFrame, path, meta: dict, overwrite: bool = False) -> Path:
    """Write a table with its settings: FITS (binary table, settings in the header), parquet
    (settings in the file's key-value metadata, read back by pandas as ``DataFrame.attrs["rsca"]``)
    or CSV (settings in the sidecar ``FILE.csv.json``). Atomic; refuses to replace a file unless
    ``overwrite``.
    """
    path = Path(path)
    fmt = _catalogue_format(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass --overwrite to replace it)")
    meta = jsonable(meta)
    if fmt == "fits":
        from astropy.io import fits
        from astropy.table import Table

        hdu = fits.table_to_hdu(Table.from_pandas(table))
        hdu.name = "RSCA"
        for key, kw in CATALOGUE_KEYWORDS.items():
            if key in meta:
                v = meta[key]
                hdu.header[kw] = ",".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
        hdu.header["RSCAMETA"] = json.dumps(meta)
        hdul = fits.HDUList([fits.PrimaryHDU(), hdu])
        if meta.get("simulated"):
            hdul[0].header["SIMULATD"] = (True, "made from a simulated survey")
        atomic_write(path, lambda tmp: hdul.writeto(tmp, overwrite=True))
    elif fmt == "parquet":
        frame = table.copy()
        frame.attrs = {"rsca": meta}
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
        atomic_write_text(sidecar_path(path), json.dumps(meta, indent=2) + "\n")
    return path


def read_catalogue(path) -> tuple[pd.DataFrame, dict]:
    """Read a catalogue written by :func:`write_catalogue`: (table, settings)."""
    path = Path(path)
    fmt = _catalogue_format(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing")
    if fmt == "fits":
        from astropy.io import fits
        from astropy.table import Table

        with fits.open(path) as hdul:
            header = hdul[1].header
            table = Table(hdul[1].data).to_pandas()
            meta = json.loads(header.get("RSCAMETA", "{}"))
        return table, meta
    if fmt == "parquet":
        table = pd.read_parquet(path)
        return table, dict(table.attrs.get("rsca", {}))
    table = pd.read_csv(path, dtype={"apogee_id": str}, keep_default_na=False)
    side = sidecar_path(path)
    return table, json.loads(side.read_text()) if side.exists() else {}


# ====================================================================== CLI
def _species_arg(text: str) -> list[str]:
    try:
        return [canonical_species(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _embed_from_args(args) -> Embedding:
    return embed(
        args.dataset,
        k=args.k,
        input=args.input,
        species=args.species,
        clusters=args.clusters,
        top_n=args.top_n,
        seed=args.seed,
    )


def _print_table(df: pd.DataFrame, columns, formats) -> None:
    widths = {
        c: max(len(c), *(len(formats.get(c, "{}").format(v)) for v in df[c])) if len(df) else len(c) for c in columns
    }
    print("  " + "  ".join(f"{c:>{widths[c]}}" for c in columns))
    for r in df.itertuples(index=False):
        vals = r._asdict()
        print("  " + "  ".join(f"{formats.get(c, '{}').format(vals[c]):>{widths[c]}}" for c in columns))


def _describe(emb: Embedding) -> str:
    s = emb.settings
    what = f"spectra, K={s['k']}" if s.get("input") == "spectra" else ", ".join(s.get("species") or [])
    top = "" if s.get("top_n") is None else f", top {s['top_n']} axes"
    return (
        f"[{emb.label}] {s.get('dataset')}: RSCA space of {what}{top}, fitted on {len(emb.training_clusters)} clusters"
    )


FORMATS = {
    "distance": "{:.4f}",
    "sibling_score": "{:.3f}",
    "d_fe_h": "{:+.3f}",
    "d_teff": "{:+.0f}",
    "d_logg": "{:+.2f}",
    "d_vhelio": "{:+.1f}",
    "d_ak": "{:+.3f}",
}


def cmd_siblings(args) -> int:
    emb = _embed_from_args(args)
    row = emb.index_of(args.star)
    df = emb.siblings(row, n=args.n, pair_filter=args.pair_filter)
    if args.json:
        out = {
            "star": emb.apogee_id[row],
            "cluster": emb.cluster[row],
            "settings": emb.catalogue_meta(),
            "pair_filter": bool(args.pair_filter),
            "siblings": df.reset_index(),
        }
        print(json.dumps(jsonable(out), indent=2))
        return 0
    print(_describe(emb))
    home = f" (member of {emb.cluster[row]})" if emb.cluster[row] else " (field star)"
    filt = "; pair filter |dVHELIO| < 5 km/s, |dAK| < 0.05" if args.pair_filter else ""
    print(f"  {len(df)} nearest stars to {emb.apogee_id[row]}{home}{filt}")
    df = df.assign(cluster=df["cluster"].replace("", "-"))
    _print_table(df, list(SIBLING_COLUMNS), FORMATS)
    return 0


def cmd_candidates(args) -> int:
    emb = _embed_from_args(args)
    res = emb.candidates(args.cluster, pair_filter=args.pair_filter)
    if args.json:
        print(json.dumps(res.to_dict() | {"settings": emb.catalogue_meta()}, indent=2))
        return 0
    print(_describe(emb))
    rate = "undefined" if not np.isfinite(res.loo_rate) else f"{res.loo_rate:.4f}"
    print(
        f"  {res.cluster}: {res.n_members} members, median intra-cluster distance {res.radius:.4f}; "
        f"{res.n_candidates} field star(s) within it of the members' median position "
        f"(of {res.n_searched} searched{', pair-filtered' if res.pair_filter else ''})"
    )
    exp = (
        "undefined"
        if not np.isfinite(res.expected_chance)
        else f"{res.expected_chance:.1f} ± {res.expected_chance_sd:.1f}"
    )
    print(f"  expected by chance: {exp}  (leave-one-cluster-out rate {rate} × {res.n_searched} field stars)")
    if res.n_candidates:
        cols = ["apogee_id", "distance", "d_fe_h", "d_teff", "d_logg", "d_vhelio", "d_ak"]
        _print_table(res.table, cols, FORMATS)
    return 0


def cmd_embed(args) -> int:
    emb = _embed_from_args(args)
    path = write_catalogue(emb.to_frame(), args.out, emb.catalogue_meta(), overwrite=args.overwrite)
    print(_describe(emb))
    print(f"  wrote {emb.n_stars} stars × {emb.n_axes} axes to {path}")
    return 0


def cmd_project(args) -> int:
    emb = _embed_from_args(args)
    ids, flux, mask = read_spectra_files(args.spectra, emb.dataset)
    coords = project(emb, flux, mask)
    nearest_id, nearest_d = [], []
    for point in coords:
        rows, d = emb.nearest(point, 1)
        nearest_id.append(emb.apogee_id[rows[0]])
        nearest_d.append(float(d[0]))
    table = pd.DataFrame(
        {
            "apogee_id": ids,
            "file": [os.fspath(p) for p in args.spectra],
            **{f"{COORD_PREFIX}{j + 1}": coords[:, j] for j in range(coords.shape[1])},
            "nearest": nearest_id,
            "nearest_distance": nearest_d,
            "nearest_sibling_score": emb.sibling_score(np.array(nearest_d)),
        }
    )
    meta = emb.catalogue_meta() | {"producer": "rsca_core.siblings.project", "n_projected": len(ids)}
    path = write_catalogue(table, args.out, meta, overwrite=args.overwrite)
    print(_describe(emb))
    for r in table.itertuples(index=False):
        print(f"  {r.apogee_id}: nearest bundle star {r.nearest} at {r.nearest_distance:.4f}")
    print(f"  wrote {len(table)} projected star(s) to {path}")
    return 0


def _common(p, dataset_help="dataset bundle directory") -> None:
    p.add_argument("--dataset", required=True, help=dataset_help)
    p.add_argument("--k", type=positive_int, default=30, help="PCA components for spectra (default 30)")
    p.add_argument(
        "--input",
        choices=("spectra", "abundances", "subset"),
        default="spectra",
        help="representation: PCA of spectra (default), all 21 abundances, or an abundance subset",
    )
    p.add_argument("--species", type=_species_arg, default=None, help="comma-separated species for --input subset")
    p.add_argument(
        "--clusters",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        default=None,
        help="comma-separated clusters to fit the map on (default: all)",
    )
    p.add_argument("--top-n", type=positive_int, default=None, help="keep only the N most discriminative axes")
    p.add_argument("--seed", type=int, default=0, help="compression seed (default 0)")


def add_cli(sub) -> None:
    """Register ``siblings``, ``candidates``, ``embed`` and ``project``."""
    p = sub.add_parser(
        "siblings",
        help="a star's nearest stars in RSCA space (its chemical siblings)",
        description="Fit RSCA on all clusters (no CV) and list the N stars nearest to one star, with "
        "a sibling score (fraction of known cluster pairs farther apart) and label differences.",
    )
    _common(p)
    p.add_argument("--star", required=True, help="APOGEE_ID (or bundle row number) of the star")
    p.add_argument("--n", type=positive_int, default=50, help="number of siblings (default 50)")
    p.add_argument("--pair-filter", action="store_true", help="only stars within 5 km/s and 0.05 mag A_K")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_siblings)

    p = sub.add_parser(
        "candidates",
        help="field stars near a cluster in RSCA space, with the expected chance count",
        description="Field stars within a cluster's median intra-cluster distance of its members' median "
        "position, beside the number expected by chance from its leave-one-cluster-out rate.",
    )
    _common(p)
    p.add_argument("--cluster", required=True, help="cluster name as in the bundle")
    p.add_argument("--pair-filter", action="store_true", help="only field stars near the members' VHELIO/AK")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_candidates)

    p = sub.add_parser(
        "embed",
        help="write every star's RSCA coordinates (FITS, parquet or CSV)",
        description="Write apogee_id and rsca_1 … rsca_N for every star, with K, input, clusters, seed and "
        "the simulated flag in the FITS header / parquet metadata / FILE.csv.json.",
    )
    _common(p)
    p.add_argument("--out", required=True, help="output FILE.fits, FILE.parquet or FILE.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "project",
        help="place aspcapStar spectra of new stars in RSCA space",
        description="Read aspcapStar files (HDU 1 flux, HDU 2 error), mask them with the bundle's rule, "
        "compress them with the bundle's PCA and map them; write their coordinates and nearest bundle star.",
    )
    _common(p)
    p.add_argument("--spectra", nargs="+", required=True, help="aspcapStar FITS file(s)")
    p.add_argument("--out", required=True, help="output FILE.fits, FILE.parquet or FILE.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_project)
