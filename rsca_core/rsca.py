"""Steps 2–4 of RSCA (SPEC §1): sphere, reparametrize, rescale — a single linear map.

``RSCA(...).fit(Z_pop, Z_clust, cluster_ids)`` learns ``y = (z - mean_) @ components_.T`` where the
rows of ``components_`` are the output axes in order of importance (σ_i ascending). The pieces of the
map are kept for teaching and plotting: ``sphere_`` (whitening), ``rotation_`` (reparametrization,
rows = basis vectors in the sphered space) and ``scales_`` / ``weights_`` (rescaling).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from .compress import usable_cores

VARIANTS = ("raw", "scaled", "transformed")
LOO_STACK_ELEMENTS = 4_000_000  # leave-one-out folds are batched so that their stack stays this small
MAD_TO_SIGMA = 1.4826


def check_representation(Z, name, n_features=None):
    """A finite 2-D float array (rows = stars); clear ValueError otherwise."""
    try:
        Z = np.asarray(Z, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array") from None
    if Z.ndim != 2:
        raise ValueError(f"{name} must be 2-D (stars × features), got shape {Z.shape}")
    if not np.all(np.isfinite(Z)):
        bad = int((~np.isfinite(Z)).any(axis=1).sum())
        raise ValueError(f"{name} contains NaN or inf values ({bad} rows)")
    if n_features is not None and Z.shape[1] != n_features:
        raise ValueError(f"{name} has {Z.shape[1]} features, expected {n_features}")
    return Z


def check_cluster_ids(cluster_ids, n):
    ids = np.asarray(cluster_ids, dtype=object)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(
            f"cluster_ids has {len(ids) if ids.ndim == 1 else ids.shape} entries, expected one per cluster star ({n})"
        )
    ids = np.array([str(v) for v in ids], dtype=object)
    if np.any(ids == ""):
        raise ValueError("cluster_ids contains empty names")
    return ids


def group_indices(ids):
    """{name: row indices}, names sorted."""
    names, inv = np.unique(ids.astype(str), return_inverse=True)
    return {str(nm): np.flatnonzero(inv == i) for i, nm in enumerate(names)}


def robust_spread(x, axis=0):
    """Normal-consistent median absolute deviation: 1.4826 · median(|x − median(x)|)."""
    med = np.median(x, axis=axis, keepdims=True)
    return MAD_TO_SIGMA * np.median(np.abs(x - med), axis=axis)


def _padded(T, groups):
    """Stack clusters into a (J, n_max, K) array padded with NaN, plus their sizes."""
    sizes = np.array([len(v) for v in groups.values()])
    out = np.full((len(sizes), sizes.max(), T.shape[1]), np.nan)
    for j, idx in enumerate(groups.values()):
        out[j, : len(idx)] = T[idx]
    return out, sizes


def axis_scales(sigma_c, relative=True):
    """σ_i of Eq. 4 with σ_pop = 1: sqrt(σ_c² / (1 − σ_c²)); ∞ (weight 0) where σ_c ≥ 1."""
    sigma_c = np.asarray(sigma_c, dtype=float)
    if np.any(sigma_c <= 0):
        i = int(np.flatnonzero(sigma_c <= 0)[0])
        raise ValueError(
            f"the intra-cluster spread is zero on axis {i}: duplicate stars, or more "
            "features than the cluster stars can constrain"
        )
    if not relative:
        return sigma_c.copy()
    out = np.full_like(sigma_c, np.inf)
    ok = sigma_c < 1
    out[ok] = np.sqrt(sigma_c[ok] ** 2 / (1.0 - sigma_c[ok] ** 2))
    return out


def _field_sums(Z_pop, n_parts=4):
    """(Σ rows, Σ row rowᵀ) of the field, over a fixed split of the rows run on the available cores
    (the same sums, bit for bit, whatever the number of cores). NumPy releases the GIL here."""
    n = len(Z_pop)
    bounds = np.linspace(0, n, n_parts + 1).astype(int)

    def part(ab):
        block = Z_pop[ab[0] : ab[1]]
        return np.ones(len(block)) @ block, block.T @ block

    cores = usable_cores()
    with threadpool_limits(limits=1, user_api="blas"):
        if cores < 2 or n < 50_000:
            parts = [part(ab) for ab in zip(bounds[:-1], bounds[1:])]
        else:
            with ThreadPoolExecutor(min(cores, n_parts)) as pool:
                parts = list(pool.map(part, zip(bounds[:-1], bounds[1:])))
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def sphere_population(Z_pop):
    """Mean and PCA-whitening matrix of the field (rows of the matrix = scaled principal axes)."""
    n, K = Z_pop.shape
    # One Gram product, centred afterwards. Its rounding relative to the covariance grows as
    # |mean|² / variance; past 1e4 (a field far from its origin) the field is centred block by block.
    total, gram = _field_sums(Z_pop)
    mean = total / n
    cov = gram - n * np.outer(mean, mean)
    if n * (mean @ mean) > 1e4 * max(np.trace(cov), 1e-300):
        cov = np.zeros((K, K))
        for a in range(0, n, 8192):  # centred in cache-sized blocks: exact and copy-free
            Zc = Z_pop[a : a + 8192] - mean
            cov += Zc.T @ Zc
    cov /= n - 1
    lam, vec = np.linalg.eigh(cov)
    lam, vec = lam[::-1], vec[:, ::-1]
    if lam[-1] <= 1e-12 * max(lam[0], 1e-300):
        raise ValueError(
            "the field representation is degenerate (a feature is constant or a linear combination of others); reduce K"
        )
    return mean, vec.T / np.sqrt(lam)[:, None]


def _residual_gram(S):
    R = S - S.mean(axis=0)
    return R.T @ R


class ClusterStats:
    """What steps 3–4 need of each cluster, computed once from the sphered cluster stars.

    Per cluster (≥ 2 members): the Gram matrix of its mean-subtracted stars and its stars in a
    NaN-padded stack. Fitting steps 3–4 on any subset of clusters (a leave-one-cluster-out fold, a
    data-size trial) is then K × K work plus a sort of the clusters' stars, and gives what a fit on
    that subset alone gives (to rounding: the same per-cluster pieces, summed).
    """

    def __init__(self, S_clust, groups):
        usable = {k: v for k, v in groups.items() if len(v) >= 2}
        self.names = list(usable)
        self.index = {n: i for i, n in enumerate(self.names)}
        K = S_clust.shape[1]
        if usable:
            self.padded, self.sizes = _padded(S_clust, usable)
            self.grams = np.stack([_residual_gram(S_clust[idx]) for idx in usable.values()])
        else:
            self.padded, self.sizes = np.zeros((0, 0, K)), np.zeros(0, dtype=int)
            self.grams = np.zeros((0, K, K))

    def select(self, names=None):
        """Positions of ``names`` (all usable clusters if None; unusable names are skipped), in order."""
        if names is None:
            return np.arange(len(self.names))
        return np.sort([self.index[n] for n in names if n in self.index]).astype(np.intp)

    def geometry(self, names=None, *, rotate=True, robust=True, pooled=True, relative=True):
        """Steps 3–4 fitted on the clusters ``names`` (all usable clusters if None)."""
        sel = self.select(names)
        if len(sel) == 0:
            raise ValueError("no cluster with at least 2 stars")
        train = np.zeros((1, len(self.names)), dtype=bool)
        train[0, sel] = True
        return self._fit(train, rotate, robust, pooled, relative)[0]

    def leave_one_out(self, *, rotate=True, robust=True, pooled=True, relative=True):
        """{name: the geometry fitted without that cluster} for every usable cluster.

        All folds at once (one batched eigendecomposition and one sort), in batches that keep the
        (folds, clusters, stars, K) stack under ``LOO_STACK_ELEMENTS``.
        """
        J, K = len(self.names), self.grams.shape[1]
        chunk = max(1, int(LOO_STACK_ELEMENTS // max(1, J * self.padded.shape[1] * K)))
        out = {}
        for f0 in range(0, J, chunk):
            folds = np.arange(f0, min(J, f0 + chunk))
            train = np.ones((len(folds), J), dtype=bool)
            train[np.arange(len(folds)), folds] = False
            out.update(zip((self.names[f] for f in folds), self._fit(train, rotate, robust, pooled, relative)))
        return out

    def _fit(self, train, rotate, robust, pooled, relative):
        """One ClusterGeometry per row of the boolean (fits, clusters) training mask."""
        F, K = len(train), self.grams.shape[1]
        if rotate:
            # residual PCA: eigenvectors of the summed Gram matrices, by decreasing variance, each
            # with its largest component positive
            _, vec = np.linalg.eigh(np.tensordot(train.astype(float), self.grams, axes=1))
            vec = vec[..., ::-1]
            big = np.take_along_axis(vec, np.argmax(np.abs(vec), axis=1)[:, None, :], axis=1)
            axes = vec * np.where(big < 0, -1.0, 1.0)  # (fits, K, K), columns = axes
            rotations = axes.transpose(0, 2, 1)
            T = self.padded[None] @ axes[:, None]
        else:
            rotations = np.broadcast_to(np.eye(K), (F, K, K))
            T = self.padded[None]
        s2 = _padded_variances(T, self.sizes, robust)  # (fits or 1, clusters, K)
        if pooled:
            w = (self.sizes - 1).astype(float)[None, :] * train
        else:
            w = train.astype(float)
        var = np.einsum("fj,fjk->fk", w, np.broadcast_to(s2, (F, *s2.shape[1:]))) / w.sum(1)[:, None]
        return [
            ClusterGeometry.from_parts(np.array(rotations[i]), np.sqrt(var[i]), relative=relative) for i in range(F)
        ]


def _padded_variances(P, sizes, robust):
    """Per-cluster s² (MAD-based or ddof=1) of NaN-padded stacks (..., J, n_max, K) → (..., J, K)."""
    j = np.arange(len(sizes))
    lo, hi = (sizes - 1) // 2, sizes // 2
    if robust:
        S = np.sort(P, axis=-2)
        med = 0.5 * (S[..., j, lo, :] + S[..., j, hi, :])
        D = np.sort(np.abs(P - med[..., None, :]), axis=-2)
        return (MAD_TO_SIGMA * (0.5 * (D[..., j, lo, :] + D[..., j, hi, :]))) ** 2
    mean = np.nansum(P, axis=-2) / sizes[:, None]
    return np.nansum((P - mean[..., None, :]) ** 2, axis=-2) / (sizes[:, None] - 1)


class ClusterGeometry:
    """Steps 3–4 fitted on sphered cluster stars: rotation, per-axis scales and their order."""

    def __init__(self, rotation, sigma_c, order, scales, weights):
        self.rotation, self.sigma_c, self.order, self.scales, self.weights = rotation, sigma_c, order, scales, weights

    @classmethod
    def from_parts(cls, rotation, sigma_c, relative=True):
        """From the step-3 rotation (rows) and the intra-cluster spread σ_c of each rotated axis."""
        scales = axis_scales(sigma_c, relative=relative)
        order = np.argsort(scales, kind="stable")
        scales = scales[order]
        return cls(rotation, sigma_c, order, scales, np.where(np.isfinite(scales), 1.0 / scales, 0.0))

    @classmethod
    def identity(cls, K):
        """The "raw" variant: no rotation, no rescaling."""
        return cls(np.eye(K), np.full(K, np.nan), np.arange(K), np.ones(K), np.ones(K))

    def matrix(self, top_n=None):
        """(n_out, K) map from sphered space to the output space (importance order)."""
        n = len(self.order) if top_n is None else int(top_n)
        return self.weights[:n, None] * self.rotation[self.order[:n]]


class RSCA(BaseEstimator):
    """Relevant scaled component analysis (de Mijolla & Ness 2022), SPEC §1 steps 2–6.

    A linear metric learned from open clusters: ``y = (z - mean_) @ components_.T``, in which members
    of one cluster are close and the field is spread out. ``fit`` takes the field representation, the
    cluster members' representation and their cluster names (not the usual ``X, y``).

    Parameters
    ----------
    variant : {"transformed", "scaled", "raw"}
        "transformed" = sphere + reparametrize + rescale; "scaled" = rescale only, on inputs
        standardised with the field mean and std; "raw" = identity (distances in the input space).
    robust : bool
        Intra-cluster spread by normal-consistent MAD (True) or by the sample std (False).
    pooled : bool
        Pooled variance estimator over clusters (True) or the plain mean of cluster variances.
    relative_scaling : bool
        Divide each axis by σ_i = sqrt(σ_c²/(1 − σ_c²)) (Eq. 4; σ_c ≥ 1 → weight 0), or by σ_c.
    top_n : int or None
        Keep only the N most discriminative output axes (smallest σ_i).

    Attributes
    ----------
    mean_ : ndarray of shape (K,)
        Field mean, subtracted first.
    components_ : ndarray of shape (K, K)
        The whole linear map; rows are the output axes by importance.
    scales_ : ndarray of shape (K,)
        σ_i of each output axis, ascending (inf = uninformative).
    weights_ : ndarray of shape (K,)
        1 / scales_ (0 where the axis carries no information).
    order_ : ndarray of shape (K,)
        Index of each output axis in the reparametrized basis.
    sigma_c_ : ndarray of shape (K,)
        Intra-cluster spread of each reparametrized axis (before ordering).
    sphere_ : ndarray of shape (K, K)
        Step-2 map (whitening; for "scaled" a diagonal standardisation).
    rotation_ : ndarray of shape (K, K)
        Step-3 basis (rows), identity for "scaled".
    n_features_in_ : int
        K.
    n_clusters_used_ : int
        Clusters with two or more members.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Z_pop = rng.normal(size=(500, 3)) * [3.0, 1.0, 1.0]
    >>> centres = rng.normal(size=(4, 3)) * [3.0, 1.0, 1.0]
    >>> Z_clust = np.repeat(centres, 5, axis=0) + rng.normal(size=(20, 3)) * [0.1, 1.0, 1.0]
    >>> ids = np.repeat(["A", "B", "C", "D"], 5)
    >>> model = RSCA().fit(Z_pop, Z_clust, ids)
    >>> model.transform(Z_pop[:2]).shape
    (2, 3)
    >>> int(np.argmax(np.abs(model.components_[0])))  # the most telling axis is the one clusters are tight in
    0
    """

    def __init__(
        self,
        variant: str = "transformed",
        robust: bool = True,
        pooled: bool = True,
        relative_scaling: bool = True,
        top_n: int | None = None,
    ):
        self.variant = variant
        self.robust = robust
        self.pooled = pooled
        self.relative_scaling = relative_scaling
        self.top_n = top_n

    # ------------------------------------------------------------------ validation
    def check_params(self, n_features: int) -> None:
        """Raise ValueError if the parameters cannot be used on ``n_features``-dimensional inputs.

        Examples
        --------
        >>> RSCA(top_n=5).check_params(3)
        Traceback (most recent call last):
        ...
        ValueError: top_n=5 is out of range 1..3
        """
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {self.variant!r}")
        check_top_n(self.top_n, n_features)

    def fit_population(self, Z_pop):
        """Step 2 only (depends on the field alone): returns (mean, sphere matrix)."""
        K = Z_pop.shape[1]
        if self.variant == "raw":
            return np.zeros(K), np.eye(K)
        if Z_pop.shape[0] < K + 1:
            raise ValueError(
                f"K={K} is larger than the data allows: {Z_pop.shape[0]} field stars "
                f"cannot constrain a {K}-dimensional covariance"
            )
        if self.variant == "scaled":
            sd = Z_pop.std(axis=0, ddof=1)
            if np.any(sd <= 0):
                raise ValueError(f"feature {int(np.flatnonzero(sd <= 0)[0])} is constant over the field")
            return Z_pop.mean(axis=0), np.diag(1.0 / sd)
        return sphere_population(Z_pop)

    def fit_clusters(self, S_clust, groups):
        """Steps 3–4 on sphered cluster stars: a :class:`ClusterGeometry`."""
        return self.fit_cluster_subset(ClusterStats(S_clust, groups))

    def fit_cluster_subset(self, stats, names=None):
        """Steps 3–4 on the clusters ``names`` (all if None) of a :class:`ClusterStats`.

        Many fits on subsets of the same clusters (CV folds, data-size trials) share one ClusterStats.
        """
        K = stats.grams.shape[1]
        if self.variant == "raw":
            return ClusterGeometry.identity(K)
        sel = stats.select(names)
        self._check_cluster_dof(int(stats.sizes[sel].sum()) - len(sel), K)
        return stats.geometry(names, **self._geometry_options())

    def fit_leave_one_out(self, stats):
        """{cluster: steps 3–4 fitted on every other usable cluster} (the CV folds), all at once."""
        if self.variant == "raw":
            return {n: self.fit_cluster_subset(stats, []) for n in stats.names}
        dof = int(stats.sizes.sum()) - len(stats.sizes) - (stats.sizes - 1)
        if len(dof):
            self._check_cluster_dof(int(dof.min()), stats.grams.shape[1], "without one cluster ")
        if len(stats.names) < 2:
            raise ValueError("leave-one-cluster-out needs at least 2 clusters with 2 or more stars")
        return stats.leave_one_out(**self._geometry_options())

    def _check_cluster_dof(self, dof, K, context=""):
        """Step 3 needs at least K degrees of freedom (cluster stars minus clusters)."""
        if self.variant == "transformed" and dof < K:
            raise ValueError(
                f"K={K} is larger than the data allows: {context}the cluster stars give only "
                f"{dof} degrees of freedom (stars minus clusters)"
            )

    def _geometry_options(self):
        return {
            "rotate": self.variant == "transformed",
            "robust": self.robust,
            "pooled": self.pooled,
            "relative": self.relative_scaling,
        }

    # ------------------------------------------------------------------ estimator API
    def fit(self, Z_pop, Z_clust, cluster_ids) -> RSCA:
        """Learn the map from the field and the cluster members (SPEC §1 steps 2–4).

        Parameters
        ----------
        Z_pop : array-like of shape (n_field, K)
            Field stars' representation (PCA scores or abundances).
        Z_clust : array-like of shape (n_members, K)
            Cluster members' representation.
        cluster_ids : array-like of shape (n_members,)
            Cluster name of each member; clusters with one member are ignored.

        Returns
        -------
        self : RSCA
            The fitted estimator.
        """
        Z_pop = check_representation(Z_pop, "Z_pop")
        Z_clust = check_representation(Z_clust, "Z_clust", Z_pop.shape[1])
        ids = check_cluster_ids(cluster_ids, len(Z_clust))
        K = Z_pop.shape[1]
        self.check_params(K)
        groups = group_indices(ids)
        usable = sum(len(v) >= 2 for v in groups.values())
        if usable < 2:
            raise ValueError(f"RSCA needs at least 2 clusters with 2 or more stars; got {usable}")
        mean, sphere = self.fit_population(Z_pop)
        geom = self.fit_clusters((Z_clust - mean) @ sphere.T, groups)
        self.mean_ = mean
        self.sphere_ = sphere
        self.rotation_ = geom.rotation
        self.sigma_c_ = geom.sigma_c
        self.order_ = geom.order
        self.scales_ = geom.scales
        self.weights_ = geom.weights
        self.components_ = geom.matrix() @ sphere
        self.n_features_in_ = K
        self.n_clusters_used_ = usable
        return self

    def transform(self, Z, top_n: int | None = None) -> np.ndarray:
        """Project ``Z`` (n × K) into the RSCA space: (n × top_n) axes by importance.

        Parameters
        ----------
        Z : array-like of shape (n, K)
            Stars in the representation the map was fitted on.
        top_n : int, optional
            Keep this many leading axes (default: the estimator's ``top_n``, else all).

        Returns
        -------
        Y : ndarray of shape (n, top_n or K)
        """
        check_is_fitted(self, "components_")
        Z = check_representation(Z, "Z", self.n_features_in_)
        n = self.top_n if top_n is None else top_n
        check_top_n(n, self.n_features_in_)
        A = self.components_ if n is None else self.components_[: int(n)]
        return (Z - self.mean_) @ A.T

    def fit_transform(self, Z_pop, Z_clust, cluster_ids) -> np.ndarray:
        """``fit(Z_pop, Z_clust, cluster_ids)`` then the field's coordinates ``transform(Z_pop)``."""
        return self.fit(Z_pop, Z_clust, cluster_ids).transform(Z_pop)

    def transform_steps(self, Z) -> list[np.ndarray]:
        """``Z`` after each step of the map (for teaching, e.g. the dashboard's "Inside RSCA").

        Returns ``[Z, sphered, reparametrized, rescaled]``: step 2 ``(Z − mean_) @ sphere_.T``, step 3
        that @ ``rotation_.T`` (axes in the reparametrized order), step 4 :meth:`transform` (all axes,
        ordered by importance and rescaled).

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> Z = rng.normal(size=(200, 2)); C = rng.normal(size=(6, 2)); ids = list("aabbcc")
        >>> steps = RSCA().fit(Z, C, ids).transform_steps(C)
        >>> len(steps), steps[3].shape
        (4, (6, 2))
        """
        check_is_fitted(self, "components_")
        Z = check_representation(Z, "Z", self.n_features_in_)
        s1 = (Z - self.mean_) @ np.asarray(self.sphere_).T
        s2 = s1 @ np.asarray(self.rotation_).T
        return [Z, s1, s2, self.transform(Z, top_n=self.n_features_in_)]

    def spectral_components(self, pca_components) -> np.ndarray:
        """Each output axis as a vector in pixel space: ``components_ @ pca_components`` (K × P)."""
        check_is_fitted(self, "components_")
        pc = np.asarray(pca_components, dtype=float)
        if pc.ndim != 2 or pc.shape[0] != self.n_features_in_:
            raise ValueError(f"pca_components must have {self.n_features_in_} rows")
        return self.components_ @ pc

    def pixel_map(self, pca_components, pca_mean) -> tuple[np.ndarray, np.ndarray]:
        """The map from complete spectra straight to RSCA space: ``y = x @ W.T + b``.

        With PCA scores ``z = (x − m) @ P.T``, ``y = (z − mean_) @ R.T`` gives ``W = R @ P`` and
        ``b = −(m @ P.T + mean_) @ R.T`` (R = ``components_``).

        Returns
        -------
        W : ndarray of shape (K, P)
        b : ndarray of shape (K,)
        """
        W = self.spectral_components(pca_components)
        m = np.asarray(pca_mean, float)
        b = -(m @ np.asarray(pca_components, float).T + self.mean_) @ self.components_.T
        return W, b


def check_top_n(top_n, K):
    if top_n is None:
        return
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)):
        raise ValueError(f"top_n must be an integer or None, got {top_n!r}")
    if not 1 <= int(top_n) <= K:
        raise ValueError(f"top_n={top_n} is out of range 1..{K}")
