"""Systematics diagnostics (paper App. A–C): they must find what was planted, and only then."""

import numpy as np
import pandas as pd
import pytest

from rsca_core import Dataset
from rsca_core.constants import ABUNDANCE_COLUMNS, apogee_wavelength
from rsca_core.diagnostics import (
    extinction_residuals,
    find_bands,
    rv_residuals,
    visit_keys,
    visit_overlap,
    visit_similarity,
)

WL = apogee_wavelength()
DIB = 15273.0


def _gauss(center, sigma):
    return np.exp(-0.5 * ((WL - center) / sigma) ** 2)


def _base(n, rng, n_lat=3):
    """Stellar-like spectra: a few latent factors driving random absorption lines, noise, bad pixels."""
    basis = np.zeros((n_lat, len(WL)))
    for k in range(n_lat):
        for c in rng.uniform(WL[0], WL[-1], 30):
            basis[k] -= 0.02 * _gauss(c, 1.5)
    spec = 1 + rng.standard_normal((n, n_lat)) @ basis + 0.004 * rng.standard_normal((n, len(WL)))
    mask = rng.random((n, len(WL))) < 0.01
    return spec, mask


def _stars(n, **cols):
    st = pd.DataFrame(
        {
            "apogee_id": [f"2M{i:08d}" for i in range(n)],
            "cluster": "",
            "teff": 4500.0,
            "logg": 2.0,
            "fe_h": 0.0,
            "ak_targ": 0.1,
            "vhelio_avg": 20.0,
            "snr": 150.0,
            "visits": "",
        }
    )
    for c in ABUNDANCE_COLUMNS:
        st[c] = 0.0
    for k, v in cols.items():
        st[k] = v
    return st


def _planted_dib(on, n=160, seed=0):
    rng = np.random.default_rng(seed)
    spec, mask = _base(n, rng)
    ak = np.where(np.arange(n) % 2 == 0, rng.uniform(0, 0.004, n), rng.uniform(0.6, 1.0, n))
    if on:
        spec -= 0.05 * ak[:, None] * _gauss(DIB, 2.0)
    return Dataset(_stars(n, ak_targ=ak), spec.astype(np.float32), mask, WL)


@pytest.mark.parametrize("on", [True, False])
def test_extinction_residual_finds_planted_band(on):
    ds = _planted_dib(on)
    res = extinction_residuals(ds, n_components=4)
    assert res.n_low == 80 and res.n_high == 80
    near = np.abs(WL - DIB) < 3
    if on:
        # mean planted depth at the centre = 0.05 * mean(AK_TARG of the high stars)
        expect = -0.05 * ds.stars["ak_targ"][ds.stars["ak_targ"] > 0.5].mean()
        i = int(np.nanargmax(np.abs(res.residual)))
        assert abs(WL[i] - DIB) < 1.0
        assert res.residual[i] == pytest.approx(expect, rel=0.1)
        assert len(res.bands) == 1
        a, b = res.suggested_ranges[0]
        assert WL[a] < DIB - 2 and WL[b - 1] > DIB + 2 and (b - a) < 60
    else:
        assert len(res.bands) == 0
        assert np.nanmax(np.abs(res.residual[near])) < 0.003
    tab = res.to_frame()
    assert len(tab) == len(WL) and set(tab["data"]) == {"simulated"}


def test_rv_residual_finds_planted_systematic():
    rng = np.random.default_rng(3)
    n = 160
    spec, mask = _base(n, rng)
    v = np.where(np.arange(n) % 2 == 0, rng.uniform(-4.9, 4.9, n), rng.uniform(85, 150, n))
    spec += 0.0003 * v[:, None] * _gauss(16200.0, 3.0)  # residual that grows with VHELIO_AVG
    ds = Dataset(_stars(n, vhelio_avg=v), spec.astype(np.float32), mask, WL)
    res = rv_residuals(ds, n_components=4)
    assert res.n_low == 80 and res.n_high == 80
    i = int(np.nanargmax(np.abs(res.residual)))
    assert abs(WL[i] - 16200.0) < 1.5 and res.residual[i] > 0
    assert [abs(b.peak_wavelength - 16200) < 1.5 for b in res.bands.itertuples()] == [True]
    with pytest.raises(ValueError, match="reference stars"):
        rv_residuals(ds, n_components=4, low=0.01)


