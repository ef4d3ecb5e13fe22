"""MaskedPCA: ordinary PCA on complete data, a better fit than mean imputation with missing pixels."""

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from rsca_core import MaskedPCA
from rsca_core.compress import blas_threads


def low_rank(n=300, p=200, rank=6, noise=0.05, seed=0, dtype=float):
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((n, rank)) * np.geomspace(8, 1, rank)
    X = L @ rng.standard_normal((rank, p)) + noise * rng.standard_normal((n, p)) + 3.0
    return X.astype(dtype)


def svd_pca(X, k):
    mu = X.mean(0)
    _, s, vt = np.linalg.svd(X - mu, full_matrices=False)
    return vt[:k], s[:k] ** 2 / (len(X) - 1), mu


def subspace_gap(A, B):
    """1 − smallest cosine of the principal angles between the row spaces of A and B."""
    s = np.linalg.svd(A @ B.T, compute_uv=False)
    return 1 - s.min()


@pytest.mark.parametrize("p", [200, 1500])  # exact basis / randomized subspace iteration
def test_complete_data_is_ordinary_pca(p):
    X = low_rank(p=p)
    pca = MaskedPCA(5, random_state=0).fit(X)
    comps, var, mu = svd_pca(X, 5)
    assert subspace_gap(pca.components_, comps) < 1e-6
    for i in range(5):  # each axis, not only the subspace
        assert abs(pca.components_[i] @ comps[i]) == pytest.approx(1, abs=1e-6)
    assert np.allclose(pca.explained_variance_, var, rtol=1e-6)
    assert np.allclose(pca.mean_, mu)
    assert np.allclose(pca.components_ @ pca.components_.T, np.eye(5), atol=1e-10)


def test_missing_pixels_beat_mean_imputation_on_held_out_pixels():
    X = low_rank(n=400, p=300, seed=1)
    rng = np.random.default_rng(2)
    mask = rng.random(X.shape) < 0.10
    mask[:, 40:70] |= rng.random((400, 1)) < 0.3  # blocks of missing pixels, as in chip gaps/bands
    held = (~mask) & (rng.random(X.shape) < 0.05)  # observed pixels we hide and predict
    train_mask = mask | held
    Xobs = np.where(train_mask, -999.0, X)  # garbage under the mask must not matter

    pca = MaskedPCA(6, random_state=0, tol=1e-9, max_iter=500)
    Z = pca.fit_transform(Xobs, train_mask)
    err_em = np.sqrt(np.mean((pca.inverse_transform(Z) - X)[held] ** 2))

    # baseline: fill missing pixels with the column mean, ordinary PCA
    col_mean = np.nanmean(np.where(train_mask, np.nan, X), axis=0)
    Xf = np.where(train_mask, col_mean, X)
    comps, _, mu = svd_pca(Xf, 6)
    rec = (Xf - mu) @ comps.T @ comps + mu
    err_mean = np.sqrt(np.mean((rec - X)[held] ** 2))
    assert err_em < 0.5 * err_mean
    assert err_em < 0.1  # close to the noise level 0.05


def test_transform_is_least_squares_on_observed_pixels():
    X = low_rank(n=200, p=120, seed=3)
    pca = MaskedPCA(4, random_state=0).fit(X)
    rng = np.random.default_rng(4)
    new = X[:10] + 0.01 * rng.standard_normal((10, 120))
    m = rng.random(new.shape) < 0.2
    z = pca.transform(np.where(m, np.nan, new), m)
    W = pca.components_.T
    for i in range(10):
        o = ~m[i]
        expected, *_ = np.linalg.lstsq(W[o], new[i, o] - pca.mean_[o], rcond=None)
        assert np.allclose(z[i], expected, atol=1e-8)


