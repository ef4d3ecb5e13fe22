"""Scale: the compression on Dask (threads, a ``LocalCluster`` or a ``distributed`` cluster) and
bundles stored as Zarr.

Needs the optional extra ``pip install rsca-lab[scale]`` (dask, distributed, zarr); the rest of
RSCA Lab does not import this module.

* :class:`DaskPasses` runs every pass of :class:`~rsca_core.compress.MaskedPCA` over dask arrays
  (spectra and mask chunked by rows) as one dask computation: each row block goes through the
  same chunk function as the in-memory fit (:func:`rsca_core.compress.block_pass`), the column sums,
  squared errors and ``Cᵀ C V`` products are summed in a tree, and only the (N × kb) products
  ``C V`` come back to the caller. ``MaskedPCA.fit`` uses it when given dask arrays.
* :func:`dask_arrays` gives a bundle's spectra and mask as dask arrays that read their rows on the
  workers (from Zarr, or from the ``.npy`` files by memory map), never shipping data in the graph.
* :func:`write_zarr` stores a bundle's arrays as Zarr beside the ``.npy`` files; ``Dataset.load``
  reads either.
* :func:`scheduler` opens the executor named on the command line (``compress --scheduler``).

Examples
--------
>>> import numpy as np, dask.array as da
>>> from rsca_core import MaskedPCA
>>> rng = np.random.default_rng(0)
>>> X = (rng.normal(size=(400, 4)) @ rng.normal(size=(4, 50))).astype(np.float32)
>>> mask = rng.random(X.shape) < 0.05
>>> a = MaskedPCA(4, random_state=0, chunk_rows=100).fit(X, mask)
>>> b = MaskedPCA(4, random_state=0).fit(da.from_array(X, chunks=(100, 50)), da.from_array(mask, chunks=(100, 50)))
>>> bool(np.linalg.svd(a.components_ @ b.components_.T, compute_uv=False).min() > 1 - 1e-6)
True
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from .compress import block_first, block_pass, is_dask_array, missing_positions, raise_non_finite

__all__ = ["DaskPasses", "dask_arrays", "scheduler", "write_zarr", "zarr_compressors", "ZARR_ARRAYS"]

#: The bundle arrays that may be stored as Zarr (``<name>.zarr`` beside ``<name>.npy``).
ZARR_ARRAYS = ("spectra", "mask", "errors")


#: Share of the matrix's bytes the missing positions of all row blocks may take to be kept on the
#: workers between passes (as ``MaskedPCA``'s in-memory passes keep them); above it, every pass reads
#: the mask again.
KEEP_POSITIONS = 0.15


class _Buffers(threading.local):
    """Each executor thread's two reused row-block buffers (the centred block and the previous model's
    reconstruction). Bounded: two blocks per thread, replaced (not grown) when a block is larger.
    Allocating fresh ~100 MB blocks for every task of every pass made the dask pass page-fault
    through its memory; the in-memory passes reuse theirs in the same way."""

    def get(self, shape, dtype):
        have = getattr(self, "centred", None)
        if have is None or have.dtype != dtype or have.shape[1] != shape[1] or have.shape[0] < shape[0]:
            self.centred = np.empty(shape, dtype=dtype)
            self.recon = np.empty(shape, dtype=dtype)
        return self.centred[: shape[0]], self.recon


_BUFFERS = _Buffers()


def _positions(m):
    return missing_positions(None if m is None else np.asarray(m, dtype=bool))


def _first(x, m, mu, V, a):
    c, _ = _BUFFERS.get(x.shape, mu.dtype)
    np.subtract(x, mu, out=c, casting="unsafe")  # into this thread's reused buffer
    colsum, nobs, n_missing, bad, Y, B = block_first(c, None if m is None else np.asarray(m, bool), V)
    if bad is not None:
        return None, (colsum, nobs, n_missing, 0.0, [(a + bad[0], bad[1])])
    return Y, (colsum, nobs, n_missing, np.asarray(B, dtype=np.float64), [])


def _pass(x, miss, mu, V, Wt, Zb):
    """One row block of a pass. ``miss``: the block's missing positions (kept from the first pass), or its
    mask block (read again this pass), or None."""
    if miss is not None and getattr(miss, "dtype", None) == np.bool_:
        miss = _positions(miss)
    c, rbuf = _BUFFERS.get(x.shape, mu.dtype)
    np.subtract(x, mu, out=c, casting="unsafe")  # into this thread's reused buffer
    colsum, sq, Y, B = block_pass(c, miss, V, Wt, Zb, rbuf)
    return Y, (colsum, sq, np.asarray(B, dtype=np.float64))


def _add(parts):
    """The element-wise sum of the parts' tuples (arrays, numbers; lists are joined)."""
    out = parts[0]
    for part in parts[1:]:
        out = tuple(o + q for o, q in zip(out, part))
    return out


