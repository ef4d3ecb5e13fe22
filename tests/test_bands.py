"""The calibration bands of issue 11 (rsca_core.bands): each band on hand-worked numbers, and the
checker on a small dataset against rates and correlations computed here independently."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest
from helpers import small_dataset

from rsca_core import RSCA, doppelganger_rates
from rsca_core import bands as B
from rsca_core import experiments as E


# ---------------------------------------------------------------------------- each band, by hand
@pytest.mark.parametrize(
    ("rate", "ok"), [(0.012, True), (0.030, True), (0.0199, True), (0.0119, False), (0.0301, False), (0.0036, False)]
)
def test_spectra_rate_band_is_inclusive(rate, ok):
    assert B.spectra_rate(rate).ok is ok


def test_top4_and_top1_bands_by_hand():
    # paper: top-4 0.0180, all 0.0199 -> 9.5 % apart; top-1 0.096 -> 4.8x
    r = B.top4_plateau(0.0180, 0.0199)
    assert r.value == pytest.approx(0.0019 / 0.0199) and r.ok
    assert B.top4_plateau(0.0128, 0.0036).ok is False  # the old default survey: top-4 3.6x all
    assert B.top4_plateau(0.0135, 0.0100).ok and not B.top4_plateau(0.0136, 0.0100).ok
    assert B.top4_plateau(0.0064, 0.0100).ok is False  # much better with 4 axes is no plateau either
    r = B.top1_contrast(0.096, 0.0199)
    assert r.value == pytest.approx(0.096 / 0.0199) and r.ok
    assert B.top1_contrast(0.0299, 0.01).ok is False and B.top1_contrast(0.03, 0.01).ok


def test_subset_band_needs_the_rate_in_band_and_spectra_below():
    assert B.subset_rate(0.023, 0.0199).ok
    assert B.subset_rate(0.023, 0.023).ok is False  # spectra must be below, not equal
    assert B.subset_rate(0.0149, 0.01).ok is False and B.subset_rate(0.0351, 0.01).ok is False
    assert B.subset_rate(0.02, float("nan")).ok is None


def test_k_sweep_bands_by_hand():
    ks, rates = [10, 20, 30, 40, 60], [0.030, 0.019, 0.017, 0.021, 0.0196]
    r = B.best_k(ks, rates)
    assert r.value == 30 and r.ok
    o = B.k60_overfit(ks, rates)
    assert o.value == pytest.approx(0.0196 / 0.017) and o.ok  # 15.3 % worse
    assert B.k60_overfit(ks, [0.030, 0.019, 0.017, 0.021, 0.0195]).ok is False  # 14.7 %
    assert B.best_k([10, 20, 60], [0.01, 0.02, 0.03]).ok is False  # best at 10
    # a sweep that stops at 30 cannot say where the rate turns up, nor whether K = 60 overfits
    assert B.best_k([10, 20, 30], [0.03, 0.02, 0.01]).ok is None
    assert B.k60_overfit([10, 20, 30], [0.03, 0.02, 0.01]).ok is None
    # NaN rates (a K the data cannot support) are ignored
    assert B.best_k([10, 20, 40, 60], [np.nan, 0.02, 0.03, 0.05]).value == 20


def test_feature_bands_by_hand():
    assert B.feature1_feh(-0.8).ok and not B.feature1_feh(0.79).ok
    assert B.feature2_alpha(-0.5).ok and not B.feature2_alpha(0.44).ok
    # the old default survey: features 2 and 3 follow VHELIO_AVG
    old = B.vhelio_features([0.01, -0.66, 0.58, 0.11, 0.05])
    assert old.value == pytest.approx(0.66) and old.ok is False
    good = B.vhelio_features([0.01, 0.04, 0.25, 0.07, -0.18, 0.1])
    assert good.value == pytest.approx(0.25) and good.ok and "feature 5" in good.note
    assert B.vhelio_features([0.01, 0.04, 0.25, 0.07, 0.14]).ok is False  # no later trend
    assert B.vhelio_features([0.1, 0.2, 0.3]).ok is None  # nothing after feature 3


# ---------------------------------------------------------------------------- the checker against direct computations
K = 6


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = small_dataset(n_field=300, sizes=(3, 4, 5, 6, 7, 8), n_pixels=160, seed=3)
    d.meta["uid"] = "test-bands-" + uuid.uuid4().hex
    d.cache_root = tmp_path_factory.mktemp("pca-cache")
    return d


def _inputs(ds, z):
    st = ds.stars
    isc = ds.is_cluster
    kw = dict(
        pop_vhelio=st["vhelio_avg"].to_numpy(float)[~isc],
        pop_ak=st["ak_targ"].to_numpy(float)[~isc],
        clust_vhelio=st["vhelio_avg"].to_numpy(float)[isc],
        clust_ak=st["ak_targ"].to_numpy(float)[isc],
    )
    return (z[~isc], z[isc], st["cluster"].to_numpy(object)[isc]), kw


def test_checker_matches_rates_and_correlations_computed_directly(ds):
    ks = (2, 4, K, 8)
    results = {
        "top_n": {"table": E.top_n_table(ds, k=K, ns=(1, 4), n_seeds=1, seed=0)},
        "k_sweep": {"table": E.k_sweep(ds, ks=ks, seed=0, cv=(True, False))},
        "features": {"table": E.feature_relations(ds, k=K, seed=0, n_correlated=K)["correlations"]},
    }
    got = {b.name: b for b in B.check_results(results, k=K)}

    # rates: leave-one-cluster-out on the cached compression, built here from the star table
    z = ds.compress(K, seed=0).scores.astype(float)
    args, kw = _inputs(ds, z)
    direct = doppelganger_rates(*args, **kw, cv=True, top_n=[1, 4, None], keep_distances=False)
    r_all, r4, r1 = direct[None].global_rate, direct[4].global_rate, direct[1].global_rate
    assert got["spectra rate, K = 30, all axes"].value == pytest.approx(r_all, rel=1e-12)
    assert got["top-4 axes vs all axes (relative difference)"].value == pytest.approx(abs(r4 - r_all) / r_all)
    assert got["top-1 axis / all axes"].value == pytest.approx(r1 / r_all)

    sweep = {}
    for k in ks:
        a, kw = _inputs(ds, ds.compress(k, seed=0).scores.astype(float))
        sweep[k] = doppelganger_rates(*a, **kw, cv=True, keep_distances=False).global_rate
    best = min(sweep, key=sweep.get)
    assert got["best K (CV sweep)"].value == best
    assert got["best K (CV sweep)"].ok is None  # a sweep that stops at K = 8 cannot place the best K in 20-40
    assert math.isnan(got["rate at K = 60 / best rate"].value)  # no K = 60 in this sweep

    # correlations: RSCA fitted on all clusters, Pearson r over the field stars, by hand
    isc = ds.is_cluster
    m = RSCA().fit(z[~isc], z[isc], ds.stars["cluster"].to_numpy(object)[isc])
    Y = m.transform(z[~isc])
    st = ds.stars[~isc]
    feh, mg = st["fe_h"].to_numpy(float), st["x_h_mg"].to_numpy(float)
    v = st["vhelio_avg"].to_numpy(float)

    def r(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    assert got["|r(feature 1, [Fe/H])|"].value == pytest.approx(abs(r(Y[:, 0], feh)), abs=1e-9)
    assert got["|r(feature 2, [Mg/Fe])|"].value == pytest.approx(abs(r(Y[:, 1], mg - feh)), abs=1e-9)
    rv = [abs(r(Y[:, i], v)) for i in range(K)]
    vb = got["|r(VHELIO_AVG)| of features 1–3; a later one"]
    assert vb.value == pytest.approx(max(rv[:3]), abs=1e-9)
    assert vb.ok is (max(rv[:3]) <= 0.3 and max(rv[3:]) >= 0.15)
    # the ablation was not run: its band says so instead of guessing
    assert got["abundance subset rate; spectra below it"].ok is None


def test_report_states_every_band_and_its_verdict(ds, tmp_path):
    from rsca_core import experiments_cli as X

    settings = X.settings_for(quick=True, seed=0, k=K)
    settings["k_sweep"]["ks"] = (2, K)
    results = X.run_experiments(ds, settings, ["k_sweep", "top_n", "ablation", "features"], progress=False)
    doc = X.write_outputs(ds, results, settings, tmp_path, figures=False)
    report = (tmp_path / "report.md").read_text()
    assert "## Calibration bands (issue 11)" in report
    expected = B.bands_table(B.check_results(results, k=K))
    assert [r["band_name"] for r in doc["bands"]] == expected["band_name"].tolist()
    for row in expected.itertuples():
        assert f"| {row.band_name} |" in report and f"| {row.band} | {row.ok} |" in report
    assert "not checked" in report  # this sweep stops at K = 6: the K = 60 band cannot be judged


def test_quick_reproduce_sweeps_separate_compressions_up_to_k60():
    from rsca_core import experiments_cli as X

    s = X.settings_for(quick=True, seed=0, k=30)
    assert s["k_sweep"] == {"ks": (10, 20, 30, 40, 60), "truncate_from": None}
    assert X.settings_for(quick=True, k=8)["k_sweep"]["ks"] == (8, 10, 20, 30, 40, 60)
    # one compression at K in every experiment: none of them cuts a smaller K from a larger fit
    for quick in (True, False):
        cut = {
            n: e["truncate_from"]
            for n, e in X.settings_for(quick=quick).items()
            if isinstance(e, dict) and "truncate_from" in e
        }
        assert len(cut) >= 3 and {n: v for n, v in cut.items() if v is not None} == {}
