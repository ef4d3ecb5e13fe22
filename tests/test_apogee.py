"""The APOGEE DR16 loader on a tiny hand-built survey written in the real file layout.

Every star of the survey is built to pass or fail one specific cut, so the expected outcome of each
cut (and of the whole loader) is known by construction, independently of the code under test.
"""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from rsca_core import BundleError, Dataset, apogee
from rsca_core.apogee import build_apogee, read_aspcapstar, write_dr16
from rsca_core.constants import ALLSTAR_ELEMENTS, N_PIXELS, PAPER_MASK_RANGES, SPECIES, abundance_column

OK_FIELD = [f"2M0000000{i}+0000000" for i in range(6)]


def _survey():
    """(table, expected) for the hand-built survey. Names say what each star is for."""
    rows = []

    def star(
        sid,
        *,
        teff=4500.0,
        logg=2.2,
        flag=0,
        cluster="",
        cg=0.0,
        missing=(),
        missing_xm=(),
        field="F1",
        telescope="apo25m",
    ):
        rows.append(
            dict(
                APOGEE_ID=sid,
                TELESCOPE=telescope,
                FIELD=field,
                TEFF=teff,
                LOGG=logg,
                ASPCAPFLAG=flag,
                CLUSTER=cluster,
                CG_PROB=cg,
                missing=tuple(missing),
                missing_xm=tuple(missing_xm),
            )
        )

    for i, sid in enumerate(OK_FIELD):
        star(sid, field="F1" if i < 3 else "F2", telescope="apo25m" if i % 2 == 0 else "lco25m")
    star("2M_TEFF_EDGE", teff=4000.0)  # 4000 < TEFF is strict
    star("2M_TEFF_HOT", teff=5300.0)
    star("2M_LOGG_EDGE", logg=3.0)  # LOGG < 3.0 is strict
    star("2M_LOGG_LOW", logg=1.2)
    star("2M_NO_CE", missing=("Ce",))  # one of the 21 species missing in X_H
    star("2M_NO_TIII_XM", missing_xm=("TiII",))  # missing in X_M only
    star("2M_NO_GE", missing=("Ge", "P", "Rb"))  # not among the 21 species: kept
    star("2M_STAR_BAD", flag=1 << 23)
    star("2M_OTHER_FLAG", flag=(1 << 22) | (1 << 24) | 1)  # other bits: kept
    star("2M_MISSING_FILE")  # passes every cut, but no aspcapStar file
    star("2M_CORRUPT_FILE")  # garbage bytes
    star("2M_SHORT_FILE")  # 8000-pixel spectrum
    star("2M_LOWPROB_MEMBER", cluster="NGC A", cg=0.5)  # OCCAM candidate, CG_PROB <= 0.8: field star
    # Cluster NGC A: 3 good members (+ the low-probability one above)
    for j in range(3):
        star(f"2M_A{j}", cluster="NGC A", cg=0.9 + 0.01 * j, field="NGCA")
    # Cluster NGC B: 2 members but one is too hot -> left with one star -> dropped
    star("2M_B0", cluster="NGC B", cg=0.95, field="NGCB")
    star("2M_B1_HOT", cluster="NGC B", cg=0.95, teff=5100.0, field="NGCB")
    # Cluster NGC C: 2 members, one spectrum missing -> dropped after reading
    star("2M_C0", cluster="NGC C", cg=0.85, field="NGCC")
    star("2M_C1_NOFILE", cluster="NGC C", cg=0.85, field="NGCC")
    # Cluster NGC D: 2 good members + the anomalous star of the paper (dropped)
    star("2M_D0", cluster="NGC D", cg=0.99, field="NGCD", telescope="lco25m")
    star("2M_D1", cluster="NGC D", cg=0.81, field="NGCD", telescope="lco25m")
    star("2M19203303+3755558", cluster="NGC D", cg=0.99, field="NGCD", telescope="lco25m")
    # Cluster NGC E: 2 members with CG_PROB 0.8 exactly / 0.3 -> never members
    star("2M_E0_EDGE", cluster="NGC E", cg=0.8, field="NGCE")
    star("2M_E1_LOW", cluster="NGC E", cg=0.3, field="NGCE")

    tab = pd.DataFrame(rows)
    n = len(tab)
    rng = np.random.default_rng(1)
    xh = rng.normal(0, 0.1, (n, len(ALLSTAR_ELEMENTS)))
    xm = xh - xh[:, [ALLSTAR_ELEMENTS.index("Fe")]]
    for i, r in tab.iterrows():
        for el in r["missing"]:
            xh[i, ALLSTAR_ELEMENTS.index(el)] = -9999.99
            xm[i, ALLSTAR_ELEMENTS.index(el)] = -9999.99
        for el in r["missing_xm"]:
            xm[i, ALLSTAR_ELEMENTS.index(el)] = -9999.99
    tab["X_H"] = list(xh)
    tab["X_M"] = list(xm)
    tab["AK_TARG"] = rng.uniform(0, 0.3, n)
    tab["VHELIO_AVG"] = rng.normal(0, 30, n)
    tab["SNR"] = rng.uniform(50, 300, n)
    tab["VISITS"] = [f"apo25m-{5000 + i}-{56000 + i}-{i:03d}" for i in range(n)]
    tab = tab.drop(columns=["missing", "missing_xm"])

    field_ok = OK_FIELD + ["2M_NO_GE", "2M_OTHER_FLAG", "2M_LOWPROB_MEMBER", "2M_E0_EDGE", "2M_E1_LOW"]
    expected = {
        # bundle order: field stars in allStar order, then cluster stars in allStar order
        "field": [s for s in tab["APOGEE_ID"] if s in field_ok],
        "cluster": {"2M_A0": "NGC A", "2M_A1": "NGC A", "2M_A2": "NGC A", "2M_D0": "NGC D", "2M_D1": "NGC D"},
        "missing": ["2M_MISSING_FILE", "2M_C1_NOFILE"],
        "corrupt": ["2M_CORRUPT_FILE", "2M_SHORT_FILE"],
    }
    return tab, expected


