"""Benchmark: a large simulated survey in Zarr, compressed on a LocalCluster, rates and a siblings query.

1. Simulate N APOGEE-sized spectra (P = 7,514, float32; low-rank absorption structure + noise, 5 %
   missing pixels, as in bench_compress.py; 22 planted clusters of 10 stars with DR16-like VHELIO and
   AK) straight into Zarr, chunk by chunk (memory stays at one chunk).
2. Compress K = 30 on a ``LocalCluster`` (``MaskedPCA`` on dask arrays read from Zarr by the
   workers). Beside it, the floor on the same cluster: one streaming pass ``X · V`` over the same Zarr
   data (scikit-learn's ``randomized_svd`` makes ~16 such passes).
3. Doppelganger rates (leave-one-cluster-out) on the K = 30 scores, and a siblings query (k-d tree
   over the RSCA coordinates of all stars, the 10 nearest of one star).

Prints times and peak memory (ru_maxrss of this process; the workers are threads in it), and a
projection to 5,000,000 stars on W workers from the measured per-chunk cost of a pass.
The simulator of rsca_core (physical spectra) is not used: it takes ~20 ms a star on one core.

    python benchmarks/bench_scale.py [--n N] [--k 30] [--workers 2] [--chunk-rows 4096] [--project 5000000]
"""

import argparse
import resource
import shutil
import time

import _common  # noqa: F401
import numpy as np
from _common import ROOT

WORK = ROOT / "benchmarks" / "_work" / "scale"
P = 7514


def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def simulate_zarr(n, chunk_rows, n_clusters=22, per_cluster=10, seed=0):
    """spectra.zarr / mask.zarr under WORK, plus the latent cluster labels and metadata (in memory)."""
    import zarr
    from bench_compress import missing_mask

    out = WORK / f"survey_{n}"
    if (out / "done").exists():
        meta = np.load(out / "meta.npz", allow_pickle=True)
        return out, dict(meta)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rank = 120
    basis = (rng.standard_normal((rank, P)) * 0.04).astype(np.float32)
    scale = np.geomspace(1, 0.003, rank)
    n_cl = n_clusters * per_cluster
    centres = rng.standard_normal((n_clusters, rank)) * scale
    cluster_ids = np.repeat(np.arange(n_clusters), per_cluster)
    X = zarr.create_array(str(out / "spectra.zarr"), shape=(n, P), dtype=np.float32, chunks=(chunk_rows, P))
    M = zarr.create_array(str(out / "mask.zarr"), shape=(n, P), dtype=bool, chunks=(chunk_rows, P))
    for a in range(0, n, chunk_rows):
        b = min(n, a + chunk_rows)
        lat = rng.standard_normal((b - a, rank)) * scale
        rows = np.arange(a, b)
        cl = rows < n_cl  # the first rows are cluster members: centre + small scatter
        lat[cl] = centres[cluster_ids[rows[cl]]] + 0.3 * lat[cl]
        X[a:b] = 1.0 + (lat.astype(np.float32) @ basis) + 0.004 * rng.standard_normal((b - a, P), dtype=np.float32)
        M[a:b] = missing_mask(rng, b - a, P)
    vh = rng.normal(-10, 60, n)
    ak = rng.gamma(1.2, 0.12, n)
    cv, ca = rng.normal(-10, 40, n_clusters), rng.gamma(1.2, 0.12, n_clusters)
    vh[:n_cl] = cv[cluster_ids] + rng.normal(0, 1, n_cl)
    ak[:n_cl] = ca[cluster_ids] + rng.normal(0, 0.02, n_cl)
    meta = {"vhelio": vh, "ak": ak, "ids": np.array([f"OC{c:02d}" for c in cluster_ids], dtype=object)}
    np.savez(out / "meta.npz", **meta)
    (out / "done").write_text("ok")
    return out, meta