def test_find_bands_hand_worked():
    v = np.zeros(40)
    v[5:8] = -1.0  # run of 3
    v[9] = -1.0  # gap of one pixel: merged with the run above (merge_gap=3)
    v[20] = 1.0  # single pixel: dropped (min_width=2)
    v[30:33] = 0.5  # below threshold 0.6
    bands, thr, base = find_bands(v, np.arange(40) * 10.0, threshold=0.6, baseline=0.0)
    assert bands[["start", "stop"]].to_numpy().tolist() == [[5, 10]]
    assert bands["peak_value"].tolist() == [-1.0] and bands["wave_stop"].tolist() == [90.0]
    bands, _, _ = find_bands(v, np.arange(40) * 10.0, threshold=0.6, baseline=0.0, merge_gap=0, min_width=1, pad=1)
    assert bands[["start", "stop"]].to_numpy().tolist() == [[4, 9], [8, 11], [19, 22]]
    # default threshold: 5 normal-consistent MADs about the median
    rng = np.random.default_rng(0)
    w = rng.standard_normal(2000)
    _, thr, base = find_bands(w, np.arange(2000.0))
    assert thr == pytest.approx(5 * 1.4826 * np.median(np.abs(w - np.median(w))))


def test_visit_keys_and_overlap():
    a = visit_keys("apo25m-5046-55938-246,apo25m-5046-55940-246")
    b = visit_keys("apo25m-5047-55938-100, apo25m-5047-55940-100")
    c = visit_keys("apo25m-5046-55938-246,apo25m-6000-56100-010")
    assert a == {"55938", "55940"} and visit_overlap(a, b) == 1.0
    assert visit_overlap(a, c) == pytest.approx(0.5)
    assert visit_overlap(a, visit_keys("apo25m-1-57000-1")) == 0.0
    assert np.isnan(visit_overlap(a, visit_keys("")))
    assert visit_keys("plateA,plateB", key="name") == {"plateA", "plateB"}
    assert visit_keys("apo25m-5046-55938-246", key="name") == {"apo25m-5046-55938-246"}


def _planted_visits(plate_amp, seed=5, sizes=(6, 6, 6, 6, 6, 6), n_field=60):
    """Clusters observed on two plates each (3 dates per plate); plates add a shared systematic pattern."""
    rng = np.random.default_rng(seed)
    n = n_field + sum(sizes)
    spec, mask = _base(n, rng)
    cluster = np.array([""] * n_field + sum(([f"OC{j}"] * s for j, s in enumerate(sizes)), []), dtype=object)
    visits = np.array([f"apo25m-{9000 + i}-{57000 + i}-001" for i in range(n)], dtype=object)
    start = n_field
    plate_of = {}
    for j, s in enumerate(sizes):
        centre = spec[start].copy()
        for m in range(s):
            plate = 2 * j + (m % 2)
            dates = [56000 + 10 * plate + d for d in range(3)]
            visits[start + m] = ",".join(f"apo25m-{7000 + plate}-{dt}-{m:03d}" for dt in dates)
            spec[start + m] = centre + 0.004 * rng.standard_normal(len(WL))
            plate_of[start + m] = plate
        start += s
    patterns = {p: rng.standard_normal(len(WL)) for p in set(plate_of.values())}
    for i, p in plate_of.items():
        spec[i] += plate_amp * patterns[p]
    st = _stars(n, cluster=cluster, visits=visits)
    return Dataset(st, spec.astype(np.float32), mask, WL)