def _spectra(n, seed=2):
    rng = np.random.default_rng(seed)
    flux = (1 + 0.02 * rng.standard_normal((n, N_PIXELS))).astype(np.float32)
    err = np.full((n, N_PIXELS), 0.01, np.float32)
    err[rng.random((n, N_PIXELS)) < 0.02] = 0.2  # bad pixels: error > 0.05
    flux[:, 3000:3050] = 0.0  # a chip gap holds zeros
    err[:, 3000:3050] = 0.0
    return flux, err


@pytest.fixture(scope="module")
def dr16(tmp_path_factory):
    """The hand-built survey in the DR16 layout, with one missing, one corrupt and one short file."""
    root = tmp_path_factory.mktemp("dr16")
    tab, expected = _survey()
    flux, err = _spectra(len(tab))
    write_dr16(tab, root, spectra=(flux, err), progress=False)
    ids = tab["APOGEE_ID"].tolist()

    def path_of(sid):
        r = tab.iloc[ids.index(sid)]
        return root / apogee.aspcapstar_relpath(r.TELESCOPE, r.FIELD, sid)

    for sid in expected["missing"]:
        path_of(sid).unlink()
    path_of("2M_CORRUPT_FILE").write_bytes(b"SIMPLE  =                    T" + b"\x00\x13garbage" * 50)
    short = fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(np.ones(8000, np.float32)), fits.ImageHDU(np.ones(8000, np.float32))]
    )
    short.writeto(path_of("2M_SHORT_FILE"), overwrite=True)
    return dict(
        root=root,
        tab=tab,
        expected=expected,
        flux=flux,
        err=err,
        ids=ids,
        path_of=path_of,
        allstar=root / apogee.ALLSTAR_NAME,
        members=root / apogee.OCCAM_MEMBER_NAME,
    )