def disk_bytes(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-rows", type=int, default=4096)
    ap.add_argument("--project", type=int, default=5_000_000)
    args = ap.parse_args()

    import dask.array as da
    from distributed import Client, LocalCluster

    from rsca_core import MaskedPCA
    from rsca_core.metrics import doppelganger_rates
    from rsca_core.rsca import RSCA
    from rsca_core.siblings.neighbours import NeighbourIndex, search

    t = time.perf_counter()
    path, meta = simulate_zarr(args.n, args.chunk_rows)
    t_sim = time.perf_counter() - t
    raw = args.n * P * 4
    print(
        f"survey: {args.n:,} × {P:,} float32 ({raw / 2**30:.1f} GiB raw) in Zarr at {path} "
        f"({disk_bytes(path) / 2**30:.1f} GiB on disk), simulated in {t_sim:.0f} s"
    )

    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        X = da.from_zarr(str(path / "spectra.zarr"))
        M = da.from_zarr(str(path / "mask.zarr"))
        n_chunks = X.npartitions
        # the floor: one streaming pass X · V over the same data on the same cluster
        V = np.linalg.qr(np.random.default_rng(0).standard_normal((P, args.k + 10)))[0].astype(np.float32)
        t = time.perf_counter()
        (X @ V).compute()
        t_floor = time.perf_counter() - t
        times = []
        t = time.perf_counter()
        pca = MaskedPCA(args.k, random_state=0, progress=lambda i, rel, tol: times.append(time.perf_counter()))
        Z = pca.fit_transform(X, M)
        t_pca = time.perf_counter() - t
    per_pass = np.diff(times).mean() if len(times) > 1 else t_pca
    print(
        f"compress K={args.k} on a LocalCluster ({args.workers} workers × 1 thread, {n_chunks} chunks of "
        f"{args.chunk_rows} rows): {t_pca:.0f} s, {pca.n_iter_} passes (converged: {pca.converged_}), "
        f"{per_pass:.1f} s a pass"
    )
    print(
        f"floor: one pass X·V over the Zarr data on the same cluster {t_floor:.1f} s "
        f"(randomized_svd ≈ 16 such passes = {16 * t_floor:.0f} s) → ours / (16 passes) = {t_pca / (16 * t_floor):.2f}"
    )

    n_cl = len(meta["ids"])
    field = slice(n_cl, None)
    t = time.perf_counter()
    res = doppelganger_rates(
        Z[field],
        Z[:n_cl],
        meta["ids"],
        pop_vhelio=meta["vhelio"][field],
        pop_ak=meta["ak"][field],
        clust_vhelio=meta["vhelio"][:n_cl],
        clust_ak=meta["ak"][:n_cl],
        keep_distances=False,
    )
    t_rates = time.perf_counter() - t
    print(
        f"doppelganger rates (leave-one-cluster-out, {args.n - n_cl:,} field stars): {t_rates:.1f} s, global rate {res.global_rate:.4f}"
    )

    t = time.perf_counter()
    model = RSCA().fit(Z[field], Z[:n_cl], meta["ids"])
    Y = model.transform(Z)
    index = NeighbourIndex(Y)
    t_index = time.perf_counter() - t
    t = time.perf_counter()
    rows, dist = search(index, Y, np.arange(len(Y)), Y[:1], 10, 0)
    t_query = time.perf_counter() - t
    print(
        f"siblings: RSCA map + k-d tree of {len(Y):,} stars {t_index:.1f} s; the 10 nearest of one star {t_query * 1e3:.1f} ms"
    )
    print(f"peak memory (this process, workers included): {rss_gib():.2f} GiB (the matrix: {raw / 2**30:.1f} GiB)")

    # projection: a pass costs n_chunks × (cost of a chunk) / workers; rates and the tree ∝ N (log N)
    f = args.project / args.n
    chunk_cost = per_pass * args.workers / n_chunks
    print(f"\nprojection to {args.project:,} stars (measured chunk cost {chunk_cost:.2f} s a chunk-pass):")
    for w in (args.workers, 16, 64):
        t_comp = pca.n_iter_ * (args.project / args.chunk_rows) * chunk_cost / w
        print(
            f"  {w:>3} workers: compress ≈ {t_comp / 60:.0f} min ({pca.n_iter_} passes), rates ≈ {t_rates * f / 60:.1f} min, "
            f"tree ≈ {t_index * f * np.log(args.project) / np.log(args.n):.0f} s, scores {args.project * args.k * 8 / 2**30:.1f} GiB"
        )


if __name__ == "__main__":
    main()
