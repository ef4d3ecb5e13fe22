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

from ..constants import MAX_PIXEL_ERROR, MIN_CG_PROB, N_PIXELS, PAPER_MASK_RANGES, apogee_wavelength, ranges_to_mask
from ..progress import ProgressArg, reporter
from ..selection import bundle_order, finalise_clusters, format_cutflow, pixel_mask, select_stars, stars_table
from .fitsio import read_aspcapstar, read_mwmstar
from .members import read_members
from .reader import CHUNK_SIZE, MISSING, OK, iter_chunk_arrays, read_spectra
from .releases import BAD_LABELS, DUPLICATES, detect_release, read_star_table, spectrum_paths, star_visits


def build_apogee(
    allstar,
    occam_members=None,
    out=None,
    spectra_root=None,
    workers: int | None = None,
    mask_ranges=PAPER_MASK_RANGES,
    progress: ProgressArg = True,
    *,
    release: str | None = None,
    members=None,
    members_format: str = "occam",
    min_prob: float = MIN_CG_PROB,
    allvisit=None,
    overwrite: bool = False,
    max_pixel_error: float = MAX_PIXEL_ERROR,
    chunk_size: int = CHUNK_SIZE,
    executor: str = "process",
    with_errors: bool = True,
    name: str | None = None,
    keep_partial: bool = False,
    log=None,
) -> tuple[Path, pd.DataFrame]:
    """Build a dataset bundle from a release's star table + a membership catalogue + its spectra.

    Parameters
    ----------
    allstar : path
        The star table: DR16 ``allStar-r12-l33.fits``, DR17 ``allStar-dr17-synspec_rev1.fits`` or
        DR19 ``astraAllStarASPCAP-0.6.0.fits.gz`` (column names case-insensitive).
    occam_members : path, optional
        The OCCAM member file of the release (same as ``members`` with ``members_format="occam"``).
    out : path
        Bundle directory to create (``overwrite=True`` to replace an existing one).
    spectra_root : path, optional
        Folder holding the ``{TELESCOPE}/{FIELD}/aspcapStar-*.fits`` tree (DR16, DR17) or the
        ``spectra/`` folder (DR19); default: the star table's folder.
    workers : int, optional
        Parallel readers (default ``min(8, cpu_count)``); ``executor`` "process" or "thread".
    mask_ranges : sequence of (start, stop)
        Pixel ranges masked for every star (default: the paper's interstellar bands).
    progress : bool or callable
        tqdm bar with ETA on stderr, silent, or ``progress(fraction, text)`` with the phases.
    release : {"dr16", "dr17", "dr19"}, optional
        Forced; by default detected from the file's name, header or columns.
    members, members_format, min_prob
        A membership catalogue (``occam``, ``hunt2023``, ``cantat2020``) and the probability above
        which a candidate is a member (default the paper's 0.8).
    allvisit : path, optional
        DR17 ``allVisit-dr17-synspec_rev1.fits``: visit names through VISIT_PK.

    Returns
    -------
    path : Path
        The bundle; ``meta`` records the release, how it was detected, the membership catalogue,
        substitutes and unavailable inputs, the cut-flow, read statistics and unreadable files.
    cutflow : DataFrame
        (step, field, cluster_stars, clusters). Rerunning after an interruption reuses the chunks
        read already (``<out>.partial/``).

    Over 80 lines: a 20-line signature (every option of ``build-apogee``) and this docstring; the body
    is the build's phases in order (check, plan, read, write), each a call.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    rep = reporter(progress)
    t_start = time.perf_counter()
    allstar, out, ranges, members_path, fmt, root = _check_inputs(
        allstar, out, overwrite, mask_ranges, executor, occam_members, members, members_format, spectra_root
    )
    rel, how = detect_release(allstar, release)
    rep.say(0.0, f"reading the {rel.upper()} star table and the membership catalogue")
    plan = _plan(rel, allstar, members_path, fmt, min_prob, allvisit, root)
    workdir = out.with_name(out.name + ".partial")
    with _exclusive(workdir, out):
        status, problems, stats = read_spectra(
            plan["paths"],
            workdir,
            workers=workers,
            chunk_size=chunk_size,
            executor=executor,
            progress=rep.span(0.05, 0.9),
            reader=SPECTRUM_READERS[rel],
            desc=f"reading {SPECTRUM_KIND[rel]}",
        )
        for msg in problems[:20]:
            log(f"skipped: {msg}")
        if len(problems) > 20:
            log(f"... and {len(problems) - 20} more unreadable files (listed in meta.json provenance)")
        selected, rows = plan["selected"], plan["cutflow"]
        ok = status == OK
        keep = finalise_clusters(selected, ok, rows, stats["n_missing"], stats["n_corrupt"], SPECTRUM_KIND[rel])
        cutflow = pd.DataFrame(rows, columns=["step", "field", "cluster_stars", "clusters"])
        if not keep.any():
            raise ValueError(
                f"{allstar}: no star passes the cuts and has a readable spectrum\n" + format_cutflow(cutflow)
            )
        rep.say(0.9, "writing bundle")
        is_member = selected["CLUSTER"].to_numpy(dtype=object) != ""
        order = bundle_order(keep, is_member)
        kind = "simulated" if plan["simulated"] else "real"
        plan["notes"].setdefault("unavailable", {}).update(_pair_filter_gaps(selected.iloc[order]))
        inputs = {"allstar": allstar, "members": members_path, "spectra_root": root}
        if allvisit is not None:
            inputs["allvisit"] = Path(allvisit)
        provenance = {
            "loader": "rsca_core.apogee.build_apogee",
            "release": rel,
            "release_detected_by": how,
            **{k: str(Path(v).resolve()) for k, v in inputs.items()},
            "membership": {"format": fmt, "min_prob": float(min_prob), **plan["member_counts"]},
            **_notes(plan["notes"]),
            "cutflow": cutflow.to_dict(orient="records"),
            "mask_ranges": [list(r) for r in ranges],
            "max_pixel_error": max_pixel_error,
            "masked": MASK_RULE + ("; DR19: any mwmStar pixel flag" if rel == "dr19" else ""),
            **_read_record(stats, problems, status, plan["paths"]),
        }
        default_name = (
            f"{RELEASE_LABELS[rel]} ({kind})" if kind == "real" else f"simulated survey ({rel.upper()} files)"
        )
        meta = {"kind": kind, "name": name or default_name, "source": f"apogee-{rel}", "release": rel}
        meta["provenance"] = provenance
        _write_bundle(out, workdir, selected, order, ranges, max_pixel_error, chunk_size, with_errors, overwrite, meta)
        if not keep_partial:
            shutil.rmtree(workdir, ignore_errors=True)
    rep.say(1.0, "bundle written")
    for what, why in provenance["unavailable"].items():
        log(f"note ({what}): {why}")
    log(
        f"built {out} ({kind}, {rel.upper()}) in {time.perf_counter() - t_start:.1f} s: "
        f"{int((~is_member[order]).sum())} field stars, {int(is_member[order].sum())} cluster stars in "
        f"{cutflow['clusters'].iloc[-1]} clusters"
    )
    return out, cutflow


#: How the bundle's mask is made (recorded in the provenance).
MASK_RULE = "error > max_pixel_error, non-finite, chip-gap zeros, mask_ranges"


def _notes(notes: dict) -> dict:
    """The release notes kept in the provenance: substitutes, unavailable inputs, element order."""
    out = {"substitutes": notes.get("substitutes", {}), "unavailable": notes.get("unavailable", {})}
    if "element_order" in notes:
        out["element_order"] = notes["element_order"]
    return out


def _pair_filter_gaps(stars: pd.DataFrame) -> dict:
    """Statements for the pair filter's inputs that some bundle stars lack (never a silent zero)."""
    out = {}
    for col, what in (("AK_TARG", "A_K"), ("VHELIO_AVG", "a radial velocity")):
        n_bad = int((~np.isfinite(stars[col].to_numpy(float))).sum())
        if n_bad:
            out[col.lower()] = (
                f"{n_bad} of {len(stars)} stars have no {what} ({col.lower()} is NaN): the doppelganger-rate pair "
                "filter leaves out every pair with one of them"
            )
    return out