def _build(d, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    kw.setdefault("log", lambda msg: None)
    return build_apogee(d["allstar"], d["members"], out, **kw)


def _expected_mask(flux, err):
    m = (err > 0.05) | (flux == 0)
    for a, b in PAPER_MASK_RANGES:
        m[:, a:b] = True
    return m


def test_each_cut_removes_exactly_the_planted_stars(dr16, tmp_path):
    out, cutflow = _build(dr16, tmp_path / "b", chunk_size=7)
    exp = dr16["expected"]
    ds = Dataset.load(out)
    assert ds.stars["apogee_id"].tolist() == exp["field"] + list(exp["cluster"])
    assert ds.stars["cluster"].tolist() == [""] * len(exp["field"]) + list(exp["cluster"].values())
    assert ds.label == "simulated" and ds.meta["kind"] == "simulated"

    # Cut-flow counted by hand from the survey description (field, cluster stars, clusters).
    table = [tuple(r) for r in cutflow[["field", "cluster_stars", "clusters"]].to_numpy()]
    n = len(dr16["tab"])
    assert table == [
        (n, 13, 5),  # input: 13 OCCAM candidates in 5 clusters (A:4, B:2, C:2, D:3, E:2)
        (n - 10, 10, 4),  # CG_PROB > 0.8: A0-2, B0-1, C0-1, D0-1 + anomalous; E (0.8, 0.3) and A low-prob out
        (n - 10 - 2, 9, 4),  # TEFF: TEFF_EDGE, TEFF_HOT (field) and B1_HOT (cluster)
        (n - 10 - 4, 9, 4),  # LOGG: LOGG_EDGE, LOGG_LOW
        (n - 10 - 6, 9, 4),  # abundances: NO_CE, NO_TIII_XM (NO_GE kept)
        (n - 10 - 7, 9, 4),  # STAR_BAD (OTHER_FLAG kept)
        (n - 10 - 7, 8, 4),  # 2M19203303+3755558
        (n - 10 - 10, 7, 4),  # unreadable: MISSING_FILE, CORRUPT_FILE, SHORT_FILE (field); C1 (cluster)
        (n - 10 - 10, 5, 2),  # clusters with one star: B (B0 left), C (C0 left)
    ]
    assert table[-1][0] == len(exp["field"]) and table[-1][1] == len(exp["cluster"])
    assert "CG_PROB" in cutflow["step"][1] and "TEFF" in cutflow["step"][2] and "LOGG" in cutflow["step"][3]
    assert "STAR_BAD" in cutflow["step"][5] and "2M19203303+3755558" in cutflow["step"][6]
    assert ds.meta["provenance"]["cutflow"] == cutflow.to_dict(orient="records")


def test_spectra_mask_errors_and_labels_copied_faithfully(dr16, tmp_path):
    out, _ = _build(dr16, tmp_path / "b")
    ds = Dataset.load(out)
    rows = [dr16["ids"].index(s) for s in ds.stars["apogee_id"]]
    flux, err = dr16["flux"][rows], dr16["err"][rows]
    assert np.array_equal(ds.spectra, flux) and np.array_equal(ds.errors, err)
    assert np.array_equal(ds.mask, _expected_mask(flux, err))
    assert np.allclose(ds.wavelength, 10 ** (4.179 + 6e-6 * np.arange(N_PIXELS)))
    tab = dr16["tab"].iloc[rows]
    xh = np.stack(tab["X_H"].to_numpy())
    for el in SPECIES:
        assert np.allclose(ds.stars[abundance_column(el)], xh[:, ALLSTAR_ELEMENTS.index(el)], atol=1e-6)
    assert np.allclose(ds.stars["fe_h"], xh[:, ALLSTAR_ELEMENTS.index("Fe")], atol=1e-6)
    for col, src in (
        ("teff", "TEFF"),
        ("logg", "LOGG"),
        ("ak_targ", "AK_TARG"),
        ("vhelio_avg", "VHELIO_AVG"),
        ("snr", "SNR"),
    ):
        assert np.allclose(ds.stars[col], tab[src], rtol=1e-6, atol=1e-4), col
    assert ds.stars["visits"].tolist() == tab["VISITS"].tolist()


def test_missing_counted_and_corrupt_reported_by_path(dr16, tmp_path):
    messages = []
    out, _ = _build(dr16, tmp_path / "b", log=messages.append)
    prov = Dataset.load(out).meta["provenance"]
    assert prov["n_missing_files"] == 2 and prov["read"]["n_missing"] == 2
    assert prov["n_unreadable_files"] == 2
    bad_paths = {str(dr16["path_of"](s)) for s in dr16["expected"]["corrupt"]}
    reported = {m.split(": ")[0] for m in prov["unreadable_files"]}
    assert reported == bad_paths
    assert any("(8000,)" in m for m in prov["unreadable_files"])
    assert {m.split("skipped: ")[1].split(": ")[0] for m in messages if m.startswith("skipped")} == bad_paths
    ids = set(Dataset.load(out).stars["apogee_id"])
    assert not ids & set(dr16["expected"]["corrupt"] + dr16["expected"]["missing"])


def test_kind_real_without_simulator_keyword(dr16, tmp_path):
    root = tmp_path / "real"
    shutil.copytree(dr16["root"], root)
    with fits.open(root / apogee.ALLSTAR_NAME) as h:
        assert apogee.SIMULATED_KEYWORD not in h[1].header
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(h[1].data, h[1].header)]).writeto(root / "allStar-real.fits")
    out, _ = build_apogee(
        root / "allStar-real.fits",
        root / apogee.OCCAM_MEMBER_NAME,
        tmp_path / "b",
        spectra_root=root,
        workers=1,
        progress=False,
        log=lambda m: None,
    )
    ds = Dataset.load(out)
    assert ds.meta["kind"] == "real" and ds.label == "real"


