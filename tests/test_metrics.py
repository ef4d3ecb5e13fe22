"""doppelganger_rates against a brute-force, loop-based implementation of SPEC §2."""

import math
import warnings

import numpy as np
import pytest

from rsca_core import RSCA, doppelganger_rates
from rsca_core.metrics import UndefinedRateWarning
from tests.helpers import planted


def brute_force(Z_pop, Z_clust, ids, meta, cv=True, top_n=None, variant="transformed"):
    """Explicit per-fold refits, every pair by a loop."""
    rates, sizes, medians, npairs = {}, {}, {}, {}
    for c in sorted(set(ids)):
        members = [i for i in range(len(ids)) if ids[i] == c]
        if len(members) < 2:
            continue
        train = [i for i in range(len(ids)) if (ids[i] != c or not cv)]
        est = RSCA(variant=variant, top_n=top_n).fit(Z_pop, Z_clust[train], ids[train])
        Ym = est.transform(Z_clust[members])
        Yp = est.transform(Z_pop)
        intra = [math.dist(Ym[a], Ym[b]) for a in range(len(members)) for b in range(a + 1, len(members))]
        med = float(np.median(intra))
        below = total = 0
        for a, i in enumerate(members):
            for f in range(len(Z_pop)):
                if meta is not None and not (
                    abs(meta["pop_vhelio"][f] - meta["clust_vhelio"][i]) < 5.0
                    and abs(meta["pop_ak"][f] - meta["clust_ak"][i]) < 0.05
                ):
                    continue
                total += 1
                below += math.dist(Ym[a], Yp[f]) < med
        rates[c] = below / total if total else float("nan")
        sizes[c], medians[c], npairs[c] = len(members), med, total
    ok = [c for c in rates if not math.isnan(rates[c])]
    glob = sum(rates[c] * sizes[c] for c in ok) / sum(sizes[c] for c in ok)
    return glob, rates, medians, npairs


def check(res, expected):
    glob, rates, medians, npairs = expected
    df = res.per_cluster.set_index("cluster")
    for c in rates:
        if math.isnan(rates[c]):
            assert math.isnan(df.loc[c, "rate"])
        else:
            assert df.loc[c, "rate"] == pytest.approx(rates[c], abs=1e-12)
        assert df.loc[c, "median_intra"] == pytest.approx(medians[c], rel=1e-9)
        assert df.loc[c, "n_inter_pairs"] == npairs[c]
    assert res.global_rate == pytest.approx(glob, abs=1e-12)


@pytest.mark.parametrize("cv", [True, False])
def test_rates_match_brute_force_with_pair_filter(cv):
    Z_pop, Z_clust, ids, meta = planted(seed=11, spread=0.9)
    res = doppelganger_rates(Z_pop, Z_clust, ids, **meta, cv=cv)
    expected = brute_force(Z_pop, Z_clust, ids, meta, cv=cv)
    assert 0 < expected[0] < 0.5, "the planted data should give a non-trivial rate"
    check(res, expected)
    # distance samples for the Fig. 9 histograms are the filtered pairs
    c = "NGC 100"
    assert len(res.intra_distances[c]) == 1  # a cluster of 2 has one pair
    assert len(res.inter_distances[c]) == expected[3][c]


def test_rates_without_filter_and_top_n_list():
    Z_pop, Z_clust, ids, _ = planted(seed=4, n_pop=300, spread=1.0, with_meta=False)
    multi = doppelganger_rates(Z_pop, Z_clust, ids, top_n=[1, 3, None])
    for n in (1, 3, None):
        check(multi[n], brute_force(Z_pop, Z_clust, ids, None, top_n=n))
    single = doppelganger_rates(Z_pop, Z_clust, ids, top_n=3)
    assert single.global_rate == multi[3].global_rate


@pytest.mark.parametrize("variant", ["raw", "scaled"])
def test_other_variants_match_brute_force(variant):
    Z_pop, Z_clust, ids, meta = planted(seed=8, spread=1.0)
    res = doppelganger_rates(Z_pop, Z_clust, ids, **meta, variant=variant)
    check(res, brute_force(Z_pop, Z_clust, ids, meta, variant=variant))


def test_ties_at_the_median_are_not_counted():
    # raw variant, integer coordinates: distances are exact and tie with the intra median
    Z_clust = np.array([[0, 0], [3, 4], [10, 0], [10, 2], [20, 0], [20, 6]], dtype=float)
    ids = np.array(["A", "A", "B", "B", "C", "C"], dtype=object)
    # intra median of A = 5; field stars at distance exactly 5 of a member, one closer, one farther
    Z_pop = np.array([[5, 0], [0, 4.9], [6, 8], [0, 5.0000001], [50, 50]], dtype=float)
    res = doppelganger_rates(Z_pop, Z_clust, ids, variant="raw")
    A = res.per_cluster.set_index("cluster").loc["A"]
    assert A.median_intra == 5.0
    # 10 pairs; d < 5 for (0,0)-(0,4.9), (3,4)-(5,0), (3,4)-(0,4.9), (3,4)-(0,5.0000001);
    # (0,0)-(5,0) = 5 and (3,4)-(6,8) = 5 are ties and do not count
    assert A.rate == pytest.approx(4 / 10)
    check(res, brute_force(Z_pop, Z_clust, ids, None, variant="raw"))