def _tree_sum(items, fan_in=8):
    from dask import delayed

    while len(items) > 1:
        items = [delayed(_add)(items[i : i + fan_in]) for i in range(0, len(items), fan_in)]
    return items[0]


class DaskPasses:
    """The passes of ``MaskedPCA`` over dask arrays ``X`` (N × P) and ``mask`` (bool or None),
    chunked by rows (columns are joined into one chunk).

    After the first pass (:meth:`first`), the missing positions of every row block are kept on the
    executor (``dask.persist``: in the workers' memory on a ``distributed`` cluster) while they take at
    most ``keep_fraction`` of the matrix's bytes, so later passes read only the spectra."""

    def __init__(self, X, mask, dtype, keep_fraction: float | None = None):
        import dask.array as da

        X = X if is_dask_array(X) else da.from_array(X, chunks=(max(1, min(len(X), 4096)), -1))
        self.X = X.rechunk({1: -1})
        rows = self.X.chunks[0]
        if mask is not None:
            mask = mask if is_dask_array(mask) else da.from_array(np.asarray(mask), chunks=(rows, -1))
            mask = mask.rechunk((rows, -1))
        self.mask, self.dtype = mask, np.dtype(dtype)
        self.keep_fraction = float(KEEP_POSITIONS if keep_fraction is None else keep_fraction)
        edges = np.concatenate([[0], np.cumsum(rows)]).astype(int)
        self.bounds = list(zip(edges[:-1], edges[1:]))
        self.kept = None  # persisted missing positions of every block, once the first pass found they fit

    def _blocks(self):
        xb = list(self.X.to_delayed().ravel())
        mb = [None] * len(xb) if self.mask is None else list(self.mask.to_delayed().ravel())
        return list(zip(xb, mb))

    def _keep_positions(self, n_missing):
        """Persist every block's missing positions when they fit the budget (else passes re-read the mask)."""
        import dask
        from dask import delayed

        self.kept = None
        n, p = self.X.shape
        size = 4 if n * p < 2**31 else 8
        if self.mask is None or n_missing == 0 or n_missing * size > self.keep_fraction * n * p * self.dtype.itemsize:
            return
        self.kept = list(dask.persist(*[delayed(_positions)(m) for _, m in self._blocks()]))

    def first(self, mu_c, V, Y):
        """The first pass as one dask computation (``block_first``): fills ``Y`` and returns the column
        sums, observed counts, number missing and B = Cᵀ C V; a non-finite observed entry raises.
        Then the missing positions of every block are kept on the executor for the later passes."""
        import dask
        from dask import delayed

        mu_d, V_d = delayed(mu_c, pure=True), delayed(V, pure=True)
        outs = [delayed(_first, nout=2)(x, m, mu_d, V_d, a) for (x, m), (a, _) in zip(self._blocks(), self.bounds)]
        *ys, (colsum, nobs, n_missing, B, bad) = dask.compute(*[o[0] for o in outs], _tree_sum([o[1] for o in outs]))
        if bad:
            raise_non_finite(*min(bad))
        for y, (a, b) in zip(ys, self.bounds):
            Y[a:b] = y
        self._keep_positions(int(n_missing))
        return colsum, nobs, int(n_missing), B

    def columns(self, keep):
        """The same passes restricted to the columns ``keep`` (missing positions found again)."""
        keep = np.flatnonzero(keep)
        sub = DaskPasses(
            self.X[:, keep], None if self.mask is None else self.mask[:, keep], self.dtype, self.keep_fraction
        )
        if sub.mask is not None:
            import dask
            from dask import delayed

            counts = dask.compute(*[delayed(np.count_nonzero)(m) for _, m in sub._blocks()])
            sub._keep_positions(int(sum(counts)))
        return sub

    def run(self, mu_c, V, Wt, Z, Y):
        """One pass as one dask computation: fills ``Y`` (N × kb) and returns the column sums, the
        squared error of the previous model and B = Cᵀ C V."""
        import dask
        from dask import delayed

        mu_d, V_d = delayed(mu_c, pure=True), delayed(V, pure=True)
        Wt_d = None if Wt is None else delayed(Wt, pure=True)
        zbs = [None if Z is None else Z[a:b].astype(self.dtype) for a, b in self.bounds]
        client = _distributed_client()
        if client is not None and Z is not None:
            # the previous scores go to the workers directly, not inside the task graph (N × K a pass)
            zbs = client.scatter(zbs)
        outs = []
        for i, ((x, m), zb) in enumerate(zip(self._blocks(), zbs)):
            miss = m if self.kept is None else self.kept[i]
            outs.append(delayed(_pass, nout=2)(x, miss, mu_d, V_d, Wt_d, zb))
        *ys, (colsum, sq, B) = dask.compute(*[o[0] for o in outs], _tree_sum([o[1] for o in outs]))
        for y, (a, b) in zip(ys, self.bounds):
            Y[a:b] = y
        return colsum, sq, B

    def sample(self, rows):
        X = np.asarray(self.X[rows].compute(), dtype=np.float64)
        return X, None if self.mask is None else np.asarray(self.mask[rows].compute(), dtype=bool)


