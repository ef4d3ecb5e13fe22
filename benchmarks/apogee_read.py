"""Reading speed of the APOGEE loader: aspcapStar files per second, side by side with a baseline.

Baseline: astropy.io.fits.open per file, serial (what a straightforward loader does).
Ours: rsca_core.apogee's direct FITS parser, serial and with N worker processes / threads, and the
whole ``build_apogee`` (cuts + reads + bundle write).

    python benchmarks/apogee_read.py [--n 5000] [--workers 1 2 4]
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
    args = ap.parse_args()
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