def _rewrite_table(src, dst, rename=None, drop=None):
    with fits.open(src) as h:
        cols = [c for c in h[1].columns if c.name != drop]
        new = [
            fits.Column(name=(rename(c.name) if rename else c.name), format=c.format, array=h[1].data[c.name])
            for c in cols
        ]
        fits.HDUList([h[0].copy(), fits.BinTableHDU.from_columns(new)]).writeto(dst)


@pytest.mark.parametrize(
    "which,column",
    [
        ("allstar", "VHELIO_AVG"),
        ("allstar", "X_M"),
        ("allstar", "ASPCAPFLAG"),
        ("members", "CG_PROB"),
        ("members", "CLUSTER"),
    ],
)
def test_missing_column_is_an_error_naming_it(dr16, tmp_path, which, column):
    src = dr16[which]
    bad = tmp_path / "bad.fits"
    _rewrite_table(src, bad, drop=column)
    args = {"allstar": dr16["allstar"], "members": dr16["members"], which: bad}
    with pytest.raises(ValueError, match=rf"missing column {column}\b") as info:
        build_apogee(
            args["allstar"], args["members"], tmp_path / "b", spectra_root=dr16["root"], workers=1, progress=False
        )
    assert str(bad) in str(info.value)
    assert not (tmp_path / "b").exists()


def test_column_names_case_insensitive(dr16, tmp_path):
    a, m = tmp_path / "allstar.fits", tmp_path / "members.fits"
    _rewrite_table(dr16["allstar"], a, rename=str.lower)
    _rewrite_table(dr16["members"], m, rename=lambda s: s.title())
    out, cutflow = build_apogee(
        a, m, tmp_path / "b", spectra_root=dr16["root"], workers=1, progress=False, log=lambda msg: None
    )
    ref, ref_cf = _build(dr16, tmp_path / "ref")
    assert Dataset.load(out).stars["apogee_id"].tolist() == Dataset.load(ref).stars["apogee_id"].tolist()
    assert cutflow[["field", "cluster_stars", "clusters"]].equals(ref_cf[["field", "cluster_stars", "clusters"]])


def test_interrupted_run_resumes_without_rereading(dr16, tmp_path, monkeypatch):
    out = tmp_path / "b"
    real = apogee.read_aspcapstar
    calls = []

    def dying(path, *a, **k):
        if len(calls) == 9:  # chunk_size 4: chunks 0 and 1 are saved, chunk 2 dies half way
            raise KeyboardInterrupt
        calls.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setitem(apogee.build.SPECTRUM_READERS, "dr16", dying)
    with pytest.raises(KeyboardInterrupt):
        _build(dr16, out, chunk_size=4)
    assert not out.exists()
    with pytest.raises(BundleError):
        Dataset.load(out)
    partial = out.with_name(out.name + ".partial")
    assert sorted(p.name for p in partial.glob("chunk-*.npz")) == ["chunk-00000.npz", "chunk-00001.npz"]

    first_round = list(calls)
    calls.clear()
    monkeypatch.setitem(
        apogee.build.SPECTRUM_READERS, "dr16", lambda p, *a, **k: (calls.append(str(p)), real(p, *a, **k))[1]
    )
    out2, cutflow = _build(dr16, out, chunk_size=4)
    n_sel = int(cutflow["field"].iloc[6] + cutflow["cluster_stars"].iloc[6])
    assert len(calls) == n_sel - 8, "the two finished chunks (8 files) were not read again"
    assert not set(calls) & set(first_round[:8]) and first_round[8] in calls
    assert not partial.exists(), "work directory removed after success"
    ref, _ = _build(dr16, tmp_path / "ref", chunk_size=4)
    a, b = Dataset.load(out2), Dataset.load(ref)
    assert a.stars["apogee_id"].tolist() == b.stars["apogee_id"].tolist()
    assert np.array_equal(a.spectra, b.spectra) and np.array_equal(a.mask, b.mask)
    assert a.meta["provenance"]["read"]["resumed"] == 8


