"""Step 1 of RSCA: PCA of spectra with missing pixels (``MaskedPCA``).

Masked pixels are *missing*, not zero. The fit is the classic EM algorithm for PCA with missing
values (missing entries are re-imputed from the current rank-K reconstruction until the
reconstruction of the *observed* entries stops improving), run with a warm-started block subspace
iteration so that every EM step costs one streaming pass over the data:

* the data may be a (memory-mapped) float32 matrix far larger than one wants to copy: it is read
  in row chunks; only N × (K + oversample) scores and P × (K + oversample) bases live in memory;
* each pass reads a chunk, imputes its missing pixels from the previous model, accumulates the
  column sums (for the mean) and both products ``C V`` and ``Cᵀ C V`` of the centred matrix ``C``;
  the shift of the mean inside a pass is corrected exactly afterwards;
* a Rayleigh–Ritz step on that basis yields the components, explained variances and scores.

On complete data this is ordinary PCA (for P ≤ ``exact_below`` the basis is the whole pixel space
and the answer is exact after one pass; above, subspace iteration runs to ``tol``).
The fixed point with missing data is the least-squares rank-K fit of the observed entries, with two
kinds of rows treated apart (:func:`least_squares_rows`): a row missing more than 20 % of its pixels is
scored by its least-squares fit every pass instead of waiting for EM to move it (same fixed point, far
fewer passes), and a row observing fewer than 10 % of them (the lowest-SNR stars, masked almost
everywhere) is left out of the fit and scores 0 (the centre), since its least-squares score is ill-posed.

Without weights (the default) one pass is three products per row chunk — the previous model's
reconstruction (to impute the missing pixels and measure the error of the observed ones), ``C V`` and
``Cᵀ (C V)`` — into reused buffers, with the missing positions of each chunk found once (first pass) and
kept as flat indices (5 % of the matrix in int32 when 5 % is missing). The first pass has no model yet:
it centres on the mean of the starting row sample, fills the missing entries with it, and counts the
observed entries and checks them for NaN/inf on the way (no separate pass for the mean). The chunk work
is one function per pass kind (:func:`block_first`, :func:`block_pass`): the in-memory loop and the Dask graph (:mod:`rsca_core.scale`; a dask array
``X`` runs every pass as one dask computation, on threads or a ``distributed`` cluster) call the same
code, so both give the same fit. In memory, several chunks are worked on at once (``n_threads``, one
chunk per thread, BLAS given the cores divided among them): NumPy's reading, centring and imputation
run on one core each, so with a single thread they left the other cores idle for about a third of a
pass (on the 40,000 × 7,514 benchmark a pass went from 2.1 s to 1.5 s on two cores).
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .progress import ConvergenceBar

#: Version of the fitting algorithm: part of the file name of cached compressions
#: (``Dataset.compression_path``), so that a compression fitted by an older algorithm is never served.
#: 2: one-pass imputation into reused buffers, missing positions kept as indices, dask passes.
#: 3: no pass of its own for the mean (the first pass centres on a row sample's mean and counts the
#: observed entries); the sample is read from the file instead of through the memory map.
#: 4: rows observing fewer than ``MIN_OBSERVED`` of the pixels are left out of the fit (score 0); rows
#: missing more than ``HEAVY_ROW_FRACTION`` are solved exactly each pass (``least_squares_rows``).
ALGORITHM_VERSION = 4

#: Default cap of the inverse-variance weights: errors below 0.005 (SNR 200 per pixel) count as 0.005.
IVAR_CAP = 1.0 / 0.005**2


def _check_matrix(X, name="X"):
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (stars × pixels), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real-valued, got dtype {X.dtype}")
    return X


def _check_mask(mask, shape):
    if mask is None:
        return None
    if not hasattr(mask, "shape"):
        mask = np.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match data shape {tuple(shape)}")
    if getattr(mask, "dtype", np.dtype(bool)) != np.dtype(bool):
        raise ValueError(f"mask must be boolean (True = missing), got dtype {mask.dtype}")
    return mask


def _chunk_rows(n_pixels, itemsize, target_bytes=48 << 20):
    return int(max(64, min(1 << 16, target_bytes // max(1, n_pixels * itemsize))))


class _Columns:
    """Row slices of a (memory-mapped) matrix restricted to some columns, copied on access run by
    run (kept columns come in a few contiguous runs: the bands between masked ones)."""

    def __init__(self, arr, keep):
        self.arr = arr
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
        self.runs = list(zip(edges[::2], edges[1::2]))
        self.shape = (arr.shape[0], int(keep.sum()))
        self.dtype = arr.dtype

    def __getitem__(self, rows):
        return self.select(self.arr[rows])

    def select(self, src, out=None, center=None):
        """The kept columns of full-width rows ``src`` (minus ``center``), into ``out`` if given."""
        if out is None:
            out = np.empty((src.shape[0], self.shape[1]), dtype=self.dtype)
        o = 0
        for a, b in self.runs:
            if center is None:
                out[:, o : o + b - a] = src[:, a:b]
            else:
                np.subtract(src[:, a:b], center[o : o + b - a], out=out[:, o : o + b - a])
            o += b - a
        return out


#: Rows of the random sample whose leading singular vectors start the subspace iteration.
INITIAL_SAMPLE = 1000
#: Rows missing more than this fraction of their pixels get least-squares scores every pass.
HEAVY_ROW_FRACTION = 0.2
#: Rows observing fewer than this fraction of the pixels are left out of the fit (score 0, the centre).
MIN_OBSERVED = 0.1


def usable_cores() -> int:
    """The number of cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def blas_threads() -> int:
    """The BLAS threads this process may use now (OPENBLAS_NUM_THREADS, or an enclosing
    ``threadpool_limits``; the cores when nothing limits them)."""
    from threadpoolctl import threadpool_info

    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=1)


def is_dask_array(X) -> bool:
    """True for a ``dask.array.Array`` (checked without importing dask)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "chunks")


def read_centred(X, a, b, center, out):
    """Rows ``a:b`` of ``X`` minus ``center``, written into ``out`` (a C-contiguous (b − a, P) buffer).

    ``X`` may be a memory map, a Zarr array or a column selection (``_Columns``): only the rows are
    read, with no further copy.
    """
    if isinstance(X, _Columns):
        return X.select(X.arr[a:b], out, center)
    np.subtract(X[a:b], center, out=out)
    return out


def missing_positions(m):
    """Flat indices (int32 when they fit) of the True entries of a chunk's mask, or None."""
    if m is None:
        return None
    idx = np.flatnonzero(m)
    if idx.size == 0:
        return None
    return idx.astype(np.int32) if m.size < 2**31 else idx


