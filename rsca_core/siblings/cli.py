"""``siblings``, ``candidates``, ``embed`` and ``project``: the command line of :mod:`rsca_core.siblings`."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pandas as pd

from ..cli_core import positive_int
from ..constants import canonical_species
from ..fileio import jsonable
from .columns import COORD_PREFIX, SIBLING_COLUMNS
from .embedding import Embedding, embed, project
from .files import read_spectra_files, write_catalogue


# ====================================================================== CLI
def _species_arg(text: str) -> list[str]:
    try:
        return [canonical_species(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _embed_from_args(args) -> Embedding:
    return embed(
        args.dataset,
        k=args.k,
        input=args.input,
        species=args.species,
        clusters=args.clusters,
        top_n=args.top_n,
        seed=args.seed,
    )


def _print_table(df: pd.DataFrame, columns, formats) -> None:
    widths = {
        c: max(len(c), *(len(formats.get(c, "{}").format(v)) for v in df[c])) if len(df) else len(c) for c in columns
    }
    print("  " + "  ".join(f"{c:>{widths[c]}}" for c in columns))
    for r in df.itertuples(index=False):
        vals = r._asdict()
        print("  " + "  ".join(f"{formats.get(c, '{}').format(vals[c]):>{widths[c]}}" for c in columns))


def _describe(emb: Embedding) -> str:
    s = emb.settings
    what = f"spectra, K={s['k']}" if s.get("input") == "spectra" else ", ".join(s.get("species") or [])
    top = "" if s.get("top_n") is None else f", top {s['top_n']} axes"
    return (
        f"[{emb.label}] {s.get('dataset')}: RSCA space of {what}{top}, fitted on {len(emb.training_clusters)} clusters"
    )


FORMATS = {
    "distance": "{:.4f}",
    "sibling_score": "{:.3f}",
    "d_fe_h": "{:+.3f}",
    "d_teff": "{:+.0f}",
    "d_logg": "{:+.2f}",
    "d_vhelio": "{:+.1f}",
    "d_ak": "{:+.3f}",
}


def cmd_siblings(args) -> int:
    emb = _embed_from_args(args)
    row = emb.index_of(args.star)
    df = emb.siblings(row, n=args.n, pair_filter=args.pair_filter)
    if args.json:
        out = {
            "star": emb.apogee_id[row],
            "cluster": emb.cluster[row],
            "settings": emb.catalogue_meta(),
            "pair_filter": bool(args.pair_filter),
            "siblings": df.reset_index(),
        }
        print(json.dumps(jsonable(out), indent=2))
        return 0
    print(_describe(emb))
    home = f" (member of {emb.cluster[row]})" if emb.cluster[row] else " (field star)"
    filt = "; pair filter |dVHELIO| < 5 km/s, |dAK| < 0.05" if args.pair_filter else ""
    print(f"  {len(df)} nearest stars to {emb.apogee_id[row]}{home}{filt}")
    df = df.assign(cluster=df["cluster"].replace("", "-"))
    _print_table(df, list(SIBLING_COLUMNS), FORMATS)
    return 0


def cmd_candidates(args) -> int:
    emb = _embed_from_args(args)
    res = emb.candidates(args.cluster, pair_filter=args.pair_filter)
    if args.json:
        print(json.dumps(res.to_dict() | {"settings": emb.catalogue_meta()}, indent=2))
        return 0
    print(_describe(emb))
    rate = "undefined" if not np.isfinite(res.loo_rate) else f"{res.loo_rate:.4f}"
    print(
        f"  {res.cluster}: {res.n_members} members, median intra-cluster distance {res.radius:.4f}; "
        f"{res.n_candidates} field star(s) within it of the members' median position "
        f"(of {res.n_searched} searched{', pair-filtered' if res.pair_filter else ''})"
    )
    exp = (
        "undefined"
        if not np.isfinite(res.expected_chance)
        else f"{res.expected_chance:.1f} ± {res.expected_chance_sd:.1f}"
    )
    print(f"  expected by chance: {exp}  (leave-one-cluster-out rate {rate} × {res.n_searched} field stars)")
    if res.n_candidates:
        cols = ["apogee_id", "distance", "d_fe_h", "d_teff", "d_logg", "d_vhelio", "d_ak"]
        _print_table(res.table, cols, FORMATS)
    return 0


def cmd_embed(args) -> int:
    emb = _embed_from_args(args)
    path = write_catalogue(emb.to_frame(), args.out, emb.catalogue_meta(), overwrite=args.overwrite)
    print(_describe(emb))
    print(f"  wrote {emb.n_stars} stars × {emb.n_axes} axes to {path}")
    return 0


def cmd_project(args) -> int:
    emb = _embed_from_args(args)
    ids, flux, mask = read_spectra_files(args.spectra, emb.dataset)
    coords = project(emb, flux, mask)
    nearest_id, nearest_d = [], []
    for point in coords:
        rows, d = emb.nearest(point, 1)
        nearest_id.append(emb.apogee_id[rows[0]])
        nearest_d.append(float(d[0]))
    table = pd.DataFrame(
        {
            "apogee_id": ids,
            "file": [os.fspath(p) for p in args.spectra],
            **{f"{COORD_PREFIX}{j + 1}": coords[:, j] for j in range(coords.shape[1])},
            "nearest": nearest_id,
            "nearest_distance": nearest_d,
            "nearest_sibling_score": emb.sibling_score(np.array(nearest_d)),
        }
    )
    meta = emb.catalogue_meta() | {"producer": "rsca_core.siblings.project", "n_projected": len(ids)}
    path = write_catalogue(table, args.out, meta, overwrite=args.overwrite)
    print(_describe(emb))
    for r in table.itertuples(index=False):
        print(f"  {r.apogee_id}: nearest bundle star {r.nearest} at {r.nearest_distance:.4f}")
    print(f"  wrote {len(table)} projected star(s) to {path}")
    return 0


def _common(p, dataset_help="dataset bundle directory") -> None:
    p.add_argument("--dataset", required=True, help=dataset_help)
    p.add_argument("--k", type=positive_int, default=30, help="PCA components for spectra (default 30)")
    p.add_argument(
        "--input",
        choices=("spectra", "abundances", "subset"),
        default="spectra",
        help="representation: PCA of spectra (default), all 21 abundances, or an abundance subset",
    )
    p.add_argument("--species", type=_species_arg, default=None, help="comma-separated species for --input subset")
    p.add_argument(
        "--clusters",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        default=None,
        help="comma-separated clusters to fit the map on (default: all)",
    )
    p.add_argument("--top-n", type=positive_int, default=None, help="keep only the N most discriminative axes")
    p.add_argument("--seed", type=int, default=0, help="compression seed (default 0)")


def add_cli(sub) -> None:
    """Register ``siblings``, ``candidates``, ``embed`` and ``project``."""
    p = sub.add_parser(
        "siblings",
        help="a star's nearest stars in RSCA space (its chemical siblings)",
        description="Fit RSCA on all clusters (no CV) and list the N stars nearest to one star, with "
        "a sibling score (fraction of known cluster pairs farther apart) and label differences.",
    )
    _common(p)
    p.add_argument("--star", required=True, help="APOGEE_ID (or bundle row number) of the star")
    p.add_argument("--n", type=positive_int, default=50, help="number of siblings (default 50)")
    p.add_argument("--pair-filter", action="store_true", help="only stars within 5 km/s and 0.05 mag A_K")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_siblings)

    p = sub.add_parser(
        "candidates",
        help="field stars near a cluster in RSCA space, with the expected chance count",
        description="Field stars within a cluster's median intra-cluster distance of its members' median "
        "position, beside the number expected by chance from its leave-one-cluster-out rate.",
    )
    _common(p)
    p.add_argument("--cluster", required=True, help="cluster name as in the bundle")
    p.add_argument("--pair-filter", action="store_true", help="only field stars near the members' VHELIO/AK")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_candidates)

    p = sub.add_parser(
        "embed",
        help="write every star's RSCA coordinates (FITS, parquet or CSV)",
        description="Write apogee_id and rsca_1 … rsca_N for every star, with K, input, clusters, seed and "
        "the simulated flag in the FITS header / parquet metadata / FILE.csv.json.",
    )
    _common(p)
    p.add_argument("--out", required=True, help="output FILE.fits, FILE.parquet or FILE.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "project",
        help="place aspcapStar spectra of new stars in RSCA space",
        description="Read aspcapStar files (HDU 1 flux, HDU 2 error), mask them with the bundle's rule, "
        "compress them with the bundle's PCA and map them; write their coordinates and nearest bundle star.",
    )
    _common(p)
    p.add_argument("--spectra", nargs="+", required=True, help="aspcapStar FITS file(s)")
    p.add_argument("--out", required=True, help="output FILE.fits, FILE.parquet or FILE.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_project)
