"""Chemical siblings (rsca_core.siblings): neighbours, scores, candidates, projection, catalogues, CLI.

Every number is checked against an independent computation: a NumPy full scan for the neighbours,
hand-worked sibling scores, a direct RSCA fit on the compression's scores, ``doppelganger_rates``
for the leave-one-cluster-out rates, astropy / pandas for the catalogues.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist

from rsca_core import RSCA, Dataset, doppelganger_rates
from rsca_core.cli import main as cli_main
from rsca_core.constants import DLOGLAM, LOGLAM0
from rsca_core.siblings import (
    SIBLING_COLUMNS,
    Embedding,
    embed,
    project,
    read_catalogue,
    read_spectra_files,
)

K = 6  # small K: the compression of the small survey takes a couple of seconds


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A small simulated survey (300 field stars, 22 clusters) with its K compression cached."""
    from rsca_core.simulate import simulate

    path = tmp_path_factory.mktemp("sib") / "small"
    simulate(path, n_field=300, seed=3, progress=False)
    ds = Dataset.load(path)
    ds.compress(K, seed=0)
    return path


@pytest.fixture(scope="module")
def ds(bundle):
    return Dataset.load(bundle)


@pytest.fixture(scope="module")
def emb(ds):
    return embed(ds, k=K)


def grid_embedding(seed=0, n=400, dims=3, zero_axes=0):
    """Integer coordinates on a small grid: many exactly tied distances and duplicate positions.
    ``zero_axes`` trailing columns are 0 for every star (RSCA's weight-0 axes)."""
    rng = np.random.default_rng(seed)
    coords = rng.integers(-3, 4, size=(n, dims)).astype(float)
    coords = np.hstack([coords, np.zeros((n, zero_axes))])
    cluster = np.array([""] * n, dtype=object)
    cluster[:6], cluster[6:10] = "A", "B"
    stars = pd.DataFrame(
        {
            "apogee_id": [f"S{i:04d}" for i in range(n)],
            "cluster": cluster,
            "fe_h": rng.normal(0, 0.2, n),
            "teff": rng.normal(4500, 300, n),
            "logg": rng.normal(2.5, 0.5, n),
            "vhelio_avg": rng.normal(0, 10, n),
            "ak_targ": np.abs(rng.normal(0.05, 0.05, n)),
        }
    )
    return Embedding(coords, stars)


def brute_force(coords, row, n, allowed=None):
    """Full NumPy scan: distances to every other (allowed) star, nearest first, ties by row."""
    d = np.sqrt(((coords - coords[row]) ** 2).sum(axis=1))
    ok = np.ones(len(coords), bool) if allowed is None else allowed.copy()
    ok[row] = False
    rows = np.flatnonzero(ok)
    order = np.lexsort((rows, d[rows]))[:n]
    return rows[order], d[rows][order]


# ------------------------------------------------------------------------------------ neighbours
@pytest.mark.parametrize("dims, zero_axes", [(3, 0), (20, 3)])
def test_siblings_equal_a_brute_force_scan_with_ties_in_bundle_order(dims, zero_axes):
    e = grid_embedding(dims=dims, zero_axes=zero_axes)
    tied_at_cut = 0
    for row in (0, 7, 123, 399):
        for n in (1, 5, 37, 120):
            got = e.siblings(row, n=n)
            rows, d = brute_force(e.coords, row, n)
            assert got.index.tolist() == rows.tolist()
            assert np.array_equal(got["distance"].to_numpy(), d)
            assert got["apogee_id"].tolist() == [f"S{r:04d}" for r in rows]
            d_all = np.delete(np.sqrt(((e.coords - e.coords[row]) ** 2).sum(1)), row)
            tied_at_cut += np.sum(d_all == d[-1]) > np.sum(d == d[-1])
    assert tied_at_cut >= 3  # the n-th neighbour is tied with stars left out: the tie rule is tested
    # a position off the bundle, with values on the all-zero axes too
    point = np.r_[np.full(dims, 0.5), np.full(zero_axes, 2.0)]
    got = e.siblings_of_point(point, n=40)
    d = np.sqrt(((e.coords - point) ** 2).sum(1))
    order = np.lexsort((np.arange(len(d)), d))[:40]
    assert got.index.tolist() == order.tolist() and np.allclose(got["distance"], d[order], rtol=1e-14)


