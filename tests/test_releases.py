"""DR17 and DR19 (and the Gaia membership catalogues) end to end, on simulator-written layouts.

For each release: `simulate --format` then `build-apogee` gives the bundle `simulate` writes
directly (same stars, labels, spectra within float32 rounding); the kept stars equal a by-hand
application of the paper's cuts to the simulator's table; missing, corrupt and wrong-shaped
spectrum files are named and skipped; a missing column is named; an interrupted build resumes.
"""

import gzip
import io
import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from rsca_core import BundleError, Dataset, apogee
from rsca_core.apogee import build_apogee
from rsca_core.diagnostics import visit_keys
from rsca_core.simulate import SimulationConfig, generate_survey, simulate

CFG = SimulationConfig(cluster_sizes=(6, 4, 3, 2), singleton_clusters=1)
N_FIELD, SEED = 120, 11
DR17 = "allStar-dr17-synspec_rev1.fits"
DR19 = "astraAllStarASPCAP-0.6.0.fits.gz"


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    out = {"root": root}
    out["direct"] = Dataset.load(simulate(root / "direct", n_field=N_FIELD, seed=SEED, config=CFG, progress=False))
    for fmt in ("dr17", "dr19"):
        out[fmt] = simulate(root / fmt, n_field=N_FIELD, seed=SEED, config=CFG, format=fmt, progress=False)
    out["table"] = generate_survey(CFG, n_field=N_FIELD, seed=SEED).stars_all
    return out


