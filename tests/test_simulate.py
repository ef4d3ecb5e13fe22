"""The simulated survey: every switch does what it says, the bundle obeys the paper's cuts and
equals what the DR16 loader makes of the same survey, labels are truth + bias + noise."""

import json

import numpy as np
import pandas as pd
import pytest

from rsca_core import Dataset, cli
from rsca_core import simulate as sim
from rsca_core.constants import (
    DLOGLAM,
    MISSING_VALUE,
    N_PIXELS,
    SPECIES,
    STAR_BAD_BIT,
    abundance_column,
    apogee_wavelength,
)

SMALL = dict(cluster_sizes=(6, 4, 3, 2), singleton_clusters=1)
ALL_OFF = dict(
    atomic_lines=False,
    molecular_lines=False,
    pseudo_continuum=False,
    dibs=False,
    rv_systematics=False,
    plate_systematics=False,
    noise=False,
    bad_pixels=False,
)


def survey(n_field=120, seed=0, **cfg):
    return sim.generate_survey(sim.SimulationConfig(**{**SMALL, **cfg}), n_field=n_field, seed=seed)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "survey"
    sim.simulate(out, n_field=150, seed=4, progress=False)  # the paper's 22 clusters / 185 stars
    return Dataset.load(out)


# ---------------------------------------------------------------------------- bundle + cuts
def test_bundle_has_paper_shape_and_obeys_the_cuts(bundle):
    ds = bundle
    st = ds.stars
    assert ds.kind == "simulated" and ds.label == "simulated"
    assert len(ds.field_index) == 150
    assert ds.is_cluster.sum() == 185 and len(ds.cluster_names) == 22
    assert ds.cluster_sizes().min() >= 2
    assert ((st.teff > 4000) & (st.teff < 5000)).all() and ((st.logg > 1.5) & (st.logg < 3.0)).all()
    ab = st[[abundance_column(s) for s in SPECIES]].to_numpy(float)
    assert np.isfinite(ab).all() and not np.isclose(ab, MISSING_VALUE, atol=1e-3).any()
    assert (((st.aspcapflag.to_numpy(np.int64) >> STAR_BAD_BIT) & 1) == 0).all()
    assert (st.cg_prob[ds.is_cluster] > 0.8).all()
    # cluster stars come after the field stars
    assert ds.is_cluster[:150].sum() == 0
    prov = ds.meta["provenance"]
    assert prov["seed"] == 4 and prov["n_field"] == 150 and prov["config"]["dibs"] is True
    last = prov["cutflow"][-1]
    assert (last["field"], last["cluster_stars"], last["clusters"]) == (150, 185, 22)
    # true labels are stored beside the observed ones
    for c in ("true_teff", "true_logg", "true_x_h_mg", "true_fe_h"):
        assert c in st.columns and st[c].notna().all()


def test_mask_rule_and_chip_gaps(bundle):
    ds = bundle
    f = np.asarray(ds.spectra[:40])
    e = np.asarray(ds.errors[:40])
    m = np.asarray(ds.mask[:40])
    expected = (e > 0.05) | (f == 0) | ~np.isfinite(f)
    for a, b in ds.meta["provenance"]["config"]["mask_ranges"]:
        expected[:, a:b] = True
    assert np.array_equal(m, expected)
    gaps = np.ones(N_PIXELS, bool)
    for a, b in sim.CHIP_RANGES:
        gaps[a:b] = False
    assert (f[:, gaps] == 0).all() and m[:, gaps].all()
    assert (f[:, ~gaps] != 0).mean() > 0.999