def _distributed_client():
    """The ``distributed`` client that ``dask.compute`` will use now, or None (threads, synchronous)."""
    try:
        from dask.base import get_scheduler
        from distributed import default_client
    except ImportError:
        return None
    try:
        client = default_client()
    except ValueError:  # no client
        return None
    return client if get_scheduler() == client.get else None


def transform(pca, X, mask=None) -> np.ndarray:
    """``pca.transform`` of dask arrays, block by block on the executor; returns the (N, K) scores."""
    import dask.array as da

    X = (X if is_dask_array(X) else da.from_array(X, chunks=(4096, -1))).rechunk({1: -1})
    K = pca.components_.shape[0]
    if mask is None:
        out = X.map_blocks(lambda x: pca.transform(x), chunks=(X.chunks[0], (K,)), dtype=np.float64)
    else:
        mask = (mask if is_dask_array(mask) else da.from_array(np.asarray(mask), chunks=(X.chunks[0], -1))).rechunk(
            (X.chunks[0], -1)
        )
        out = da.map_blocks(lambda x, m: pca.transform(x, m), X, mask, chunks=(X.chunks[0], (K,)), dtype=np.float64)
    return np.asarray(out.compute())


def _npy_rows(path, a, b):
    return np.array(np.load(path, mmap_mode="r")[a:b])