def _build(allstar, occam, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    kw.setdefault("log", lambda msg: None)
    return build_apogee(allstar, occam, out, **kw)


def _expected_ids(table: pd.DataFrame) -> set:
    """The paper's cuts applied by hand, star by star, to the simulator's own table."""
    xh = [c for c in table.columns if c.startswith("X_H_")]
    species = ["C", "CI", "N", "O", "NA", "MG", "AL", "SI", "S", "K", "CA", "TI", "TIII", "V", "CR", "MN", "FE"]
    species += ["CO", "NI", "CU", "CE"]
    assert all(f"X_H_{s}" in xh for s in species)
    kept, member_of = [], {}
    for r in table.itertuples(index=False):
        d = r._asdict()
        ok = 4000 < d["TEFF"] < 5000 and 1.5 < d["LOGG"] < 3.0
        ok = ok and all(d[f"X_H_{s}"] > -9000 for s in species) and not (int(d["ASPCAPFLAG"]) >> 23) & 1
        if ok:
            kept.append(d["APOGEE_ID"])
            if d["CLUSTER"] and np.float32(d["CG_PROB"]) > np.float32(0.8):
                member_of[d["APOGEE_ID"]] = d["CLUSTER"]
    sizes = pd.Series(list(member_of.values())).value_counts()
    lonely = {sid for sid, cl in member_of.items() if sizes[cl] < 2}
    return set(kept) - lonely


def _compare_to_direct(loaded: Dataset, direct: Dataset, rtol: float):
    key = "sdss_id" if "sdss_id" in loaded.stars else "apogee_id"
    assert loaded.stars[key].tolist() == direct.stars[key].tolist()
    assert loaded.stars["cluster"].tolist() == direct.stars["cluster"].tolist()
    m = ~np.asarray(direct.mask)
    assert np.array_equal(np.asarray(loaded.mask), np.asarray(direct.mask))
    np.testing.assert_allclose(np.asarray(loaded.spectra)[m], np.asarray(direct.spectra)[m], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(np.asarray(loaded.errors)[m], np.asarray(direct.errors)[m], rtol=rtol)
    for col in ("teff", "logg", "fe_h", "x_h_mg", "x_h_ce", "vhelio_avg", "snr", "cg_prob", "gaia_dr3_id"):
        np.testing.assert_allclose(loaded.stars[col].to_numpy(float), direct.stars[col].to_numpy(float), rtol=1e-6)
    np.testing.assert_allclose(loaded.stars["ak_targ"], direct.stars["ak_targ"], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------- DR17
def test_dr17_end_to_end_equals_the_direct_bundle_and_the_cuts_by_hand(layouts, tmp_path):
    d = layouts["dr17"]
    out, cutflow = _build(
        d / DR17, d / "occam_member-DR17.fits", tmp_path / "b", allvisit=d / "allVisit-dr17-synspec_rev1.fits"
    )
    loaded = Dataset.load(out)
    assert loaded.meta["release"] == "dr17" and loaded.meta["provenance"]["release_detected_by"] == "file name"
    assert loaded.kind == "simulated" and loaded.meta["provenance"]["element_order"] == "HDU 3 ELEM_SYMBOL"
    _compare_to_direct(loaded, layouts["direct"], rtol=0)
    assert set(loaded.stars["apogee_id"]) == _expected_ids(layouts["table"])
    # the duplicate rows (other telescope, lower SNR, EXTRATARG bit 4) are dropped by the release's flag
    with fits.open(d / DR17) as h:
        dup = (h[1].data["EXTRATARG"] & 16) != 0
        n_rows = len(dup)
        assert dup.sum() >= 1 and set(h[1].data["APOGEE_ID"][dup]) <= set(h[1].data["APOGEE_ID"][~dup])
        assert np.isnan(h[1].data["X_H"][:, 26]).all()  # C13: not simulated
    assert "EXTRATARG bit 4" in cutflow["step"][1] and cutflow["field"][0] == n_rows
    assert cutflow["field"][1] + cutflow["cluster_stars"][1] == n_rows - dup.sum()
    # visits through VISIT_PK name the same visits (MJDs) as the simulator's VISITS strings
    same = [visit_keys(a) == visit_keys(b) for a, b in zip(loaded.stars["visits"], layouts["direct"].stars["visits"])]
    assert all(same) and loaded.meta["provenance"]["unavailable"] == {}


def test_dr17_without_allvisit_says_the_visits_diagnostic_is_off(layouts, tmp_path):
    d = layouts["dr17"]
    out, _ = _build(d / DR17, d / "occam_member-DR17.fits", tmp_path / "b")
    loaded = Dataset.load(out)
    assert (loaded.stars["visits"] == "").all()
    assert "--allvisit" in loaded.meta["provenance"]["unavailable"]["visits"]


def test_dr17_missing_column_and_corrupt_files(layouts, tmp_path):
    d = tmp_path / "dr17"
    shutil.copytree(layouts["dr17"], d)
    with fits.open(d / DR17) as h:
        cols = [c for c in h[1].columns if c.name != "EXTRATARG"]
        bad = fits.HDUList([h[0].copy(), fits.BinTableHDU.from_columns(cols), *[x.copy() for x in h[2:]]])
        bad.writeto(tmp_path / DR17)
    with pytest.raises(ValueError, match=r"missing column EXTRATARG$") as info:
        _build(tmp_path / DR17, d / "occam_member-DR17.fits", tmp_path / "x", spectra_root=d)
    assert str(tmp_path / DR17) in str(info.value) and "\n" not in str(info.value)

    field = layouts["direct"].stars.query("cluster == ''").iloc[:3]
    paths = [d / t / f / f"aspcapStar-dr17-{i}.fits" for t, f, i in zip(field.telescope, field.field, field.apogee_id)]
    paths[0].unlink()
    paths[1].write_bytes(paths[1].read_bytes()[:5000])  # truncated
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones(100)), fits.ImageHDU(np.ones(100))]).writeto(
        paths[2], overwrite=True
    )
    out, cutflow = _build(d / DR17, d / "occam_member-DR17.fits", tmp_path / "b")
    loaded = Dataset.load(out)
    assert "1 missing, 2 unreadable" in cutflow["step"].iloc[-2]
    assert not set(field.apogee_id) & set(loaded.stars["apogee_id"])
    problems = loaded.meta["provenance"]["unreadable_files"]
    assert any(str(paths[1]) in p for p in problems)
    assert any(str(paths[2]) in p and "shape" in p for p in problems)


