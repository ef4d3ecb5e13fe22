"""Benchmark: doppelganger_rates (leave-one-cluster-out, K = 30) at the paper's scale.

151,145 field × 185 cluster stars in 22 clusters, against a straightforward per-fold, all-pairs
NumPy implementation (refit RSCA per fold, transform the whole field, distance of each member to
every field star, pair filter as a mask). Both run in this process; their rates must agree.

    python benchmarks/bench_rates.py [--n-pop N] [--repeat R]
"""

import argparse
import time

import numpy as np
from _common import paper_shaped_representation

from rsca_core import RSCA, doppelganger_rates


def naive_rates(Z_pop, Z_clust, ids, pop_vhelio, pop_ak, clust_vhelio, clust_ak, cv=True):
    rates, sizes = {}, {}
    for c in sorted(set(ids)):
        members = np.flatnonzero(ids == c)
        train = ids != c if cv else np.ones(len(ids), bool)
        est = RSCA().fit(Z_pop, Z_clust[train], ids[train])
        Yp = est.transform(Z_pop)
        Ym = est.transform(Z_clust[members])
        intra = [np.linalg.norm(Ym[a] - Ym[b]) for a in range(len(Ym)) for b in range(a + 1, len(Ym))]
        med = np.median(intra)
        below = total = 0
        for a, i in enumerate(members):
            d = np.linalg.norm(Yp - Ym[a], axis=1)
            ok = (np.abs(pop_vhelio - clust_vhelio[i]) < 5) & (np.abs(pop_ak - clust_ak[i]) < 0.05)
            below += int((d[ok] < med).sum())
            total += int(ok.sum())
        rates[c], sizes[c] = below / total, len(members)
    glob = sum(rates[c] * sizes[c] for c in rates) / sum(sizes.values())
    return glob, rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-pop", type=int, default=151145)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    Z_pop, Z_clust, ids, meta = paper_shaped_representation(n_pop=args.n_pop)
    print(f"field {len(Z_pop):,} × cluster {len(Z_clust)} stars in {len(set(ids))} clusters, K = {Z_pop.shape[1]}")

    doppelganger_rates(Z_pop, Z_clust, ids, **meta)  # warm-up
    fast_times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        res = doppelganger_rates(Z_pop, Z_clust, ids, **meta, cv=True)
        fast_times.append(time.perf_counter() - t)
    t = time.perf_counter()
    glob, rates = naive_rates(Z_pop, Z_clust, ids, **meta)
    naive_time = time.perf_counter() - t

    diff = max(abs(res.per_cluster.set_index("cluster").rate[c] - rates[c]) for c in rates)
    fast = min(fast_times)
    print(f"{'implementation':<38}{'time (s)':>10}{'global rate':>14}")
    print(f"{'naive per-fold all-pairs NumPy':<38}{naive_time:>10.3f}{glob:>14.5f}")
    print(
        f"{'rsca_core.doppelganger_rates':<38}{fast:>10.3f}{res.global_rate:>14.5f}"
        f"   (median of {args.repeat}: {np.median(fast_times):.3f} s)"
    )
    print(
        f"speed-up: {naive_time / fast:.0f}x   max |Δ rate| per cluster: {diff:.1e}   "
        f"pairs evaluated: {int(res.per_cluster.n_inter_pairs.sum()):,}"
    )


if __name__ == "__main__":
    main()