def dask_arrays(ds, chunk_rows: int | None = None, extra_mask_ranges=()):
    """A bundle's spectra and (effective) mask as dask arrays chunked by rows.

    Read from ``<name>.zarr`` when the bundle has it, else from ``<name>.npy`` (memory-mapped on the
    worker, so the data never travels in the task graph; workers must see the bundle's path).
    In-memory datasets are wrapped as they are.
    """
    import dask.array as da
    from dask import delayed

    from .constants import ranges_to_mask

    n, p = ds.spectra.shape
    step = int(chunk_rows or max(256, min(n, (64 << 20) // (4 * p))))

    def load(name, dtype):
        arr = getattr(ds, name)
        zpath = None if ds.path is None else ds.path / f"{name}.zarr"
        if zpath is not None and zpath.exists():
            return da.from_zarr(str(zpath)).rechunk((step, -1))
        npath = None if ds.path is None else ds.path / f"{name}.npy"
        if npath is not None and npath.exists() and isinstance(arr, np.memmap):
            blocks = [
                da.from_delayed(delayed(_npy_rows)(str(npath), a, min(n, a + step)), (min(n, a + step) - a, p), dtype)
                for a in range(0, n, step)
            ]
            return da.concatenate(blocks, axis=0)
        return da.from_array(arr, chunks=(step, -1))

    X, M = load("spectra", np.float32), load("mask", np.bool_)
    if extra_mask_ranges:
        M = M | ranges_to_mask(extra_mask_ranges, p)[None, :]
    return X, M


def zarr_compressors(dtype):
    """The Zarr compressors of a bundle array: Blosc-LZ4 with byte shuffle for float arrays (the
    spectra: 0.75 of the raw size and ~25 % faster to read than Zarr's default Zstandard, which keeps
    0.84 — noise-dominated mantissas do not compress), Zarr's default (Zstandard) for the mask (~0.06).

    Examples
    --------
    >>> zarr_compressors(np.float32)[0].cname.value, zarr_compressors(np.bool_)
    ('lz4', 'auto')
    """
    from zarr.codecs import BloscCodec

    if np.issubdtype(np.dtype(dtype), np.floating):
        return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=np.dtype(dtype).itemsize),)
    return "auto"


def write_zarr(path, names=ZARR_ARRAYS, chunk_rows: int = 2048, overwrite: bool = False) -> list[Path]:
    """Store a bundle's ``.npy`` arrays as Zarr (chunked by rows, compressed) beside them.

    Each array is written to a temporary folder and renamed into place, so an interrupted write
    leaves no half array. Returns the written paths. ``Dataset.load`` then reads the Zarr copy when
    the ``.npy`` file is removed (it prefers ``.npy`` when both are present).
    """
    import zarr

    path = Path(path)
    out = []
    for name in names:
        src = path / f"{name}.npy"
        if not src.exists():
            continue
        dst = path / f"{name}.zarr"
        if dst.exists() and not overwrite:
            raise FileExistsError(f"{dst}: already exists (pass overwrite=True to replace it)")
        arr = np.load(src, mmap_mode="r")
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.zarr.tmp-", dir=path))
        try:
            z = zarr.create_array(
                str(tmp),
                shape=arr.shape,
                dtype=arr.dtype,
                chunks=(min(chunk_rows, arr.shape[0]), arr.shape[1]),
                compressors=zarr_compressors(arr.dtype),
            )
            for a in range(0, arr.shape[0], chunk_rows):
                z[a : a + chunk_rows] = arr[a : a + chunk_rows]
            if dst.exists():
                shutil.rmtree(dst)
            os.replace(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        out.append(dst)
    return out


@contextlib.contextmanager
def scheduler(address: str | None, timeout: str = "10s"):
    """The executor of ``compress --scheduler``: None or ``"threads"`` (dask's threads),
    ``"synchronous"``, ``"local"`` (a ``LocalCluster`` on this machine) or the address of a running
    ``distributed`` scheduler (``tcp://host:8786``)."""
    import dask

    if address in (None, "threads", "synchronous"):
        with dask.config.set(scheduler=address or "threads"):
            yield None
        return
    from distributed import Client, LocalCluster

    if address == "local":
        with LocalCluster(processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"cannot reach the dask scheduler at {address} ({type(exc).__name__})") from None
    with client:
        yield client