def test_pair_filter_keeps_n_stars_that_pass_it():
    e = grid_embedding(seed=1, n=600)
    v, ak = e.stars["vhelio_avg"].to_numpy(), e.stars["ak_targ"].to_numpy()
    for row in (3, 250):
        allowed = (np.abs(v - v[row]) < 5.0) & (np.abs(ak - ak[row]) < 0.05)
        n_pass = int(allowed.sum()) - 1
        assert 10 < n_pass < 200  # the filter keeps a minority: more neighbours must be asked for
        got = e.siblings(row, n=10, pair_filter=True)
        rows, d = brute_force(e.coords, row, 10, allowed)
        assert got.index.tolist() == rows.tolist() and np.array_equal(got["distance"].to_numpy(), d)
        assert (got["d_vhelio"].abs() < 5).all() and (got["d_ak"].abs() < 0.05).all()
        everyone = e.siblings(e.apogee_id[row], n=10_000, pair_filter=True)
        assert len(everyone) == n_pass  # fewer than n only when fewer pass


def test_sibling_score_and_label_differences_by_hand():
    # cluster A on a line at 0, 1, 3 -> known pair distances {1, 2, 3}; cluster B at 10, 10.5 -> {0.5}
    coords = np.array([[0.0], [1.0], [3.0], [10.0], [10.5], [4.5], [20.0]])
    stars = pd.DataFrame(
        {
            "apogee_id": ["a0", "a1", "a3", "b0", "b1", "f1", "f2"],
            "cluster": ["A", "A", "A", "B", "B", "", ""],
            "fe_h": [0.0, 0.1, 0.2, -0.3, -0.2, 0.05, 0.4],
            "teff": [4000.0, 4100, 4200, 4300, 4400, 4500, 4600],
        }
    )
    e = Embedding(coords, stars)
    assert e.intra_distances.tolist() == [0.5, 1.0, 2.0, 3.0]
    got = e.siblings("f1", n=3)  # from 4.5: a3 at 1.5, a1 at 3.5, a0 at 4.5
    assert got["apogee_id"].tolist() == ["a3", "a1", "a0"]
    assert got["distance"].tolist() == [1.5, 3.5, 4.5]
    assert got["sibling_score"].tolist() == [2 / 4, 0.0, 0.0]  # pairs farther than 1.5: 2 and 3
    assert e.sibling_score([0.4, 0.5, 2.0, 3.0]).tolist() == [1.0, 0.75, 0.25, 0.0]  # strictly larger
    assert got["d_fe_h"].tolist() == pytest.approx([0.15, 0.05, -0.05])  # sibling minus star
    assert got["d_teff"].tolist() == [-300.0, -400.0, -500.0]
    assert got["d_logg"].isna().all()  # no logg column: NaN, not an error
    assert list(got.columns) == list(SIBLING_COLUMNS) and got["cluster"].tolist() == ["A", "A", "A"]


def test_unknown_star_is_one_clear_line():
    e = grid_embedding()
    with pytest.raises(ValueError, match=r"unknown star 'nope'"):
        e.siblings("nope")
    with pytest.raises(ValueError, match="out of range"):
        e.siblings(10_000)
    assert e.index_of("12") == 12 and e.index_of("S0012") == 12


# ------------------------------------------------------------------------------------ embed
def test_embed_is_rsca_transform_of_the_compression_evaluate_uses(ds, emb):
    comp = ds.compress(K, seed=0)
    assert np.array_equal(emb.compression.scores, comp.scores)
    Z = comp.scores
    isc = ds.stars["cluster"].to_numpy(object) != ""
    model = RSCA().fit(Z[~isc], Z[isc], ds.stars["cluster"].to_numpy(object)[isc])
    assert np.allclose(emb.coords, model.transform(Z), rtol=1e-10, atol=1e-10)
    assert emb.coords.shape == (ds.n_stars, K) and list(emb.apogee_id) == list(ds.stars["apogee_id"])
    assert emb.settings["clusters"] == ds.cluster_names and emb.label == "simulated"


def test_embed_on_a_subset_of_clusters_with_top_n(ds):
    names = ds.cluster_names[:10]
    e = embed(ds, k=K, clusters=names, top_n=3)
    Z = ds.compress(K, seed=0).scores
    cl = ds.stars["cluster"].to_numpy(object)
    train = np.isin(cl, names)
    model = RSCA().fit(Z[cl == ""], Z[train], cl[train])
    assert np.allclose(e.coords, model.transform(Z, top_n=3), rtol=1e-10, atol=1e-10)
    assert e.training_clusters == sorted(n for n in names if (cl == n).sum() >= 2)
    with pytest.raises(ValueError, match="NGC_0000"):
        embed(ds, k=K, clusters=["NGC_0000"])


