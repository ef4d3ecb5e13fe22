"""The paper's experiments (rsca_core.experiments) and the `reproduce` command.

Every table is checked against an independent computation: direct calls of `doppelganger_rates` on
`Dataset.compress` scores, explicit enumeration of training subsets, or plain numpy.
"""

import itertools
import json
import math
import os
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest
from helpers import small_dataset

from rsca_core import RSCA, Dataset, doppelganger_rates
from rsca_core import experiments as E
from rsca_core.constants import PAPER_SUBSET, SPECIES, abundance_column
from rsca_core.experiments_cli import EXPERIMENTS

SIZES = (3, 4, 5, 6, 7, 8)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """A small planted-cluster dataset whose compressions are cached on disk (in a temp dir), so the
    experiments and the direct reference calls share them instead of refitting."""
    d = small_dataset(n_field=300, sizes=SIZES, n_pixels=160, seed=1)
    d.meta["uid"] = "test-experiments-" + uuid.uuid4().hex
    d.cache_root = tmp_path_factory.mktemp("pca-cache")
    return d


def _split(ds, z, rows=None):
    """Independent construction of doppelganger_rates arguments from per-star representation z."""
    keep = np.ones(ds.n_stars, bool) if rows is None else rows
    isc = ds.stars["cluster"].to_numpy(object) != ""
    f, c = keep & ~isc, keep & isc
    st = ds.stars
    return (z[f], z[c], st["cluster"].to_numpy(object)[c]), dict(
        pop_vhelio=st["vhelio_avg"].to_numpy(float)[f],
        pop_ak=st["ak_targ"].to_numpy(float)[f],
        clust_vhelio=st["vhelio_avg"].to_numpy(float)[c],
        clust_ak=st["ak_targ"].to_numpy(float)[c],
    )


def _direct(ds, z, rows=None, **kw):
    args, meta = _split(ds, np.asarray(z, float), rows)
    return doppelganger_rates(*args, **meta, keep_distances=False, **kw)


def _abund(ds, species):
    return ds.stars[[abundance_column(s) for s in species]].to_numpy(float)


# ---------------------------------------------------------------------------- Fig. 2
def test_k_sweep_table_matches_direct_calls(ds):
    t = E.k_sweep(ds, ks=(2, 4, 6), seed=0)
    assert len(t) == 6 and set(t["cv"]) == {True, False}
    assert set(t["label"]) == {"simulated"} and set(t["seed"]) == {0}
    for r in t.itertuples():
        ref = _direct(ds, ds.compress(r.k, seed=0).scores, cv=r.cv).global_rate
        assert r.global_rate == pytest.approx(ref, rel=1e-9, abs=1e-12)
        assert r.compression == f"exact K={r.k}" and r.n_stars_rated == sum(SIZES)


def test_k_sweep_truncated_uses_leading_components_of_one_fit(ds):
    t = E.k_sweep(ds, ks=(3, 6), seed=2, cv=True, truncate_from=6)
    full = ds.compress(6, seed=2).scores
    for r in t.itertuples():
        ref = _direct(ds, full[:, : r.k], cv=True).global_rate
        assert r.global_rate == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert list(t["compression"]) == ["truncated from K=6", "exact K=6"]


def test_k_sweep_reports_an_unsupported_k_instead_of_failing(ds):
    # 33 cluster stars in 6 clusters: leaving out the largest leaves 20 degrees of freedom < 24
    t = E.k_sweep(ds, ks=(24,), cv=True)
    assert np.isnan(t["global_rate"].iloc[0])
    assert "larger than the data allows" in t["notes"].iloc[0]


# ---------------------------------------------------------------------------- Table 1
def test_top_n_table_mean_and_std_over_seeds(ds):
    t = E.top_n_table(ds, k=5, ns=(1, 2, 3), n_seeds=3, seed=4)
    assert list(t["axes"]) == ["top 1", "top 2", "top 3", "all 5"]
    assert list(t["n_axes"]) == [1, 2, 3, 5]
    for r in t.itertuples():
        n = None if r.axes.startswith("all") else r.n_axes
        vals = [_direct(ds, ds.compress(5, seed=s).scores, top_n=n).global_rate for s in (4, 5, 6)]
        for s, v in zip((4, 5, 6), vals):
            assert getattr(r, f"rate_seed{s}") == pytest.approx(v, rel=1e-9, abs=1e-12)
        assert r.mean == pytest.approx(np.mean(vals), rel=1e-9, abs=1e-12)
        assert r.std == pytest.approx(np.std(vals, ddof=1), rel=1e-6, abs=1e-12)
    assert t["paper_mean"].isna().all()  # the paper's Table 1 is for K = 30 only
    assert set(t["seeds"]) == {"4..6"} and set(t["label"]) == {"simulated"}


