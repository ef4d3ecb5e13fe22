"""``python -m rsca_core build-apogee``: the loader's command line."""

from __future__ import annotations

from ..constants import (
    ANOMALOUS_STAR,
    LOGG_RANGE,
    MIN_CG_PROB,
    PAPER_MASK_RANGES,
    SPECIES,
    TEFF_RANGE,
    ranges_to_mask,
)
from ..selection import format_cutflow
from .build import build_apogee
from .members import MEMBER_FORMATS
from .releases import RELEASES


def parse_ranges(text: str) -> list:
    """``"720:910,2370:2470"`` → [(720, 910), (2370, 2470)]; ``"none"`` → []."""
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return []
    out = []
    for part in text.split(","):
        try:
            a, b = part.replace("-", ":").split(":")
            out.append((int(a), int(b)))
        except ValueError:
            raise ValueError(f"--mask-ranges: {part!r} is not START:STOP (pixel indices)") from None
    ranges_to_mask(out)
    return out


def _cmd_build(args) -> int:
    ranges = PAPER_MASK_RANGES if args.mask_ranges is None else parse_ranges(args.mask_ranges)
    _, cutflow = build_apogee(
        args.allstar,
        args.occam_members,
        args.out,
        spectra_root=args.spectra_root,
        workers=args.workers,
        mask_ranges=ranges,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        executor=args.executor,
        with_errors=not args.no_errors,
        release=args.release,
        members=args.members,
        members_format=args.members_format,
        min_prob=args.min_prob,
        allvisit=args.allvisit,
    )
    print(format_cutflow(cutflow))
    return 0


def add_cli(subparsers) -> None:
    """Register the ``build-apogee`` sub-command."""
    p = subparsers.add_parser(
        "build-apogee",
        help="build a dataset bundle from APOGEE DR16/DR17 or SDSS-V DR19 files + a membership catalogue",
        description=f"Apply the paper's cuts ({TEFF_RANGE[0]:g}<TEFF<{TEFF_RANGE[1]:g}, "
        f"{LOGG_RANGE[0]:g}<LOGG<{LOGG_RANGE[1]:g}, {len(SPECIES)} species measured, STAR_BAD unset (DR19: flag_bad); "
        f"members with probability > {MIN_CG_PROB:g}, clusters of >=2 stars, {ANOMALOUS_STAR} dropped; "
        "duplicates by the release's own rule), read the spectra (aspcapStar, DR19 mwmStar) in parallel "
        "(resumable) and write a bundle. Prints the cut-flow.",
    )
    p.add_argument(
        "--allstar",
        required=True,
        help="allStar-r12-l33.fits (DR16), allStar-dr17-synspec_rev1.fits (DR17) or "
        "astraAllStarASPCAP-0.6.0.fits.gz (DR19)",
    )
    p.add_argument("--release", choices=RELEASES, default=None, help="force the release (default: detected)")
    p.add_argument("--occam-members", default=None, help="the release's occam_member-DR16/DR17/DR19.fits")
    p.add_argument("--members", default=None, help="a membership catalogue (see --members-format)")
    p.add_argument(
        "--members-format",
        choices=MEMBER_FORMATS,
        default="occam",
        help="occam (APOGEE_ID; DR19: SDSS_ID), hunt2023 (Hunt & Reffert 2023: Name, GaiaDR3, Prob) or "
        "cantat2020 (Cantat-Gaudin et al. 2020: Cluster, GaiaDR2, proba); FITS, CSV or TSV",
    )
    p.add_argument(
        "--min-prob", type=float, default=MIN_CG_PROB, help=f"membership probability threshold (default {MIN_CG_PROB})"
    )
    p.add_argument("--allvisit", default=None, help="DR17: allVisit-dr17-synspec_rev1.fits (visit names via VISIT_PK)")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument(
        "--spectra-root",
        default=None,
        help="folder with the {TELESCOPE}/{FIELD}/aspcapStar-*.fits tree, or for DR19 the folder holding "
        "spectra/ (default: the allStar file's folder)",
    )
    p.add_argument("--workers", type=int, default=None, help="parallel readers (default min(8, CPUs))")
    p.add_argument("--executor", choices=("process", "thread"), default="process")
    p.add_argument(
        "--mask-ranges",
        default=None,
        help="pixel ranges to mask as START:STOP,... or 'none' (default: the paper's "
        + ",".join(f"{a}:{b}" for a, b in PAPER_MASK_RANGES)
        + ")",
    )
    p.add_argument("--no-errors", action="store_true", help="do not store the per-pixel errors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_build)