def test_cluster_with_no_allowed_pair_is_undefined_and_left_out():
    Z_pop, Z_clust, ids, meta = planted(seed=12, spread=0.9)
    meta = {k: v.copy() for k, v in meta.items()}
    meta["clust_vhelio"][ids == "NGC 103"] = 1e4  # no field star within 5 km/s
    with pytest.warns(UndefinedRateWarning, match="NGC 103"):
        res = doppelganger_rates(Z_pop, Z_clust, ids, **meta)
    df = res.per_cluster.set_index("cluster")
    assert np.isnan(df.loc["NGC 103", "rate"]) and df.loc["NGC 103", "n_inter_pairs"] == 0
    expected = brute_force(Z_pop, Z_clust, ids, meta)
    check(res, expected)
    ok = df.rate.notna()
    assert res.global_rate == pytest.approx(np.average(df.rate[ok], weights=df.n_stars[ok]))


def test_input_errors():
    Z_pop, Z_clust, ids, meta = planted()
    with pytest.raises(ValueError, match="all four"):
        doppelganger_rates(Z_pop, Z_clust, ids, pop_vhelio=meta["pop_vhelio"])
    with pytest.raises(ValueError, match="clusters with 2 or more"):
        doppelganger_rates(Z_pop, Z_clust[:5], ids[:5])
    bad = meta | {"pop_ak": meta["pop_ak"][:-1]}
    with pytest.raises(ValueError, match="pop_ak"):
        doppelganger_rates(Z_pop, Z_clust, ids, **bad)
    with pytest.raises(ValueError, match="top_n"):
        doppelganger_rates(Z_pop, Z_clust, ids, top_n=99)


def test_json_shape():
    Z_pop, Z_clust, ids, meta = planted(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = doppelganger_rates(Z_pop, Z_clust, ids, **meta).to_dict()
    assert set(d) >= {"global_rate", "clusters"}
    assert [c["name"] for c in d["clusters"]] == sorted(set(ids))
    assert sum(c["n_stars"] for c in d["clusters"]) == len(ids)


def test_histogram_mode_counts_every_pair_of_the_brute_force_and_keeps_no_distance():
    """keep_distances="histogram" (bounded memory on big surveys): each cluster's histogram counts the
    intra and the filtered inter distances of the fold's own map, computed pair by pair."""
    from rsca_core.metrics import histogram_edges

    Z_pop, Z_clust, ids, meta = planted(seed=11, spread=0.9)
    res = doppelganger_rates(Z_pop, Z_clust, ids, **meta, keep_distances="histogram")
    assert res.intra_distances == {} and res.inter_distances == {}
    check(res, brute_force(Z_pop, Z_clust, ids, meta))
    for c in sorted(set(ids)):
        members = np.flatnonzero(ids == c)
        if len(members) < 2:
            continue
        est = RSCA().fit(Z_pop, Z_clust[ids != c], ids[ids != c])  # the fold's map, refitted
        Ym, Yp = est.transform(Z_clust[members]), est.transform(Z_pop)
        intra = [math.dist(Ym[a], Ym[b]) for a in range(len(members)) for b in range(a + 1, len(members))]
        inter = [
            math.dist(Ym[a], Yp[f])
            for a, i in enumerate(members)
            for f in range(len(Z_pop))
            if abs(meta["pop_vhelio"][f] - meta["clust_vhelio"][i]) < 5.0
            and abs(meta["pop_ak"][f] - meta["clust_ak"][i]) < 0.05
        ]
        h = res.histograms[c]
        np.testing.assert_allclose(h["edges"], histogram_edges(intra, inter), rtol=1e-9)
        top = h["edges"][-1]
        # the counts, bin by bin, from the distances computed pair by pair
        for dists, counts in ((intra, h["intra"]), (inter, h["inter"])):
            assert counts.sum() == len(dists)
            bins = np.minimum((np.minimum(dists, top) / top * (len(h["edges"]) - 1)).astype(int), len(counts) - 1)
            np.testing.assert_array_equal(counts, np.bincount(bins, minlength=len(counts)))
    with pytest.raises(ValueError, match="keep_distances"):
        doppelganger_rates(Z_pop, Z_clust, ids, keep_distances="all")


def test_rate_spread_is_the_bootstrap_sd_of_the_global_rate_over_clusters():
    """Against the exact bootstrap distribution (all 3³ equally likely resamples of three clusters,
    enumerated) and, with many clusters, the delta-method closed form sqrt(Σ n²(r − R)²) / Σ n."""
    import itertools

    from rsca_core.metrics import global_rate, rate_spread

    rates, sizes = np.array([0.0, 0.05, 0.2]), np.array([10, 4, 3])
    exact = [global_rate(rates[list(i)], sizes[list(i)]) for i in itertools.product(range(3), repeat=3)]
    sd = rate_spread(rates, sizes, n_boot=200_000)
    assert sd == pytest.approx(np.std(exact), rel=0.01)
    # undefined rates are left out first; fewer than two defined: nan
    assert rate_spread(np.r_[rates, np.nan], np.r_[sizes, 7], n_boot=200_000) == pytest.approx(sd, rel=0.01)
    assert np.isnan(rate_spread([0.1, np.nan], [3, 4]))
    rng = np.random.default_rng(3)
    r, n = rng.uniform(0, 0.1, 60), rng.integers(3, 20, 60)
    closed = np.sqrt(np.sum(n**2 * (r - global_rate(r, n)) ** 2)) / n.sum()
    assert rate_spread(r, n, n_boot=20_000) == pytest.approx(closed, rel=0.05)