# ---------------------------------------------------------------------------- Fig. 4
def test_ablation_grid_matches_direct_calls(ds):
    t = E.ablation(ds, k=5, seed=0)
    assert len(t) == 9
    assert set(zip(t["input"], t["variant"])) == set(
        itertools.product(("spectra", "abundances", "subset"), ("raw", "scaled", "transformed"))
    )
    z = ds.compress(5, seed=0).scores
    checks = {
        ("spectra", "transformed"): z,
        ("spectra", "raw"): z,
        ("abundances", "raw"): _abund(ds, SPECIES),
        ("subset", "scaled"): _abund(ds, PAPER_SUBSET),
        ("subset", "transformed"): _abund(ds, PAPER_SUBSET),
    }
    for (inp, var), rep in checks.items():
        row = t[(t["input"] == inp) & (t["variant"] == var)].iloc[0]
        assert row["mean"] == pytest.approx(_direct(ds, rep, variant=var).global_rate, rel=1e-9, abs=1e-12)
    paper = t.set_index(["input", "variant"])["paper"]
    assert paper[("subset", "transformed")] == 0.023 and np.isnan(paper[("spectra", "transformed")])  # K != 30


def test_ablation_leaves_out_stars_lacking_an_abundance(ds):
    stars = ds.stars.copy()
    stars.loc[7, abundance_column("Ce")] = -9999.99  # a field star lacks Ce (not in the subset)
    d2 = Dataset(stars, ds.spectra, ds.mask, ds.wavelength, meta={"kind": "simulated"})
    t = E.ablation(d2, k=4, variants=("transformed",))
    assert set(t["n_field"]) == {299}
    keep = np.ones(d2.n_stars, bool)
    keep[7] = False
    ref = _direct(d2, d2.compress(4, seed=0).scores, rows=keep).global_rate
    assert t.loc[t["input"] == "spectra", "mean"].iloc[0] == pytest.approx(ref, rel=1e-9, abs=1e-12)
    t2 = E.ablation(d2, k=4, variants=("transformed",), common_stars=False)
    assert dict(zip(t2["input"], t2["n_field"])) == {"spectra": 300, "abundances": 299, "subset": 300}


# ---------------------------------------------------------------------------- Fig. 5
def test_data_size_with_all_other_clusters_is_the_loco_rate(ds):
    t = E.data_size_curve(ds, ks=(4,), n_clusters=(5,), n_trials=3, seed=0)
    assert len(t) == 1
    ref = _direct(ds, ds.compress(4, seed=0).scores, cv=True).global_rate
    assert t["mean_rate"].iloc[0] == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert t["std_rate"].iloc[0] == pytest.approx(0, abs=1e-12)
    assert t["fraction_unfit"].iloc[0] == 0


def _brute_rate(z_pop, z_c, meta_pop, meta_c, z_train, ids_train):
    """rate of one held-out cluster with a map fitted on the training clusters (explicit loops)."""
    est = RSCA().fit(z_pop, z_train, ids_train)
    yp, yc = est.transform(z_pop), est.transform(z_c)
    n = len(yc)
    intra = [np.linalg.norm(yc[i] - yc[j]) for i in range(n) for j in range(i + 1, n)]
    med = np.median(intra)
    below = total = 0
    for i in range(n):
        ok = (np.abs(meta_pop[0] - meta_c[0][i]) < 5) & (np.abs(meta_pop[1] - meta_c[1][i]) < 0.05)
        d = np.linalg.norm(yp[ok] - yc[i], axis=1)
        below += int((d < med).sum())
        total += int(ok.sum())
    return below / total


