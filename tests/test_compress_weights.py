"""Error-aware compression: MaskedPCA(weights="ivar") against plain PCA and the truth (issue 15)."""

import numpy as np
import pytest

from rsca_core import MaskedPCA


def _low_rank(seed=0, n=400, p=60, k=3):
    rng = np.random.default_rng(seed)
    W = np.linalg.qr(rng.standard_normal((p, k)))[0].T  # (k, p) orthonormal rows
    Z = rng.standard_normal((n, k)) * np.array([3.0, 2.0, 1.5])[:k]
    return rng, Z @ W + 1.0, W


def _angle(A, B):
    """Largest principal angle (radians) between the row spaces of A and B."""
    qa, qb = np.linalg.qr(A.T)[0], np.linalg.qr(B.T)[0]
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.arccos(np.clip(s.min(), -1, 1)))


def test_uniform_errors_give_exactly_the_plain_fit():
    rng, X, _ = _low_rank()
    X = X + 0.05 * rng.standard_normal(X.shape)
    mask = rng.random(X.shape) < 0.1
    err = np.full(X.shape, 0.05)
    plain = MaskedPCA(3, random_state=1).fit(X, mask)
    weighted = MaskedPCA(3, random_state=1, weights="ivar").fit(X, mask, errors=err)
    np.testing.assert_array_equal(weighted.components_, plain.components_)
    np.testing.assert_array_equal(weighted.mean_, plain.mean_)
    assert weighted.weight_scale_ is None  # nothing to weight
    # errors below the cap all count as the cap: uniform again
    tiny = np.where(rng.random(X.shape) < 0.5, 1e-4, 1e-5)
    capped = MaskedPCA(3, random_state=1, weights="ivar", ivar_cap=1e4).fit(X, mask, errors=tiny)
    np.testing.assert_array_equal(capped.components_, plain.components_)


def test_heteroscedastic_noise_weighted_pca_recovers_the_signal_better():
    rng, X, W = _low_rank(seed=3)
    # half the stars are noisy (σ = 1.5) and so is a random fifth of the other entries; the rest have
    # σ = 0.02: plain PCA chases the noisy entries, the weighted fit discounts them
    sigma = np.full(X.shape, 0.02)
    sigma[rng.random(X.shape[0]) < 0.5] = 1.5
    sigma[rng.random(X.shape) < 0.2] = 1.5
    Xn = X + sigma * rng.standard_normal(X.shape)
    plain = MaskedPCA(3, random_state=0).fit(Xn)
    weighted = MaskedPCA(3, random_state=0, weights="ivar", max_iter=300, tol=1e-7).fit(Xn, errors=sigma)
    a_plain, a_weighted = _angle(plain.components_, W), _angle(weighted.components_, W)
    assert a_weighted < 0.25 * a_plain, (a_plain, a_weighted)
    # and its objective is the weighted squared error, which it lowers pass after pass
    obj = np.array(weighted.objective_)
    assert np.all(np.diff(obj) <= 1e-9 * obj[:-1])


def test_weighted_fit_matches_a_brute_force_weighted_low_rank_fit():
    """At its fixed point the weighted EM solves min Σ w (x − μ − z·V)²: no small rotation of the
    components or shift of a score lowers that objective (checked by finite differences)."""
    rng, X, _ = _low_rank(seed=5, n=120, p=12, k=2)
    sigma = rng.uniform(0.05, 0.5, X.shape)
    Xn = X + sigma * rng.standard_normal(X.shape)
    pca = MaskedPCA(2, random_state=0, weights="ivar", max_iter=2000, tol=1e-12, exact_below=0)
    Z = pca.fit_transform(Xn, errors=sigma)
    w = 1 / sigma**2

    def objective(Z, V, mu):
        return float((w * (Xn - mu - Z @ V) ** 2).sum())

    base = objective(Z, pca.components_, pca.mean_)
    for _ in range(20):
        dV = 1e-4 * rng.standard_normal(pca.components_.shape)
        dZ = 1e-4 * rng.standard_normal(Z.shape)
        assert objective(Z + dZ, pca.components_ + dV, pca.mean_) >= base * (1 - 1e-6)


def test_weights_need_errors_and_clear_errors():
    rng, X, _ = _low_rank()
    with pytest.raises(ValueError, match="needs the flux errors"):
        MaskedPCA(2, weights="ivar").fit(X)
    with pytest.raises(ValueError, match="errors shape"):
        MaskedPCA(2, weights="ivar").fit(X, errors=np.ones((3, 3)))
    with pytest.raises(ValueError, match="weights must be"):
        MaskedPCA(2, weights="snr").fit(X, errors=np.ones(X.shape))