def test_embed_with_a_given_compression(ds):
    comp = ds.compress(K, seed=0).truncate(3)
    e = embed(ds, compression=comp)
    Z = comp.scores
    isc = ds.is_cluster
    model = RSCA().fit(Z[~isc], Z[isc], ds.stars["cluster"].to_numpy(object)[isc])
    assert np.allclose(e.coords, model.transform(Z), rtol=1e-10, atol=1e-10)
    assert e.compression is comp and e.settings["k"] == 3 and e.n_axes == 3


def test_stars_lacking_an_abundance_have_no_coordinates_and_are_never_siblings(ds):
    from rsca_core.constants import MISSING_VALUE

    stars = ds.stars.copy()
    lacking = [3, 10, 11, int(np.flatnonzero(ds.is_cluster)[0])]
    stars.loc[lacking, "x_h_mg"] = MISSING_VALUE
    d2 = Dataset(stars, ds.spectra, ds.mask, ds.wavelength, meta=ds.meta)
    e = embed(d2, input="subset")
    assert np.isnan(e.coords[lacking]).all() and np.isfinite(np.delete(e.coords, lacking, axis=0)).all()
    sp = e.settings["species"]
    ok = np.ones(ds.n_stars, bool)
    ok[lacking] = False
    isc = d2.is_cluster
    model = RSCA().fit(
        d2.abundances(sp)[ok & ~isc], d2.abundances(sp)[ok & isc], d2.stars["cluster"].to_numpy(object)[ok & isc]
    )
    assert np.allclose(e.coords[ok], model.transform(d2.abundances(sp)[ok]), rtol=1e-10, atol=1e-10)
    got = e.siblings(0, n=ds.n_stars)
    assert len(got) == ds.n_stars - 1 - len(lacking) and not set(lacking) & set(got.index)
    rows, d = brute_force(np.where(ok[:, None], e.coords, 1e100), 0, 25)
    assert e.siblings(0, n=25).index.tolist() == rows.tolist()
    with pytest.raises(ValueError, match="has no RSCA coordinates"):
        e.siblings(int(lacking[1]))


def test_abundance_embedding_has_no_compression_and_cannot_project(ds):
    e = embed(ds, input="subset")
    assert e.compression is None and e.n_axes == 7
    with pytest.raises(ValueError, match="project needs an embedding of spectra"):
        project(e, ds.spectra[:1], ds.mask[:1])