def block_stats(x, m, miss=None):
    """The counting part of the first pass on one row block: observed column sums (float64), observed counts, missing count and
    the first non-finite observed entry (row, column) or None. ``x`` is modified (missing entries → 0).
    ``miss``: the block's missing positions when already found (``missing_positions(m)``).
    """
    m = None if m is None else np.asarray(m, dtype=bool)
    if miss is None:
        miss = missing_positions(m)
    if miss is not None:
        np.put(x, miss, 0)
    nobs = np.full(x.shape[1], x.shape[0], dtype=np.int64)
    if m is not None:
        nobs -= np.count_nonzero(m, axis=0)
    colsum, bad = np.ones(x.shape[0], dtype=x.dtype) @ x, None
    if not np.isfinite(colsum).all():  # a NaN/inf observed entry (or an overflow): look entry by entry
        fin = np.isfinite(x)
        if not fin.all():
            r, c = np.argwhere(~fin)[0]
            bad = (int(r), int(c))
        colsum = x.sum(axis=0, dtype=np.float64)
    return np.asarray(colsum, dtype=np.float64), nobs, 0 if miss is None else int(miss.size), bad


def block_first(c, m, V, miss=None):
    """The first pass over a row block ``c`` of the data, centred on the sample's centre (overwritten):
    ``block_stats`` (missing entries take the centre, observed counts, the first non-finite observed
    entry) and the products ``Y = C V``, ``B = Cᵀ Y``. Returns ``(colsum, nobs, n_missing, bad, Y, B)``."""
    colsum, nobs, n_missing, bad = block_stats(c, m, miss)
    if bad is not None:
        return colsum, nobs, n_missing, bad, None, None
    Y = c @ V
    return colsum, nobs, n_missing, bad, Y, c.T @ Y


def raise_non_finite(row, column):
    """The one error for a NaN or inf at an observed entry."""
    raise ValueError(f"non-finite value at observed entry (row {row}, column {column}); mask it or fix the data")


def too_few_observed(n_missing, n_pixels):
    """True where a row misses so many of ``n_pixels`` that it observes fewer than ``MIN_OBSERVED``:
    such a row is left out of the fit and scores 0 (see :func:`least_squares_rows`, ``transform``)."""
    return n_missing > (1.0 - MIN_OBSERVED) * n_pixels


