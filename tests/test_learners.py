"""RSCA against the metric learners it cites (issue 15): RCA against its closed form, every method's
leave-one-cluster-out folds against explicit refits without the held-out cluster."""

import math

import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.neighbors import NeighborhoodComponentsAnalysis

from rsca_core import RSCA, doppelganger_rates
from rsca_core.learners import METHODS, RCA, linear_map
from tests.helpers import planted


def test_rca_is_the_closed_form_whitening_of_the_pooled_within_cluster_covariance():
    rng = np.random.default_rng(0)
    K = 4
    A = rng.standard_normal((K, K))
    sizes = (3, 5, 8, 12)
    X = np.vstack([rng.standard_normal(K) * 5 + rng.standard_normal((n, K)) @ A for n in sizes])
    ids = np.repeat([f"c{j}" for j in range(len(sizes))], sizes)
    # closed form, written out: C = (1/n) Σ_j Σ_i (x_ji − m_j)(x_ji − m_j)ᵀ, map = C^(−1/2)
    C = np.zeros((K, K))
    for c in set(ids):
        R = X[ids == c] - X[ids == c].mean(axis=0)
        C += R.T @ R
    C /= len(X)
    w, V = np.linalg.eigh(C)
    inv_sqrt = V @ np.diag(w**-0.5) @ V.T
    rca = RCA().fit(X, ids)
    np.testing.assert_allclose(rca.covariance_, C, rtol=1e-12)
    np.testing.assert_allclose(rca.components_, inv_sqrt, rtol=1e-9)
    assert not rca.singular_
    # whitened within-cluster residuals have identity covariance
    Y = rca.transform(X)
    R = np.vstack([Y[ids == c] - Y[ids == c].mean(axis=0) for c in set(ids)])
    np.testing.assert_allclose(R.T @ R / len(R), np.eye(K), atol=1e-9)
    # planted: with many members the map undoes the within-cluster mixing A (up to a rotation)
    # (rows x = e A with e ~ N(0, I): the true within-cluster covariance is AᵀA, and C^(−1/2) Aᵀ is a rotation)
    big = np.vstack([rng.standard_normal(K) * 5 + rng.standard_normal((4000, K)) @ A for _ in range(3)])
    M = RCA().fit(big, np.repeat(["a", "b", "c"], 4000)).components_ @ A.T
    np.testing.assert_allclose(M @ M.T, np.eye(K), atol=0.08)


def test_rca_adds_the_ridge_when_the_covariance_is_singular():
    # two clusters of 2 stars in 3-D: residuals span 2 dimensions, C is singular
    X = np.array([[0, 0, 0], [2, 0, 0], [5, 5, 5], [5, 9, 5]], dtype=float)
    rca = RCA().fit(X, ["a", "a", "b", "b"])
    C = np.diag([0.5, 2.0, 0.0])
    ridge = 1e-6 * np.trace(C) / 3
    assert rca.singular_
    np.testing.assert_allclose(rca.components_, np.diag((np.diag(C) + ridge) ** -0.5), rtol=1e-9)


def _brute_rates(method, Z_pop, Z_clust, ids, meta, seed=0):
    """Explicit per-fold refits without the held-out cluster, every distance by a loop."""
    out = {}
    for c in sorted(set(ids)):
        members = ids == c
        if members.sum() < 2:
            continue
        train = ~members & np.isin(ids, [n for n in set(ids) if (ids == n).sum() >= 2])
        if method == "rsca":
            est = RSCA().fit(Z_pop, Z_clust[~members], ids[~members])
        elif method == "rca":
            est = RCA().fit(Z_clust[train], ids[train])
        elif method == "lda":
            est = LinearDiscriminantAnalysis().fit(Z_clust[train], ids[train])
        else:
            est = NeighborhoodComponentsAnalysis(random_state=seed).fit(Z_clust[train], ids[train])
        Ym, Yp = est.transform(Z_clust[members]), est.transform(Z_pop)
        n = len(Ym)
        med = float(np.median([math.dist(Ym[a], Ym[b]) for a in range(n) for b in range(a + 1, n)]))
        mv, ma = meta["clust_vhelio"][members], meta["clust_ak"][members]
        below = total = 0
        for a in range(n):
            ok = (np.abs(meta["pop_vhelio"] - mv[a]) < 5) & (np.abs(meta["pop_ak"] - ma[a]) < 0.05)
            d = np.linalg.norm(Yp[ok] - Ym[a], axis=1)
            below += int((d < med).sum())
            total += int(ok.sum())
        out[c] = below / total if total else float("nan")
    return out


