"""Metric learners the paper cites, fitted on cluster members only, for comparison with RSCA.

Each learner turns labelled cluster stars (rows of a representation, labelled by cluster) into a
linear map ``y = M z`` (an affine map's translation does not change distances), so that
``doppelganger_rates(..., method=...)`` scores it by exactly the paper's leave-one-cluster-out
protocol, refitting the learner in every fold without the held-out cluster.

==========  ======================================================================================
method      map
==========  ======================================================================================
``"rsca"``  the paper's method (:class:`~rsca_core.rsca.RSCA`; uses the field too)
``"rca"``   relevant component analysis (Shental et al. 2002): whitening by the pooled
            within-cluster covariance, :class:`RCA` (closed form, ours)
``"lda"``   scikit-learn ``LinearDiscriminantAnalysis`` (default ``svd`` solver), all the
            components it allows (min(n_clusters − 1, K))
``"nca"``   scikit-learn ``NeighborhoodComponentsAnalysis`` (default settings, fixed seed)
==========  ======================================================================================

The metric-learn package is not used: it does not run on current scikit-learn.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .rsca import check_cluster_ids, check_representation, group_indices

#: Methods of ``doppelganger_rates``: the paper's RSCA and the metric learners it cites.
METHODS = ("rsca", "rca", "lda", "nca")
#: Ridge added to a singular pooled covariance, relative to its mean eigenvalue (trace / K).
RCA_RIDGE = 1e-6


class RCA(TransformerMixin, BaseEstimator):
    """Relevant component analysis: whiten by the pooled within-cluster covariance.

    Each cluster (chunklet) with ≥ 2 members is centred on its own mean; the covariance of those
    residuals over all of them, ``C = Σ_j Σ_i (x_ji − m_j)(x_ji − m_j)ᵀ / n`` (n = stars in
    those clusters), is inverted to the power ½: ``transform(X) = X C^(−½)`` (symmetric root). When
    ``C`` is singular (fewer residual degrees of freedom than features, or a flat direction), a
    ridge of ``ridge × trace(C) / K`` is added to its diagonal first (``singular_`` records it).

    Parameters
    ----------
    ridge : float
        Relative ridge for a singular covariance (default 1e-6).

    Attributes
    ----------
    covariance_ : (K, K) ndarray, the pooled within-cluster covariance (without ridge).
    components_ : (K, K) ndarray, ``C^(−½)`` (symmetric; with the ridge when ``singular_``).
    singular_ : bool.  n_features_in_ : int.

    Examples
    --------
    >>> X = np.array([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0], [5.0, 9.0]])
    >>> rca = RCA().fit(X, ["a", "a", "b", "b"])
    >>> rca.covariance_.tolist()          # residuals (±1, 0) and (0, ±2), four stars
    [[0.5, 0.0], [0.0, 2.0]]
    >>> np.round(rca.transform(X[:2]), 4).tolist()
    [[0.0, 0.0], [2.8284, 0.0]]
    """

    def __init__(self, ridge: float = RCA_RIDGE):
        self.ridge = ridge

    def fit(self, X, y) -> RCA:
        """Fit the whitening from cluster members ``X`` labelled by cluster ``y``.

        Parameters
        ----------
        X : array-like of shape (n, K)
        y : array-like of shape (n,), cluster names; clusters with one star are ignored.

        Returns
        -------
        self : RCA
        """
        X = check_representation(X, "X")
        groups = {c: idx for c, idx in group_indices(check_cluster_ids(y, len(X))).items() if len(idx) >= 2}
        if not groups:
            raise ValueError("RCA needs at least one cluster with 2 or more stars")
        R = np.vstack([X[idx] - X[idx].mean(axis=0) for idx in groups.values()])
        C = R.T @ R / len(R)
        K = C.shape[0]
        w = np.linalg.eigvalsh(C)
        self.singular_ = bool(w.min() <= max(w.max(), 0.0) * K * np.finfo(float).eps)
        Cr = C + (self.ridge * np.trace(C) / K) * np.eye(K) if self.singular_ else C
        if not np.trace(Cr) > 0:
            raise ValueError("RCA: the cluster members do not spread at all (every residual is zero)")
        w, V = np.linalg.eigh(Cr)
        self.covariance_ = C
        self.components_ = (V / np.sqrt(np.maximum(w, np.finfo(float).tiny))) @ V.T
        self.n_features_in_ = K
        return self

    def transform(self, X) -> np.ndarray:
        """``X C^(−½)``: whitened coordinates (within-cluster covariance → identity)."""
        check_is_fitted(self, "components_")
        return check_representation(X, "X", self.n_features_in_) @ self.components_


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`; ValueError otherwise."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    return method


def learner(method: str, random_state: int = 0):
    """An unfitted scikit-learn estimator for ``method`` ("rca", "lda" or "nca").

    Examples
    --------
    >>> type(learner("lda")).__name__
    'LinearDiscriminantAnalysis'
    """
    check_method(method)
    if method == "rca":
        return RCA()
    if method == "lda":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        return LinearDiscriminantAnalysis()
    if method == "nca":
        from sklearn.neighbors import NeighborhoodComponentsAnalysis

        return NeighborhoodComponentsAnalysis(random_state=random_state)
    raise ValueError("RSCA is fitted by rsca_core.rsca.RSCA (it also needs the field), not by learner()")


def linear_map(method: str, X, y, random_state: int = 0) -> np.ndarray:
    """The (d, K) matrix ``M`` of ``method`` fitted on members ``X`` labelled ``y`` (clusters ≥ 2 stars).

    The fitted transform is affine, ``T(x) = M x + b``; ``M`` is read off as ``T(e_i) − T(0)``,
    so any scikit-learn transformer works, whatever its internals.

    Examples
    --------
    >>> X = np.array([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0], [5.0, 9.0]])
    >>> np.round(linear_map("rca", X, ["a", "a", "b", "b"]), 4).tolist()
    [[1.4142, 0.0], [0.0, 0.7071]]
    """
    X = check_representation(X, "X")
    ids = check_cluster_ids(y, len(X))
    keep = np.concatenate([idx for idx in group_indices(ids).values() if len(idx) >= 2] or [np.array([], int)])
    n_clusters = len(set(ids[keep]))
    if n_clusters < 2:
        raise ValueError(f"{method}: need at least 2 training clusters with 2 or more stars, got {n_clusters}")
    est = learner(method, random_state).fit(X[keep], ids[keep])
    K = X.shape[1]
    T = est.transform(np.vstack([np.zeros(K), np.eye(K)]))
    return (T[1:] - T[0]).T