# ---------------------------------------------------------------------------------------------- DR19
def test_dr19_end_to_end_equals_the_direct_bundle_within_rounding(layouts, tmp_path):
    d = layouts["dr19"]
    out, cutflow = _build(d / DR19, d / "occam_member-DR19.fits", tmp_path / "b", workers=2)
    loaded = Dataset.load(out)
    prov = loaded.meta["provenance"]
    assert loaded.meta["release"] == "dr19" and loaded.kind == "simulated"
    # flux / continuum and ivar^-1/2 / continuum give back the normalised spectra to float32 rounding
    _compare_to_direct(loaded, layouts["direct"], rtol=3e-7)
    # stars new in SDSS-V keep their place, identified by sdss_id
    new = loaded.stars["apogee_id"].str.startswith("sdss_id:")
    assert new.any()
    assert (loaded.stars.loc[new, "apogee_id"] == "sdss_id:" + loaded.stars.loc[new, "sdss_id"].astype(str)).all()
    expected = _expected_ids(layouts["table"])
    direct = layouts["direct"].stars
    assert set(direct["apogee_id"]) == expected
    # substitutes stated, never a silent zero
    assert "ebv" in prov["substitutes"]["ak_targ"] and "v_rad" in prov["substitutes"]["vhelio_avg"]
    assert "off" in prov["unavailable"]["visits"]
    assert "SDSS_ID" in cutflow["step"][0] and "highest-SNR" in cutflow["step"][1] and "flag_bad" in cutflow["step"][6]


def test_dr19_two_telescopes_keep_the_higher_snr_row_and_its_hdu(layouts, tmp_path):
    d = layouts["dr19"]
    with fits.open(d / DR19) as h:
        t = h[2].data
        ids, counts = np.unique(t["sdss_id"], return_counts=True)
        twice = ids[counts == 2]
        assert len(twice)
        rows = t[np.isin(t["sdss_id"], twice)]
    best = {}
    for r in rows:
        if r["snr"] > best.get(r["sdss_id"], (None, -1))[1]:
            best[r["sdss_id"]] = (r["telescope"].strip(), r["snr"])
    out, _ = _build(d / DR19, d / "occam_member-DR19.fits", tmp_path / "b")
    st = Dataset.load(out).stars.set_index("sdss_id")
    seen = [sid for sid in best if sid in st.index]
    assert seen and all(st.loc[sid, "telescope"] == best[sid][0] for sid in seen)
    assert all(abs(st.loc[sid, "snr"] - best[sid][1]) < 1e-3 for sid in seen)


def test_dr19_missing_column_is_named_in_one_line(layouts, tmp_path):
    d = layouts["dr19"]
    with fits.open(d / DR19) as h:
        cols = [c for c in h[2].columns if c.name != "flag_bad"]
        buf = io.BytesIO()
        fits.HDUList([h[0].copy(), h[1].copy(), fits.BinTableHDU.from_columns(cols)]).writeto(buf)
    bad = tmp_path / DR19
    bad.write_bytes(gzip.compress(buf.getvalue()))
    with pytest.raises(ValueError, match=r"missing column flag_bad$") as info:
        _build(bad, d / "occam_member-DR19.fits", tmp_path / "x", spectra_root=d)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_dr19_corrupt_missing_and_wrong_hdu_files_are_named_and_skipped(layouts, tmp_path):
    d = tmp_path / "dr19"
    shutil.copytree(layouts["dr19"], d)
    field = layouts["direct"].stars.query("cluster == ''").iloc[:4]
    paths = [d / apogee.mwmstar_relpath(s) for s in field.sdss_id]
    paths[0].unlink()
    paths[1].write_bytes(paths[1].read_bytes()[:20000])
    with fits.open(paths[2]) as h:  # flux of the wrong length
        hdus = [x.copy() for x in h]
    k = 3 if field.telescope.iloc[2] != "lco25m" else 4
    cols = [
        fits.Column(c.name, format="8000E", array=np.ones((1, 8000), np.float32)) if c.name == "flux" else c
        for c in hdus[k].columns
    ]
    hdus[k] = fits.BinTableHDU.from_columns(cols)
    fits.HDUList(hdus).writeto(paths[2], overwrite=True)
    with fits.open(paths[3]) as h:  # the row sits in the other observatory's HDU: none in this one
        hdus = [x.copy() for x in h]
    k = 3 if field.telescope.iloc[3] != "lco25m" else 4
    hdus[k] = fits.BinTableHDU.from_columns([fits.Column(c.name, format=c.format) for c in hdus[k].columns])
    fits.HDUList(hdus).writeto(paths[3], overwrite=True)
    out, cutflow = _build(d / DR19, d / "occam_member-DR19.fits", tmp_path / "b")
    loaded = Dataset.load(out)
    assert "1 missing, 3 unreadable" in cutflow["step"].iloc[-2]
    assert not set(field.sdss_id) & set(loaded.stars["sdss_id"])
    problems = loaded.meta["provenance"]["unreadable_files"]
    assert any(str(paths[1]) in p for p in problems)
    assert any(str(paths[2]) in p and "shape" in p for p in problems)
    assert any(str(paths[3]) in p and "no spectrum row" in p for p in problems)


