"""Benchmark: a large simulated survey in Zarr, compressed on a LocalCluster, rates and a siblings query.

1. Simulate N APOGEE-sized spectra (P = 7,514, float32; low-rank absorption structure + noise, 5 %
   missing pixels, as in bench_compress.py; 22 planted clusters of 10 stars with DR16-like VHELIO and
   AK) straight into Zarr (Blosc-LZ4 + shuffle, ``rsca_core.scale.zarr_compressors``), chunk by chunk
   (memory stays at one chunk; each chunk has its own seed, so an interrupted simulation resumes).
2. The measured cost of one chunk of a pass, in this process, on one thread: reading it from Zarr,
   and the pass's arithmetic on it (``rsca_core.compress.block_pass``) — the in-memory path's work —
   beside the floor's ``X · V`` on the same chunk.
3. Compress K = 30 on a ``LocalCluster`` (``MaskedPCA`` on dask arrays read from Zarr by the
   workers; the missing positions are kept on the workers after pass 0). Beside it, the floor on the
   same cluster: one streaming pass ``X · V`` over the same Zarr data (scikit-learn's
   ``randomized_svd`` makes ~16 such passes).
4. Doppelganger rates (leave-one-cluster-out, pair filter) on the K = 30 scores, and a siblings
   query (k-d tree over the RSCA coordinates of all stars, the 10 nearest of one star).

Prints times and peak memory (ru_maxrss of this process; the workers are threads in it), and a
projection to 5,000,000 stars on W workers from the measured per-chunk cost of a pass.
The simulator of rsca_core (physical spectra) is not used: it takes ~20 ms a star on one core.
The survey is a dataset bundle (spectra and mask in Zarr, random star labels) and its compression
is cached in it, so ``bench_first_view.py`` can open it in the dashboard; ``--delete`` removes it
after measuring.

    python benchmarks/bench_scale.py [--n N] [--k 30] [--workers 2] [--chunk-rows 4096] [--project 5000000]
"""

import argparse
import json
import resource
import shutil
import time

import _common  # noqa: F401
import numpy as np
from _common import ROOT

WORK = ROOT / "benchmarks" / "_work" / "scale"
P = 7514
RANK = 120


def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def survey_model(seed, n_clusters):
    """The fixed parts of the simulated survey: the absorption basis and the cluster centres."""
    rng = np.random.default_rng(seed)
    basis = (rng.standard_normal((RANK, P)) * 0.04).astype(np.float32)
    scale = np.geomspace(1, 0.003, RANK)
    centres = rng.standard_normal((n_clusters, RANK)) * scale
    return basis, scale, centres


