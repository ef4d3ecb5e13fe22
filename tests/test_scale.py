"""Scale (issue 14): MaskedPCA on dask arrays (threads, a LocalCluster) equals the in-memory fit;
bundles stored as Zarr load and compress like the .npy ones; ``compress --scheduler``."""

import shutil

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
pytest.importorskip("distributed")
pytest.importorskip("zarr")

from rsca_core import Dataset, MaskedPCA  # noqa: E402
from rsca_core.cli import main  # noqa: E402
from rsca_core.scale import dask_arrays, scheduler, write_zarr  # noqa: E402
from tests.helpers import small_dataset  # noqa: E402


def gap(A, B):
    """1 − smallest cosine of the principal angles between the row spaces of A and B."""
    return 1 - np.linalg.svd(A @ B.T, compute_uv=False).min()


def aligned(Z, W, ref_W):
    """Scores with the signs of the components turned to match ``ref_W``."""
    return Z * np.sign(np.sum(W * ref_W, axis=1))


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    ds = small_dataset(n_field=900, n_pixels=300, seed=11)
    rng = np.random.default_rng(3)
    mask = np.asarray(ds.mask).copy()
    mask[:, 100:110] = True  # a band missing for every star (left out of the fit)
    mask[rng.random(len(mask)) < 0.2, 150:190] = True  # runs, like chip edges
    ds.mask = mask
    return ds.save(tmp_path_factory.mktemp("scale") / "survey")


@pytest.mark.parametrize("randomized", [False, True])  # exact basis / subspace iteration
def test_dask_on_a_local_cluster_equals_the_in_memory_fit(survey, randomized):
    from distributed import Client, LocalCluster

    ds = Dataset.load(survey)
    opts = dict(random_state=0, exact_below=100 if randomized else 1024, chunk_rows=128)
    mem = MaskedPCA(5, **opts)
    z_mem = mem.fit_transform(ds.spectra, ds.mask)
    X, M = dask_arrays(ds, chunk_rows=128)
    assert X.npartitions > 4
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl, Client(cl):
        dpca = MaskedPCA(5, **opts)
        z_dask = dpca.fit_transform(X, M)
        z_new = dpca.transform(X, M)  # transform of dask arrays, block by block on the cluster
    assert mem.n_iter_ == dpca.n_iter_ and mem.converged_ and dpca.converged_
    assert gap(mem.components_, dpca.components_) < 1e-6
    assert np.all(dpca.components_[:, 100:110] == 0)
    np.testing.assert_allclose(dpca.mean_, mem.mean_, atol=1e-6)
    np.testing.assert_allclose(dpca.explained_variance_, mem.explained_variance_, rtol=1e-5)
    np.testing.assert_allclose(dpca.objective_, mem.objective_, rtol=1e-6)
    scale = np.abs(z_mem).max()
    np.testing.assert_allclose(aligned(z_dask, dpca.components_, mem.components_), z_mem, atol=1e-5 * scale)
    # transform of dask arrays: the in-memory transform's least-squares scores, block by block
    np.testing.assert_allclose(z_new, dpca.transform(np.asarray(ds.spectra), np.asarray(ds.mask)), atol=1e-10)


def test_dask_threads_report_bad_data_by_row_and_column():
    X = np.ones((50, 8), np.float32)
    X[37, 5] = np.nan
    with scheduler("threads"), pytest.raises(ValueError, match=r"row 37, column 5"):
        MaskedPCA(2).fit(da.from_array(X, chunks=(10, 8)))
    m = np.zeros(X.shape, bool)
    m[37, 5] = True  # masked: fine
    with scheduler("synchronous"):
        pca = MaskedPCA(2, random_state=0).fit(da.from_array(X, chunks=(10, 8)), da.from_array(m, chunks=(10, 8)))
    assert np.isfinite(pca.components_).all()


def test_a_zarr_bundle_loads_and_compresses_like_the_npy_one(survey, tmp_path):
    copy = tmp_path / "zarr-survey"
    shutil.copytree(survey, copy)
    written = write_zarr(copy, chunk_rows=100)
    assert {p.name for p in written} == {"spectra.zarr", "mask.zarr"}
    with pytest.raises(FileExistsError, match="spectra.zarr"):
        write_zarr(copy)
    for name in ("spectra", "mask"):
        (copy / f"{name}.npy").unlink()
    z = Dataset.load(copy)
    ref = Dataset.load(survey)
    assert type(z.spectra).__module__.startswith("zarr")
    np.testing.assert_array_equal(z.spectra[10:20], ref.spectra[10:20])
    np.testing.assert_array_equal(z.mask[:], ref.mask)
    a = ref.compress(4, use_cache=False)
    b = z.compress(4, use_cache=False)  # rows read chunk by chunk from Zarr
    assert gap(a.components, b.components) < 1e-6
    with scheduler("threads"):
        c = z.compress(4, use_cache=False, arrays=dask_arrays(z, chunk_rows=100))  # from Zarr on dask
    assert gap(a.components, c.components) < 1e-6
    # a Zarr array of the wrong shape is named
    shutil.rmtree(copy / "mask.zarr")
    import zarr

    zarr.create_array(str(copy / "mask.zarr"), shape=(3, 3), dtype=bool)
    with pytest.raises(ValueError, match=r"mask.zarr: shape \(3, 3\)"):
        Dataset.load(copy)