def test_data_size_mean_matches_exact_expectation_over_subsets(ds):
    k, m, n_trials = 3, 2, 300
    z = ds.compress(k, seed=0).scores
    (zp, zc, ids), meta = _split(ds, z)
    names = sorted(set(ids))
    sizes = {c: int((ids == c).sum()) for c in names}
    exp_c, var_c = {}, {}
    for c in names:
        others = [o for o in names if o != c]
        rates = []
        for sub in itertools.combinations(others, m):
            tr = np.isin(ids, sub)
            rates.append(
                _brute_rate(
                    zp,
                    zc[ids == c],
                    (meta["pop_vhelio"], meta["pop_ak"]),
                    (meta["clust_vhelio"][ids == c], meta["clust_ak"][ids == c]),
                    zc[tr],
                    ids[tr],
                )
            )
        exp_c[c], var_c[c] = np.mean(rates), np.var(rates)
    w = np.array([sizes[c] for c in names], float) / sum(sizes.values())
    expected = float(np.dot(w, [exp_c[c] for c in names]))
    sd_trial = math.sqrt(float(np.dot(w**2, [var_c[c] for c in names])))
    t, trials = E.data_size_curve(ds, ks=(k,), n_clusters=(m,), n_trials=n_trials, seed=5, return_trials=True)
    assert len(trials) == n_trials and trials["global_rate"].notna().all()
    assert abs(t["mean_rate"].iloc[0] - expected) <= 4.5 * sd_trial / math.sqrt(n_trials) + 1e-12
    assert t["std_rate"].iloc[0] == pytest.approx(sd_trial, rel=0.25)
    # same seed, same numbers
    again = E.data_size_curve(ds, ks=(k,), n_clusters=(m,), n_trials=n_trials, seed=5)
    assert again["mean_rate"].iloc[0] == t["mean_rate"].iloc[0]


def test_data_size_rejects_more_training_clusters_than_exist(ds):
    with pytest.raises(ValueError, match="too many"):
        E.data_size_curve(ds, ks=(3,), n_clusters=(6,), n_trials=2)


def test_data_size_counts_unfittable_draws(ds):
    # K = 12 needs 12 degrees of freedom; two clusters of 3 and 4 stars give 5
    t = E.data_size_curve(ds, ks=(12,), n_clusters=(2, 5), n_trials=5, seed=1)
    row = t.set_index("n_train_clusters")
    assert row.loc[2, "fraction_unfit"] > 0 and row.loc[5, "fraction_unfit"] == 0


# ---------------------------------------------------------------------------- Fig. 3
def test_feature_relations_against_a_direct_fit(ds):
    res = E.feature_relations(ds, k=6, n_features=2, n_correlated=5)
    st, corr, s = res["stars"], res["correlations"], res["settings"]
    z = ds.compress(6, seed=0).scores
    isc = ds.is_cluster
    y = RSCA().fit(z[~isc], z[isc], ds.stars["cluster"].to_numpy(object)[isc]).transform(z)
    feh = ds.stars["fe_h"].to_numpy(float)
    vh = ds.stars["vhelio_avg"].to_numpy(float)
    for i in range(2):
        sign = np.sign(np.corrcoef(y[~isc, i], feh[~isc])[0, 1])
        np.testing.assert_allclose(st[f"feature_{i + 1}"], sign * y[:, i], rtol=1e-9, atol=1e-9)
        assert np.corrcoef(st.loc[~isc, f"feature_{i + 1}"], feh[~isc])[0, 1] > 0
    # the VHELIO feature: the most VHELIO-correlated among features 3..5
    r = [abs(np.corrcoef(y[~isc, i], vh[~isc])[0, 1]) for i in range(2, 5)]
    assert s["vhelio_feature"] == 3 + int(np.argmax(r))
    assert len(st) == ds.n_stars and st["is_cluster"].sum() == sum(SIZES)
    assert len(corr) == 5
    teff = ds.stars["teff"].to_numpy(float)[~isc]
    f2 = st.loc[~isc, "feature_2"].to_numpy()
    assert corr.loc[1, "teff"] == pytest.approx(np.corrcoef(f2, teff)[0, 1], abs=1e-9)
    assert ((corr["r2_all_labels"] >= -1e-9) & (corr["r2_all_labels"] <= 1 + 1e-9)).all()
    assert corr.loc[0, "r2_all_labels"] >= corr.loc[0, "fe_h"] ** 2 - 1e-9  # more regressors explain more