def test_cuts_agree_with_the_dr16_loader_selection():
    """Our own cut implementation against the loader's select_stars/finalise_clusters."""
    from rsca_core import apogee

    s = survey(n_field=200, seed=2)
    t = s.stars_all
    allstar = t[
        ["APOGEE_ID", "TELESCOPE", "FIELD", "TEFF", "LOGG", "ASPCAPFLAG", "AK_TARG", "VHELIO_AVG", "SNR", "VISITS"]
    ].copy()
    from rsca_core.constants import ALLSTAR_ELEMENTS

    for el in ALLSTAR_ELEMENTS:
        allstar[f"X_H_{el.upper()}"] = t[f"X_H_{el.upper()}"]
        allstar[f"X_M_{el.upper()}"] = np.where(
            np.isclose(t[f"X_H_{el.upper()}"], MISSING_VALUE), MISSING_VALUE, t[f"X_H_{el.upper()}"] - t["M_H"]
        )
    cand = t["CLUSTER"] != ""
    members = pd.DataFrame(
        {
            "APOGEE_ID": t.APOGEE_ID[cand],
            "CLUSTER": t.CLUSTER[cand],
            "CG_PROB": t.CG_PROB[cand].astype(np.float32),
            "RV_PROB": 1.0,
            "FEH_PROB": 1.0,
            "PM_PROB": 1.0,
        }
    )
    selected, rows = apogee.select_stars(allstar, members)
    keep = apogee.finalise_clusters(selected, np.ones(len(selected), bool), rows, 0, 0)
    sel = selected[keep]
    is_m = sel["CLUSTER"].to_numpy(dtype=object) != ""
    loader_order = list(sel["APOGEE_ID"][~is_m]) + list(sel["APOGEE_ID"][is_m])
    assert loader_order == list(t["APOGEE_ID"].iloc[s.bundle_rows])
    assert [r["field"] for r in rows] == [r["field"] for r in s.cutflow]
    # the generated table really contains stars failing each cut (the DR16 files exercise them)
    failing = t[~t.in_bundle]
    assert ((failing.TEFF <= 4000) | (failing.TEFF >= 5000)).any()
    assert ((failing.LOGG <= 1.5) | (failing.LOGG >= 3.0)).any()
    assert ((failing.ASPCAPFLAG.to_numpy(np.int64) >> STAR_BAD_BIT) & 1).any()
    assert np.isclose(failing[[f"X_H_{s.upper()}" for s in SPECIES]], MISSING_VALUE).any()


def test_dr16_files_load_to_the_direct_bundle(tmp_path):
    from rsca_core import apogee

    cfg = sim.SimulationConfig(**SMALL)
    direct = sim.simulate(tmp_path / "direct", n_field=40, seed=5, config=cfg, progress=False)
    files = sim.simulate(tmp_path / "dr16", n_field=40, seed=5, config=cfg, format="dr16", progress=False)
    built, _ = apogee.build_apogee(
        files / apogee.ALLSTAR_NAME,
        files / apogee.OCCAM_MEMBER_NAME,
        tmp_path / "built",
        workers=1,
        progress=False,
        log=lambda m: None,
    )
    a, b = Dataset.load(direct), Dataset.load(built)
    assert b.kind == "simulated"
    common = [c for c in b.stars.columns if c in a.stars.columns]
    assert len(common) >= len(sim.SPECIES) + 10
    pd.testing.assert_frame_equal(a.stars[common], b.stars[common], check_dtype=False)
    assert np.array_equal(np.asarray(a.spectra), np.asarray(b.spectra))
    assert np.array_equal(np.asarray(a.errors), np.asarray(b.errors))
    assert np.array_equal(np.asarray(a.mask), np.asarray(b.mask))


# ---------------------------------------------------------------------------- determinism
def test_deterministic_for_a_seed_and_independent_of_chunking():
    s1, s2, s3 = survey(seed=7), survey(seed=7), survey(seed=8)
    pd.testing.assert_frame_equal(s1.stars_all, s2.stars_all)
    assert not s1.stars_all["TEFF"].equals(s3.stars_all["TEFF"])
    rows = np.arange(len(s1.stars_all))
    f_all, e_all = s1.spectra(rows)
    pick = np.random.default_rng(0).permutation(rows)[:70]
    f, e = s2.spectra(pick)
    assert np.array_equal(f, f_all[pick]) and np.array_equal(e, e_all[pick])
    assert np.array_equal(s1.spectrum(int(pick[0]))[0], f_all[pick[0]])