def test_deterministic_and_memmap_float32(tmp_path):
    X = low_rank(n=500, p=1300, seed=5, dtype=np.float32)
    rng = np.random.default_rng(6)
    mask = rng.random(X.shape) < 0.05
    path = tmp_path / "x.npy"
    np.save(path, X)
    mm = np.load(path, mmap_mode="r")
    a = MaskedPCA(5, random_state=7).fit(mm, mask)
    b = MaskedPCA(5, random_state=7).fit(X.copy(), mask)
    assert np.array_equal(a.components_, b.components_)
    assert np.array_equal(np.load(path), X), "input file untouched"
    c = MaskedPCA(5, random_state=8, tol=1e-10, max_iter=300).fit(mm, mask)
    assert subspace_gap(a.components_, c.components_) < 1e-4  # another seed, same answer


def test_errors():
    X = low_rank(n=20, p=10)
    with pytest.raises(ValueError, match="larger than the data allows"):
        MaskedPCA(11).fit(X)
    with pytest.raises(ValueError, match="mask shape"):
        MaskedPCA(2).fit(X, np.zeros((20, 9), bool))
    Xn = X.copy()
    Xn[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"row 3, column 4"):
        MaskedPCA(2).fit(Xn)
    m = np.zeros_like(X, dtype=bool)
    m[3, 4] = True
    MaskedPCA(2).fit(Xn, m)  # NaN under the mask is fine
    with pytest.raises(ValueError, match="not fitted"):
        MaskedPCA(2).transform(X)