# ---------------------------------------------------------------------------- Fig. 9/10
def test_distance_histograms_match_per_cluster_rates(ds):
    res = E.distance_histograms(ds, k=5, inputs=("spectra", "subset"), bins=12)
    summ, h = res["summary"], res["histograms"]
    direct = {"spectra": _direct(ds, ds.compress(5, seed=0).scores), "subset": _direct(ds, _abund(ds, PAPER_SUBSET))}
    for inp, ref in direct.items():
        got = summ[summ["input"] == inp].set_index("cluster")
        exp = ref.per_cluster.set_index("cluster")
        np.testing.assert_allclose(got["rate"], exp.loc[got.index, "rate"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got["median_intra"], exp.loc[got.index, "median_intra"], rtol=1e-9)
        assert got["global_rate"].iloc[0] == pytest.approx(ref.global_rate, rel=1e-12)
    counts = h.groupby(["input", "cluster"]).agg(
        intra=("intra_count", "sum"), inter=("inter_count", "sum"), nbins=("bin", "size")
    )
    for (inp, c), r in counts.iterrows():
        n = SIZES[int(c[2:])]
        assert r.intra == n * (n - 1) // 2 and r.nbins == 12
        n_inter = int(summ[(summ["input"] == inp) & (summ["cluster"] == c)]["n_inter_pairs"].iloc[0])
        assert 0.98 * n_inter - 1 <= r.inter <= n_inter
        raw = res["distances"][inp][c]
        assert len(raw["intra"]) == n * (n - 1) // 2 and len(raw["inter"]) == n_inter


# ---------------------------------------------------------------------------- beyond the paper (issue 15)
def test_method_comparison_matches_direct_calls(ds):
    res = E.method_comparison(ds, k=5, seed=2, inputs=("spectra", "subset"))
    t = res["table"]
    assert len(t) == 8 and set(t["method"]) == {"rsca", "rca", "lda", "nca"}
    reps = {"spectra": ds.compress(5, seed=2).scores, "subset": _abund(ds, PAPER_SUBSET)}
    for r in t.itertuples():
        ref = _direct(ds, reps[r.input], method=r.method, random_state=2)
        assert r.global_rate == pytest.approx(ref.global_rate, rel=1e-9, abs=1e-12), (r.input, r.method)
        got = res["per_cluster"].query("input == @r.input and method == @r.method").set_index("cluster")["rate"]
        np.testing.assert_allclose(got, ref.per_cluster.set_index("cluster").loc[got.index, "rate"], atol=1e-12)
    assert set(t["label"]) == {"simulated"} and t.loc[t["input"] == "subset", "k"].isna().all()


def _with_errors(ds, sigma):
    d = Dataset(
        ds.stars, ds.spectra, ds.mask, ds.wavelength, errors=sigma.astype(np.float32), meta={"kind": "simulated"}
    )
    return d


def test_flux_error_weights_compares_plain_and_ivar_compressions(ds):
    from rsca_core import MaskedPCA

    rng = np.random.default_rng(4)
    sigma = np.where(rng.random(ds.spectra.shape) < 0.3, 0.05, 0.003)
    d = _with_errors(ds, sigma)
    res = E.flux_error_weights(d, ks=(4,), seed=1)
    t = res["table"].set_index(["k", "compression_weights"])["global_rate"]
    for k in (4,):
        plain = _direct(d, d.compress(k, seed=1).scores, cv=True).global_rate
        z = MaskedPCA(k, random_state=1, weights="ivar").fit_transform(d.spectra, d.mask, errors=d.errors)
        assert t[(k, "none")] == pytest.approx(plain, rel=1e-9, abs=1e-12)
        assert t[(k, "ivar")] == pytest.approx(_direct(d, z, cv=True).global_rate, rel=1e-6, abs=1e-9)
    verdict = "lowers" if t[(4, "ivar")] < t[(4, "none")] else "does not lower"
    assert res["answer"].startswith(
        f"Weighting each pixel by its inverse variance {verdict} the doppelganger rate at K = 4"
    )
    with pytest.raises(ValueError, match="no flux errors"):
        E.flux_error_weights(ds, ks=(3,))


# ---------------------------------------------------------------------------- labels and input checks
def test_outputs_carry_the_dataset_kind():
    real = small_dataset(n_field=200, sizes=SIZES, n_pixels=80, seed=2, kind="real")
    t = E.k_sweep(real, ks=(3,), cv=True, seed=7)
    assert list(t["label"]) == ["real"] and list(t["seed"]) == [7]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda d: E.k_sweep(d, ks=(0,)), "positive integers"),
        (lambda d: E.ablation(d, k=3, subset=("Fe", "Xx")), "unknown species"),
        (lambda d: E.ablation(d, k=3, subset=()), "empty"),
        (lambda d: E.top_n_table(d, k=3, ns=(1, 5)), "exceeds K"),
        (lambda d: E.k_sweep("not a dataset"), "expected a Dataset"),
    ],
)
def test_bad_arguments_raise_clear_errors(ds, call, match):
    with pytest.raises(ValueError, match=match):
        call(ds)