def observed_least_squares(Wt, obs, rhs):
    """The score ``z`` of one row fitted on its observed pixels ``obs`` by the orthonormal axes ``Wt``
    (K × P): the normal equations ``(W_oᵀ W_o) z = rhs`` with ``rhs = W_oᵀ x_o``. The Gram matrix is
    built from the smaller side (the identity minus the missing part when fewer are missing); a
    singular one (too few pixels) gives the minimum-norm answer."""
    n_obs = int(np.count_nonzero(obs))
    if n_obs > obs.size - n_obs:
        Wm = Wt[:, ~obs].astype(np.float64)
        G = np.eye(len(Wt)) - Wm @ Wm.T
    else:
        Wo = Wt[:, obs].astype(np.float64)
        G = Wo @ Wo.T
    try:
        return np.linalg.solve(G, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(G, rhs, rcond=None)[0]


def least_squares_rows(c, miss, Wt, Zb):
    """The scores a pass imputes with: ``Zb`` (the previous pass's) with two kinds of rows replaced.

    * Rows missing more than ``HEAVY_ROW_FRACTION`` (20 %) of their pixels take the least-squares fit
      of their observed pixels by the axes ``Wt`` (K × P, orthonormal rows), what ``transform`` gives:
      EM moves a score towards that fit only by about the row's observed fraction a pass (a row missing
      90 % of its pixels needs ~40 passes to get 98 % of the way), so these rows are solved exactly.
      The fixed point is the same. At most one row in 20 of a block, the most-missing first, so that
      a survey masked everywhere keeps the cost of a pass (its other rows converge as before).
    * Rows observing fewer than ``MIN_OBSERVED`` (10 %) of the pixels take score 0 (the centre), and
      ``block_pass`` leaves them out of the fit: with so few pixels their least-squares score is
      ill-posed (on the default survey 137–477 field standard deviations out on a weak axis for rows
      missing > 99 %), and EM would drift them towards it for hundreds of passes, turning the fit.

    Returns ``(scores, sparse_rows)`` (``sparse_rows``: indices into the block, or None).
    """
    if miss is None:
        return Zb, None
    n, p = c.shape
    cnt = np.bincount(miss // p, minlength=n)
    few = too_few_observed(cnt, p)
    sparse = np.flatnonzero(few)
    heavy = np.flatnonzero((cnt > HEAVY_ROW_FRACTION * p) & ~few)
    if sparse.size == 0 and heavy.size == 0:
        return Zb, None
    Zb = np.array(Zb, dtype=np.float64)
    Zb[sparse] = 0.0
    heavy = heavy[np.argsort(-cnt[heavy], kind="stable")][: max(1, n // 20)]
    for i, s0 in zip(heavy, np.searchsorted(miss, heavy * p)):
        obs = np.ones(p, bool)
        obs[miss[s0 : s0 + cnt[i]] - i * p] = False
        rhs = Wt[:, obs].astype(np.float64) @ c[i, obs].astype(np.float64)
        Zb[i] = observed_least_squares(Wt, obs, rhs)
    return Zb, (sparse if sparse.size else None)


def block_pass(c, miss, V, Wt=None, Zb=None, rbuf=None):
    """One EM pass over a row block ``c`` of the data, already centred on the pass's mean (overwritten).

    ``miss``: flat indices of the block's missing entries (or None). ``Wt`` (K × P) and ``Zb`` (rows × K):
    the previous model, which imputes the missing entries and whose squared error on the observed
    entries is measured; None on the first pass (missing entries then take the centre). ``V``: the
    (P × kb) basis of the pass. Returns the column sums of the completed block (float64), the squared
    error, ``Y = C V`` and ``B = Cᵀ Y`` (in the data's precision).
    """
    sq = 0.0
    if Wt is None:
        if miss is not None:
            np.put(c, miss, 0)
    else:
        Zb, sparse = least_squares_rows(c, miss, Wt, Zb)
        r = np.matmul(Zb.astype(c.dtype, copy=False), Wt, out=None if rbuf is None else rbuf[: c.shape[0]])
        if miss is not None:
            np.put(c, miss, r.take(miss))
        if sparse is not None:  # out of the fit: at the centre, no error
            c[sparse] = r[sparse]
        np.subtract(c, r, out=r)  # residual: 0 at the imputed entries
        # row sums in the data's precision, their total in float64 (≈1e-8 relative)
        sq = float(np.einsum("ij,ij->i", r, r).sum(dtype=np.float64))
    colsum = np.asarray(np.ones(c.shape[0], dtype=c.dtype) @ c, dtype=np.float64)
    Y = c @ V
    return colsum, sq, Y, c.T @ Y


class _FileRows:
    """Rows of a ``.npy`` memory map read from its file (``readinto``) instead of through the mapping:
    the pages then stay in the OS's page cache and do not count as this process's memory."""

    def __init__(self, arr):
        self.filename, self.offset, self.shape, self.dtype = arr.filename, arr.offset, arr.shape, arr.dtype
        self.row_bytes = arr.shape[1] * arr.dtype.itemsize

    @classmethod
    def of(cls, arr):
        """A reader for ``arr`` when it is a whole-file C-ordered memory map, else None."""
        if not (isinstance(arr, np.memmap) and arr.ndim == 2 and arr.flags.c_contiguous and arr.filename):
            return None
        try:
            whole = os.path.getsize(arr.filename) == arr.offset + arr.nbytes  # not a slice of a larger map
        except (OSError, TypeError):
            return None
        return cls(arr) if whole else None

    def _fill(self, fh, row, view, what):
        """Read ``len(view)`` bytes from row ``row`` on into ``view``; a short file names itself."""
        fh.seek(self.offset + int(row) * self.row_bytes)
        got = 0
        while got < len(view):
            k = fh.readinto(view[got:])
            if not k:
                raise ValueError(f"{self.filename}: truncated ({what} cannot be read)")
            got += k

    def take(self, rows):
        """The rows ``rows`` (sorted indices), read one by one from the file."""
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        with open(self.filename, "rb", buffering=0) as fh:
            for i, r in enumerate(rows):
                self._fill(fh, r, memoryview(out[i]).cast("B"), f"row {r}")
        return out

    def read(self, a, b, out=None):
        if out is None or out.dtype != self.dtype or out.shape != (b - a, self.shape[1]):
            out = np.empty((b - a, self.shape[1]), dtype=self.dtype)
        with open(self.filename, "rb", buffering=0) as fh:
            self._fill(fh, a, memoryview(out).cast("B"), f"rows {a}:{b}")
        return out


class _Buffers:
    """One thread's reused chunk buffers: the rows, the reconstruction, full-width raw rows."""

    def __init__(self, rows):
        self.rows, self.recon, self.raw = rows, None, None


class _ChunkedPasses:
    """The passes over an in-memory / memory-mapped / Zarr matrix: row chunks read into reused
    buffers; the missing positions of every chunk are found once (first pass) and kept while they take
    at most ``keep_fraction`` of the matrix's bytes (else re-read from the mask each pass)."""

    def __init__(self, X, mask, dtype, step, keep_fraction=0.15, threads=1):
        self.X, self.mask, self.dtype, self.step = X, mask, np.dtype(dtype), int(step)
        self.xfile = _FileRows.of(X.arr if isinstance(X, _Columns) else X)
        self.mfile = _FileRows.of(mask.arr if isinstance(mask, _Columns) else mask)
        n, p = X.shape
        self.bounds = [(a, min(n, a + self.step)) for a in range(0, n, self.step)]
        self.threads = max(1, min(int(threads), len(self.bounds)))
        self.free = queue.SimpleQueue()  # one set of chunk buffers per thread, taken by a chunk's work
        for _ in range(self.threads):
            self.free.put(_Buffers(np.empty((min(n, self.step), p), dtype=self.dtype)))
        self.budget = keep_fraction * n * p * self.dtype.itemsize
        self.miss = None

    def _chunks(self, work):
        """``work(i, a, b, bufs)`` for every chunk, its results yielded in chunk order (use it in a
        ``with contextlib.closing(...)``: a consumer's error then cancels the chunks not started).

        With ``threads`` > 1 the chunks run on that many threads, each with its own buffers (BLAS
        threads: :meth:`blas_limits`, set by the caller around the pass): the reading, centring and
        imputation of one chunk (one core each in NumPy) then overlap another chunk's products. Each
        chunk's arithmetic is the same whichever thread runs it, and the results are added in chunk
        order: the fit does not depend on timing.
        """

        def run(i, a, b):
            bufs = self.free.get()
            try:
                return work(i, a, b, bufs)
            finally:
                self.free.put(bufs)

        if self.threads == 1:
            for i, (a, b) in enumerate(self.bounds):
                yield run(i, a, b)
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rsca-chunk")
        pending = collections.deque()
        try:
            for i, (a, b) in enumerate(self.bounds):
                pending.append(pool.submit(run, i, a, b))
                if len(pending) > 2 * self.threads:  # a bounded window: results are P × kb each
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def blas_limits(self):
        """A context giving each chunk thread its share of the BLAS threads there were (the budget
        divided among them, at least 1), held by the calling thread for one pass (the starting basis
        and the Rayleigh–Ritz steps between passes keep every BLAS thread)."""
        if self.threads == 1:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=max(1, blas_threads() // self.threads), user_api="blas")

    def _mask(self, a, b):
        if self.mfile is None:
            return None if self.mask is None else np.asarray(self.mask[a:b], dtype=bool)
        m = self.mfile.read(a, b)
        return self.mask.select(m) if isinstance(self.mask, _Columns) else m

    def _rows(self, a, b, bufs, center=None):
        """Rows a:b in the thread's reused buffer (minus ``center`` when given)."""
        out = bufs.rows[: b - a]
        if self.xfile is None:
            if center is None:
                np.copyto(out, self.X[a:b], casting="unsafe")
                return out
            return read_centred(self.X, a, b, center, out)
        if isinstance(self.X, _Columns):
            if bufs.raw is None:
                bufs.raw = np.empty((bufs.rows.shape[0], self.X.arr.shape[1]), dtype=self.xfile.dtype)
            src = self.xfile.read(a, b, bufs.raw[: b - a])
            self.X.select(src, out, center)
            return out
        src = self.xfile.read(a, b, out)
        if center is not None:
            np.subtract(src, center, out=out)
        elif src is not out:
            np.copyto(out, src, casting="unsafe")
        return out

    def _keep_positions(self, kept, used, pos):
        """Add a block's missing positions ``pos`` to ``kept`` while all of them fit the budget."""
        if kept is None or self.mask is None:
            return None, used
        used += 0 if pos is None else pos.nbytes
        return (kept + [pos], used) if used <= self.budget else (None, used)

    def first(self, mu_c, V, Y):
        """The first pass (``block_first``): Y (N × kb, filled in place), column sums of the data
        completed with the centre, observed counts, number missing and B = Cᵀ C V; the missing positions
        are kept for the next passes and a non-finite observed entry raises."""
        p, kb = self.X.shape[1], V.shape[1]
        colsum, nobs, n_missing, B, kept, used = np.zeros(p), np.zeros(p, np.int64), 0, np.zeros((p, kb)), [], 0

        def work(i, a, b, bufs):
            c = self._rows(a, b, bufs, mu_c)
            m = self._mask(a, b)
            miss = missing_positions(m)
            return (a, b, miss) + block_first(c, m, V, miss)

        with self.blas_limits(), contextlib.closing(self._chunks(work)) as results:
            for a, b, miss, cs, nb, nm, bad, y, bb in results:
                if bad is not None:
                    raise_non_finite(a + bad[0], bad[1])
                colsum += cs
                nobs += nb
                n_missing += nm
                Y[a:b] = y
                B += bb
                kept, used = self._keep_positions(kept, used, miss)
        self.miss = kept
        return colsum, nobs, n_missing, B

    def columns(self, keep):
        """The same passes restricted to the columns ``keep`` (missing positions found again)."""
        sub = _ChunkedPasses(
            _Columns(self.X, keep),
            None if self.mask is None else _Columns(self.mask, keep),
            self.dtype,
            self.step,
            threads=self.threads,
        )
        kept, used = [], 0
        for a, b in sub.bounds:
            kept, used = sub._keep_positions(kept, used, missing_positions(sub._mask(a, b)))
        sub.miss = kept
        return sub

    def run(self, mu_c, V, Wt, Z, Y):
        """One pass: Y (N × kb, filled in place), column sums, squared error and B = Cᵀ C V."""
        p, kb = self.X.shape[1], V.shape[1]
        colsum, sq, B = np.zeros(p), 0.0, np.zeros((p, kb))

        def work(i, a, b, bufs):
            c = self._rows(a, b, bufs, mu_c)
            miss = self.miss[i] if self.miss is not None else missing_positions(self._mask(a, b))
            if Wt is not None and bufs.recon is None:
                bufs.recon = np.empty_like(bufs.rows)
            return (a, b) + block_pass(c, miss, V, Wt, None if Z is None else Z[a:b], bufs.recon)

        with self.blas_limits(), contextlib.closing(self._chunks(work)) as results:
            for a, b, cs, e, y, bb in results:
                colsum += cs
                sq += e
                Y[a:b] = y
                B += bb
        return colsum, sq, B

    def sample(self, rows):
        """Rows ``rows`` (sorted) of the data (float64) and of the mask; read from the files when they
        are memory maps, so the sample does not map (and count as resident) the pages around them."""
        X = self.xfile.take(rows) if self.xfile is not None and not isinstance(self.X, _Columns) else self.X[rows]
        if self.mask is None:
            return np.asarray(X, dtype=np.float64), None
        m = self.mfile.take(rows) if self.mfile is not None and not isinstance(self.mask, _Columns) else self.mask[rows]
        return np.asarray(X, dtype=np.float64), np.asarray(m, dtype=bool)


class MaskedPCA(TransformerMixin, BaseEstimator):
    """PCA of a data matrix with missing entries (boolean ``mask``, True = missing).

    Parameters
    ----------
    n_components : int
        K, the number of principal components kept.
    random_state : int or None
        Seed of the random starting basis (the result is deterministic for a seed).
    max_iter : int
        Maximum number of passes over the data.
    tol : float
        Convergence tolerance. With missing entries: stop when the relative decrease of the squared
        reconstruction error of the observed entries (the EM objective) falls below ``tol``. On
        complete data: when the top-K subspace moves by less than ``tol`` (largest principal angle)
        between passes, or the error changes by less than ``tol²``. The default 1e-4 is the
        threshold of the paper's PPCA (pyppca). Rows missing more than 20 % of their pixels are
        solved exactly every pass (EM would move them by their observed fraction a pass); rows
        observing fewer than 10 % of the pixels are left out of the fit and score 0 (the centre):
        their least-squares scores are ill-posed (see ``least_squares_rows``).
    oversample : int
        Extra basis vectors carried by the subspace iteration.
    exact_below : int
        With at most this many pixels, the whole pixel space is the basis (exact eigen-solve).
    chunk_rows : int or None
        Rows read per chunk (default: ~48 MB per chunk).
    n_threads : int or None
        Row chunks of an in-memory or memory-mapped matrix worked on at once (unweighted fits; a dask
        array runs on its scheduler's threads, a weighted fit on one), each by its own thread with its
        own buffers (two chunks' worth of memory per thread, three when masked bands are left out);
        BLAS's threads are shared among them during a pass. None: as many as BLAS may use
        (OPENBLAS_NUM_THREADS=1 keeps a fit on one core), at most 4. Chunk results are added in chunk
        order, so the fit does not depend on timing; it is the same bit for bit for any number of
        threads that leaves BLAS one thread each (one thread lets BLAS use the cores, which may round
        differently: 7e-9 on the 40,000 × 7,514 benchmark).
    progress : bool or callable
        ``True``: a bar on stderr that follows the convergence (each decade of improvement of the
        objective fills the same length; full when the change reaches ``tol``), with the pass number,
        the change and the target. A callable is called as ``progress(pass_index, rel_change, tol)``:
        once with pass 0 when the fit starts (before the first read of the data), then after every
        pass (``rel_change`` is ``inf`` until two passes can be compared). False: silent.
    weights : {None, "ivar"}
        None: every observed pixel counts the same. ``"ivar"``: each observed pixel of each star is
        weighted by its inverse variance 1/σ² from the ``errors`` given to :meth:`fit`, capped at
        ``ivar_cap`` and divided by the largest weight present (so weights lie in [0, 1]); the fit
        minimises the weighted squared error of the observed pixels (EM for weighted low-rank
        approximation, Srebro & Jaakkola 2003: each pass fills a pixel with ``w·x + (1 − w)·model``).
        With uniform errors this is exactly the unweighted fit.
    ivar_cap : float
        Largest inverse variance used (default ``IVAR_CAP`` = 1/0.005² = 40,000, i.e. errors below
        0.005 of the normalised flux — SNR above 200 per pixel — count as 0.005). Without a cap a few
        pixels with tiny reported errors (continuum pixels of bright stars, or underestimated errors)
        would dominate the fit; APOGEE's own error floor is of this order.

    Attributes
    ----------
    components_ : (K, P) ndarray, orthonormal rows (principal axes, by decreasing variance).
    mean_ : (P,) ndarray, mean of the completed data.
    explained_variance_ : (K,) ndarray, variance along each axis (ddof = 1).
    n_iter_ : int, passes made.  converged_ : bool.
    last_change_ : float, the change the stopping rule compared with ``tol`` after the last pass.
    objective_ : list of float, squared error on observed entries after each pass (from pass 2).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 40)) + 0.01 * rng.normal(size=(300, 40))
    >>> mask = rng.random(X.shape) < 0.05                 # 5 % of the pixels missing
    >>> pca = MaskedPCA(3, random_state=0).fit(np.where(mask, np.nan, X), mask)
    >>> Z = pca.transform(X, mask)
    >>> float(np.abs(pca.inverse_transform(Z) - X)[~mask].max()) < 0.1
    True
    """

    def __init__(
        self,
        n_components,
        *,
        random_state=None,
        max_iter=100,
        tol=1e-4,
        oversample=10,
        exact_below=1024,
        chunk_rows=None,
        n_threads=None,
        progress=False,
        weights=None,
        ivar_cap=IVAR_CAP,
    ):
        self.n_components = n_components
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.oversample = oversample
        self.exact_below = exact_below
        self.chunk_rows = chunk_rows
        self.n_threads = n_threads
        self.progress = progress
        self.weights = weights
        self.ivar_cap = ivar_cap

    # ------------------------------------------------------------------ helpers
    def _validate_params(self, n, p):
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"n_components must be a positive integer, got {k!r}")
        if k > min(n, p):
            raise ValueError(f"n_components={k} is larger than the data allows (min(n_stars, n_pixels) = {min(n, p)})")
        if int(self.max_iter) < 1:
            raise ValueError("max_iter must be at least 1")
        t = self.n_threads
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1):
            raise ValueError(f"n_threads must be a positive integer or None, got {t!r}")

    def _threads(self):
        """The number of chunk threads: ``n_threads``, or the BLAS threads this process may use
        (OPENBLAS_NUM_THREADS=1 keeps a fit on one core), at most 4 and the usable cores."""
        if self.n_threads is not None:
            return int(self.n_threads)
        return max(1, min(4, blas_threads(), usable_cores()))

    def _iter_chunks(self, X, mask, dtype, validate=True, center=None):
        """Row chunks of X as fresh arrays of ``dtype`` (minus ``center``), with their masks."""
        n, p = X.shape
        step = self.chunk_rows or _chunk_rows(p, np.dtype(dtype).itemsize)
        for a in range(0, n, step):
            b = min(n, a + step)
            if center is None:
                chunk = np.array(X[a:b], dtype=dtype, copy=True)
            else:
                chunk = np.subtract(X[a:b], center, dtype=dtype)
            m = None if mask is None else np.asarray(mask[a:b], dtype=bool)
            if m is not None and not m.any():
                m = None
            if validate:
                bad = ~np.isfinite(chunk)
                if m is not None:
                    bad &= ~m
                if bad.any():
                    r, c = np.argwhere(bad)[0]
                    raise_non_finite(a + r, c)
            yield a, b, chunk, m

    # ------------------------------------------------------------------ fitting
    def fit(self, X, mask=None, errors=None) -> MaskedPCA:
        """Fit the K principal components of ``X``, ignoring the entries where ``mask`` is True.

        Parameters
        ----------
        X : array-like of shape (N, P)
            Data (may be a memory map or a Zarr array, read in row chunks, or a dask array: then every
            pass is one dask computation on the current scheduler, see :mod:`rsca_core.scale`).
            Masked entries may hold anything.
        mask : bool array-like of shape (N, P), optional
            True where an entry is missing (a dask array when ``X`` is one, chunked alike by rows).
        errors : array-like of shape (N, P), optional
            1-σ errors of ``X`` (may be a memory map); needed by ``weights="ivar"``, ignored otherwise.
            A non-finite error makes its entry missing.

        Returns
        -------
        self : MaskedPCA
        """
        self._fit(X, mask, errors)
        return self

    def fit_transform(self, X, mask=None, errors=None, **fit_params) -> np.ndarray:
        """Fit and return the (N, K) scores of the training rows (at the EM fixed point)."""
        return self._fit(X, mask, errors)

    def _fit(self, X, mask, errors=None):
        X = _check_matrix(X)
        mask = _check_mask(mask, X.shape)
        n, p = X.shape
        self._validate_params(n, p)
        errors = self._check_errors(errors, X.shape)
        K = int(self.n_components)
        on_pass = ConvergenceBar(self.progress, f"compressing K={K}")
        try:
            on_pass(0, np.inf, float(self.tol))
            return self._fit_passes(X, mask, errors, K, on_pass)
        finally:
            on_pass.close()

    def _fit_passes(self, X, mask, errors, K, on_pass):
        n, p = X.shape
        dtype = np.float32 if X.dtype == np.float32 else np.float64
        rng = np.random.default_rng(self.random_state)
        dask_input = is_dask_array(X) or is_dask_array(mask)
        if errors is not None:
            if dask_input or is_dask_array(errors):
                raise ValueError("weights='ivar' needs in-memory or memory-mapped arrays, not dask arrays")
            self.weight_scale_ = self._weight_scale(errors, mask, dtype)
            if self.weight_scale_ is not None:
                return self._fit_weighted(X, mask, errors, K, dtype, rng, on_pass)
        self.weight_scale_ = None  # unweighted, or every observed entry has the same weight: plain PCA
        if dask_input:
            from .scale import DaskPasses

            passes = DaskPasses(X, mask, dtype)
        else:
            step = self.chunk_rows or _chunk_rows(p, np.dtype(dtype).itemsize)
            passes = _ChunkedPasses(X, mask, dtype, step, threads=self._threads())
        self.n_features_in_ = p
        V, mu, colsum, B, Y, nobs, n_missing = self._first_pass(passes, n, p, K, dtype, rng)
        self.missing_fraction_ = n_missing / float(n * p)
        keep = nobs > 0
        if not keep.any():
            raise ValueError("every pixel is missing for every star")
        pk = int(keep.sum())
        if pk < K:
            raise ValueError(
                f"n_components={K} is larger than the data allows: only {pk} pixels are observed for any star"
            )
        n_missing -= n * (p - pk)
        if pk < p:
            # Pixels missing for every star (masked bands) carry no information: the passes skip them,
            # and they get zero loadings and zero mean. The first pass's products are kept: those
            # columns of the centred data were zero, and the sample's basis is zero there.
            passes = passes.columns(keep)
            if V.shape[1] == p:  # the exact basis (the identity)
                V, B, Y, mu, colsum = (
                    np.eye(pk),
                    B[keep][:, keep],
                    np.ascontiguousarray(Y[:, keep]),
                    mu[keep],
                    colsum[keep],
                )
            elif V.shape[1] <= pk:
                V, B, mu, colsum = V[keep], B[keep], mu[keep], colsum[keep]
            else:  # a basis wider than the kept pixels: start again on them
                V, mu, colsum, B, Y, _, _ = self._first_pass(passes, n, pk, K, dtype, rng)
        Z = self._em_fast(passes, n, pk, (V, mu, colsum, B, Y), n_missing > 0, K, dtype, on_pass)
        if pk < p:
            W, mu = np.zeros((K, p)), np.zeros(p)
            W[:, keep], mu[keep] = self.components_, self.mean_
            self.components_, self.mean_ = W, mu
        return Z

    def _first_pass(self, passes, n, p, K, dtype, rng):
        """The starting basis (from a row sample, which also gives the first centre) and the first
        pass over the data, which also counts the observed entries and validates them (so that the
        mean needs no pass of its own). Returns ``(V, centre, column sums, B, Y, observed counts,
        number missing)``."""
        kb = min(p, n, K + int(self.oversample))
        if p <= self.exact_below:
            kb = p
        V, mu = self._initial_basis(passes.sample, n, p, kb, rng)
        if kb == p:
            V = np.eye(p)
        Y = np.empty((n, kb), dtype=dtype)
        colsum, nobs, n_missing, B = passes.first(mu.astype(dtype), V.astype(dtype), Y)
        return V, mu, colsum, B, Y, nobs, n_missing

    def _fit_weighted(self, X, mask, errors, K, dtype, rng, on_pass):
        """The weighted fit (``weights="ivar"`` with non-uniform errors): the EM of version 1."""
        n, p = X.shape
        # Pass 0: observed column means and counts (also validates the data).
        colsum = np.zeros(p)
        nobs = np.zeros(p)
        n_missing = 0
        for a, b, chunk, m in self._iter_chunks(X, mask, dtype):
            if m is not None:
                chunk[m] = 0
                nobs += (b - a) - m.sum(0)
                n_missing += int(m.sum())
            else:
                nobs += b - a
            colsum += chunk.sum(0, dtype=np.float64)
        mu_fill = np.divide(colsum, nobs, out=np.zeros(p), where=nobs > 0)
        self.missing_fraction_ = n_missing / float(n * p)
        self.n_features_in_ = p
        keep = nobs > 0
        if keep.all():
            return self._em(X, mask, mu_fill, n_missing > 0, K, dtype, rng, errors, on_pass=on_pass)
        # Pixels missing for every star (masked bands) carry no information: the passes skip them,
        # and they get zero loadings and zero mean.
        if not keep.any():
            raise ValueError("every pixel is missing for every star")
        n_missing -= int(n * (~keep).sum())
        Z = self._em(
            _Columns(X, keep),
            None if mask is None else _Columns(mask, keep),
            mu_fill[keep],
            n_missing > 0,
            K,
            dtype,
            rng,
            None if errors is None else _Columns(errors, keep),
            on_pass=on_pass,
        )
        W, mu = np.zeros((K, p)), np.zeros(p)
        W[:, keep], mu[keep] = self.components_, self.mean_
        self.components_, self.mean_ = W, mu
        return Z

    # ------------------------------------------------------------------ weights
    def _check_errors(self, errors, shape):
        if self.weights is None:
            return None
        if self.weights != "ivar":
            raise ValueError(f"weights must be None or 'ivar', not {self.weights!r}")
        if not (float(self.ivar_cap) > 0):
            raise ValueError(f"ivar_cap must be positive, got {self.ivar_cap!r}")
        if errors is None:
            raise ValueError("weights='ivar' needs the flux errors: pass errors= (an (N, P) array) to fit")
        errors = _check_matrix(errors, "errors")
        if tuple(errors.shape) != tuple(shape):
            raise ValueError(f"errors shape {tuple(errors.shape)} does not match data shape {tuple(shape)}")
        return errors

    def _raw_weights(self, errors, a, b, m, dtype):
        """min(1/σ², cap) of rows a:b (0 where masked or the error is not finite)."""
        e = np.array(errors[a:b], dtype=dtype)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            np.multiply(e, e, out=e)
            np.divide(1, e, out=e)  # inf for a zero error: capped below
        np.minimum(e, dtype(self.ivar_cap), out=e)
        e[np.isnan(e)] = 0.0  # a non-finite error: no weight (missing)
        if m is not None:
            e[m] = 0.0
        return e

    def _weight_scale(self, errors, mask, dtype):
        """The largest capped inverse variance over observed entries, or None when the weights are
        uniform (then the weighted fit is the plain one, bit for bit)."""
        if errors is None:
            return None
        lo, hi = np.inf, 0.0
        n = errors.shape[0]
        step = self.chunk_rows or _chunk_rows(errors.shape[1], 8)
        for a in range(0, n, step):
            b = min(n, a + step)
            m = None if mask is None else np.asarray(mask[a:b], dtype=bool)
            w = self._raw_weights(errors, a, b, m, np.float64)
            obs = w if m is None else w[~m]
            if obs.size:
                lo, hi = min(lo, float(obs.min())), max(hi, float(obs.max()))
        if not hi > 0:
            raise ValueError("weights='ivar': no observed entry has a finite error")
        return None if lo == hi else hi

    def _em(self, X, mask, mu_fill, has_missing, K, dtype, rng, errors=None, on_pass=None):
        """The EM passes on the pixels that are observed for some star (weighted when ``errors``).

        ``on_pass(pass_index, rel_change, tol)`` is called after every pass (the display is not here).

        Over 80 lines: one pass is one streaming loop whose imputation, products, mean correction,
        Rayleigh–Ritz step and convergence test share their arrays; split, they would be passed around.
        """
        has_missing = has_missing or errors is not None  # the weighted objective decides convergence
        n, p = X.shape
        if p < K:
            raise ValueError(
                f"n_components={K} is larger than the data allows: only {p} pixels are observed for any star"
            )
        if p <= self.exact_below:
            kb = p
            V = np.eye(p)
        else:
            kb = min(p, n, K + int(self.oversample))
            V, _ = self._initial_basis(
                lambda r: (np.asarray(X[r], dtype=np.float64), None if mask is None else np.asarray(mask[r], bool)),
                n,
                p,
                kb,
                rng,
                center=mu_fill,
            )
        mu_center = mu_fill.copy()  # mean the pass centres with
        W_prev = Z_prev = None  # model of the previous pass (for imputation)
        self.objective_ = []
        self.converged_ = False
        Y = np.empty((n, kb), dtype=dtype)
        for it in range(int(self.max_iter)):
            Vd = V.astype(dtype)
            B = np.zeros((p, kb))
            colsum = np.zeros(p)
            sq_err = 0.0
            mu_c = mu_center.astype(dtype)
            Wd = None if W_prev is None else W_prev.T.astype(dtype)
            for a, b, chunk, m in self._iter_chunks(X, mask, dtype, validate=False, center=mu_c):
                # ``chunk`` is already centred on mu_center; impute, then accumulate C V, Cᵀ C V.
                if Z_prev is not None:
                    recon = Z_prev[a:b].astype(dtype) @ Wd
                    if m is not None:
                        np.copyto(chunk, recon, where=m)
                    np.subtract(chunk, recon, out=recon)  # residual, 0 at imputed entries
                    if errors is not None:  # weighted EM: fill with w·x + (1 − w)·model
                        w = self._raw_weights(errors, a, b, m, dtype) / dtype(self.weight_scale_)
                        sq_err += float(np.einsum("ij,ij,ij->i", w, recon, recon).sum(dtype=np.float64))
                        chunk -= (1 - w) * recon
                    else:
                        # row sums in the data's precision, their total in float64 (≈1e-8 relative)
                        sq_err += float(np.einsum("ij,ij->i", recon, recon).sum(dtype=np.float64))
                elif m is not None:
                    chunk[m] = 0  # first pass: impute the observed column mean
                colsum += chunk.sum(0, dtype=np.float64)
                yc = chunk @ Vd
                Y[a:b] = yc
                B += chunk.T @ yc
            colsum += n * mu_center
            mu_new = colsum / n
            delta = mu_new - mu_center
            dv = delta @ V
            Yd = Y.astype(np.float64, copy=False) if dtype == np.float64 else Y
            if np.any(delta != 0):
                Yd = Y.astype(np.float64) - dv[None, :]
                B -= n * np.outer(delta, dv)
            lam, E, W = self._ritz(V, B, K)
            Z = np.asarray(Yd, dtype=np.float64) @ E
            stop = self._pass_done(it, W_prev, W, sq_err, has_missing, kb == p, on_pass)
            mu_center = mu_new
            W_prev, Z_prev = W, Z
            V, _ = np.linalg.qr(B) if kb < p else (V, None)
            if stop:
                break
        self._set_fitted(W, mu_center, lam[:K], n, it + 1)
        return Z

    def _set_fitted(self, W, mean, lam, n, n_iter):
        """The fitted attributes from the last pass: axes ``W`` (P × K), mean, eigenvalues, passes."""
        self.n_iter_ = n_iter
        self.components_ = W.T.copy()
        self.mean_ = mean
        self.explained_variance_ = lam / max(n - 1, 1)

    @staticmethod
    def _ritz(V, B, K):
        """The Rayleigh–Ritz step of a pass: the eigenpairs of the projected ``Vᵀ Cᵀ C V`` (largest
        first; ``V`` orthonormal, ``B = Cᵀ C V``), the K new axes ``W = V E`` and their coefficients
        ``E``, with deterministic signs (the largest |loading| of each axis is positive)."""
        lam, E = np.linalg.eigh((V.T @ B + B.T @ V) / 2)
        idx = np.argsort(lam)[::-1]
        lam, E = lam[idx], E[:, idx[:K]]
        W = V @ E
        sign = np.sign(W[np.argmax(np.abs(W), axis=0), np.arange(W.shape[1])])
        sign[sign == 0] = 1
        return lam, E * sign, W * sign

    def _pass_done(self, it, W_prev, W, sq_err, has_missing, exact_basis, on_pass) -> bool:
        """After pass ``it`` (0-based): record the objective, report the change the stopping rule
        compares with ``tol`` through ``on_pass``, and say whether to stop (``converged_``).

        With missing pixels the EM objective decides (the subspace may keep turning inside a
        near-degenerate pair of eigenvalues at the K-th axis without changing the fit); on complete
        data the subspace itself must settle (or the fit to ~tol²)."""
        moved = 0.0
        if W_prev is not None:
            s = np.linalg.svd(W_prev.T @ W, compute_uv=False)
            moved = float(np.sqrt(max(0.0, 1.0 - min(1.0, s.min() ** 2))))
            self.objective_.append(sq_err)
        rel = np.inf
        if len(self.objective_) >= 2:
            o0, o1 = self.objective_[-2], self.objective_[-1]
            rel = (o0 - o1) / max(o0, np.finfo(float).tiny)
        self.last_change_ = float(rel if has_missing or it == 0 else moved)
        if on_pass is not None:
            on_pass(it + 1, self.last_change_, self.tol)
        if has_missing:
            self.converged_ = bool(rel < self.tol)
        else:
            self.converged_ = bool(exact_basis or (it > 0 and (moved < self.tol or rel < self.tol**2)))
        return self.converged_

    def _em_fast(self, passes, n, p, first, has_missing, K, dtype, on_pass):
        """The unweighted EM passes (see the module docstring) over ``passes``: in-memory chunks
        (``_ChunkedPasses``) or a dask graph (``rsca_core.scale.DaskPasses``), the same arithmetic.

        ``first``: the basis, centre, column sums, ``Cᵀ C V`` and ``C V`` of the first pass
        (``_first_pass``). Each later pass imputes the missing entries from the previous model (and
        measures that model's squared error on the observed ones), accumulates ``C V`` and ``Cᵀ C V``,
        corrects the shift of the mean exactly, and makes a Rayleigh–Ritz step;
        ``on_pass(pass_index, change, tol)`` is called after every pass (the display is not here).
        """
        V, mu_center, colsum, B, Y = first
        kb = V.shape[1]
        W_prev = Z_prev = None  # model of the previous pass (for imputation)
        self.objective_ = []
        self.converged_ = False
        sq_err, it = 0.0, 0
        while True:
            mu_new = mu_center + colsum / n
            delta = mu_new - mu_center
            dv = delta @ V
            B -= n * np.outer(delta, dv)
            lam, E, W = self._ritz(V, B, K)
            Z = Y @ E - (dv @ E)[None, :]  # float64 scores at the new mean
            stop = self._pass_done(it, W_prev, W, sq_err, has_missing, kb == p, on_pass)
            mu_center = mu_new
            W_prev, Z_prev = W, Z
            it += 1
            if stop or it >= int(self.max_iter):
                break
            if kb < p:
                V = np.linalg.qr(B)[0]
            Wt = np.ascontiguousarray(W_prev.T, dtype=dtype)
            colsum, sq_err, B = passes.run(mu_center.astype(dtype), V.astype(dtype), Wt, Z_prev, Y)
        self._set_fitted(W, mu_center, lam[:K], n, it)
        return Z

    def _initial_basis(self, take_rows, n, p, kb, rng, center=None, n_sample=None):
        """Starting basis: leading right singular vectors of a random row sample (mean-imputed),
        completed with random directions. Saves most of the passes a random start would need.
        ``take_rows(rows)`` returns those rows of the data (float64) and of the mask (or None).

        ``center``: the column centre of the sample; None takes the sample's own observed column
        means (a column the sample never observes: the mean of all its observed entries), so that the
        first pass needs no pass of its own for the mean. Returns ``(V, center)``; ``V`` is zero on
        the columns the sample never observes (a column missing for every star then stays out of it).
        """
        n_sample = INITIAL_SAMPLE if n_sample is None else n_sample
        rows = np.sort(rng.choice(n, size=min(n, max(n_sample, 4 * kb)), replace=False))
        sample, m = take_rows(rows)
        # a non-finite observed entry is left to the first pass, which names it: here it is missing
        m = ~np.isfinite(sample) if m is None else m | ~np.isfinite(sample)
        seen = ~m.all(axis=0)
        if center is None:
            cnt = len(rows) - np.count_nonzero(m, axis=0)
            total = np.where(m, 0.0, sample).sum(axis=0)
            overall = total.sum() / cnt.sum() if cnt.sum() else 0.0
            center = np.where(seen, total / np.maximum(cnt, 1), overall)
        ps = int(seen.sum())
        if kb >= ps:  # the basis spans the whole observed space (or the caller uses the identity)
            return np.eye(p)[:, :kb], center
        sample = (sample - center).astype(np.float32)  # a start: single precision is plenty, and 2× faster
        sample[m] = 0.0
        lam, U = np.linalg.eigh((sample @ sample.T).astype(np.float64))  # the sample's Gram matrix: cheaper than an SVD
        top = np.argsort(lam)[::-1][:kb]
        top = top[lam[top] > 1e-12 * max(lam.max(), 1e-300)]
        # Only the columns the sample observes: a band missing for every star changes nothing here.
        V = sample[:, seen].T.astype(np.float64) @ (U[:, top] / np.sqrt(lam[top]))
        if V.shape[1] < kb:
            V = np.hstack([V, rng.standard_normal((ps, kb - V.shape[1]))])
        V += 1e-3 * rng.standard_normal(V.shape) / np.sqrt(ps)  # no exact zero overlap with any axis
        out = np.zeros((p, kb))
        out[seen] = np.linalg.qr(V)[0]
        return out, center

    # ------------------------------------------------------------------ projection
    def _check_fitted(self):
        check_is_fitted(self, "components_")

    @classmethod
    def from_components(cls, components, mean) -> MaskedPCA:
        """A fitted MaskedPCA from stored ``components`` (K × P, orthonormal rows) and ``mean`` (P,).

        For scoring new spectra with a cached compression (see ``Compression.transform``).
        """
        comp = np.asarray(components, dtype=float)
        mean = np.asarray(mean, dtype=float)
        if comp.ndim != 2 or mean.shape != (comp.shape[1],):
            raise ValueError(f"components {comp.shape} and mean {mean.shape} do not match")
        pca = cls(comp.shape[0])
        pca.components_, pca.mean_, pca.n_features_in_ = comp, mean, comp.shape[1]
        return pca

    def transform(self, X, mask=None) -> np.ndarray:
        """Scores of (new) rows: least-squares fit of the observed pixels by the K components.

        For a row with missing pixels m, ``z = (I − W_mᵀ W_m)⁻¹ Wᵀ x₀`` (x₀ = centred row with zeros
        at m): the normal equations of the observed pixels, since the columns of W are orthonormal.
        A row observing fewer than ``MIN_OBSERVED`` (10 %) of the fitted pixels gets score 0 (the
        centre), as in the fit: its least-squares score would be ill-posed.
        """
        self._check_fitted()
        X = _check_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} pixels, the model was fitted on {self.n_features_in_}")
        mask = _check_mask(mask, X.shape)
        if is_dask_array(X) or is_dask_array(mask):
            from .scale import transform

            return transform(self, X, mask)  # block by block on the executor, this method on each block
        W = self.components_.T  # (P, K)
        used = np.abs(W).sum(axis=1) > 0  # pixels the fit saw (a band missing for every star is not)
        out = np.empty((X.shape[0], W.shape[1]))
        for a, b, chunk, m in self._iter_chunks(X, mask, np.float64, center=self.mean_):
            if m is not None:
                chunk[m] = 0.0
            out[a:b] = chunk @ W
            if m is None:
                continue
            few = too_few_observed(np.count_nonzero(m[:, used], axis=1), used.sum())
            out[a:b][few] = 0.0  # too few pixels for a score of its own: the centre, as in the fit
            for r in np.flatnonzero(m.any(axis=1) & ~few):
                out[a + r] = observed_least_squares(self.components_, ~m[r], out[a + r])
        return out

    def inverse_transform(self, Z) -> np.ndarray:
        """Reconstruct complete rows from scores: ``Z @ components_ + mean_``."""
        self._check_fitted()
        Z = np.asarray(Z, dtype=float)
        if Z.ndim != 2 or Z.shape[1] != self.components_.shape[0]:
            raise ValueError(f"Z must have shape (n, {self.components_.shape[0]}), got {Z.shape}")
        return Z @ self.components_ + self.mean_