def _read_record(stats: dict, problems: list, status: np.ndarray, paths: list) -> dict:
    """What the spectra reading did: statistics, unreadable files (first 1000), missing files (first 50)."""
    return {
        "read": stats,
        "unreadable_files": problems[:1000],
        "n_unreadable_files": len(problems),
        "n_missing_files": stats["n_missing"],
        "missing_files_example": [paths[i] for i in np.flatnonzero(status == MISSING)[:50]],
    }


#: Display names, spectrum file kinds and readers of the releases.
RELEASE_LABELS = {"dr16": "APOGEE DR16", "dr17": "APOGEE DR17", "dr19": "SDSS-V DR19 (Milky Way Mapper)"}
SPECTRUM_KIND = {"dr16": "aspcapStar", "dr17": "aspcapStar", "dr19": "mwmStar"}
SPECTRUM_READERS = {"dr16": read_aspcapstar, "dr17": read_aspcapstar, "dr19": read_mwmstar}


def _check_inputs(allstar, out, overwrite, mask_ranges, executor, occam_members, members, members_format, spectra_root):
    """Validate the arguments before any work: ``(allstar, out, ranges, members path, format, spectra root)``."""
    if out is None:
        raise ValueError("out: the bundle directory to create is required")
    allstar, out = Path(allstar), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    ranges = [tuple(int(v) for v in r) for r in (mask_ranges or ())]
    ranges_to_mask(ranges)  # validate early
    if executor not in ("process", "thread"):
        raise ValueError(f"executor must be 'process' or 'thread', not {executor!r}")
    if occam_members is not None and members is not None:
        raise ValueError("give the membership catalogue once: --occam-members or --members")
    if occam_members is None and members is None:
        raise ValueError("a membership catalogue is required: --occam-members FILE or --members FILE")
    members_path = Path(members if members is not None else occam_members)
    fmt = members_format if members is not None else "occam"
    root = Path(spectra_root) if spectra_root is not None else allstar.parent
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: spectra root folder not found")
    return allstar, out, ranges, members_path, fmt, root


def _plan(rel: str, allstar: Path, members_path: Path, fmt: str, min_prob: float, allvisit, root: Path) -> dict:
    """Read the star table and the membership catalogue, apply the per-star cuts and name the spectra."""
    table, simulated, notes = read_star_table(rel, allstar)
    members, prob_name, note, counts = read_members(members_path, fmt, rel, table)
    selected, rows = select_stars(
        table,
        members,
        min_prob=min_prob,
        prob_name=prob_name,
        duplicates=DUPLICATES[rel],
        members_note=note,
        bad_label=BAD_LABELS[rel],
    )
    del table
    visits, unavailable = star_visits(rel, allstar, selected, allvisit)
    selected["VISITS"] = visits
    notes.setdefault("unavailable", {}).update(unavailable)
    paths = spectrum_paths(rel, selected, root)
    return dict(selected=selected, cutflow=rows, simulated=simulated, notes=notes, member_counts=counts, paths=paths)


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
