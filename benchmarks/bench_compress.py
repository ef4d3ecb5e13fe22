"""Benchmark: MaskedPCA (K = 60) on 151,145 × 7,514 float32 spectra with 5 % missing pixels.

Part 1 (scale): a memory-mapped float32 matrix of the paper's size (4.5 GB) with 5 % missing
pixels (random pixels plus contiguous runs) is written under benchmarks/_work/ (once), then
MaskedPCA(60) is fitted in a fresh subprocess: wall time and peak resident memory (ru_maxrss,
which counts the memory-mapped pages read) are reported against the matrix size, and beside it,
in the same process, the floor: scikit-learn's ``randomized_svd`` of the complete matrix.

Part 2 (quality, same process): on a subsample, 2 % of the observed pixels are hidden and
predicted by MaskedPCA, by mean-imputation PCA and by the paper's probabilistic PCA (the
``pyppca`` package itself, benchmarks/requirements.txt): held-out RMSE and time side by side.

    python benchmarks/bench_compress.py [--n N] [--p P] [--k K] [--sub N_SUB] [--skip-scale]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import _common  # noqa: F401
import numpy as np
import pyppca
from _common import ROOT

from rsca_core import MaskedPCA

WORK = ROOT / "benchmarks" / "_work"


def spectra_like(rng, n, p, rank=120):
    """Continuum-normalised-looking spectra: 1 + low-rank absorption structure + noise, float32."""
    basis = (rng.standard_normal((rank, p)) * 0.04).astype(np.float32)
    lat = (rng.standard_normal((n, rank)) * np.geomspace(1, 0.003, rank)).astype(np.float32)
    return (1.0 + lat @ basis + 0.004 * rng.standard_normal((n, p), dtype=np.float32)).astype(np.float32)


def missing_mask(rng, n, p, frac=0.05):
    """``frac`` of the pixels missing on average: scattered pixels plus one contiguous run per row."""
    run_frac = (50 + 399) / 4 / p  # expected run length / p
    m = rng.random((n, p), dtype=np.float32) < (frac - run_frac) / (1 - run_frac)
    starts = rng.integers(0, p - 200, size=n)
    lengths = rng.integers(50, 400, size=n)
    for i in range(n):  # contiguous runs, like masked bands and chip edges
        m[i, starts[i] : starts[i] + lengths[i] // 2] = True
    return m


def make_big(n, p, seed=0):
    WORK.mkdir(parents=True, exist_ok=True)
    xp, mp = WORK / f"X_{n}x{p}.npy", WORK / f"mask5pc_{n}x{p}.npy"
    if xp.exists() and mp.exists():
        return xp, mp
    rng = np.random.default_rng(seed)
    X = np.lib.format.open_memmap(str(xp) + ".tmp", mode="w+", dtype=np.float32, shape=(n, p))
    M = np.lib.format.open_memmap(str(mp) + ".tmp", mode="w+", dtype=np.bool_, shape=(n, p))
    basis_rng = np.random.default_rng(seed + 1)
    rank = 120
    basis = (basis_rng.standard_normal((rank, p)) * 0.04).astype(np.float32)
    for a in range(0, n, 5000):
        b = min(n, a + 5000)
        lat = (rng.standard_normal((b - a, rank)) * np.geomspace(1, 0.003, rank)).astype(np.float32)
        X[a:b] = 1.0 + lat @ basis + 0.004 * rng.standard_normal((b - a, p), dtype=np.float32)
        M[a:b] = missing_mask(rng, b - a, p)
    X.flush()
    M.flush()
    del X, M
    os.replace(str(xp) + ".tmp", xp)
    os.replace(str(mp) + ".tmp", mp)
    return xp, mp


def child(xp, mp, k, floor=True):
    X = np.load(xp, mmap_mode="r")
    M = np.load(mp, mmap_mode="r")
    for path in (xp, mp):  # into the page cache first, untimed: the floor below is timed on X in memory
        with open(path, "rb", buffering=0) as fh:
            while fh.read(64 << 20):
                pass
    t = time.perf_counter()
    pca = MaskedPCA(k, random_state=0, progress=True).fit(X, M)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the floor loads X whole
    out = {
        "seconds": dt,
        "peak_bytes": peak,
        "n_iter": pca.n_iter_,
        "converged": pca.converged_,
        "missing_fraction": pca.missing_fraction_,
    }
    if floor:
        # The floor: scikit-learn's randomized_svd (its defaults) of the same matrix with nothing
        # missing, already centred (centring not timed), same K, in this process.
        from sklearn.utils.extmath import randomized_svd

        Xc = np.asarray(X, dtype=np.float32)
        Xc = Xc - Xc.mean(0)
        t = time.perf_counter()
        randomized_svd(Xc, k, random_state=0)
        out["floor_seconds"] = time.perf_counter() - t
    print(json.dumps(out))


def held_out_quality(n_sub, p, k, seed=1):
    rng = np.random.default_rng(seed)
    X = spectra_like(rng, n_sub, p)
    mask = missing_mask(rng, n_sub, p)
    held = (~mask) & (rng.random(X.shape) < 0.02)
    train = mask | held
    rows = []

    t = time.perf_counter()
    pca = MaskedPCA(k, random_state=0)
    rec = pca.inverse_transform(pca.fit_transform(X, train))
    rows.append(("MaskedPCA (this project)", time.perf_counter() - t, rec))

    t = time.perf_counter()
    Xn = np.where(train, np.nan, X).astype(np.float64)
    np.random.seed(0)  # noqa: NPY002 -- pyppca draws its start from NumPy's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # its numpy.matlib import
        C, _, mean, scores, _ = pyppca.ppca(Xn.copy(), k, False)
    rows.append((f"pyppca {version('pyppca')} (the paper's PPCA)", time.perf_counter() - t, scores @ C.T + mean))

    t = time.perf_counter()
    col = np.nanmean(Xn, axis=0)
    Xf = np.where(train, col, X).astype(np.float64)
    _, _, vt = np.linalg.svd(Xf - col, full_matrices=False)
    W = vt[:k]
    rows.append(("mean imputation + PCA", time.perf_counter() - t, (Xf - col) @ W.T @ W + col))

    print(f"\nheld-out reconstruction, {n_sub} × {p}, K = {k}, {mask.mean():.1%} missing + 2 % held out")
    print(f"{'method':<40}{'time (s)':>10}{'held-out RMSE':>16}")
    for name, dt, rec in rows:
        rmse = float(np.sqrt(np.mean((rec - X)[held] ** 2)))
        print(f"{name:<40}{dt:>10.2f}{rmse:>16.6f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=151145)
    ap.add_argument("--p", type=int, default=7514)
    ap.add_argument("--k", type=int, default=60)
    ap.add_argument("--sub", type=int, default=3000, help="rows of the quality comparison")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.k)
        return
    if not args.skip_scale:
        t = time.perf_counter()
        xp, mp = make_big(args.n, args.p)
        print(f"data: {xp} ({xp.stat().st_size / 2**30:.2f} GiB; prepared in {time.perf_counter() - t:.0f} s)")
        out = subprocess.run(
            [sys.executable, __file__, "--k", str(args.k), "--child", str(xp), str(mp)],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        size = args.n * args.p * 4
        print(
            f"MaskedPCA K={args.k} on {args.n:,} × {args.p:,} float32 ({r['missing_fraction']:.1%} missing): "
            f"{r['seconds']:.1f} s, {r['n_iter']} passes (converged: {r['converged']}), "
            f"peak RSS {r['peak_bytes'] / 2**30:.2f} GiB = {r['peak_bytes'] / size:.2f} × the matrix "
            f"({size / 2**30:.2f} GiB)"
        )
        print(
            f"floor: sklearn randomized_svd K={args.k} of the complete centred matrix: {r['floor_seconds']:.1f} s "
            f"→ MaskedPCA / floor = {r['seconds'] / r['floor_seconds']:.2f}"
        )
    held_out_quality(args.sub, args.p, args.k)


if __name__ == "__main__":
    main()