# ---------------------------------------------------------------------------- chemistry
def test_clusters_are_homogeneous_and_share_velocity_and_extinction():
    s = sim.generate_survey(sim.SimulationConfig(), n_field=50, seed=1)
    t = s.stars_all
    members = t[(t.CLUSTER != "") & (t.CG_PROB > 0.8)]
    cols = ["true_" + abundance_column(sp) for sp in SPECIES]
    dev = members.groupby("CLUSTER")[cols].transform(lambda x: x - x.mean()).to_numpy()
    dof = len(members) - members.CLUSTER.nunique()
    pooled = np.sqrt((dev**2).sum(axis=0) / dof)  # per species
    assert np.all(pooled < 0.015) and 0.008 < np.sqrt((pooled**2).mean()) < 0.012
    # ... but members spread along their giant branch (pooled within-cluster spread)
    dev = members.groupby("CLUSTER")[["true_teff", "true_logg"]].transform(lambda x: x - x.mean())
    assert dev.true_teff.std() > 100 and dev.true_logg.std() > 0.2
    # they share a radial velocity to ~1 km/s and an extinction to ~0.02-0.05 mag
    dev = members.groupby("CLUSTER")[["VHELIO_AVG", "AK_TARG"]].transform(lambda x: x - x.mean())
    assert dev.VHELIO_AVG.std() < 1.2 and dev.AK_TARG.std() < 0.04
    field = t[(t.CLUSTER == "") & (t.population != "dwarf")]
    assert field.true_fe_h.std() > 0.2
    # two [alpha/Fe] sequences: at [Fe/H] ~ -0.4 the thick disc sits ~0.1-0.2 dex above the thin disc
    mid = field[(field.true_fe_h > -0.6) & (field.true_fe_h < -0.3)]
    gap = mid[mid.population == "thick"].true_alpha_fe.median() - mid[mid.population == "thin"].true_alpha_fe.median()
    assert 0.08 < gap < 0.3
    one = sim.generate_survey(sim.SimulationConfig(two_alpha_sequences=False), n_field=50, seed=1).stars_all
    assert (one.population != "thick").all()


# ---------------------------------------------------------------------------- labels
def test_labels_are_truth_plus_documented_bias_plus_noise():
    s = survey(n_field=400, seed=3, label_failures=False)
    t = s.stars_all
    f = sim.snr_factor(t.SNR.to_numpy())
    pulls = []
    for sp in ("Fe", "Mg", "C", "Na", "Ce"):
        obs = t[f"X_H_{sp.upper()}"].to_numpy()
        true = t["true_" + abundance_column(sp)].to_numpy()
        resid = obs - true - sim.label_bias(sp, t.true_teff, t.true_logg)
        pulls.append(resid / (sim.LABEL_PRECISION[sp] * f))
    pulls = np.concatenate(pulls)
    assert abs(pulls.mean()) < 0.08 and 0.92 < pulls.std() < 1.08
    teff_pull = (t.TEFF - t.true_teff - sim.label_bias("teff", t.true_teff, t.true_logg)) / (sim.TEFF_PRECISION * f)
    assert 0.9 < teff_pull.std() < 1.1

    quiet = survey(n_field=200, seed=3, label_failures=False, label_noise=False).stars_all
    bias = quiet.X_H_MG - quiet.true_x_h_mg
    assert np.allclose(bias, sim.label_bias("Mg", quiet.true_teff, quiet.true_logg), atol=2e-4)
    assert bias.std() > 0.005  # a real Teff/logg-dependent bias, not a constant
    none = survey(n_field=200, seed=3, label_failures=False, label_noise=False, label_biases=False).stars_all
    assert np.allclose(none.X_H_MG, none.true_x_h_mg, atol=2e-4)


def test_label_failures_switch():
    t = survey(n_field=400, seed=9).stars_all
    xh = t[[f"X_H_{s.upper()}" for s in SPECIES]].to_numpy()
    assert np.isclose(xh, MISSING_VALUE).any() and ((t.ASPCAPFLAG.to_numpy(np.int64) >> STAR_BAD_BIT) & 1).any()
    assert (np.float32(MISSING_VALUE) == t.X_H_GE).all()  # not reported in DR16
    off = survey(n_field=400, seed=9, label_failures=False).stars_all
    xh = off[[f"X_H_{s.upper()}" for s in SPECIES]].to_numpy()
    assert not np.isclose(xh, MISSING_VALUE).any()
    assert not ((off.ASPCAPFLAG.to_numpy(np.int64) >> STAR_BAD_BIT) & 1).any()


# ---------------------------------------------------------------------------- spectra
def _pix(lam):
    return int(round((np.log10(lam) - np.log10(apogee_wavelength()[0])) / DLOGLAM))