@pytest.mark.parametrize("p", [200, 1500])
def test_pixels_missing_for_every_star_are_left_out_of_the_fit(p):
    # masked bands (missing for all stars): the fit on the other pixels is ordinary PCA of them when
    # those are complete, and the dropped pixels get zero loading and zero mean
    X = low_rank(p=p, seed=4)
    band = np.zeros(p, bool)
    band[p // 3 : p // 3 + p // 10] = True
    mask = np.broadcast_to(band, X.shape).copy()
    X[mask] = np.nan  # never read
    pca = MaskedPCA(5, random_state=0).fit(X, mask)
    comps, var, mu = svd_pca(X[:, ~band], 5)
    assert np.all(pca.components_[:, band] == 0) and np.all(pca.mean_[band] == 0)
    assert subspace_gap(pca.components_[:, ~band], comps) < 1e-6
    assert np.allclose(pca.explained_variance_, var, rtol=1e-6)
    assert np.allclose(pca.mean_[~band], mu)
    # with other pixels missing too: the same fit as on the observed-somewhere pixels alone
    rng = np.random.default_rng(1)
    holes = mask | (rng.random(X.shape) < 0.05)
    Xh = np.where(holes, 0.0, X)
    # (run to tol 1e-12: the first pass sums the band's zero columns too, so the two paths differ by
    # rounding, and they meet at the same fixed point)
    full = MaskedPCA(5, random_state=0, tol=1e-12).fit(Xh, holes)
    alone = MaskedPCA(5, random_state=0, tol=1e-12).fit(Xh[:, ~band], holes[:, ~band])
    assert np.allclose(full.components_[:, ~band], alone.components_, atol=1e-12)
    assert np.allclose(full.transform(Xh, holes), alone.transform(Xh[:, ~band], holes[:, ~band]), atol=1e-9)
    assert full.missing_fraction_ == pytest.approx(holes.mean())


def test_masked_pca_follows_scikit_learn_conventions():
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    pca = MaskedPCA(4, random_state=3, tol=1e-6)
    twin = clone(pca)
    assert twin.get_params() == pca.get_params() and twin is not pca
    with pytest.raises(NotFittedError):
        pca.transform(np.zeros((2, 10)))


def test_a_cached_compression_scores_new_spectra_like_the_fit():
    """Compression.transform (used for spectra outside the bundle) gives a bundle star its own score."""
    from tests.helpers import small_dataset

    ds = small_dataset(n_field=200, n_pixels=120, seed=5)
    comp = ds.compress(5, use_cache=False, tol=1e-10, max_iter=1000)  # at the EM fixed point
    rows = np.arange(0, ds.n_stars, 7)
    got = comp.transform(np.asarray(ds.spectra)[rows], np.asarray(ds.mask)[rows])
    # components are stored as float32: rows with many missing pixels differ at the 1e-3 level
    np.testing.assert_allclose(got, comp.scores[rows], atol=1e-2 * np.abs(comp.scores).max())


def test_a_compression_cached_by_another_algorithm_version_is_not_served(tmp_path, monkeypatch):
    """The cache file name carries compress.ALGORITHM_VERSION: after an algorithm change the stored
    result of the old one is left alone and a fresh fit is made (and cached beside it)."""
    import rsca_core.compress as compress
    from tests.helpers import small_dataset

    ds = small_dataset(n_field=120, n_pixels=80, seed=2)
    ds.cache_root, ds.meta["uid"] = tmp_path, "version-test"  # cached only with a uid
    first = ds.compress(3, seed=0)
    assert first.path.name.endswith(f"-a{compress.ALGORITHM_VERSION}.npz")
    # poison the cached file: if it were served after the version change, the scores would be zeros
    with np.load(first.path) as z:
        arrays = dict(z)
    np.savez(first.path, **(arrays | {"scores": np.zeros_like(arrays["scores"])}))
    assert np.all(ds.compress(3, seed=0).scores == 0), "same version: the cached file is served"
    monkeypatch.setattr(compress, "ALGORITHM_VERSION", compress.ALGORITHM_VERSION + 1)
    fresh = ds.compress(3, seed=0)
    assert fresh.path != first.path and fresh.path.exists() and first.path.exists()
    np.testing.assert_allclose(np.abs(fresh.scores), np.abs(first.scores), atol=1e-9)


def test_memory_mapped_bundle_with_a_masked_band_reads_the_same_rows(tmp_path):
    """Whole-file .npy memory maps are read from the file (not through the mapping), also when a
    band missing for every star is left out: the fit is the in-memory one, bit for bit."""
    X = low_rank(n=300, p=1200, seed=9, dtype=np.float32)
    rng = np.random.default_rng(9)
    mask = rng.random(X.shape) < 0.05
    mask[:, 500:560] = True
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "m.npy", mask)
    mx, mm = np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "m.npy", mmap_mode="r")
    a = MaskedPCA(4, random_state=1, chunk_rows=70).fit(mx, mm)
    b = MaskedPCA(4, random_state=1, chunk_rows=70).fit(X.copy(), mask.copy())
    assert np.array_equal(a.components_, b.components_) and np.array_equal(a.mean_, b.mean_)
    c = MaskedPCA(4, random_state=1, chunk_rows=70).fit(mx[10:], mm[10:])  # a slice of the map: read through it
    d = MaskedPCA(4, random_state=1, chunk_rows=70).fit(X[10:].copy(), mask[10:].copy())
    assert np.array_equal(c.components_, d.components_)


def test_rows_with_almost_nothing_observed_sit_at_the_centre_and_leave_the_axes_alone():
    """A spectrum observing fewer than 10 % of the pixels (the lowest-SNR stars, masked almost
    everywhere) gets score 0 (the centre) and does not shape the axes: the fit equals ordinary PCA of
    the other, complete rows, however wild its few observed pixels are."""
    X = low_rank(n=300, p=400, seed=11)
    rng = np.random.default_rng(12)
    extra = X[:4] + 40.0 * rng.standard_normal((4, 400))  # wild values ...
    m_extra = rng.random((4, 400)) > 0.05  # ... at about 5 % of the pixels
    m_extra[3] = True  # and one row with nothing observed
    Xa = np.vstack([X, np.where(m_extra, np.nan, extra)])
    mask = np.vstack([np.zeros_like(X, bool), m_extra])
    pca = MaskedPCA(5, random_state=0, tol=1e-12, max_iter=300)
    Z = pca.fit_transform(Xa, mask)
    comps, _, mu = svd_pca(X, 5)  # the complete rows alone
    assert subspace_gap(pca.components_, comps) < 1e-8
    assert np.allclose(pca.mean_, mu, atol=1e-8)
    assert np.abs(Z[-4:]).max() < 1e-6
    assert np.array_equal(pca.transform(Xa[-4:], mask[-4:]), np.zeros((4, 5)))
    assert np.allclose(Z[:-4], (X - mu) @ pca.components_.T, atol=1e-6)


