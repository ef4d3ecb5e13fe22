"""``python -m rsca_core simulate``: the simulator's command line (flags built from :data:`SWITCH_TABLE`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..cli_core import positive_int
from ..constants import PAPER_RESULTS
from .config import DEFAULT_N_FIELD, PAPER_CLUSTER_SIZES, SWITCH_TABLE, SimulationConfig
from .writers import FORMATS, simulate


def _cmd_simulate(args) -> int:
    overrides = {s.name: getattr(args, s.name) for s in SWITCH_TABLE}
    cfg = SimulationConfig(**overrides)
    t0 = time.perf_counter()
    path = simulate(
        args.out,
        n_field=args.n_field,
        seed=args.seed,
        format=args.format,
        config=cfg,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    dt = time.perf_counter() - t0
    if args.format == "bundle":
        meta = json.loads((Path(path) / "meta.json").read_text())
        cf = meta["provenance"]["cutflow"][-1]
        print(
            f"[simulated] wrote {path} in {dt:.1f} s: {cf['field']} field stars, {cf['cluster_stars']} "
            f"cluster stars in {cf['clusters']} clusters"
        )
    else:
        print(f"[simulated] wrote {args.format.upper()}-layout files under {path} in {dt:.1f} s")
    return 0


def _nonneg_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


def add_cli(subparsers) -> None:
    """Register the ``simulate`` sub-command."""
    p = subparsers.add_parser(
        "simulate",
        help="write a simulated APOGEE-like survey (bundle or a release's file layout)",
        description="Simulate an APOGEE-like survey with the paper's confounders (SPEC §5): red giants on "
        "isochrones, two-sequence chemistry, homogeneous open clusters, atomic and molecular "
        "lines, interstellar bands, RV/telluric and plate systematics, noise, bad pixels and "
        f"ASPCAP-like labels. Default shape: {len(PAPER_CLUSTER_SIZES)} clusters with {sum(PAPER_CLUSTER_SIZES)} "
        f"stars and {DEFAULT_N_FIELD} field stars (after the paper's cuts). Output is labelled simulated.",
    )
    p.add_argument("--out", required=True, help="output folder (bundle, or the release's file layout with --format)")
    p.add_argument(
        "--n-field",
        type=positive_int,
        default=DEFAULT_N_FIELD,
        help=f"field stars after the cuts (default {DEFAULT_N_FIELD}; {PAPER_RESULTS['n_field']} = the paper's scale)",
    )
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="bundle",
        help="bundle (default) or a release's allStar/spectra/OCCAM file layout",
    )
    for s in SWITCH_TABLE:  # --dibs / --no-dibs, ... from the simulator's own table
        p.add_argument(
            "--" + s.name.replace("_", "-"),
            dest=s.name,
            action=argparse.BooleanOptionalAction,
            default=s.default,
            help=s.help,
        )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_cmd_simulate)