@pytest.mark.parametrize("amp", [0.004, 0.0])
def test_visit_similarity_separates_pairs_only_with_plate_systematics(amp):
    ds = _planted_visits(amp)
    res = visit_similarity(ds, representation="spectra")
    s = res.summary
    # each cluster of 6 on two plates: 2 × C(3,2) = 6 together pairs, 9 separate pairs
    assert (s["n_together"], s["n_separate"], s["n_partial"]) == (36, 54, 0)
    # brute-force check of one distance: RMS over commonly observed pixels × sqrt(P)
    r = res.pairs.iloc[0]
    ia = ds.stars.index[ds.stars["apogee_id"] == r["star_a"]][0]
    ib = ds.stars.index[ds.stars["apogee_id"] == r["star_b"]][0]
    ok = ~(ds.mask[ia] | ds.mask[ib])
    d = ds.spectra[ia, ok].astype(float) - ds.spectra[ib, ok]
    assert r["distance"] == pytest.approx(np.sqrt(np.mean(d**2) * len(WL)), rel=1e-6)
    if amp:
        assert s["median_ratio"] < 0.8 and s["mannwhitney_p"] < 1e-6
    else:
        assert 0.95 < s["median_ratio"] < 1.05 and s["mannwhitney_p"] > 0.01
    assert set(res.to_frame()["data"]) == {"simulated"}


def test_visit_similarity_partial_and_unknown_pairs():
    ds = _planted_visits(0.0, sizes=(3, 2), n_field=40)
    st = ds.stars.copy()
    cl = st.index[st["cluster"] == "OC0"]
    st.loc[cl, "visits"] = ["apo25m-1-55000-1,apo25m-1-55001-1", "apo25m-2-55000-2", "apo25m-3-56000-3"]
    st.loc[st.index[st["cluster"] == "OC1"][0], "visits"] = ""
    ds2 = Dataset(st, ds.spectra, ds.mask, WL)
    res = visit_similarity(ds2, representation=np.arange(ds2.n_stars, dtype=float)[:, None])
    cats = dict(zip(zip(res.pairs["star_a"], res.pairs["star_b"]), res.pairs["category"]))
    ids = st.loc[cl, "apogee_id"].tolist()
    assert cats[(ids[0], ids[1])] == "partial" and cats[(ids[0], ids[2])] == "separate"
    assert cats[(ids[1], ids[2])] == "separate"
    assert res.summary["n_unknown"] == 1 and res.summary["n_partial"] == 1
    assert res.pairs["distance"].tolist() == [
        abs(st.index.get_loc(st.index[st["apogee_id"] == a][0]) - st.index.get_loc(st.index[st["apogee_id"] == b][0]))
        for a, b in zip(res.pairs["star_a"], res.pairs["star_b"])
    ]


