"""The RSCA estimator against SPEC §1, checked by direct recomputation."""

import numpy as np
import pytest

from rsca_core import RSCA
from tests.helpers import planted


def brute_mad(values):
    vals = sorted(values)
    n = len(vals)
    med = vals[n // 2] if n % 2 else 0.5 * (vals[n // 2 - 1] + vals[n // 2])
    dev = sorted(abs(v - med) for v in vals)
    mad = dev[n // 2] if n % 2 else 0.5 * (dev[n // 2 - 1] + dev[n // 2])
    return 1.4826 * mad


def brute_std(values):
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def test_sphering_gives_identity_field_covariance():
    Z_pop, Z_clust, ids, _ = planted()
    est = RSCA().fit(Z_pop, Z_clust, ids)
    S = (Z_pop - est.mean_) @ est.sphere_.T
    assert np.allclose(S.mean(0), 0, atol=1e-12)
    assert np.allclose(np.cov(S, rowvar=False, ddof=1), np.eye(Z_pop.shape[1]), atol=1e-10)


def test_reparametrization_diagonalises_cluster_residuals():
    Z_pop, Z_clust, ids, _ = planted()
    est = RSCA().fit(Z_pop, Z_clust, ids)
    R = est.rotation_
    assert np.allclose(R @ R.T, np.eye(len(R)), atol=1e-12)
    T = (Z_clust - est.mean_) @ est.sphere_.T @ R.T
    resid = T.copy()
    for c in set(ids):
        resid[ids == c] -= resid[ids == c].mean(0)
    scatter = resid.T @ resid
    off = scatter - np.diag(np.diag(scatter))
    assert np.abs(off).max() < 1e-9 * np.abs(scatter).max()
    # axes by decreasing residual variance
    assert np.all(np.diff(np.diag(scatter)) <= 1e-9)


@pytest.mark.parametrize(
    "robust,pooled,relative", [(True, True, True), (False, True, True), (True, False, True), (True, True, False)]
)
def test_scales_match_brute_force_formula(robust, pooled, relative):
    Z_pop, Z_clust, ids, _ = planted(seed=3)
    est = RSCA(robust=robust, pooled=pooled, relative_scaling=relative).fit(Z_pop, Z_clust, ids)
    K = Z_pop.shape[1]
    for out_axis in range(K):
        u = est.rotation_[est.order_[out_axis]] @ est.sphere_
        proj = [(z - est.mean_) @ u for z in Z_clust]
        num, den, s2_list = 0.0, 0, []
        for c in sorted(set(ids)):
            vals = [p for p, i in zip(proj, ids) if i == c]
            if len(vals) < 2:
                continue
            s = brute_mad(vals) if robust else brute_std(vals)
            num += (len(vals) - 1) * s * s
            den += len(vals) - 1
            s2_list.append(s * s)
        sc2 = num / den if pooled else sum(s2_list) / len(s2_list)
        if relative:
            expected = (sc2 / (1 - sc2)) ** 0.5 if sc2 < 1 else np.inf
        else:
            expected = sc2**0.5
        assert est.scales_[out_axis] == pytest.approx(expected, rel=1e-9)
        w = 0.0 if np.isinf(expected) else 1.0 / expected
        assert np.allclose(est.components_[out_axis], w * u, atol=1e-12)
    assert np.all(np.diff(est.scales_) >= 0), "axes are ordered by importance"


def test_transform_is_the_linear_map_and_top_n_keeps_leading_axes():
    Z_pop, Z_clust, ids, _ = planted(seed=5)
    est = RSCA().fit(Z_pop, Z_clust, ids)
    z = Z_pop[:7]
    assert np.allclose(est.transform(z), (z - est.mean_) @ est.components_.T)
    top = RSCA(top_n=2).fit(Z_pop, Z_clust, ids).transform(z)
    assert top.shape == (7, 2)
    assert np.allclose(top, est.transform(z)[:, :2])


def test_uninformative_axis_gets_zero_weight_not_nan():
    rng = np.random.default_rng(0)
    Z_pop, Z_clust, ids, _ = planted(seed=1, K=3)
    # a 4th feature where cluster members scatter 3x more than the field: no information
    Z_pop = np.column_stack([Z_pop, rng.standard_normal(len(Z_pop))])
    Z_clust = np.column_stack([Z_clust, 3 * rng.standard_normal(len(Z_clust))])
    est = RSCA().fit(Z_pop, Z_clust, ids)
    assert np.isinf(est.scales_[-1]) and est.weights_[-1] == 0
    assert np.all(np.isfinite(est.components_))
    y = est.transform(Z_clust)
    assert np.all(np.isfinite(y)) and np.allclose(y[:, -1], 0)


def test_variants():
    Z_pop, Z_clust, ids, _ = planted(seed=2)
    raw = RSCA(variant="raw").fit(Z_pop, Z_clust, ids)
    assert np.allclose(raw.transform(Z_clust), Z_clust)
    sc = RSCA(variant="scaled").fit(Z_pop, Z_clust, ids)
    A = sc.components_[np.argsort(sc.order_)]
    assert np.allclose(A, np.diag(np.diag(A))), "scaled = per-feature weights, no rotation"
    sd = Z_pop.std(0, ddof=1)
    for out_axis, feat in enumerate(sc.order_):
        vals = (Z_clust[:, feat] - Z_pop[:, feat].mean()) / sd[feat]
        num = den = 0.0
        for c in sorted(set(ids)):
            v = list(vals[ids == c])
            num += (len(v) - 1) * brute_mad(v) ** 2
            den += len(v) - 1
        sc2 = num / den
        assert sc.scales_[out_axis] == pytest.approx((sc2 / (1 - sc2)) ** 0.5 if sc2 < 1 else np.inf)


@pytest.mark.parametrize(
    "bad,msg",
    [
        (lambda Zp, Zc, i: (Zp, Zc[:2], i[:2]), "at least 2 clusters"),
        (lambda Zp, Zc, i: (np.where(np.arange(Zp.size).reshape(Zp.shape) == 3, np.nan, Zp), Zc, i), "NaN"),
        (lambda Zp, Zc, i: (Zp, Zc[:, :-1], i), "features"),
        (lambda Zp, Zc, i: (Zp, Zc, i[:-1]), "cluster_ids"),
        (lambda Zp, Zc, i: (Zp[:4], Zc, i), "larger than the data allows"),
    ],
)
def test_clear_errors(bad, msg):
    Z_pop, Z_clust, ids, _ = planted()
    with pytest.raises(ValueError, match=msg):
        RSCA().fit(*bad(Z_pop, Z_clust, ids))


def test_k_larger_than_cluster_dof_and_top_n_out_of_range():
    Z_pop, Z_clust, ids, _ = planted(K=5, sizes=(2, 2, 3))  # 7 stars - 3 clusters = 4 dof < K
    with pytest.raises(ValueError, match="degrees of freedom"):
        RSCA().fit(Z_pop, Z_clust, ids)
    Z_pop, Z_clust, ids, _ = planted()
    for n in (0, 6, 2.5):
        with pytest.raises(ValueError, match="top_n"):
            RSCA(top_n=n).fit(Z_pop, Z_clust, ids)
    with pytest.raises(ValueError, match="variant"):
        RSCA(variant="magic").fit(Z_pop, Z_clust, ids)


def test_single_star_clusters_do_not_shape_the_map():
    Z_pop, Z_clust, ids, _ = planted(seed=9)
    lone = np.array([[50.0] * Z_pop.shape[1]])  # far away: would dominate the residual PCA if used
    with_lone = RSCA().fit(Z_pop, np.vstack([Z_clust, lone]), np.append(ids, "lonely"))
    without = RSCA().fit(Z_pop, Z_clust, ids)
    assert np.allclose(with_lone.components_, without.components_)
    assert with_lone.n_clusters_used_ == without.n_clusters_used_


@pytest.mark.parametrize("offset", [0.0, 30.0, 1e7])
def test_sphering_is_exact_far_from_the_origin(offset):
    # the field covariance comes from one Gram product, centred afterwards, unless the mean is far
    # from the origin compared with the spread: then it is centred block by block
    Z_pop, Z_clust, ids, _ = planted(seed=5)
    est = RSCA().fit(Z_pop + offset, Z_clust + offset, ids)
    S = (Z_pop + offset - est.mean_) @ est.sphere_.T
    assert np.allclose(np.cov(S, rowvar=False, ddof=1), np.eye(Z_pop.shape[1]), atol=1e-8)
    ref = RSCA().fit(Z_pop, Z_clust, ids)
    assert np.allclose(np.abs(est.components_), np.abs(ref.components_), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("variant", ["transformed", "scaled"])
def test_subset_fit_from_shared_cluster_stats_equals_a_fit_on_the_subset(variant):
    from rsca_core.rsca import ClusterStats, group_indices

    Z_pop, Z_clust, ids, _ = planted(seed=11)
    est = RSCA(variant=variant)
    mean, sphere = est.fit_population(Z_pop)
    S_cl = (Z_clust - mean) @ sphere.T
    stats = ClusterStats(S_cl, group_indices(ids))
    names = sorted(set(ids))
    for drop in names[:3]:
        keep = ids != drop
        alone = RSCA(variant=variant).fit(Z_pop, Z_clust[keep], ids[keep])
        geom = est.fit_cluster_subset(stats, [n for n in names if n != drop])
        assert np.allclose(geom.matrix() @ sphere, alone.components_, rtol=1e-10, atol=1e-12)
        assert np.allclose(geom.scales, alone.scales_, rtol=1e-10)


@pytest.mark.parametrize(
    "variant,robust,pooled,relative",
    [
        ("transformed", True, True, True),
        ("transformed", False, True, True),
        ("transformed", True, False, True),
        ("transformed", True, True, False),
        ("scaled", True, True, True),
        ("scaled", False, False, True),
    ],
)
def test_all_folds_at_once_equal_one_fold_at_a_time(variant, robust, pooled, relative, monkeypatch):
    from rsca_core import rsca
    from rsca_core.rsca import ClusterStats, group_indices

    Z_pop, Z_clust, ids, _ = planted(seed=12)
    if not robust:  # also through the memory-bounded path: folds in batches of 2
        sizes = [np.sum(ids == c) for c in set(ids)]
        monkeypatch.setattr(rsca, "LOO_STACK_ELEMENTS", 2 * len(sizes) * max(sizes) * Z_pop.shape[1])
    est = RSCA(variant=variant, robust=robust, pooled=pooled, relative_scaling=relative)
    mean, sphere = est.fit_population(Z_pop)
    stats = ClusterStats((Z_clust - mean) @ sphere.T, group_indices(ids))
    folds = est.fit_leave_one_out(stats)
    assert sorted(folds) == sorted(set(ids))
    for name, geom in folds.items():
        one = est.fit_cluster_subset(stats, [n for n in stats.names if n != name])
        assert np.allclose(geom.matrix(), one.matrix(), rtol=1e-9, atol=1e-12)
        assert np.allclose(geom.sigma_c, one.sigma_c, rtol=1e-9)
        assert np.array_equal(geom.order, one.order)


# ---------------------------------------------------------------- scikit-learn conventions
def test_rsca_is_a_scikit_learn_estimator():
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    est = RSCA(variant="scaled", robust=False, top_n=2)
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert repr(est) == "RSCA(robust=False, top_n=2, variant='scaled')"
    assert est.set_params(top_n=None).top_n is None
    with pytest.raises(ValueError):
        est.set_params(not_a_parameter=1)
    with pytest.raises(NotFittedError):
        RSCA().transform(np.zeros((2, 3)))


def test_transform_steps_compose_to_the_map_and_pixel_map_equals_the_two_step_projection():
    Z_pop, Z_clust, ids, _ = planted(seed=4, K=4)
    est = RSCA().fit(Z_pop, Z_clust, ids)
    z, s1, s2, y = est.transform_steps(Z_clust)
    # independent composition: whitening, then rotation, then the importance order and the 1/σ weights
    np.testing.assert_allclose(s1, (Z_clust - Z_pop.mean(0)) @ est.sphere_.T, atol=1e-9)
    np.testing.assert_allclose(y, s2[:, est.order_] * est.weights_, atol=1e-9)
    np.testing.assert_allclose(y, est.transform(Z_clust), atol=1e-12)
    # a planted PCA: x = z @ P + m; the pixel map must equal transform(PCA scores)
    rng = np.random.default_rng(0)
    P = np.linalg.qr(rng.normal(size=(30, 4)))[0].T
    m = rng.normal(size=30)
    x = Z_clust @ P + m
    W, b = est.pixel_map(P, m)
    np.testing.assert_allclose(x @ W.T + b, est.transform((x - m) @ P.T), atol=1e-9)