def test_heavily_masked_rows_converge_to_their_least_squares_scores_in_fewer_passes(monkeypatch):
    """Rows missing 30–80 % of their pixels are solved exactly each pass: the fixed point is the same
    (each row's score is the least-squares fit of its observed pixels, computed here row by row), and
    it is reached in fewer passes than when EM moves them by their observed fraction a pass."""
    import rsca_core.compress as compress

    X = low_rank(n=300, p=200, seed=13)
    rng = np.random.default_rng(14)
    mask = rng.random(X.shape) < 0.01
    frac = rng.uniform(0.3, 0.8, size=15)
    for i, f in enumerate(frac):
        mask[i] = rng.random(200) < f
    Xm = np.where(mask, np.nan, X)
    fast = MaskedPCA(5, random_state=0, tol=1e-8, max_iter=300, exact_below=0)
    Z = fast.fit_transform(Xm, mask)
    W, mu = fast.components_.T, fast.mean_
    for i in range(15):
        o = ~mask[i]
        expected = np.linalg.lstsq(W[o], X[i, o] - mu[o], rcond=None)[0]
        assert np.allclose(Z[i], expected, atol=1e-5)
    monkeypatch.setattr(compress, "HEAVY_ROW_FRACTION", 1.0)
    slow = MaskedPCA(5, random_state=0, tol=1e-8, max_iter=300, exact_below=0).fit(Xm, mask)
    assert fast.converged_ and slow.converged_
    assert subspace_gap(slow.components_, fast.components_) < 1e-5
    assert 3 * fast.n_iter_ < slow.n_iter_


def test_chunks_worked_on_by_several_threads_give_the_one_thread_fit(tmp_path):
    """Each thread reads, imputes and multiplies its own chunks into its own buffers, the results
    added in chunk order: any number of threads gives the same fit (bit for bit from two threads on,
    where every chunk's BLAS runs on one core; one thread lets BLAS use the cores, which may round
    differently), and a bad value in a late chunk is still named by its row."""
    X = low_rank(n=640, p=1300, seed=11, dtype=np.float32)
    rng = np.random.default_rng(11)
    mask = rng.random(X.shape) < 0.05
    np.save(tmp_path / "x.npy", X)
    mx = np.load(tmp_path / "x.npy", mmap_mode="r")
    fits = {t: MaskedPCA(5, random_state=3, chunk_rows=40, n_threads=t).fit(mx, mask) for t in (1, 2, 3, 5)}
    for t in (3, 5):
        assert np.array_equal(fits[t].components_, fits[2].components_)
        assert np.array_equal(fits[t].mean_, fits[2].mean_) and fits[t].n_iter_ == fits[2].n_iter_
    assert subspace_gap(fits[1].components_, fits[2].components_) < 1e-6
    assert np.allclose(fits[1].mean_, fits[2].mean_, atol=1e-6)
    Xn = X.copy()
    Xn[601, 17] = np.inf
    blas_before = blas_threads()
    with pytest.raises(ValueError, match=r"row 601, column 17"):
        MaskedPCA(5, chunk_rows=40, n_threads=3).fit(Xn, mask & False)
    # the error leaves no chunk thread behind and BLAS with the threads it had
    assert not [t for t in threading.enumerate() if t.name.startswith("rsca-chunk")]
    assert blas_threads() == blas_before
    with pytest.raises(ValueError, match="n_threads"):
        MaskedPCA(5, n_threads=0).fit(X)
    with threadpool_limits(limits=1, user_api="blas"):  # one BLAS thread allowed: the default is one chunk thread
        assert MaskedPCA(5)._threads() == 1