# ------------------------------------------------------------------------------------ candidates
def test_leave_one_cluster_out_rate_is_evaluates(ds, emb):
    inp = ds.rate_inputs("spectra", k=K, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a cluster without filtered pairs has an undefined rate
        ref = doppelganger_rates(
            inp.z_pop, inp.z_clust, inp.cluster_ids, **inp.as_kwargs(), cv=True, keep_distances=False
        ).per_cluster
    for r in ref.itertuples():
        got = emb.loo_rate(r.cluster)
        assert (np.isnan(got) and np.isnan(r.rate)) or got == pytest.approx(r.rate, abs=1e-12)


def test_candidates_follow_the_documented_rule(ds, emb):
    cl = ds.stars["cluster"].to_numpy(object)
    for name in ("NGC_188", "NGC_2682", "NGC_6791"):
        for pf in (False, True):
            res = emb.candidates(name, pair_filter=pf)
            Y = emb.coords[cl == name]
            radius, centre = np.median(pdist(Y)), np.median(Y, axis=0)
            d = np.sqrt(((emb.coords - centre) ** 2).sum(1))
            field = cl == ""
            if pf:
                v, ak = ds.stars["vhelio_avg"].to_numpy(float), ds.stars["ak_targ"].to_numpy(float)
                field &= np.abs(v - np.median(v[cl == name])) < 5
                field &= np.abs(ak - np.median(ak[cl == name])) < 0.05
            want = np.flatnonzero(field & (d < radius))
            assert sorted(res.table.index) == want.tolist()
            assert res.table["distance"].is_monotonic_increasing
            assert res.radius == pytest.approx(radius, rel=1e-12)
            assert res.n_searched == int(field.sum())
            rate = emb.loo_rate(name, pair_filter=pf)
            assert res.expected_chance == pytest.approx(rate * field.sum())
    with pytest.raises(ValueError, match="unknown cluster 'Nowhere'"):
        emb.candidates("Nowhere")


def test_unfiltered_loo_rate_is_doppelganger_rates_without_the_filter(ds, emb):
    inp = ds.rate_inputs("spectra", k=K, seed=0)
    ref = doppelganger_rates(inp.z_pop, inp.z_clust, inp.cluster_ids, cv=True, keep_distances=False).per_cluster
    r = ref.set_index("cluster")["rate"]
    assert emb.loo_rate("NGC_188", pair_filter=False) == pytest.approx(r["NGC_188"], abs=1e-12)


# ------------------------------------------------------------------------------------ projection
def test_project_of_bundle_stars_reproduces_their_coordinates(ds, emb):
    rows = np.arange(0, ds.n_stars, 9)
    P = project(emb, ds.spectra[rows], ds.mask[rows])
    err = np.linalg.norm(P - emb.coords[rows], axis=1)
    # the compression's EM stops at a relative objective change of 1e-4: far below sibling scales
    assert err.max() < 0.01 * np.median(emb.intra_distances)
    for i, r in enumerate(rows[:10]):
        assert emb.siblings_of_point(P[i], n=1).index[0] == r


def write_aspcapstar(path, flux, err):
    from astropy.io import fits

    h1 = fits.ImageHDU(np.asarray(flux, np.float32))
    h1.header["CRVAL1"], h1.header["CDELT1"] = LOGLAM0, DLOGLAM
    fits.HDUList([fits.PrimaryHDU(), h1, fits.ImageHDU(np.asarray(err, np.float32))]).writeto(path)


def test_project_from_aspcapstar_files_uses_the_bundle_mask_rule(ds, emb, tmp_path):
    rows = [0, 150, ds.n_stars - 1]
    paths = []
    for r in rows:
        p = tmp_path / f"aspcapStar-r12-{ds.stars['apogee_id'][r]}.fits"
        write_aspcapstar(p, ds.spectra[r], ds.errors[r])
        paths.append(p)
    ids, flux, mask = read_spectra_files(paths, ds)
    assert ids == [ds.stars["apogee_id"][r] for r in rows]
    assert np.array_equal(mask, ds.mask[rows])  # same rule as the bundle's own mask
    P = project(emb, flux, mask)
    assert np.linalg.norm(P - emb.coords[rows], axis=1).max() < 0.01 * np.median(emb.intra_distances)

    out = tmp_path / "proj.csv"
    rc = cli_main(
        ["project", "--dataset", str(ds.path), "--k", str(K), "--spectra", *map(str, paths), "--out", str(out)]
    )
    assert rc == 0
    table, meta = read_catalogue(out)
    assert table["nearest"].tolist() == ids and meta["k"] == K and meta["simulated"] is True
    assert np.allclose(table[[f"rsca_{j + 1}" for j in range(K)]].to_numpy(), P)


# ------------------------------------------------------------------------------------ catalogues
def test_fits_catalogue_round_trips_through_astropy(ds, emb, tmp_path):
    from astropy.io import fits

    out = tmp_path / "emb.fits"
    assert cli_main(["embed", "--dataset", str(ds.path), "--k", str(K), "--out", str(out)]) == 0
    with fits.open(out) as hdul:
        h, data = hdul[1].header, hdul[1].data
        assert hdul[0].header["SIMULATD"] is True
        assert h["K"] == K and h["INPUT"] == "spectra" and h["SEED"] == 0 and h["SIMULATD"] is True
        assert h["CLUSTERS"].split(",") == ds.cluster_names
        assert [c.strip() for c in data["apogee_id"]] == list(ds.stars["apogee_id"])
        got = np.column_stack([data[f"rsca_{j + 1}"] for j in range(K)])
    assert np.array_equal(got, emb.coords)


def test_parquet_and_csv_catalogues_round_trip_through_pandas(ds, emb, tmp_path):
    out = tmp_path / "emb.parquet"
    assert cli_main(["embed", "--dataset", str(ds.path), "--k", str(K), "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    meta = df.attrs["rsca"]
    assert meta["k"] == K and meta["input"] == "spectra" and meta["seed"] == 0 and meta["simulated"] is True
    assert meta["clusters"] == ds.cluster_names
    assert df["apogee_id"].tolist() == list(ds.stars["apogee_id"])
    assert np.array_equal(df[[f"rsca_{j + 1}" for j in range(K)]].to_numpy(), emb.coords)

    csv = tmp_path / "emb.csv"
    assert cli_main(["embed", "--dataset", str(ds.path), "--k", str(K), "--out", str(csv)]) == 0
    side = json.loads((tmp_path / "emb.csv.json").read_text())
    assert side == meta
    back = pd.read_csv(csv, dtype={"apogee_id": str})
    assert np.allclose(back[[f"rsca_{j + 1}" for j in range(K)]].to_numpy(), emb.coords, rtol=1e-15, atol=0)


# ------------------------------------------------------------------------------------ CLI
def run_cli(capsys, *argv):
    rc = cli_main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_siblings_and_candidates_match_the_api(ds, emb, capsys):
    sid = ds.stars["apogee_id"][5]
    rc, out, _ = run_cli(
        capsys, "siblings", "--dataset", str(ds.path), "--k", str(K), "--star", sid, "--n", "7", "--json"
    )
    assert rc == 0
    got = json.loads(out)
    ref = emb.siblings(sid, n=7)
    assert [s["apogee_id"] for s in got["siblings"]] == ref["apogee_id"].tolist()
    assert [s["distance"] for s in got["siblings"]] == pytest.approx(ref["distance"].tolist())
    rc, out, _ = run_cli(
        capsys, "candidates", "--dataset", str(ds.path), "--k", str(K), "--cluster", "NGC_188", "--json"
    )
    res = emb.candidates("NGC_188")
    got = json.loads(out)
    assert rc == 0 and got["n_candidates"] == res.n_candidates
    assert got["expected_chance"] == pytest.approx(res.expected_chance)
    rc, out, _ = run_cli(capsys, "siblings", "--dataset", str(ds.path), "--k", str(K), "--star", sid, "--n", "3")
    assert rc == 0 and "[simulated]" in out and len(out.strip().splitlines()) == 2 + 1 + 3


def test_cli_errors_are_one_clear_line(ds, tmp_path, capsys):
    D = ["--dataset", str(ds.path), "--k", str(K)]
    bad = tmp_path / "aspcapStar-r12-broken.fits"
    bad.write_bytes(b"SIMPLE  = T" + b"\0" * 100)
    cases = [
        (["siblings", *D, "--star", "2M_NOT_THERE"], "2M_NOT_THERE"),
        (["candidates", *D, "--cluster", "NGC_0000"], "NGC_0000"),
        (["project", *D, "--spectra", str(bad), "--out", str(tmp_path / "p.csv")], str(bad)),
        (
            ["project", *D, "--spectra", str(tmp_path / "missing.fits"), "--out", str(tmp_path / "p.csv")],
            "missing.fits",
        ),
        (["embed", *D, "--out", str(tmp_path / "x.xlsx")], "x.xlsx"),
        (["siblings", "--dataset", str(tmp_path / "nodata"), "--star", "x"], "nodata"),
    ]
    for argv, name in cases:
        rc, out, err = run_cli(capsys, *argv)
        assert rc == 1, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], err
    existing = tmp_path / "keep.csv"
    existing.write_text("precious\n")
    rc, _, err = run_cli(capsys, "embed", *D, "--out", str(existing))
    assert rc == 1 and "already exists" in err and existing.read_text() == "precious\n"


def test_cli_training_clusters_are_recorded(ds, tmp_path, capsys):
    names = ds.cluster_names[:5]
    out = tmp_path / "sub.parquet"
    argv = ["embed", "--dataset", str(ds.path), "--k", str(K), "--clusters", ",".join(names), "--out", str(out)]
    assert cli_main(argv) == 0
    df = pd.read_parquet(out)
    assert df.attrs["rsca"]["clusters"] == names
    ref = embed(ds, k=K, clusters=names)
    assert np.array_equal(df[[f"rsca_{j + 1}" for j in range(K)]].to_numpy(), ref.coords)
    rc, _, err = run_cli(
        capsys,
        "embed",
        "--dataset",
        str(ds.path),
        "--k",
        str(K),
        "--clusters",
        "Nope_1",
        "--out",
        str(tmp_path / "y.csv"),
    )
    assert rc == 1 and "Nope_1" in err and len(err.strip().splitlines()) == 1
