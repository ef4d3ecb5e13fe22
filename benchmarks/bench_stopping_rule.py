"""Does MaskedPCA's stopping rule stop early enough to change a rate? (issue 11, part 1)

For each K: the compression ``Dataset.compress`` makes (default ``tol``) and the same fit run to full
convergence (``tol`` much smaller, many more passes), then the leave-one-cluster-out doppelganger rate
of each (all axes, as ``evaluate``). Prints passes, times, the last relative change and the rate
difference; the issue's bound is |Δrate| ≤ 1e-3.

    python benchmarks/bench_stopping_rule.py --dataset data/default --ks 10 30 60
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from rsca_core import Dataset, doppelganger_rates
from rsca_core.compress import MaskedPCA


def rate(ds, comp):
    ri = ds.rate_inputs("spectra", k=comp.k, compression=comp)
    return float(doppelganger_rates(ri.z_pop, ri.z_clust, ri.cluster_ids, **ri.as_kwargs(), cv=True).global_rate)


def fit(ds, k, **options):
    t0 = time.perf_counter()
    comp = ds.compress(k, seed=0, use_cache=False, **options)
    return comp, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="data/default")
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 30, 60])
    ap.add_argument("--full-tol", type=float, default=1e-7)
    ap.add_argument("--full-max-iter", type=int, default=3000)
    args = ap.parse_args(argv)
    default_tol = MaskedPCA(1).tol
    ds = Dataset.load(args.dataset, cache_root=tempfile.mkdtemp(prefix="rsca-stop-"))
    print(f"{ds.name}: {ds.n_stars} stars × {ds.n_pixels} pixels; default tol {default_tol:g}", flush=True)
    print("K | passes (default) | time | last change | rate | passes (full) | time | last change | rate | |Δrate|")
    for k in args.ks:
        a, ta = fit(ds, k)
        b, tb = fit(ds, k, tol=args.full_tol, max_iter=args.full_max_iter)
        ra, rb = rate(ds, a), rate(ds, b)
        s = np.linalg.svd(a.components.astype(float) @ b.components.astype(float).T, compute_uv=False)
        print(
            f"{k} | {a.n_iter} | {ta:.0f} s | {a.last_change:.1e} | {ra:.6f} | {b.n_iter}{'' if b.converged else ' (max_iter)'}"
            f" | {tb:.0f} s | {b.last_change:.1e} | {rb:.6f} | {abs(ra - rb):.2e}   (smallest principal cosine {s.min():.4f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
