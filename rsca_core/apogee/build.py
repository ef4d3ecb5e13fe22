"""Building a Dataset bundle from a release's files: the paper's cuts, the spectra read in parallel
(resumable), the pixel mask and the star table, with the cut-flow and provenance in ``meta.json``.

Work in progress lives in ``<out>.partial/`` (held by a lock file naming the building process);
the bundle itself is written by :class:`~rsca_core.dataset.BundleWriter` (temporary directory,
``meta.json`` last, rename), so an interrupted run never leaves a bundle that loads as complete.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import MAX_PIXEL_ERROR, N_PIXELS, PAPER_MASK_RANGES, apogee_wavelength, ranges_to_mask
from ..progress import ProgressArg, reporter
from ..selection import bundle_order, finalise_clusters, format_cutflow, pixel_mask, select_stars, stars_table
from .fitsio import read_allstar, read_allstar_visits, read_occam_members
from .layout import aspcapstar_relpath
from .reader import CHUNK_SIZE, MISSING, OK, iter_chunk_arrays, read_spectra


def build_apogee(
    allstar,
    occam_members,
    out,
    spectra_root=None,
    workers: int | None = None,
    mask_ranges=PAPER_MASK_RANGES,
    progress: ProgressArg = True,
    *,
    overwrite: bool = False,
    max_pixel_error: float = MAX_PIXEL_ERROR,
    chunk_size: int = CHUNK_SIZE,
    executor: str = "process",
    with_errors: bool = True,
    name: str | None = None,
    keep_partial: bool = False,
    log=None,
) -> tuple[Path, pd.DataFrame]:
    """Build a dataset bundle from APOGEE DR16 allStar + OCCAM members + aspcapStar files.

    Parameters
    ----------
    allstar, occam_members : path
        ``allStar-r12-l33.fits`` and ``occam_member-DR16.fits`` (column names case-insensitive).
    out : path
        Bundle directory to create (``overwrite=True`` to replace an existing one).
    spectra_root : path, optional
        Folder holding ``{TELESCOPE}/{FIELD}/aspcapStar-r12-{APOGEE_ID}.fits``; default: the
        allStar file's folder.
    workers : int, optional
        Parallel readers (default ``min(8, cpu_count)``); ``executor`` "process" or "thread".
    mask_ranges : sequence of (start, stop)
        Pixel ranges masked for every star (default: the paper's interstellar bands).
    progress : bool or callable
        tqdm bar with ETA on stderr, silent, or ``progress(fraction, text)`` with the phases.

    Returns
    -------
    path : Path
        The bundle.
    cutflow : DataFrame
        (step, field, cluster_stars, clusters); also stored in ``meta["provenance"]["cutflow"]``
        with read statistics and the paths of unreadable files. Rerunning after an interruption
        reuses the chunks read already.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    rep = reporter(progress)
    t_start = time.perf_counter()
    allstar, occam_members, out = Path(allstar), Path(occam_members), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    ranges = [tuple(int(v) for v in r) for r in (mask_ranges or ())]
    ranges_to_mask(ranges)  # validate early
    if executor not in ("process", "thread"):
        raise ValueError(f"executor must be 'process' or 'thread', not {executor!r}")
    root = Path(spectra_root) if spectra_root is not None else allstar.parent
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: spectra root folder not found")

    rep.say(0.0, "reading allStar and the membership table")
    table, simulated = read_allstar(allstar, visits=False)
    members = read_occam_members(occam_members)
    rep.say(0.03, "applying the paper's cuts")
    selected, rows = select_stars(table, members)
    del table
    selected["VISITS"] = read_allstar_visits(allstar, selected["ROW"].to_numpy())
    paths = [
        str(root / aspcapstar_relpath(t, f, i))
        for t, f, i in zip(selected["TELESCOPE"], selected["FIELD"], selected["APOGEE_ID"])
    ]
    inputs = {"allstar": allstar, "occam_members": occam_members, "spectra_root": root}
    workdir = out.with_name(out.name + ".partial")
    with _exclusive(workdir, out):
        status, problems, stats = read_spectra(
            paths,
            workdir,
            workers=workers,
            chunk_size=chunk_size,
            executor=executor,
            progress=rep.span(0.05, 0.9),
        )
        for msg in problems[:20]:
            log(f"skipped: {msg}")
        if len(problems) > 20:
            log(f"... and {len(problems) - 20} more unreadable files (listed in meta.json provenance)")
        keep = finalise_clusters(selected, status == OK, rows, stats["n_missing"], stats["n_corrupt"])
        cutflow = pd.DataFrame(rows, columns=["step", "field", "cluster_stars", "clusters"])
        if not keep.any():
            raise ValueError(
                f"{allstar}: no star passes the cuts and has a readable spectrum\n" + format_cutflow(cutflow)
            )
        rep.say(0.9, "writing bundle")
        is_member = selected["CLUSTER"].to_numpy(dtype=object) != ""
        order = bundle_order(keep, is_member)
        kind = "simulated" if simulated else "real"
        provenance = {
            "loader": "rsca_core.apogee.build_apogee",
            **{k: str(Path(v).resolve()) for k, v in inputs.items()},
            "cutflow": cutflow.to_dict(orient="records"),
            "mask_ranges": [list(r) for r in ranges],
            "max_pixel_error": max_pixel_error,
            "masked": "error > max_pixel_error, non-finite, chip-gap zeros, mask_ranges",
            "read": stats,
            "unreadable_files": problems[:1000],
            "n_unreadable_files": len(problems),
            "n_missing_files": stats["n_missing"],
            "missing_files_example": [paths[i] for i in np.flatnonzero(status == MISSING)[:50]],
        }
        meta = {
            "kind": kind,
            "name": name or (f"APOGEE DR16 ({kind})" if not simulated else "simulated survey (DR16 files)"),
            "source": "apogee-dr16",
            "provenance": provenance,
        }
        _write_bundle(out, workdir, selected, order, ranges, max_pixel_error, chunk_size, with_errors, overwrite, meta)
        if not keep_partial:
            shutil.rmtree(workdir, ignore_errors=True)
    rep.say(1.0, "bundle written")
    log(
        f"built {out} ({kind}) in {time.perf_counter() - t_start:.1f} s: "
        f"{int((~is_member[order]).sum())} field stars, {int(is_member[order].sum())} cluster stars in "
        f"{cutflow['clusters'].iloc[-1]} clusters"
    )
    return out, cutflow


def _write_bundle(out, workdir, selected, order, ranges, max_pixel_error, chunk_size, with_errors, overwrite, meta):
    """Copy the kept stars' spectra from the saved chunks into the bundle (bundle order), mask them,
    and finish the bundle with its star table and ``meta``."""
    from ..dataset import Dataset

    dest = np.full(len(selected), -1, np.int64)
    dest[order] = np.arange(len(order))
    stars = stars_table(selected.iloc[order])
    range_mask = ranges_to_mask(ranges)
    with Dataset.create(out, len(order), N_PIXELS, with_errors=with_errors, overwrite=overwrite) as w:
        for a, flux, err in iter_chunk_arrays(workdir, len(selected), chunk_size):
            d = dest[a : a + len(flux)]
            take = d >= 0
            if not take.any():
                continue
            f, e = flux[take], err[take]
            w.spectra[d[take]] = f
            w.mask[d[take]] = pixel_mask(f, e, (), max_pixel_error) | range_mask
            if w.errors is not None:
                w.errors[d[take]] = e
        w.finish(stars, apogee_wavelength(N_PIXELS), meta)


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


@contextmanager
def _exclusive(workdir: Path, out: Path):
    """Hold ``<out>.partial/lock`` while building ``out``; clears leftovers of killed bundle writes."""
    import glob

    workdir.mkdir(parents=True, exist_ok=True)
    lock = workdir / "lock"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if _pid_alive(pid):
                raise FileExistsError(
                    f"{out}: another build (process {pid}) is writing it; wait for it to "
                    f"finish, or delete {lock} if that process is not a build"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
    else:  # pragma: no cover - only under a tight race
        raise FileExistsError(f"{out}: could not take the lock {lock}")
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    for d in glob.glob(glob.escape(str(out)) + ".tmp-*"):  # a bundle write killed half way
        shutil.rmtree(d, ignore_errors=True)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