def test_dib_depth_grows_with_extinction_at_the_ism_velocity_and_vanishes_when_off():
    on = survey(n_field=150, seed=11, **{**ALL_OFF, "dibs": True})
    off = survey(n_field=150, seed=11, **ALL_OFF)
    rows = np.arange(len(on.stars_all))
    f_on, _ = on.spectra(rows)
    f_off, _ = off.spectra(rows)
    data = f_off != 0
    assert np.array_equal(f_off[data], np.ones(data.sum(), np.float32))  # nothing else switched on
    t = on.stars_all
    ak = t.AK_TARG.to_numpy()
    c0 = _pix(15273.0)
    win = slice(c0 - 150, c0 + 150)
    depth = 1 - f_on[:, win].min(axis=1)
    # closed form at the band centre: 1 - exp(-dib_depth_per_ak * AK)
    expected = 1 - np.exp(-sim.SimulationConfig().dib_depth_per_ak * ak)
    assert np.allclose(depth, expected, atol=2e-3)
    assert np.corrcoef(ak, depth)[0, 1] > 0.99
    # the band sits at the interstellar velocity, shifted in the star's rest frame
    strong = ak > 0.1
    vrel = (t.VHELIO_AVG - t.v_ism).to_numpy()[strong]
    where = c0 - 150 + f_on[strong][:, win].argmin(axis=1)
    predicted = (np.log10(15273.0 * (1 - vrel / sim.C_KMS)) - np.log10(apogee_wavelength()[0])) / DLOGLAM
    assert np.abs(where - predicted).max() <= 1.0


def test_rv_systematics_follow_vhelio():
    on = survey(n_field=100, seed=12, **{**ALL_OFF, "rv_systematics": True})
    t = on.stars_all
    rows = np.arange(40)
    f, _ = on.spectra(rows)
    data = f[0] != 0
    resid = (f - 1.0)[:, data]
    # the telluric template placed at the rest-frame position predicted from VHELIO_AVG (minus the
    # plate's barycentric correction) explains the residual: best-matching lag = prediction
    inst = sim.instrument_templates()
    lags = np.arange(-120, 121)
    idx = inst["pad"] + lags[:, None] + np.flatnonzero(data)[None, :]
    templates = inst["telluric"][idx]  # (lags, pixels)
    v = t.VHELIO_AVG.to_numpy()[rows] - t.plate_bc.to_numpy()[rows]
    best = lags[np.abs(resid @ templates.T).argmax(axis=1)]
    predicted = np.log10(1 + v / sim.C_KMS) / DLOGLAM
    ok = int((np.abs(best - predicted) <= 1.5).sum())
    assert ok >= 0.9 * len(rows)
    off = survey(n_field=100, seed=12, **ALL_OFF)
    f_off, _ = off.spectra(rows)
    assert np.abs(f_off[:, data] - 1).max() == 0


def test_rest_frame_shift_error_is_vhelio_times_a_per_star_mismatch_factor():
    """The rest-frame shift error (template mismatch) is rv_shift_fraction × VHELIO_AVG on average,
    with a star-to-star factor 1 + rv_mismatch_spread · z: members of a cluster (one VHELIO_AVG)
    get different shifts. Measured here by regressing each star's change of spectrum onto the
    gradient of its unshifted spectrum (a small shift δ pixels changes F by −δ·dF/dpixel)."""
    cfg = {**ALL_OFF, "atomic_lines": True, "rv_systematics": True}
    frac, spread = 0.004, 0.5
    on = survey(n_field=150, seed=18, **cfg, rv_shift_fraction=frac, rv_mismatch_spread=spread)
    off = survey(n_field=150, seed=18, **cfg, rv_shift_fraction=0.0)
    t = on.stars_all
    rows = np.arange(len(t))
    f_on, _ = on.spectra(rows, noiseless=True)
    f_off, _ = off.spectra(rows, noiseless=True)
    inner = np.zeros(N_PIXELS, bool)
    for a, b in sim.CHIP_RANGES:
        inner[a + 3 : b - 3] = True
    grad = np.gradient(f_off.astype(float), axis=1)[:, inner]
    diff = (f_on.astype(float) - f_off)[:, inner]
    shift_kms = -(diff * grad).sum(1) / (grad * grad).sum(1) * sim.KMS_PER_PIXEL
    v = t.VHELIO_AVG.to_numpy(float)
    fast = np.abs(v) > 20
    factor = shift_kms[fast] / (frac * v[fast])
    assert fast.sum() > 100
    assert abs(np.mean(factor) - 1) < 0.12 and 0.4 < np.std(factor) < 0.6
    # members of one cluster share VHELIO_AVG to ~1 km/s, but not their shift error
    members = (t.true_cluster != "none").to_numpy() & fast
    big = t[members].groupby("true_cluster").size().idxmax()
    m = members & (t.true_cluster == big).to_numpy()
    assert np.std(shift_kms[m]) > 0.25 * frac * abs(v[m].mean())
    # with no spread the error is exactly rv_shift_fraction × VHELIO_AVG for every star
    same = survey(n_field=150, seed=18, **cfg, rv_shift_fraction=frac, rv_mismatch_spread=0.0)
    f_same, _ = same.spectra(rows, noiseless=True)
    s0 = -((f_same.astype(float) - f_off)[:, inner] * grad).sum(1) / (grad * grad).sum(1) * sim.KMS_PER_PIXEL
    assert np.allclose(s0[fast] / (frac * v[fast]), 1, atol=0.03)