# ---------------------------------------------------------------------------- reproduce CLI
def test_reproduce_quick_writes_every_figure_without_plotly_or_a_browser(tmp_path):
    """A server with no Chrome (and no plotly/kaleido at all) still gets every figure, as PNG and PDF."""
    simulate = pytest.importorskip("rsca_core.simulate")
    bundle = simulate.simulate(tmp_path / "sim", n_field=150, seed=1, progress=False)
    out = tmp_path / "out"
    # every experiment but the error-weighted compression (slow here; its files are checked below on a smaller survey)
    names = [n for n in EXPERIMENTS if n != "weights"]
    argv = ["reproduce", "--dataset", str(bundle), "--out", str(out), "--quick", "--k", "8", "--seed", "3", "--quiet"]
    argv += ["--ks", "4,8"]  # the quick sweep's K = 10 ... 60 compressions are slow here (test_bands checks them)
    argv += ["--experiments", ",".join(names)]
    code = (
        "import sys; sys.modules['plotly'] = sys.modules['kaleido'] = None; "  # importing either now fails
        f"from rsca_core import cli; rc = cli.main({argv!r}); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('plotly', 'kaleido') and sys.modules[m] is not None]; "
        "sys.exit(rc or (3 if bad else 0))"
    )
    env = {k: v for k, v in os.environ.items() if k != "BROWSER_PATH"} | {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["label"] == "simulated" and doc["seed"] == 3 and doc["quick"] is True
    assert doc["figure_warning"] is None
    stems = (*names, "features_correlations")
    for name in names:
        csv = pd.read_csv(out / f"{name}.csv", keep_default_na=False)
        assert len(csv) and set(csv["label"]) == {"simulated"} and set(csv["seed"].astype(int)) == {3}
    for stem in stems:
        png, pdf = (out / f"{stem}.png").read_bytes(), (out / f"{stem}.pdf").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 2_000_000
        assert pdf[:5] == b"%PDF-" and pdf.rstrip().endswith(b"%%EOF")
    assert {f for fs in doc["files"].values() for f in fs} >= {f"{s}.{x}" for s in stems for x in ("png", "pdf")}
    report = (out / "report.md").read_text()
    assert "SIMULATED" in report and "seed **3**" in report and "0.0199 ± 0.0015" in report
    assert "![k_sweep](k_sweep.png)" in report
    # the K = 8 rate of the sweep is the direct leave-one-cluster-out rate on the cached compression
    ds = Dataset.load(bundle)
    ref = _direct(ds, ds.compress(8, seed=3).scores, cv=True).global_rate
    row = [r for r in doc["experiments"]["k_sweep"]["table"] if r["k"] == 8 and r["cv"]][0]
    assert row["global_rate"] == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_figure_failure_still_writes_tables_and_report(ds, tmp_path, monkeypatch):
    from rsca_core import experiments_cli as X

    def broken(*a, **k):
        raise RuntimeError("disk says no")

    monkeypatch.setattr(X, "save_figure", broken)
    settings = X.settings_for(quick=True, seed=0, k=4)
    settings["k_sweep"]["ks"] = (2, 4)  # not the quick K = 10 ... 60: this test is about a failing figure
    results = X.run_experiments(ds, settings, ["k_sweep"], progress=False)
    doc = X.write_outputs(ds, results, settings, tmp_path)
    assert "disk says no" in doc["figure_warning"]
    assert (tmp_path / "k_sweep.csv").exists() and not (tmp_path / "k_sweep.png").exists()
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*"))
    assert "disk says no" in (tmp_path / "report.md").read_text()


def test_reproduce_methods_and_weights_write_tables_figures_and_the_answer(ds, tmp_path):
    from rsca_core import experiments_cli as X

    rng = np.random.default_rng(0)
    d = _with_errors(ds, np.where(rng.random(ds.spectra.shape) < 0.3, 0.05, 0.003))
    settings = X.settings_for(quick=True, seed=0, k=4)
    results = X.run_experiments(d, settings, ["methods", "weights"], progress=False)
    doc = X.write_outputs(d, results, settings, tmp_path)
    assert doc["figure_warning"] is None
    for stem in ("methods", "weights"):
        assert (tmp_path / f"{stem}.csv").exists()
        assert (tmp_path / f"{stem}.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / f"{stem}.pdf").exists()
    report = (tmp_path / "report.md").read_text()
    methods = results["methods"]["table"]
    rca = methods[(methods["method"] == "rca") & (methods["input"] == "spectra")]["global_rate"].iloc[0]
    assert f"| RCA | {rca:.4f} |" in report
    assert results["weights"]["answer"] in report and "capped at 40,000" in report
    # a bundle without errors skips the weights experiment instead of failing the run
    plain = X.run_experiments(ds, settings, ["weights"], progress=False)
    assert "weights" not in plain
