"""Benchmark: chemical siblings at the paper's scale (151,145 field + 185 cluster stars, K = 30).

1. ``embed`` of the whole survey from a cached compression (``Dataset.compress`` finds its cache
   file): the RSCA fit on all 22 clusters and the transform of every star, plus the k-d tree built
   on the first query.
2. One ``Embedding.siblings`` query (n = 50, with and without the pair filter) beside a brute-force
   NumPy scan (distances to every star, then the same order: ``np.lexsort`` by distance and row;
   and the fastest unordered scan, ``np.argpartition``). The answers must be identical.

By default the survey is a stand-in bundle written to a temporary folder: the paper-shaped 30-D
representation of ``benchmarks/_common.py`` (planted clusters, DR16-like VHELIO_AVG / AK_TARG)
mixed into 64 "pixels" plus noise, so that ``Dataset.compress(30)`` is a real, quick fit (written to
the bundle's cache once, outside the timings). ``embed`` never reads the spectra when the cache
exists, so its time does not depend on the pixel count. ``--dataset DIR`` times a real bundle
instead (its K = 30 compression must be cached: ``python -m rsca_core compress --dataset DIR``).

    python benchmarks/bench_siblings.py [--dataset DIR] [--queries Q] [--repeat R]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import paper_shaped_representation

from rsca_core import Dataset
from rsca_core.constants import ABUNDANCE_COLUMNS
from rsca_core.siblings import embed

K = 30
N_PIXELS = 64


def stand_in_bundle(folder: Path) -> Path:
    """A 151,330-star bundle whose spectra are the paper-shaped representation mixed into 64 pixels."""
    Z_pop, Z_clust, ids, meta = paper_shaped_representation()
    rng = np.random.default_rng(1)
    Z = np.vstack([Z_pop, Z_clust])
    n = len(Z)
    basis = np.linalg.qr(rng.standard_normal((N_PIXELS, K)))[0].T * 0.01
    spectra = (1.0 + Z @ basis + 1e-4 * rng.standard_normal((n, N_PIXELS))).astype(np.float32)
    stars = pd.DataFrame(
        {
            "apogee_id": [f"2M{i:08d}+0000000" for i in range(n)],
            "cluster": np.concatenate([np.full(len(Z_pop), "", dtype=object), ids]),
            "teff": rng.normal(4600, 300, n),
            "logg": rng.normal(2.5, 0.5, n),
            "fe_h": Z[:, 0] * 0.05,
        }
    )
    for j, col in enumerate(ABUNDANCE_COLUMNS):
        stars[col] = Z[:, j % K] * 0.05
    stars["ak_targ"] = np.concatenate([meta["pop_ak"], meta["clust_ak"]])
    stars["vhelio_avg"] = np.concatenate([meta["pop_vhelio"], meta["clust_vhelio"]])
    stars["snr"] = 150.0
    stars["visits"] = "apo25m-1-1"
    mask = np.zeros(spectra.shape, dtype=bool)
    path = folder / "standin"
    Dataset(stars, spectra, mask, np.linspace(15100, 16900, N_PIXELS), meta={"name": "stand-in survey"}).save(path)
    return path


def brute_siblings(coords, row, n, allowed=None):
    """Brute force with the same answer: distances to every star, exclude the star, order by (d, row)."""
    d = np.sqrt(((coords - coords[row]) ** 2).sum(axis=1))
    ok = np.ones(len(coords), bool) if allowed is None else allowed.copy()
    ok[row] = False
    rows = np.flatnonzero(ok)
    order = np.lexsort((rows, d[rows]))[:n]
    return rows[order], d[rows][order]


def brute_argpartition(coords, row, n):
    """Fastest plain scan: distances, then the n + 1 smallest by argpartition (no tie rule)."""
    d = np.sqrt(((coords - coords[row]) ** 2).sum(axis=1))
    part = np.argpartition(d, n)[: n + 1]
    part = part[np.argsort(d[part])]
    return part[part != row][:n]


def timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=None, help="a bundle with its K=30 compression cached")
    ap.add_argument("--queries", type=int, default=200, help="stars queried (default 200)")
    ap.add_argument("--repeat", type=int, default=5, help="embed repetitions (default 5)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-siblings-") as tmp:
        if args.dataset:
            path = Path(args.dataset)
        else:
            t = time.perf_counter()
            path = stand_in_bundle(Path(tmp))
            ds = Dataset.load(path)
            ds.compress(K, seed=0)
            print(f"stand-in bundle and its K={K} compression cache written in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        ds = Dataset.load(path)
        t_load = time.perf_counter() - t
        if not ds.has_compression(K, seed=0):
            raise SystemExit(f"{path}: no cached K={K} compression; run python -m rsca_core compress first")
        print(
            f"{ds.name}: {int((~ds.is_cluster).sum()):,} field + {int(ds.is_cluster.sum())} cluster stars "
            f"in {len(ds.cluster_names)} clusters, K = {K} (Dataset.load {t_load:.2f} s)"
        )
        emb, t_embed = timed(lambda: embed(ds, k=K), args.repeat)
        t = time.perf_counter()
        _ = emb.neighbour_index
        t_tree = time.perf_counter() - t

    rng = np.random.default_rng(0)
    rows = rng.choice(emb.n_stars, size=args.queries, replace=False)
    q_times, qf_times, b_times, bp_times = [], [], [], []
    for r in rows:
        t = time.perf_counter()
        got = emb.siblings(int(r), n=50)
        q_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref_rows, ref_d = brute_siblings(emb.coords, int(r), 50)
        b_times.append(time.perf_counter() - t)
        assert got.index.tolist() == ref_rows.tolist() and np.array_equal(got["distance"].to_numpy(), ref_d)
        t = time.perf_counter()
        part = brute_argpartition(emb.coords, int(r), 50)
        bp_times.append(time.perf_counter() - t)
        assert set(part.tolist()) == set(ref_rows.tolist()) or len(set(ref_d)) < 50  # same stars unless tied
        t = time.perf_counter()
        gotf = emb.siblings(int(r), n=50, pair_filter=True)
        qf_times.append(time.perf_counter() - t)
        ref_rows, _ = brute_siblings(emb.coords, int(r), 50, emb.pair_filter_mask(int(r)))
        assert gotf.index.tolist() == ref_rows.tolist()

    def ms(ts):
        return f"median {1e3 * statistics.median(ts):7.2f} ms   p95 {1e3 * np.percentile(ts, 95):7.2f} ms"

    print(f"\nembed (RSCA fit + transform of {emb.n_stars:,} stars, cached compression), {args.repeat} runs:")
    print(f"  {min(t_embed):.2f}–{max(t_embed):.2f} s;  k-d tree built on the first query: {t_tree:.2f} s")
    print(f"\none siblings query, n = 50, {args.queries} random stars (identical answers checked):")
    print(f"  {'Embedding.siblings (k-d tree)':<46}{ms(q_times)}")
    print(f"  {'Embedding.siblings, pair filter':<46}{ms(qf_times)}")
    print(f"  {'brute-force NumPy scan + lexsort (same order)':<46}{ms(b_times)}")
    print(f"  {'brute-force NumPy scan + argpartition':<46}{ms(bp_times)}")
    print(
        f"  speed-up over the same-order scan: {statistics.median(b_times) / statistics.median(q_times):.1f}×; "
        f"over argpartition: {statistics.median(bp_times) / statistics.median(q_times):.1f}×"
    )


if __name__ == "__main__":
    main()
