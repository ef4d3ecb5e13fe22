"""Reading speed of the APOGEE loader: spectrum files per second, side by side with a baseline.

Part 1 (DR16 aspcapStar files of a synthetic table):
baseline: astropy.io.fits.open per file, serial (what a straightforward loader does);
ours: rsca_core.apogee's direct FITS parser, serial and with N worker processes / threads, and the
whole ``build_apogee`` (cuts + reads + bundle write).

Part 2 (one run per release, on the layout ``simulate --format dr16|dr17|dr19`` writes):
baseline: astropy per file (DR16/DR17: ``fits.open`` HDU 1-2; DR19: ``Table.read`` of the
telescope's HDU, then flux/continuum); ours: the release's reader serially, then ``build_apogee``
end to end with N workers.

    python benchmarks/apogee_read.py [--n 5000] [--workers 1 2 4] [--releases dr16 dr17 dr19] [--n-field 1000]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rsca_core import apogee  # noqa: E402
from rsca_core.constants import ALLSTAR_ELEMENTS, N_PIXELS  # noqa: E402


def make_survey(root: Path, n: int):
    rng = np.random.default_rng(0)
    tab = pd.DataFrame(
        {
            "APOGEE_ID": [f"2M{i:08d}+0000000" for i in range(n)],
            "TELESCOPE": "apo25m",
            "FIELD": [f"F{i % 200:03d}" for i in range(n)],
            "TEFF": 4500.0,
            "LOGG": 2.2,
            "ASPCAPFLAG": 0,
            "AK_TARG": 0.1,
            "VHELIO_AVG": 10.0,
            "SNR": 150.0,
            "VISITS": "apo25m-1-55000-1",
        }
    )
    for el in ALLSTAR_ELEMENTS:
        tab["x_h_" + el.lower()] = rng.normal(0, 0.1, n)
    block = rng.normal(1, 0.01, (256, N_PIXELS)).astype(np.float32)
    err = np.full((256, N_PIXELS), 0.01, np.float32)
    t = time.perf_counter()
    apogee.write_dr16(
        tab, root, spectra=lambda rows: (block[rows % 256], err[rows % 256]), progress=False, overwrite=True
    )
    return time.perf_counter() - t, tab


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--releases", nargs="*", default=["dr16", "dr17", "dr19"], help="part 2 releases (none: skip)")
    ap.add_argument("--n-field", type=int, default=1000, help="field stars of the simulated layouts of part 2")
    ap.add_argument("--skip-part1", action="store_true")
    args = ap.parse_args()
    if not args.skip_part1:
        part1(args)
    for rel in args.releases:
        per_release(rel, args)


def _baseline_read(rel: str, spec: str):
    """What a straightforward loader does with astropy, per file."""
    from astropy.io import fits
    from astropy.table import Table

    if rel != "dr19":
        with fits.open(spec, memmap=False) as h:
            return np.array(h[1].data, np.float32), np.array(h[2].data, np.float32)
    path, hdu = apogee.fitsio.split_hdu_spec(spec)
    t = Table.read(path, hdu=hdu)
    cont = np.asarray(t["continuum"][0], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(t["flux"][0]) / cont, np.asarray(t["ivar"][0], float) ** -0.5 / cont


def per_release(rel: str, args) -> None:
    """Reading one release's simulated layout: baseline vs ours, then build_apogee end to end."""
    from rsca_core.apogee.build import SPECTRUM_READERS
    from rsca_core.apogee.releases import ALLSTAR_NAMES, OCCAM_MEMBER_NAMES, read_star_table, spectrum_paths
    from rsca_core.simulate import simulate

    work = Path(__file__).resolve().parent / "_work" / f"apogee_read_{rel}"
    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    simulate(work / "files", n_field=args.n_field, seed=1, format=rel, progress=False)
    print(f"\n== {rel.upper()}: simulate --format {rel} --n-field {args.n_field} in {time.perf_counter() - t:.1f} s")
    table, _, _ = read_star_table(rel, work / "files" / ALLSTAR_NAMES[rel])
    if "SDSS_ID" not in table:
        table["SDSS_ID"] = 0
    paths = spectrum_paths(rel, table, work / "files")
    m = min(len(paths), 1000)
    t = time.perf_counter()
    for p in paths[:m]:
        _baseline_read(rel, p)
    base = m / (time.perf_counter() - t)
    reader = SPECTRUM_READERS[rel]
    t = time.perf_counter()
    for p in paths[:m]:
        reader(p)
    ours = m / (time.perf_counter() - t)
    print(f"{'reader':<40}{'files/s':>10}")
    print(f"{'baseline: astropy per file, serial':<40}{base:>10.0f}")
    print(f"{f'rsca_core {reader.__name__}, serial':<40}{ours:>10.0f}   ({ours / base:.1f}x)")
    for w in args.workers:
        out = work / f"bundle-{w}"
        t = time.perf_counter()
        _, cutflow = apogee.build_apogee(
            work / "files" / ALLSTAR_NAMES[rel],
            work / "files" / OCCAM_MEMBER_NAMES[rel],
            out,
            workers=w,
            progress=False,
            log=lambda msg: None,
        )
        dt = time.perf_counter() - t
        n_read = int(cutflow["field"].iloc[-3] + cutflow["cluster_stars"].iloc[-3])
        print(
            f"{f'build_apogee end to end, workers={w}':<40}{n_read / dt:>10.0f}   files/s ({n_read} files, {dt:.1f} s)"
        )
        shutil.rmtree(out)
    shutil.rmtree(work, ignore_errors=True)


