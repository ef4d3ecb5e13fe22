"""The embedding of a survey in RSCA space: :func:`embed`, :class:`Embedding` (siblings, candidates) and :func:`project`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..constants import MAX_DAK, MAX_DVHELIO
from ..fileio import jsonable
from .columns import COORD_PREFIX, LABEL_DIFFERENCES, SIBLING_COLUMNS
from .neighbours import NeighbourIndex, exact_distances, pair_distances, search


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
            return search(self.neighbour_index, self.coords, rows, point, n, pos)
        ok = np.asarray(allowed, dtype=bool) & self.valid
        if exclude is not None:
            ok[exclude] = False
        rows = np.flatnonzero(ok)
        if len(rows) == 0:
            return none
        return search(NeighbourIndex(self.coords[rows]), self.coords, rows, point, min(n, len(rows)), None)

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

        from ..metrics import doppelganger_rates

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

    Over 80 lines only through this docstring.
    """
    from ..dataset import Dataset
    from ..rsca import RSCA

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