def test_compress_cli_with_a_scheduler_caches_the_in_memory_result(survey, tmp_path, capsys):
    copy = tmp_path / "cli-survey"
    shutil.copytree(survey, copy)
    assert main(["compress", "--dataset", str(copy), "--k", "4", "--quiet", "--scheduler", "local"]) == 0
    assert "K=4 compression" in capsys.readouterr().out
    ds = Dataset.load(copy)
    cached = list((copy / "cache").glob("pca-k4-seed0-*.npz"))
    assert len(cached) == 1
    with np.load(cached[0]) as f:
        comps = f["components"]
    ref = ds.compress(4, use_cache=False)
    assert gap(comps.astype(float), ref.components.astype(float)) < 1e-6
    # an unreachable scheduler: a one-line error naming it
    assert main(["compress", "--dataset", str(copy), "--k", "4", "--quiet", "--scheduler", "tcp://127.0.0.1:9"]) == 1
    assert "tcp://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.parametrize("keep", [0.15, 0.0])  # missing positions kept on the workers / mask read every pass
def test_a_dask_pass_equals_the_pass_written_out_in_numpy(survey, keep):
    from rsca_core.scale import DaskPasses

    ds = Dataset.load(survey)
    X, M = np.asarray(ds.spectra, dtype=np.float32), np.asarray(ds.mask)
    rng = np.random.default_rng(5)
    n, p = X.shape
    mu = X.mean(axis=0)
    V = np.linalg.qr(rng.standard_normal((p, 7)))[0]
    Wt = np.linalg.qr(rng.standard_normal((p, 4)))[0].T
    Z = rng.standard_normal((n, 4))
    # the passes by hand. First: missing entries take the centre; then: impute from the previous
    # model Z·Wt, error on the observed entries, C V, Cᵀ C V — where, in each block of 97 rows, rows
    # observing < 10 % of the pixels score 0 and sit at the centre, and rows missing > 20 % (at most 4
    # a block, the most-missing first) take their least-squares scores
    C0 = np.where(M, 0, X - mu)
    Z0, Z, sparse = Z, Z.copy(), M.sum(axis=1) > 0.9 * p
    for a in range(0, n, 97):
        cnt = M[a : a + 97].sum(axis=1)
        heavy = np.flatnonzero((cnt > 0.2 * p) & ~sparse[a : a + 97])
        for i in a + heavy[np.argsort(-cnt[heavy], kind="stable")][: max(1, len(cnt) // 20)]:
            o = ~M[i]
            Z[i] = np.linalg.lstsq(Wt[:, o].T.astype(float), (X[i, o] - mu[o]).astype(float), rcond=None)[0]
    Z[sparse] = 0
    R = Z @ Wt
    C = np.where(M | sparse[:, None], R, X - mu)
    want = C.sum(axis=0), float(((C - R)[~M] ** 2).sum()), C @ V, C.T @ (C @ V)
    with scheduler("threads"):
        passes = DaskPasses(*dask_arrays(ds, chunk_rows=97), np.float32, keep_fraction=keep)
        Y0 = np.empty((n, 7), np.float32)
        colsum, nobs, n_missing, B0 = passes.first(mu, V.astype(np.float32), Y0)
        assert (passes.kept is not None) == (keep > 0)
        Y = np.empty((n, 7), np.float32)
        got = passes.run(mu, V.astype(np.float32), Wt.astype(np.float32), Z0, Y)
        again = passes.run(mu, V.astype(np.float32), Wt.astype(np.float32), Z0, Y.copy())  # buffers reused
    assert n_missing == M.sum() and np.array_equal(nobs, n - M.sum(axis=0))
    np.testing.assert_allclose(colsum, C0.sum(axis=0), atol=1e-3)
    np.testing.assert_allclose(Y0, C0 @ V, atol=1e-4 * np.abs(C0 @ V).max())
    np.testing.assert_allclose(B0, C0.T @ (C0 @ V), atol=1e-4 * np.abs(C0.T @ (C0 @ V)).max())
    np.testing.assert_allclose(got[0], want[0], atol=1e-3)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4)
    np.testing.assert_allclose(Y, want[2], atol=1e-4 * np.abs(want[2]).max())
    np.testing.assert_allclose(got[2], want[3], atol=1e-4 * np.abs(want[3]).max())
    np.testing.assert_array_equal(again[2], got[2])