def test_dr19_interrupted_build_resumes_without_rereading(layouts, tmp_path, monkeypatch):
    d = layouts["dr19"]
    real = apogee.read_mwmstar
    calls = []

    def dying(spec, *a, **k):
        if len(calls) == 40:
            raise KeyboardInterrupt
        calls.append(spec)
        return real(spec, *a, **k)

    monkeypatch.setitem(apogee.build.SPECTRUM_READERS, "dr19", dying)
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        _build(d / DR19, d / "occam_member-DR19.fits", out, chunk_size=16)
    with pytest.raises(BundleError):
        Dataset.load(out)
    calls.clear()
    monkeypatch.setitem(
        apogee.build.SPECTRUM_READERS, "dr19", lambda s, *a, **k: (calls.append(s), real(s, *a, **k))[1]
    )
    out, cutflow = _build(d / DR19, d / "occam_member-DR19.fits", out, chunk_size=16)
    n_sel = int(cutflow["field"].iloc[7] + cutflow["cluster_stars"].iloc[7])
    assert len(calls) == n_sel - 32  # chunks 0 and 1 (16 files each) were saved before the interruption
    assert Dataset.load(out).meta["provenance"]["read"]["resumed"] == 32


def test_release_detected_from_contents_and_forced(layouts, tmp_path):
    renamed = tmp_path / "stars.fits.gz"
    shutil.copy(layouts["dr19"] / DR19, renamed)
    assert apogee.detect_release(renamed) == ("dr19", "header")
    plain = tmp_path / "stars.fits"
    shutil.copy(layouts["dr17"] / DR17, plain)
    assert apogee.detect_release(plain) == ("dr17", "columns")
    out, _ = _build(
        plain, layouts["dr17"] / "occam_member-DR17.fits", tmp_path / "b", release="dr17", spectra_root=layouts["dr17"]
    )
    assert Dataset.load(out).meta["provenance"]["release_detected_by"] == "forced"


# ---------------------------------------------------------------------------------- Gaia catalogues
def _hunt2023(table: pd.DataFrame, path, extra_rows: int = 5):
    cand = table[table["CLUSTER"] != ""]
    cat = pd.DataFrame(
        {"Name": cand["CLUSTER"], "GaiaDR3": cand["GAIA_DR3_ID"], "Prob": cand["CG_PROB"].astype("float32")}
    )
    noise = pd.DataFrame(
        {"Name": ["Blanco_1"] * extra_rows, "GaiaDR3": np.arange(1, extra_rows + 1), "Prob": [0.99] * extra_rows}
    )
    pd.concat([cat, noise]).to_csv(path, index=False)
    return len(cat) + extra_rows, len(cat)


def test_hunt2023_members_matched_by_gaia_dr3_give_the_same_clusters(layouts, tmp_path):
    d = layouts["dr19"]
    n_rows, n_cand = _hunt2023(layouts["table"], tmp_path / "members.csv")
    out, cutflow = _build(d / DR19, None, tmp_path / "b", members=tmp_path / "members.csv", members_format="hunt2023")
    loaded = Dataset.load(out)
    assert loaded.stars["cluster"].tolist() == layouts["direct"].stars["cluster"].tolist()
    assert f"{n_cand} of {n_rows} catalogue rows matched through Gaia DR3 source_id" in cutflow["step"][0]
    assert "Prob > 0.8" in cutflow["step"][2]
    memb = loaded.meta["provenance"]["membership"]
    assert memb["format"] == "hunt2023" and memb["matched_rows"] == n_cand and memb["catalogue_rows"] == n_rows
    # a stricter threshold makes fewer members
    out2, cf2 = _build(
        d / DR19, None, tmp_path / "c", members=tmp_path / "members.csv", members_format="hunt2023", min_prob=0.95
    )
    assert cf2["cluster_stars"].iloc[2] < cutflow["cluster_stars"].iloc[2]