def part1(args):
    work = Path(__file__).resolve().parent / "_work" / "apogee_read"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dt, tab = make_survey(work / "dr16", args.n)
    print(f"write_dr16: {args.n} aspcapStar files in {dt:.1f} s = {args.n / dt:.0f} files/s")
    paths = [
        str(work / "dr16" / apogee.aspcapstar_relpath(t, f, i))
        for t, f, i in zip(tab.TELESCOPE, tab.FIELD, tab.APOGEE_ID)
    ]

    from astropy.io import fits

    m = min(len(paths), 1000)
    t = time.perf_counter()
    for p in paths[:m]:
        with fits.open(p, memmap=False) as h:
            np.array(h[1].data, np.float32), np.array(h[2].data, np.float32)
    base = m / (time.perf_counter() - t)
    t = time.perf_counter()
    for p in paths[:m]:
        apogee.read_aspcapstar(p)
    fast = m / (time.perf_counter() - t)
    print(f"{'reader':<34}{'files/s':>10}")
    print(f"{'baseline: astropy fits.open, serial':<34}{base:>10.0f}")
    print(f"{'rsca_core read_aspcapstar, serial':<34}{fast:>10.0f}   ({fast / base:.1f}x)")
    for w in args.workers:
        for ex in ("process", "thread") if w > 1 else ("process",):
            wd = work / f"partial-{w}-{ex}"
            t = time.perf_counter()
            apogee.read_spectra(paths, wd, workers=w, executor=ex, progress=False)
            r = len(paths) / (time.perf_counter() - t)
            label = f"read_spectra workers={w} {ex if w > 1 else 'serial'}"
            print(f"{label:<34}{r:>10.0f}   ({r / base:.1f}x)")
            shutil.rmtree(wd)
    for w in args.workers:
        out = work / f"bundle-{w}"
        t = time.perf_counter()
        apogee.build_apogee(
            work / "dr16" / apogee.ALLSTAR_NAME,
            work / "dr16" / apogee.OCCAM_MEMBER_NAME,
            out,
            workers=w,
            progress=False,
            log=lambda msg: None,
        )
        r = len(paths) / (time.perf_counter() - t)
        print(f"{f'build_apogee end to end, workers={w}':<34}{r:>10.0f}   stars/s")
        shutil.rmtree(out)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