def test_parallel_reads_equal_serial(dr16, tmp_path):
    a, _ = _build(dr16, tmp_path / "serial", workers=1, chunk_size=5)
    b, _ = _build(dr16, tmp_path / "proc", workers=2, chunk_size=5, executor="process")
    c, _ = _build(dr16, tmp_path / "thread", workers=3, chunk_size=3, executor="thread")
    A = Dataset.load(a)
    for other in (b, c):
        B = Dataset.load(other)
        assert A.stars["apogee_id"].tolist() == B.stars["apogee_id"].tolist()
        assert np.array_equal(A.spectra, B.spectra) and np.array_equal(A.mask, B.mask)
        assert B.meta["provenance"]["n_unreadable_files"] == 2


def test_mask_ranges_parameter(dr16, tmp_path):
    out, _ = _build(dr16, tmp_path / "b", mask_ranges=[(10, 20)])
    ds = Dataset.load(out)
    rows = [dr16["ids"].index(s) for s in ds.stars["apogee_id"]]
    flux, err = dr16["flux"][rows], dr16["err"][rows]
    expect = (err > 0.05) | (flux == 0)
    expect[:, 10:20] = True
    assert np.array_equal(ds.mask, expect)
    with pytest.raises(ValueError, match="outside"):
        _build(dr16, tmp_path / "c", mask_ranges=[(8000, 9000)])


def test_fast_reader_matches_astropy(dr16, tmp_path):
    for sid in OK_FIELD[:3] + ["2M_A0", "2M_D1"]:
        p = dr16["path_of"](sid)
        f, e = read_aspcapstar(p)
        with fits.open(p) as h:
            assert np.array_equal(f, h[1].data) and np.array_equal(e, h[2].data)
            assert h[1].header["CRVAL1"] == 4.179 and h[1].header["CDELT1"] == 6e-6
            assert h[0].header[apogee.SIMULATED_KEYWORD] is True
    # scaled integers, an extra HDU and float64 data, written by astropy
    raw = np.linspace(0, 2, N_PIXELS)
    ih = fits.ImageHDU((raw * 1000).astype(np.int16))
    ih.header["BSCALE"], ih.header["BZERO"] = 0.001, 0.0
    p = tmp_path / "scaled.fits"
    fits.HDUList(
        [fits.PrimaryHDU(np.zeros((3, 5))), ih, fits.ImageHDU(raw.astype(np.float64)), fits.ImageHDU(np.ones(4))]
    ).writeto(p)
    f, e = read_aspcapstar(p)
    with fits.open(p) as h:
        assert np.allclose(f, h[1].data, atol=1e-6) and np.allclose(e, h[2].data)
    # tile-compressed images go through astropy
    p = tmp_path / "compressed.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.CompImageHDU(raw.astype(np.float32)), fits.CompImageHDU((2 * raw).astype(np.float32))]
    ).writeto(p)
    f, e = read_aspcapstar(p)
    with fits.open(p) as h:
        assert np.array_equal(f, h[1].data) and np.array_equal(e, h[2].data)
    # damaged files: a clear error naming the file
    good = dr16["path_of"](OK_FIELD[0]).read_bytes()
    for name, data, msg in (
        ("trunc.fits", good[:-5000], "truncated"),
        ("two.fits", good[: 2880 * 2 + 8575 * 4], None),
        ("notfits.fits", b"hello" * 1000, "not a FITS file"),
    ):
        q = tmp_path / name
        q.write_bytes(data)
        with pytest.raises(apogee.SpectrumFileError, match=msg) as info:
            read_aspcapstar(q)
        assert str(q) in str(info.value)
    with pytest.raises(FileNotFoundError):
        read_aspcapstar(tmp_path / "absent.fits")
    # wrong wavelength grid
    h1 = fits.ImageHDU(np.ones(N_PIXELS, np.float32))
    h1.header["CRVAL1"], h1.header["CDELT1"] = 4.2, 6e-6
    q = tmp_path / "grid.fits"
    fits.HDUList([fits.PrimaryHDU(), h1, fits.ImageHDU(np.ones(N_PIXELS, np.float32))]).writeto(q)
    with pytest.raises(apogee.SpectrumFileError, match="wavelength grid"):
        read_aspcapstar(q)