def test_cli_diagnose(tmp_path, capsys):
    from rsca_core.cli import main

    ds = _planted_dib(True)
    path = tmp_path / "b"
    ds.save(path)
    out = tmp_path / "dib.csv"
    rc = main(
        [
            "diagnose",
            "--dataset",
            str(path),
            "--which",
            "dib",
            "--n-components",
            "4",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "simulated" in text and "suggested bands" in text and "--mask-ranges" not in text.split("as ")[0]
    tab = pd.read_csv(out)
    assert len(tab) == len(WL) and set(tab["data"]) == {"simulated"}
    assert abs(tab.loc[tab["residual"].abs().idxmax(), "wavelength"] - DIB) < 1
    rc = main(["diagnose", "--dataset", str(path), "--which", "dib", "--low", "0.0", "--no-progress"])
    assert rc == 1 and "reference stars" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# On the simulated survey: each diagnostic finds the effect the simulator planted, and only when the
# effect is switched on. The planted signal is measured independently as the mean difference of the
# simulator's noiseless spectra with the effect on and off (same seed -> same stars).
# ---------------------------------------------------------------------------------------------
from rsca_core.simulate import DIBS, SimulationConfig, bundle_mask, generate_survey  # noqa: E402


def _sim_subset(config, pick, n_field, seed=0):
    """An in-memory bundle of the simulated stars selected by ``pick`` (only their spectra are made)."""
    survey = generate_survey(config, n_field=n_field, seed=seed)
    st = survey.bundle_stars()
    keep = pick(st).to_numpy()
    rows = survey.bundle_rows[keep]
    flux, err = survey.spectra(rows)
    ds = Dataset(
        st[keep].reset_index(drop=True), flux, bundle_mask(flux, err, ()), WL, errors=err, meta={"kind": "simulated"}
    )
    return ds, survey, rows


def _planted_signal(survey_on, config_off, rows, seed=0):
    off = generate_survey(config_off, n_field=survey_on.n_field, seed=seed)
    assert off.stars_all["APOGEE_ID"].equals(survey_on.stars_all["APOGEE_ID"])
    f_on, _ = survey_on.spectra(rows, noiseless=True)
    f_off, _ = off.spectra(rows, noiseless=True)
    return (f_on.astype(float) - f_off).mean(0)


def _corr(a, b, ok):
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


@pytest.fixture(scope="module")
def dib_runs():
    """App. A on the same simulated stars with DIBs on and off, plus the planted DIB signal."""
    pick = lambda st: (st["cluster"] == "") & ((st["ak_targ"] < 0.005) | (st["ak_targ"] > 0.5))  # noqa: E731
    on, survey, rows = _sim_subset(SimulationConfig(), pick, 2000)
    off, _, _ = _sim_subset(SimulationConfig(dibs=False), pick, 2000)
    r_on = extinction_residuals(on, n_components=10)
    r_off = extinction_residuals(off, n_components=10)
    high = on.stars["ak_targ"].to_numpy() > 0.5
    planted = _planted_signal(survey, SimulationConfig(dibs=False), rows[high])
    ok = np.isfinite(r_on.residual) & np.isfinite(r_off.residual) & (np.abs(planted) > 1e-6)
    return on, r_on, r_off, planted, ok


def test_simulated_dibs_found_at_their_wavelengths_and_only_when_on(dib_runs):
    on, r_on, r_off, planted, ok = dib_runs
    assert r_on.n_low > 60 and r_on.n_high > 20 and r_on.label == "simulated"
    # the strongest residual is the 15273 Å band, and every simulated band has a suggested mask band
    assert abs(r_on.summary()["peak_wavelength"] - 15273.0) < 3
    # every planted band at least 15 % as deep as the strongest is found where it was planted (the
    # simulator moves DIBs with the interstellar gas velocity, so take the peaks of the planted signal)
    expected, _, _ = find_bands(planted, on.wavelength, threshold=0.15 * np.abs(planted).max())
    assert len(expected) >= 3
    assert np.min(np.abs(expected["peak_wavelength"].to_numpy() - DIBS[0][0])) < 5
    peaks = r_on.bands["peak_wavelength"].to_numpy()
    for lam in expected["peak_wavelength"]:
        assert np.min(np.abs(peaks - lam)) < 3, lam
    # the residual spectrum is the planted interstellar absorption of the high-extinction stars
    assert _corr(r_on.residual, planted, ok) > 0.9
    # switched off: no band suggested near any DIB, and nothing left at the strongest one
    off_peaks = r_off.bands["peak_wavelength"].to_numpy()
    assert all(np.all(np.abs(off_peaks - lam) > 10) for lam, _, _ in DIBS)
    near = np.abs(WL - 15273) < 10
    assert np.nanmax(np.abs(r_off.residual[near])) < 0.1 * np.nanmax(np.abs(r_on.residual[near]))


def test_extinction_residual_without_dibs_is_uncorrelated_with_the_dib_pattern(dib_runs):
    # Was a strict xfail (issue 3 note: r ≈ -0.2 to -0.25) until the calibrated defaults of issue 11
    # (smaller independent element scatter and rest-frame shift error; docs/simulator.md).
    _, _, r_off, planted, ok = dib_runs
    assert abs(_corr(r_off.residual, planted, ok)) < 0.2


def test_simulated_rv_systematics_found_only_when_on():
    pick = lambda st: (st["cluster"] == "") & ((st["vhelio_avg"].abs() < 5) | (st["vhelio_avg"] > 80))  # noqa: E731
    on_cfg, off_cfg = SimulationConfig(dibs=False), SimulationConfig(dibs=False, rv_systematics=False)
    on, survey, rows = _sim_subset(on_cfg, pick, 2000)
    off, _, _ = _sim_subset(off_cfg, pick, 2000)
    r_on = rv_residuals(on, n_components=10)
    r_off = rv_residuals(off, n_components=10)
    assert r_on.n_low > 100 and r_on.n_high > 30
    high = on.stars["vhelio_avg"].to_numpy() > 80
    planted = _planted_signal(survey, off_cfg, rows[high])
    ok = np.isfinite(r_on.residual) & np.isfinite(r_off.residual) & (np.abs(planted) > 1e-6)
    assert _corr(r_on.residual, planted, ok) > 0.5
    assert abs(_corr(r_off.residual, planted, ok)) < 0.2
    assert len(r_on.bands) >= 5 and len(r_off.bands) <= 2
    assert np.nanstd(r_on.residual) > 1.2 * np.nanstd(r_off.residual)


@pytest.mark.parametrize("plates", [True, False])
def test_simulated_visit_pairs_separate_only_with_plate_systematics(plates):
    # RV/telluric residuals and DIBs off: they also differ between stars observed together or not
    cfg = SimulationConfig(plate_systematics=plates, plate_strength=2.0, rv_systematics=False, dibs=False)
    ds, _, _ = _sim_subset(cfg, lambda st: st["apogee_id"] != "", 300)
    res = visit_similarity(ds, "rsca", k=10, pca_options={"max_iter": 20})
    s = res.summary
    assert s["n_clusters_compared"] >= 5 and s["n_together"] > 50 and s["n_separate"] > 50
    # hand check of the pair classification from the VISITS strings of one compared pair
    row = res.pairs[res.pairs["compared"]].iloc[0]
    va = ds.stars.set_index("apogee_id").loc[[row["star_a"], row["star_b"]], "visits"]
    dates = [{v.split("-")[2] for v in x.split(",")} for x in va]
    expect = "together" if dates[0] == dates[1] else "separate" if not dates[0] & dates[1] else "partial"
    assert row["category"] == expect
    if plates:
        assert s["median_ratio"] < 0.8 and s["mannwhitney_p"] < 1e-4
    else:
        # Pairs share stars, so the Mann-Whitney p treats dependent pairs as independent and is
        # anti-conservative (visit_similarity's docstring): under no shared systematic it falls
        # below 0.05 far more often than 5 %. Measured with plates off on seeds 0-4 of this survey:
        # ratio 0.913, 1.093, 1.005, 0.979, 1.012 and p 0.0035, 0.98, 0.51, 0.62, 0.79 (seed 0 has
        # only 81 separate pairs); with simulator version 3 (other stars: element scatter and label
        # precisions changed) ratio 0.886, 1.035, 0.999, 0.991, 1.040 and p 0.0039, 0.93, 0.67, 0.74,
        # 0.91, against 0.685-0.924 and p <= 3.5e-6 with plates on. So "off" is judged against "on"
        # (p < 1e-4): no such evidence, and a median ratio within the null's measured spread.
        assert 0.85 < s["median_ratio"] < 1.15 and s["mannwhitney_p"] > 1e-3


def test_pixels_unobserved_in_reference_set_are_left_out():
    ds = _planted_dib(False, n=120)
    mask = np.array(ds.mask)
    low = ds.stars["ak_targ"].to_numpy() < 0.005
    mask[np.ix_(low, np.arange(5000, 5010))] = True  # never observed in the reference stars
    mask[np.flatnonzero(low)[:3], 6000] = False  # observed in only 3 of them
    mask[np.flatnonzero(low)[3:], 6000] = True
    ds2 = Dataset(ds.stars, ds.spectra, mask, WL)
    res = extinction_residuals(ds2, n_components=4)
    assert np.isnan(res.residual[5000:5010]).all() and np.isnan(res.residual[6000])
    assert (res.n_observed[5000:5010] == 0).all() and len(res.bands) == 0
    assert np.isfinite(res.residual[4990:5000]).all()


def test_visit_diagnostic_is_switched_off_with_the_release_s_reason_when_visits_are_unavailable():
    """A release without visit names (DR19, DR17 without --allvisit) gets a statement, not all-"unknown" pairs."""
    from tests.helpers import small_dataset

    ds = small_dataset(n_field=60, n_pixels=40)
    ds.stars["visits"] = ""
    why = "DR17 allStar has no VISITS column; pass --allvisit"
    ds.meta["provenance"] = {"unavailable": {"visits": why}}
    with pytest.raises(ValueError, match=r"App\. C\) is off for this dataset: DR17 allStar has no VISITS"):
        visit_similarity(ds, "abundances")