def test_cantat2020_needs_gaia_dr2_ids_which_dr17_lacks(layouts, tmp_path):
    t = layouts["table"]
    cand = t[t["CLUSTER"] != ""]
    pd.DataFrame({"Cluster": cand["CLUSTER"], "GaiaDR2": cand["GAIA_DR2_ID"], "proba": cand["CG_PROB"]}).to_csv(
        tmp_path / "cg.csv", index=False
    )
    d = layouts["dr17"]
    with pytest.raises(ValueError, match="no Gaia DR2 source ids"):
        _build(d / DR17, None, tmp_path / "b", members=tmp_path / "cg.csv", members_format="cantat2020")
    out, _ = _build(
        layouts["dr19"] / DR19, None, tmp_path / "c", members=tmp_path / "cg.csv", members_format="cantat2020"
    )
    assert Dataset.load(out).stars["cluster"].tolist() == layouts["direct"].stars["cluster"].tolist()


def test_pair_filter_gaps_are_stated(layouts, tmp_path):
    """A star without E(B−V) in DR19 has no A_K: the bundle says so, it does not become 0."""
    d = tmp_path / "dr19"
    shutil.copytree(layouts["dr19"], d)
    with fits.open(d / DR19) as h:
        t = h[2].data.copy()
        field = layouts["direct"].stars.query("cluster == ''")
        hit = np.isin(t["sdss_id"], field["sdss_id"].iloc[:2].to_numpy())
        t["ebv"][hit] = np.nan
        buf = io.BytesIO()
        fits.HDUList([h[0].copy(), h[1].copy(), fits.BinTableHDU(t, header=h[2].header)]).writeto(buf)
    (d / DR19).write_bytes(gzip.compress(buf.getvalue()))
    out, _ = _build(d / DR19, d / "occam_member-DR19.fits", tmp_path / "b")
    ds = Dataset.load(out)
    assert int(np.isnan(ds.stars["ak_targ"]).sum()) == 2
    assert ds.meta["provenance"]["unavailable"]["ak_targ"].startswith("2 of ")


def test_cli_reads_dr17_with_allvisit_and_a_forced_release(layouts, tmp_path, capsys):
    from rsca_core.cli import main

    d = layouts["dr17"]
    argv = ["build-apogee", "--allstar", str(d / DR17), "--occam-members", str(d / "occam_member-DR17.fits")]
    argv += [
        "--allvisit",
        str(d / "allVisit-dr17-synspec_rev1.fits"),
        "--release",
        "dr17",
        "--out",
        str(tmp_path / "b"),
    ]
    assert main([*argv, "--workers", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "EXTRATARG bit 4" in printed and "drop clusters left with one star" in printed
    ds = Dataset.load(tmp_path / "b")
    assert ds.meta["provenance"]["release_detected_by"] == "forced" and (ds.stars["visits"] != "").all()
    assert main(["build-apogee", "--allstar", str(d / DR17), "--out", str(tmp_path / "c"), "--no-progress"]) == 1
    assert "membership catalogue is required" in capsys.readouterr().err


def test_siblings_reads_mwmstar_files_like_the_dr19_loader(layouts, tmp_path):
    """`project --spectra mwmStar-…` (new SDSS-V stars): the same flux and mask as the DR19 bundle's rows."""
    from rsca_core.apogee.releases import mwmstar_relpath
    from rsca_core.siblings import read_spectra_files

    d = layouts["dr19"]
    out, _ = _build(d / DR19, d / "occam_member-DR19.fits", tmp_path / "b")
    built = Dataset.load(out)
    rows = [0, built.n_stars // 2, built.n_stars - 1]
    paths = [d / mwmstar_relpath(int(built.stars["sdss_id"][r])) for r in rows]
    ids, flux, mask = read_spectra_files(paths, built)
    assert ids == [f"sdss_id:{int(built.stars['sdss_id'][r])}" for r in rows]
    hdus_ok = [r for r in range(3) if np.array_equal(mask[r], built.mask[rows[r]])]
    # a star seen at both telescopes keeps the higher-SNR row in the bundle; files default to APO then LCO
    assert len(hdus_ok) >= 2
    for r in hdus_ok:
        np.testing.assert_array_equal(flux[r][~mask[r]], built.spectra[rows[r]][~mask[r]])