@pytest.mark.parametrize("method", METHODS)
def test_every_fold_refits_the_method_without_the_held_out_cluster(method):
    """Fails if a held-out cluster leaks into its fold: the rates must equal explicit refits on the
    other clusters, and (the check has teeth) they differ from a map that saw every cluster."""
    Z_pop, Z_clust, ids, meta = planted(seed=21, K=4, n_pop=300, sizes=(3, 4, 5, 6, 7, 8), spread=0.8)
    res = doppelganger_rates(Z_pop, Z_clust, ids, **meta, method=method, keep_distances=False)
    got = res.per_cluster.set_index("cluster")["rate"]
    expected = _brute_rates(method, Z_pop, Z_clust, ids, meta)
    for c, r in expected.items():
        assert got[c] == pytest.approx(r, abs=1e-12), c
    seen = doppelganger_rates(Z_pop, Z_clust, ids, **meta, method=method, cv=False, keep_distances=False)
    assert not np.allclose(seen.per_cluster["rate"], got.to_numpy(), atol=1e-12)
    assert res.settings["method"] == method


def test_moving_the_held_out_cluster_does_not_move_its_own_map():
    """A direct leak detector: push one cluster far away; its members' fold map must not change, so
    the rates of the *other* clusters change (their maps saw it) but its own intra distances do not."""
    Z_pop, Z_clust, ids, meta = planted(seed=5, K=3, n_pop=200, sizes=(4, 5, 6, 7))
    moved = Z_clust.copy()
    c = ids == "NGC 101"
    moved[c] = moved[c] * np.array([1.0, 9.0, 0.2])  # a very different within-cluster shape
    for method in METHODS:
        a = doppelganger_rates(Z_pop, Z_clust, ids, method=method)
        b = doppelganger_rates(Z_pop, moved, ids, method=method)
        # the held-out map is the same, so the member distances are the same linear image
        M = linear_map(method, Z_clust[~c], ids[~c]) if method != "rsca" else None
        if M is not None:
            Y = moved[c] @ M.T
            d = [np.linalg.norm(Y[i] - Y[j]) for i in range(len(Y)) for j in range(i + 1, len(Y))]
            np.testing.assert_allclose(np.sort(b.intra_distances["NGC 101"]), np.sort(d), rtol=1e-9)
        others = a.per_cluster["cluster"] != "NGC 101"
        assert not np.allclose(a.per_cluster.loc[others, "median_intra"], b.per_cluster.loc[others, "median_intra"])


def test_methods_reject_rsca_only_options():
    Z_pop, Z_clust, ids, _ = planted(seed=1)
    with pytest.raises(ValueError, match="method must be one of"):
        doppelganger_rates(Z_pop, Z_clust, ids, method="lmnn")
    with pytest.raises(ValueError, match="method='rsca' only"):
        doppelganger_rates(Z_pop, Z_clust, ids, method="rca", top_n=2)
    with pytest.raises(ValueError, match="method='rsca' only"):
        doppelganger_rates(Z_pop, Z_clust, ids, method="lda", variant="raw")


def test_evaluate_command_takes_a_method(tmp_path, capsys):
    import json

    from helpers import small_dataset

    from rsca_core import cli

    ds = small_dataset(n_field=200, sizes=(3, 4, 5, 6), n_pixels=60, seed=3)
    path = ds.save(tmp_path / "b")
    assert cli.main(["evaluate", "--dataset", str(path), "--input", "subset", "--method", "lda", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    inp = ds.rate_inputs("subset")
    ref = doppelganger_rates(inp.z_pop, inp.z_clust, inp.cluster_ids, **inp.as_kwargs(), method="lda")
    assert out["global_rate"] == pytest.approx(ref.global_rate, abs=1e-12) and out["settings"]["method"] == "lda"
    assert cli.main(["evaluate", "--dataset", str(path), "--method", "rca", "--top-n", "2"]) == 1
    assert "apply to --method rsca only" in capsys.readouterr().err