def _visit_pairs(t, rows):
    vis = t.VISITS.to_numpy()[rows]
    plate = t.plate.to_numpy()[rows]
    same, diff = [], []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if vis[i] == vis[j]:
                same.append((i, j))
            elif plate[i] != plate[j]:
                diff.append((i, j))
    return same, diff


def _mean_corr(resid, pairs):
    r = resid - resid.mean(axis=1, keepdims=True)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    return float(np.mean([r[i] @ r[j] for i, j in pairs]))


def test_plate_systematics_correlate_stars_observed_together_only_when_on():
    base = survey(n_field=120, seed=13, **ALL_OFF)
    t = base.stars_all
    rows = np.arange(len(t))
    f0, _ = base.spectra(rows)
    data = f0[0] != 0
    same, diff = _visit_pairs(t, rows)
    assert len(same) > 50 and len(diff) > 50
    out = {}
    for plate in (True, False):
        s = survey(n_field=120, seed=13, **{**ALL_OFF, "rv_systematics": True, "plate_systematics": plate})
        f, _ = s.spectra(rows)
        resid = (f[:, data] / f0[:, data]) - 1
        out[plate] = _mean_corr(resid, same) - _mean_corr(resid, diff)
    assert out[True] > 0.3
    assert abs(out[False]) < 0.1


def test_noise_follows_the_error_array_and_bad_pixels_are_flagged():
    s = survey(n_field=80, seed=14)
    rows = np.arange(60)
    f, e = s.spectra(rows)
    clean, e0 = s.spectra(rows, noiseless=True)
    data = clean[0] != 0
    good = data[None, :] & (e < sim.BAD_PIXEL_ERROR)
    pull = (f - clean)[good] / e[good]
    assert 0.97 < pull.std() < 1.03 and abs(pull.mean()) < 0.01
    bad = data[None, :] & (e == sim.BAD_PIXEL_ERROR)
    frac = bad.sum() / (len(rows) * data.sum())
    assert 0.5 * s.config.bad_pixel_fraction < frac < 4 * s.config.bad_pixel_fraction
    # median SNR of the field like the paper's 157
    snr = sim.generate_survey(sim.SimulationConfig(), n_field=2000, seed=0).stars_all
    field = snr[snr.in_bundle & (snr.CLUSTER == "")]
    assert 140 < field.SNR.median() < 175
    quiet = survey(n_field=80, seed=14, noise=False, bad_pixels=False)
    f_q, _ = quiet.spectra(rows)
    assert np.array_equal(f_q, clean)


def _with_truth(s, col, values):
    import dataclasses

    t = s.stars_all.copy()
    t[col] = values
    return dataclasses.replace(s, stars_all=t)


def test_line_depth_grows_with_abundance_and_saturates():
    cfg = {**ALL_OFF, "atomic_lines": True}

    def depths(saturation, lam, col, steps):
        s = survey(n_field=60, seed=15, **cfg, saturation=saturation)
        row = int(np.flatnonzero((s.stars_all.true_teff.between(4300, 4500)).to_numpy())[0])
        px = _pix(lam)
        out = []
        for dx in steps:
            v = s.stars_all[col].to_numpy().copy()
            v[row] += dx
            f, _ = _with_truth(s, col, v).spectra([row])
            out.append(1 - f[0, px - 2 : px + 3].min())
        return out

    # curve of growth: the strong Mg I 15740 line gains less and less depth per dex
    sat = depths(True, 15740.0, "true_x_h_mg", (-0.4, 0.0, 0.4))
    assert sat[0] < sat[1] < sat[2]
    assert (sat[2] - sat[1]) < 0.8 * (sat[1] - sat[0])
    # without saturation a line's depth is proportional to its optical depth: x10^0.2 per 0.2 dex
    # (the weak V I 15925 line, where neighbours hardly blend)
    lin = depths(False, 15925.0, "true_x_h_v", (0.0, 0.2))
    assert 1.45 < lin[1] / lin[0] < 1.65
    weak_sat = depths(True, 15925.0, "true_x_h_v", (0.0, 0.2))
    assert weak_sat[1] / weak_sat[0] < lin[1] / lin[0]