def test_writer_layout_and_tables(dr16):
    root, tab = dr16["root"], dr16["tab"]
    with fits.open(root / apogee.ALLSTAR_NAME) as h:
        d = h[1].data
        assert h[0].header[apogee.SIMULATED_KEYWORD] is True
        assert d["X_H"].shape == (len(tab), 26) and d["X_M"].shape == (len(tab), 26)
        assert list(d["APOGEE_ID"]) == tab["APOGEE_ID"].tolist()
        assert np.allclose(d["X_H"], np.stack(tab["X_H"]), atol=1e-6)
        assert ((d["ASPCAPFLAG"] >> 23) & 1).sum() == 1
    with fits.open(root / apogee.OCCAM_MEMBER_NAME) as h:
        m = h[1].data
        assert set(m.columns.names) >= {"APOGEE_ID", "CLUSTER", "CG_PROB", "RV_PROB", "FEH_PROB", "PM_PROB"}
        assert len(m) == int((tab["CLUSTER"] != "").sum())
    with fits.open(root / apogee.OCCAM_CLUSTER_NAME) as h:
        assert sorted(h[1].data["NAME"]) == ["NGC A", "NGC B", "NGC C", "NGC D", "NGC E"]
    for i in range(len(tab)):
        r = tab.iloc[i]
        p = root / r.TELESCOPE / r.FIELD / f"aspcapStar-r12-{r.APOGEE_ID}.fits"
        assert p.exists() or r.APOGEE_ID in dr16["expected"]["missing"]