def simulate_zarr(n, chunk_rows, n_clusters=22, per_cluster=10, seed=0):
    """spectra.zarr / mask.zarr under WORK, plus the latent cluster labels and metadata (in memory)."""
    import zarr
    from bench_compress import missing_mask

    from rsca_core.scale import zarr_compressors

    out = WORK / f"survey_{n}"
    if (out / "done").exists():
        meta = np.load(out / "meta.npz", allow_pickle=True)
        return out, dict(meta)
    basis, scale, centres = survey_model(seed, n_clusters)
    n_cl = n_clusters * per_cluster
    cluster_ids = np.repeat(np.arange(n_clusters), per_cluster)
    progress = out / "progress.json"
    start = json.loads(progress.read_text())["next_row"] if progress.exists() else 0
    if start == 0:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for name, dtype in (("spectra", np.float32), ("mask", np.bool_)):
            zarr.create_array(
                str(out / f"{name}.zarr"),
                shape=(n, P),
                dtype=dtype,
                chunks=(chunk_rows, P),
                compressors=zarr_compressors(dtype),
            )
    else:
        log(f"resuming the simulation at row {start:,}")
    X = zarr.open_array(str(out / "spectra.zarr"), mode="r+")
    M = zarr.open_array(str(out / "mask.zarr"), mode="r+")
    for a in range(start, n, chunk_rows):
        b = min(n, a + chunk_rows)
        rng = np.random.default_rng([seed, a])  # each chunk its own stream: resumable
        lat = rng.standard_normal((b - a, RANK)) * scale
        rows = np.arange(a, b)
        cl = rows < n_cl  # the first rows are cluster members: centre + small scatter
        lat[cl] = centres[cluster_ids[rows[cl]]] + 0.3 * lat[cl]
        X[a:b] = 1.0 + (lat.astype(np.float32) @ basis) + 0.004 * rng.standard_normal((b - a, P), dtype=np.float32)
        M[a:b] = missing_mask(rng, b - a, P)
        progress.write_text(json.dumps({"next_row": b}))
        if (a // chunk_rows) % 25 == 0:
            log(f"simulated {b:,} / {n:,} rows")
    rng = np.random.default_rng([seed, n])
    vh = rng.normal(-10, 60, n)
    ak = rng.gamma(1.2, 0.12, n)
    cv, ca = rng.normal(-10, 40, n_clusters), rng.gamma(1.2, 0.12, n_clusters)
    vh[:n_cl] = cv[cluster_ids] + rng.normal(0, 1, n_cl)
    ak[:n_cl] = ca[cluster_ids] + rng.normal(0, 0.02, n_cl)
    meta = {"vhelio": vh, "ak": ak, "ids": np.array([f"OC{c:02d}" for c in cluster_ids], dtype=object)}
    np.savez(out / "meta.npz", **meta)
    write_bundle_files(out, n, meta, rng)
    (out / "done").write_text("ok")
    return out, meta


def write_bundle_files(out, n, meta, rng):
    """Make the Zarr survey a dataset bundle (stars.csv, wavelength.npy, meta.json last), so that
    ``Dataset.load``, ``compress`` and the dashboard open it. The star labels are random draws in
    APOGEE-like ranges (this survey's spectra are not made from them): the bundle is for timing."""
    import pandas as pd

    from rsca_core.constants import ABUNDANCE_COLUMNS, apogee_wavelength
    from rsca_core.dataset import FORMAT_VERSION
    from rsca_core.fileio import atomic_write_text

    n_cl = len(meta["ids"])
    stars = pd.DataFrame(
        {
            "apogee_id": [f"2M{i:08d}" for i in range(n)],
            "cluster": np.concatenate([meta["ids"].astype(str), np.full(n - n_cl, "")]),
            "teff": rng.normal(4700, 400, n).round(1),
            "logg": rng.normal(2.5, 0.6, n).round(3),
            "fe_h": rng.normal(-0.2, 0.3, n).round(4),
            **{c: rng.normal(-0.2, 0.3, n).round(4) for c in ABUNDANCE_COLUMNS},
            "ak_targ": meta["ak"].round(5),
            "vhelio_avg": meta["vhelio"].round(4),
            "snr": rng.gamma(4, 40, n).round(1),
            "visits": np.full(n, "1"),
        }
    )
    stars.to_csv(out / "stars.csv", index=False)
    np.save(out / "wavelength.npy", apogee_wavelength(P))
    info = {
        "format": "rsca-bundle",
        "version": FORMAT_VERSION,
        "n_stars": n,
        "n_pixels": P,
        "kind": "simulated",
        "uid": f"bench-scale-{n}",
        "provenance": {"benchmark": "bench_scale.py: low-rank + noise spectra, random labels (timing only)"},
    }
    atomic_write_text(out / "meta.json", json.dumps(info, indent=2))


def disk_bytes(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def chunk_costs(path, k, reps=3):
    """Seconds for one chunk (the first full one) on this thread: read from Zarr (spectra, mask),
    the pass's arithmetic (``block_pass``, imputation from a previous model included) and the floor's
    ``X · V`` product; best of ``reps``."""
    import zarr

    from rsca_core.compress import block_pass, missing_positions

    Xz, Mz = zarr.open_array(str(path / "spectra.zarr")), zarr.open_array(str(path / "mask.zarr"))
    rows = Xz.chunks[0]
    rng = np.random.default_rng(1)
    kb = k + 10
    V = np.linalg.qr(rng.standard_normal((P, kb)))[0].astype(np.float32)
    Wt = np.ascontiguousarray(np.linalg.qr(rng.standard_normal((P, k)))[0].T, dtype=np.float32)
    Zb = rng.standard_normal((rows, k))
    rbuf = np.empty((rows, P), np.float32)
    out = {"rows": rows}

    def best(f):
        t = []
        for _ in range(reps):
            s = time.perf_counter()
            f()
            t.append(time.perf_counter() - s)
        return min(t)

    x, m = Xz[:rows], Mz[:rows]
    mu = x.mean(axis=0)
    miss = missing_positions(m)
    c = np.empty_like(x)
    out["read spectra"] = best(lambda: Xz[:rows])
    out["read mask + positions"] = best(lambda: missing_positions(Mz[:rows]))
    out["pass arithmetic"] = best(lambda: block_pass(np.subtract(x, mu, out=c), miss, V, Wt, Zb, rbuf))
    out["floor X·V"] = best(lambda: x @ V)
    return out


def compress_on_cluster(path, args):
    """MaskedPCA K on a LocalCluster over the Zarr survey, and the floor pass; returns a dict."""
    import dask.array as da
    from distributed import Client, LocalCluster

    from rsca_core import Dataset

    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=args.threads, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        X = da.from_zarr(str(path / "spectra.zarr"))
        M = da.from_zarr(str(path / "mask.zarr"))
        V = np.linalg.qr(np.random.default_rng(0).standard_normal((P, args.k + 10)))[0].astype(np.float32)
        t_floor = float("nan")
        if not args.skip_floor:
            t = time.perf_counter()
            (X @ V).compute()
            t_floor = time.perf_counter() - t
            log(f"floor pass X·V on the cluster: {t_floor:.1f} s")
        times = [time.perf_counter()]

        def progress(i, rel, tol):
            times.append(time.perf_counter())
            if i:
                log(f"pass {i}: {times[-1] - times[-2]:.1f} s (change {rel:.2e}, tol {tol:.0e})")

        t = time.perf_counter()
        comp = Dataset.load(path).compress(args.k, arrays=(X, M), progress=progress)  # cached in the bundle
        t_pca = time.perf_counter() - t
        Z = comp.scores
    passes = np.diff(times[1:])  # times[1] is the start (pass 0 of the callback), then one per pass
    return {
        "Z": Z,
        "n_iter": comp.n_iter,
        "converged": comp.converged,
        "t_pca": t_pca,
        "t_floor": t_floor,
        "n_chunks": X.npartitions,
        "per_pass": float(np.median(passes[1:])) if len(passes) > 1 else t_pca,
        "first_pass": float(passes[0]) if len(passes) else t_pca,
    }


def rates_and_siblings(Z, meta, n):
    from rsca_core.metrics import doppelganger_rates
    from rsca_core.rsca import RSCA
    from rsca_core.siblings.neighbours import NeighbourIndex, search

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
    log(f"doppelganger rates ({n - n_cl:,} field stars): {t_rates:.1f} s, global rate {res.global_rate:.4f}")
    t = time.perf_counter()
    Y = RSCA().fit(Z[field], Z[:n_cl], meta["ids"]).transform(Z)
    index = NeighbourIndex(Y)
    t_index = time.perf_counter() - t
    t = time.perf_counter()
    search(index, Y, np.arange(len(Y)), Y[:1], 10, 0)
    t_query = time.perf_counter() - t
    return t_rates, res.global_rate, t_index, t_query


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="threads per worker")
    ap.add_argument("--chunk-rows", type=int, default=4096)
    ap.add_argument("--project", type=int, default=5_000_000)
    ap.add_argument("--delete", action="store_true", help="delete the simulated survey after measuring")
    ap.add_argument(
        "--skip-floor",
        action="store_true",
        help="skip the floor pass X·V (when the run is only to make the bundle, e.g. for bench_first_view.py)",
    )
    args = ap.parse_args()

    t = time.perf_counter()
    path, meta = simulate_zarr(args.n, args.chunk_rows)
    t_sim = time.perf_counter() - t
    raw = args.n * P * 4
    log(
        f"survey: {args.n:,} × {P:,} float32 ({raw / 2**30:.1f} GiB raw) in Zarr at {path} "
        f"({disk_bytes(path) / 2**30:.1f} GiB on disk), simulated (this run) in {t_sim:.0f} s"
    )
    costs = chunk_costs(path, args.k)
    log(
        "one chunk of "
        + f"{costs['rows']:,} rows, one thread: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in costs.items() if k != "rows")
    )
    r = compress_on_cluster(path, args)
    n_chunks = r["n_chunks"]
    log(
        f"compress K={args.k} on a LocalCluster ({args.workers} workers × {args.threads} thread(s), {n_chunks} chunks "
        f"of {args.chunk_rows} rows): {r['t_pca']:.0f} s, {r['n_iter']} passes (converged: {r['converged']}), "
        f"{r['per_pass']:.1f} s a pass (median; pass 1 {r['first_pass']:.1f} s)"
    )
    log(
        f"floor: one pass X·V over the Zarr data on the same cluster {r['t_floor']:.1f} s "
        f"(randomized_svd ≈ 16 such passes = {16 * r['t_floor']:.0f} s) → ours / (16 passes) = "
        f"{r['t_pca'] / (16 * r['t_floor']):.2f}; a pass of ours / a floor pass = {r['per_pass'] / r['t_floor']:.2f}"
    )
    per_chunk_inmem = costs["pass arithmetic"]
    log(
        f"a pass per chunk: on the cluster {r['per_pass'] * args.workers * args.threads / n_chunks:.2f} s of a core "
        f"(wall × cores / chunks); in memory (read excluded) {per_chunk_inmem:.2f} s; + Zarr read "
        f"{costs['read spectra']:.2f} s"
    )
    Z = r["Z"]
    t_rates, g, t_index, t_query = rates_and_siblings(Z, meta, args.n)
    log(
        f"siblings: RSCA map + k-d tree of {len(Z):,} stars {t_index:.1f} s; the 10 nearest of one star {t_query * 1e3:.1f} ms"
    )
    log(f"peak memory (this process, workers included): {rss_gib():.2f} GiB (the matrix: {raw / 2**30:.1f} GiB)")

    # projection: a pass costs n_chunks × (cost of a chunk) / workers; rates and the tree ∝ N (log N)
    f = args.project / args.n
    chunk_cost = r["per_pass"] * args.workers * args.threads / n_chunks
    print(f"\nprojection to {args.project:,} stars (measured cost of a chunk-pass: {chunk_cost:.2f} s of one core):")
    for w in (args.workers * args.threads, 16, 64):
        # MaskedPCA version 3: the first of the n_iter passes also counts and validates (no pass 0)
        t_comp = r["n_iter"] * (args.project / args.chunk_rows) * chunk_cost / w
        print(
            f"  {w:>3} workers: compress ≈ {t_comp / 60:.0f} min ({r['n_iter']} passes), rates ≈ "
            f"{t_rates * f / 60:.1f} min, tree ≈ {t_index * f * np.log(args.project) / np.log(args.n):.0f} s, "
            f"scores {args.project * args.k * 8 / 2**30:.1f} GiB"
        )
    if args.delete:
        shutil.rmtree(path)
        log(f"deleted {path}")


if __name__ == "__main__":
    main()