def test_molecular_lines_switch_and_carbon_response():
    s_on = survey(n_field=60, seed=16, **{**ALL_OFF, "molecular_lines": True})
    s_off = survey(n_field=60, seed=16, **ALL_OFF)
    row = 0
    px = _pix(15580.0)  # a CO band head
    f_off, _ = s_off.spectra([row])
    assert np.all(f_off[0][f_off[0] != 0] == 1)
    f_on, _ = s_on.spectra([row])
    d0 = 1 - f_on[0, px : px + 15].min()
    v = s_on.stars_all.true_x_h_c.to_numpy().copy()
    v[row] += 0.3
    f_c, _ = _with_truth(s_on, "true_x_h_c", v).spectra([row])
    assert 1 - f_c[0, px : px + 15].min() > d0 + 0.01


# ---------------------------------------------------------------------------- CLI + default
def test_cli_switches_and_overwrite(tmp_path):

    out = tmp_path / "b"
    argv = [
        "simulate",
        "--out",
        str(out),
        "--n-field",
        "30",
        "--seed",
        "2",
        "--no-dibs",
        "--no-plate-systematics",
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    cfg = meta["provenance"]["config"]
    assert cfg["dibs"] is False and cfg["plate_systematics"] is False and cfg["noise"] is True
    assert meta["kind"] == "simulated" and meta["provenance"]["seed"] == 2
    assert cli.main(argv) == 1  # exists: clear error, nothing overwritten
    assert json.loads((out / "meta.json").read_text())["uid"] == meta["uid"]
    assert cli.main(argv + ["--overwrite"]) == 0
    with pytest.raises(SystemExit):  # argparse rejects a non-positive field size
        cli.main(["simulate", "--out", str(tmp_path / "c"), "--n-field", "0"])
    assert not (tmp_path / "c").exists()


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2"):
        sim.SimulationConfig(cluster_sizes=(3, 1))
    with pytest.raises(ValueError, match="n_field"):
        sim.generate_survey(sim.SimulationConfig(), n_field=0)
    with pytest.raises(ValueError, match="unknown simulation setting"):
        sim.SimulationConfig.from_dict({"dibz": False})
    with pytest.raises(ValueError, match="rv_mismatch_spread must be >= 0"):
        sim.SimulationConfig(rv_mismatch_spread=-0.5)


def test_ensure_default_dataset_builds_once(tmp_path):
    path = tmp_path / "default"
    assert sim.ensure_default_dataset(path, progress=False, n_field=40) == path
    ds = Dataset.load(path)
    assert ds.kind == "simulated" and len(ds.field_index) == 40
    uid = ds.meta["uid"]
    assert sim.ensure_default_dataset(path, progress=False, n_field=40) == path
    assert Dataset.load(path).meta["uid"] == uid  # current: kept, not rebuilt
    # A default survey from an older simulator is rebuilt (its numbers would not match the docs).
    meta = json.loads((path / "meta.json").read_text())
    meta["provenance"]["simulator_version"] = sim.SIMULATOR_VERSION - 1
    (path / "meta.json").write_text(json.dumps(meta))
    assert not sim.default_is_current(path, n_field=40)
    sim.ensure_default_dataset(path, progress=False, n_field=40)
    rebuilt = Dataset.load(path)
    assert rebuilt.meta["uid"] != uid and sim.default_is_current(path, n_field=40)
    assert rebuilt.meta["provenance"]["simulator_version"] == sim.SIMULATOR_VERSION
    with pytest.raises(TypeError):  # the engine reads no environment: the caller names the folder
        sim.ensure_default_dataset(progress=False)


def test_progress_callable_gets_named_phases_in_order(tmp_path):
    seen = []
    cfg = sim.SimulationConfig(cluster_sizes=(3, 2), singleton_clusters=0)
    sim.simulate(
        tmp_path / "b", n_field=30, seed=2, config=cfg, chunk_size=8, progress=lambda f, t: seen.append((f, t))
    )
    fractions = [f for f, _ in seen]
    texts = [t for _, t in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert texts[0] == "drawing cluster members"
    # the spectra are counted star by star up to the bundle's 35 stars, then the bundle is written
    counted = [t for t in texts if t.startswith("spectra ")]
    assert counted[0] == "spectra 0/35" and counted[-1].startswith("spectra 35/35")
    assert texts.index("writing bundle") > texts.index(counted[-1])


def test_switch_table_is_the_configs_booleans_and_the_cli_flags():
    from dataclasses import fields

    booleans = [f.name for f in fields(sim.SimulationConfig) if f.type in ("bool", bool)]
    assert [s.name for s in sim.SWITCH_TABLE] == booleans
    assert all(isinstance(s.help, str) and s.help and "\n" not in s.help for s in sim.SWITCH_TABLE)
    defaults = sim.SimulationConfig()
    assert all(getattr(defaults, s.name) is s.default for s in sim.SWITCH_TABLE)
    args = cli.build_parser().parse_args(["simulate", "--out", "x", "--no-dibs", "--noise"])
    assert args.dibs is False and args.noise is True and args.fibre_lsf is True


def test_fibre_lsf_scales_line_optical_depths_per_star():
    cfg = {**ALL_OFF, "atomic_lines": True}
    on = survey(n_field=60, seed=17, **cfg, fibre_lsf=True)
    off = survey(n_field=60, seed=17, **cfg, fibre_lsf=False)
    rows = np.arange(40)
    f_on, _ = on.spectra(rows)
    f_off, _ = off.spectra(rows)
    deep = (f_off < 0.8) & (f_off > 0)
    scale = np.array([np.median(np.log(f_on[k, deep[k]]) / np.log(f_off[k, deep[k]])) for k in rows])
    # one factor per star: every pixel's log-flux scaled alike, by 1 + N(0, fibre_lsf_sigma)
    spread = np.array([np.ptp(np.log(f_on[k, deep[k]]) / np.log(f_off[k, deep[k]])) for k in rows])
    assert spread.max() < 1e-3
    assert 0.02 < scale.std() < 0.07 and abs(scale.mean() - 1) < 0.03


def test_clusters_are_the_catalogues_clusters_at_every_seed():
    """[Fe/H], age, mean RV and A_K of each cluster are its literature values (simulate.clusters),
    whatever the seed; only the members and the small chemical offsets change with the seed."""
    from rsca_core.simulate.clusters import AK_PER_AV, CLUSTER_FACTS

    assert tuple(CLUSTER_FACTS) == sim.CLUSTER_NAMES
    # hand-checked rows: M67 (Donor+2020 [Fe/H] 0.01, RV 33.9; Cantat-Gaudin+2020 log age 9.63, A_V 0.07)
    m67 = CLUSTER_FACTS["NGC_2682"]
    assert (m67.feh, m67.vhelio) == (0.01, 33.9) and m67.age_gyr == pytest.approx(4.266, abs=1e-3)
    assert m67.a_k == pytest.approx(0.07 * 0.302 / 3.1) and abs(AK_PER_AV - 0.0974) < 1e-4
    seen = []
    for seed in (0, 1):
        t = sim.generate_survey(sim.SimulationConfig(), n_field=50, seed=seed).stars_all
        members = t[(t.CLUSTER != "") & (t.CG_PROB > 0.8)]
        g = members.groupby("CLUSTER")
        for name, grp in g:
            f = CLUSTER_FACTS[name]
            assert np.allclose(grp.true_fe_h, f.feh) and np.allclose(grp.age, f.age_gyr)
            assert abs(grp.VHELIO_AVG.mean() - f.vhelio) < 3 * 0.8 / np.sqrt(len(grp)) + 0.05
            assert abs(grp.AK_TARG.mean() - f.a_k) < 3 * 0.025 / np.sqrt(len(grp)) + 0.01
        seen.append(g["true_x_h_mg"].mean())
    # the chemical offsets (here [Mg/H] beyond [Fe/H]) are drawn per seed
    assert not np.allclose(seen[0], seen[1].reindex(seen[0].index), atol=1e-6)