def test_cli_prints_cutflow_and_errors(dr16, tmp_path, capsys):
    from rsca_core.cli import main

    out = tmp_path / "b"
    rc = main(
        [
            "build-apogee",
            "--allstar",
            str(dr16["allstar"]),
            "--occam-members",
            str(dr16["members"]),
            "--out",
            str(out),
            "--workers",
            "1",
            "--no-progress",
            "--mask-ranges",
            "720:910,2370:2470",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "STAR_BAD" in text and "cluster stars" in text
    last = text.strip().splitlines()[-1].split()
    assert last[-3:] == [str(len(dr16["expected"]["field"])), "5", "2"]
    ds = Dataset.load(out)
    assert ds.mask[:, 720:910].all() and ds.mask[:, 2370:2470].all()
    assert ds.meta["provenance"]["mask_ranges"] == [[720, 910], [2370, 2470]]
    rc = main(
        [
            "build-apogee",
            "--allstar",
            str(dr16["allstar"]),
            "--occam-members",
            str(dr16["members"]),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 1 and "already exists" in capsys.readouterr().err
    rc = main(
        [
            "build-apogee",
            "--allstar",
            str(tmp_path / "nope.fits"),
            "--occam-members",
            str(dr16["members"]),
            "--out",
            str(tmp_path / "c"),
            "--no-progress",
        ]
    )
    assert rc == 1 and "nope.fits" in capsys.readouterr().err


def test_loading_simulated_dr16_files_equals_the_direct_bundle(tmp_path, capsys):
    """`simulate --format dr16` + `build-apogee` gives the bundle `simulate` writes directly."""
    from rsca_core.cli import main

    common = ["--n-field", "30", "--seed", "4", "--no-progress"]
    assert main(["simulate", "--out", str(tmp_path / "direct"), *common]) == 0
    assert main(["simulate", "--out", str(tmp_path / "dr16"), "--format", "dr16", *common]) == 0
    assert (
        main(
            [
                "build-apogee",
                "--allstar",
                str(tmp_path / "dr16" / apogee.ALLSTAR_NAME),
                "--occam-members",
                str(tmp_path / "dr16" / apogee.OCCAM_MEMBER_NAME),
                "--out",
                str(tmp_path / "loaded"),
                "--workers",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    direct, loaded = Dataset.load(tmp_path / "direct"), Dataset.load(tmp_path / "loaded")
    assert loaded.kind == "simulated" and loaded.label == "simulated"
    assert loaded.stars["apogee_id"].tolist() == direct.stars["apogee_id"].tolist()
    assert loaded.stars["cluster"].tolist() == direct.stars["cluster"].tolist()
    assert np.array_equal(loaded.spectra, direct.spectra)
    assert np.array_equal(loaded.errors, direct.errors)
    assert np.array_equal(loaded.mask, direct.mask)
    for col in loaded.stars.columns:  # every observed column (the direct bundle adds true_* ones)
        a, b = loaded.stars[col], direct.stars[col]
        if a.dtype.kind in "fi":
            assert np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-6, atol=1e-6, equal_nan=True), col
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col
    assert loaded.meta["provenance"]["cutflow"] == direct.meta["provenance"]["cutflow"]
    assert len(direct.cluster_names) == 22 and int(direct.is_cluster.sum()) == 185
    assert int((~loaded.is_cluster).sum()) == 30
    # and against the simulator's own record of which generated stars fail the per-star cuts
    from rsca_core.simulate import SimulationConfig, generate_survey

    table = generate_survey(SimulationConfig(), n_field=30, seed=4).stars_all
    loaded_ids = set(loaded.stars["apogee_id"])
    failing = set(table.loc[~table["passes_cuts"].astype(bool), "APOGEE_ID"])
    assert failing and not loaded_ids & failing
    assert loaded_ids == set(table.loc[table["in_bundle"].astype(bool), "APOGEE_ID"])
    low_prob = table[
        (table["CLUSTER"] != "")
        & ~(table["CG_PROB"].astype("float32") > np.float32(0.8))
        & table["in_bundle"].astype(bool)
    ]
    assert len(low_prob) and set(low_prob["APOGEE_ID"]) <= set(loaded.stars.loc[~loaded.is_cluster, "apogee_id"])


def test_resume_rereads_only_chunks_whose_missing_file_appeared(dr16, tmp_path, monkeypatch):
    ids = OK_FIELD + ["2M_MISSING_FILE"] + ["2M_A0", "2M_A1"]
    paths = [dr16["path_of"](s) for s in ids]
    work = tmp_path / "work"
    status, problems, stats = apogee.read_spectra(paths, work, workers=1, chunk_size=3, progress=False)
    assert status.tolist() == [0] * 6 + [apogee.MISSING] + [0, 0] and stats["n_missing"] == 1
    src = dr16["path_of"](OK_FIELD[0])
    shutil.copy(src, tmp_path / "copy.fits")
    real = apogee.read_aspcapstar
    calls = []
    monkeypatch.setattr(
        apogee.reader, "read_aspcapstar", lambda p, *a, **k: (calls.append(str(p)), real(p, *a, **k))[1]
    )
    status, _, stats = apogee.read_spectra(paths, work, workers=1, chunk_size=3, progress=False)
    assert calls == [] and stats["resumed"] == 9  # nothing changed: nothing read
    shutil.copy(tmp_path / "copy.fits", paths[6])  # the missing file appears
    try:
        status, _, stats = apogee.read_spectra(paths, work, workers=1, chunk_size=3, progress=False)
    finally:
        paths[6].unlink()
    assert calls == [str(p) for p in paths[6:9]] and status.tolist() == [0] * 9 and stats["resumed"] == 6


def test_concurrent_build_refused_and_killed_leftovers_cleared(dr16, tmp_path):
    out = tmp_path / "b"
    partial = tmp_path / "b.partial"
    partial.mkdir()
    (partial / "lock").write_text(str(os.getppid()))  # a live process holds the lock
    with pytest.raises(FileExistsError, match="another build"):
        _build(dr16, out)
    (partial / "lock").write_text("999999999")  # its process is gone: stale
    leftover = tmp_path / "b.tmp-abc123"  # a bundle write killed half way
    leftover.mkdir()
    (leftover / "spectra.npy").write_bytes(b"\0" * 100)
    path, _ = _build(dr16, out)
    assert Dataset.load(path).n_stars == 16
    assert not leftover.exists() and not partial.exists()


def test_build_reports_phases_to_a_callable(dr16, tmp_path):
    seen = []
    _build(dr16, tmp_path / "b", chunk_size=4, progress=lambda f, t: seen.append((f, t)))
    fractions = [f for f, _ in seen]
    texts = [t for _, t in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert texts[0].startswith("reading the DR16 star table")
    reads = [t for t in texts if t.startswith("reading aspcapStar ")]
    n_files = int(reads[-1].split("/")[1].split()[0])
    assert reads[0] == f"reading aspcapStar 0/{n_files}" and reads[-1].startswith(f"reading aspcapStar {n_files}/")
    assert "writing bundle" in texts
