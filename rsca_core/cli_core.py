"""Engine commands of the CLI: ``compress`` and ``evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np

from .constants import PAPER_RESULTS, PAPER_SUBSET, SPECIES, canonical_species
from .learners import METHODS


def positive_int(text):
    """argparse type: an integer ≥ 1 (shared by the CLI modules)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _load(path):
    from .dataset import Dataset

    return Dataset.load(path)


def cmd_compress(args) -> int:
    ds = _load(args.dataset)
    t0 = time.perf_counter()
    if args.scheduler is None:
        comp = ds.compress(args.k, seed=args.seed, progress=not args.quiet)
    else:
        try:
            from .scale import dask_arrays, scheduler
        except ImportError as exc:
            raise ValueError(f"--scheduler needs the [scale] extra (pip install rsca-lab[scale]): {exc}") from None
        with scheduler(args.scheduler):
            comp = ds.compress(args.k, seed=args.seed, progress=not args.quiet, arrays=dask_arrays(ds))
    dt = time.perf_counter() - t0
    ev = comp.explained_variance
    print(
        f"[{ds.label}] {ds.name}: K={comp.k} compression of {ds.n_stars} spectra "
        f"({dt:.1f} s){' (cached)' if dt < 1 and comp.path else ''}"
    )
    print(f"  leading explained variances: {', '.join(f'{v:.3g}' for v in ev[:5])}")
    if comp.path:
        print(f"  cached at {comp.path}")
    return 0


def _species_list(text):
    return [canonical_species(s) for s in text.split(",") if s.strip()]


def cmd_evaluate(args) -> int:
    from .metrics import doppelganger_rates

    if args.method != "rsca" and (args.top_n is not None or args.variant != "transformed"):
        raise ValueError("--top-n and --variant apply to --method rsca only")
    show = not args.quiet and not args.json
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if show else (lambda text: None)
    say(f"loading {args.dataset}")
    ds = _load(args.dataset)
    species = _species_list(args.species) if args.species else None
    if args.input == "spectra":
        cached = ds.has_compression(args.k, args.seed)
        say(
            f"compressing K={args.k}"
            + (" (cached)" if cached else f" ({ds.n_stars} spectra; a bar follows the EM passes)")
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inputs = ds.rate_inputs(args.input, k=args.k, seed=args.seed, species=species, progress=show)
        n_cl = len(set(inputs.cluster_ids))
        say(
            f"fitting {args.method.upper()} and counting doppelgangers ({n_cl} clusters, "
            + ("no CV" if args.no_cv else f"leave-one-cluster-out: {n_cl} fits")
            + ")"
        )
        res = doppelganger_rates(
            inputs.z_pop,
            inputs.z_clust,
            inputs.cluster_ids,
            **inputs.as_kwargs(),
            cv=not args.no_cv,
            keep_distances=False,
            **(
                {"top_n": args.top_n, "variant": args.variant}
                if args.method == "rsca"
                else {"method": args.method, "random_state": args.seed}
            ),
        )
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.json:
        out = res.to_dict()
        out.update(dataset=ds.name, kind=ds.label, input=inputs.description)
        print(json.dumps(out, indent=2))
        return 0
    desc = inputs.description
    what = f"spectra, K={desc['k']}" if args.input == "spectra" else ", ".join(desc["species"])
    print(
        f"[{ds.label}] {ds.name}: doppelganger rates ({what}; "
        f"{f'variant={args.variant}' if args.method == 'rsca' else f'method={args.method}'}; "
        f"{'leave-one-cluster-out' if not args.no_cv else 'no CV'}"
        f"{'' if args.top_n is None else f'; top {args.top_n} axes'})"
    )
    df = res.per_cluster
    w = max(8, df.cluster.astype(str).str.len().max())
    print(f"  {'cluster':<{w}} {'n':>4} {'rate':>8} {'pairs':>8}")
    for r in df.itertuples():
        rate = "   undef" if np.isnan(r.rate) else f"{r.rate:8.4f}"
        print(f"  {r.cluster:<{w}} {r.n_stars:>4} {rate} {r.n_inter_pairs:>8}")
    print(
        f"  global rate: {res.global_rate:.4f}"
        + ("" if np.isnan(res.rate_spread) else f" ± {res.rate_spread:.4f} (sd over the clusters resampled)")
        + "\n"
        f"               (paper, APOGEE DR16: {PAPER_RESULTS['spectra_k30']:.3f} for spectra "
        f"at K=30, {PAPER_RESULTS['abundance_subset']:.3f} for the best abundance subset)"
    )
    return 0


def add_cli(sub):
    p = sub.add_parser(
        "compress",
        help="PCA-with-missing-values compression of a dataset (cached)",
        description="Compress a dataset bundle's spectra to K principal components "
        "(masked pixels are missing values). The result is cached beside the "
        "bundle and reused for the same K, mask and seed.",
    )
    p.add_argument("--dataset", required=True, help="dataset bundle directory")
    p.add_argument("--k", type=positive_int, default=30, help="number of components (default 30)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the fit (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run every pass as a dask computation: 'threads', 'synchronous', 'local' (a LocalCluster) or the "
        "address of a distributed scheduler (tcp://host:8786); needs the [scale] extra. Default: in memory",
    )
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser(
        "evaluate",
        help="doppelganger rates of an RSCA representation",
        description="Fit RSCA and compute per-cluster and global doppelganger rates "
        "(SPEC §2: leave-one-cluster-out unless --no-cv).",
    )
    p.add_argument("--dataset", required=True, help="dataset bundle directory")
    p.add_argument("--k", type=positive_int, default=30, help="PCA components for spectra (default 30)")
    p.add_argument("--no-cv", action="store_true", help="fit the map on all clusters (no cross-validation)")
    p.add_argument("--top-n", type=positive_int, default=None, help="keep only the N most discriminative axes")
    p.add_argument(
        "--input",
        choices=("spectra", "abundances", "subset"),
        default="spectra",
        help="representation: PCA of spectra, all 21 abundances, or an abundance subset",
    )
    p.add_argument(
        "--species",
        default=None,
        help=f"comma-separated species for --input subset (default {','.join(PAPER_SUBSET)}; "
        f"choices {','.join(SPECIES)})",
    )
    p.add_argument("--variant", choices=("transformed", "scaled", "raw"), default="transformed")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="rsca",
        help="metric learner: the paper's RSCA (default) or RCA, LDA, NCA fitted on the cluster members",
    )
    p.add_argument("--seed", type=int, default=0, help="compression seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON: global_rate and a clusters list")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)
