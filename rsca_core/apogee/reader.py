"""Reading many spectrum files in parallel, resumably: chunks saved atomically in a work folder.

Every finished chunk is saved as ``chunk-XXXXX.npz`` in the work folder; an interrupted run
restarted with the same list of files reads only the unfinished chunks. Missing files are counted
(status MISSING); unreadable, corrupt or wrong-shaped ones are named and skipped (CORRUPT), never
zero-filled into a bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from ..constants import N_PIXELS
from ..fileio import atomic_open, atomic_write_text
from ..progress import ProgressArg, reporter
from .fitsio import SpectrumFileError, read_aspcapstar, split_hdu_spec

# Per-star read status codes.
OK, MISSING, CORRUPT = 0, 1, 2
CHUNK_SIZE = 256


def _read_chunk(task):
    """Worker: read one chunk of spectrum files and save it atomically as ``chunk-XXXXX.npz``."""
    index, paths, workdir, n_pixels, reader = task
    reader = reader or read_aspcapstar
    n = len(paths)
    flux = np.zeros((n, n_pixels), np.float32)
    err = np.zeros((n, n_pixels), np.float32)
    status = np.zeros(n, np.int8)
    problems = []
    for i, p in enumerate(paths):
        try:
            flux[i], err[i] = reader(p, n_pixels)
        except FileNotFoundError:
            status[i] = MISSING
        except SpectrumFileError as exc:
            status[i] = CORRUPT
            problems.append(str(exc))
    # no fsync: a chunk file damaged by a crash fails validation on resume and is simply read again
    with atomic_open(Path(workdir) / f"chunk-{index:05d}.npz", "wb") as fh:
        np.savez(fh, flux=flux, err=err, status=status, problems=np.array(problems, dtype=str))
    return index, status, problems


def _load_chunk(path: Path, n_expected: int, n_pixels: int):
    """(status, problems) of a saved chunk, or None if it is absent, damaged or of another shape.

    Only the small arrays and the headers of the big ones are read (resuming stays cheap).
    """
    import zipfile

    if not path.exists():
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            for name in ("flux.npy", "err.npy"):
                info = zf.getinfo(name)
                with zf.open(name) as fh:
                    version = np.lib.format.read_magic(fh)
                    shape, _, dtype = (
                        np.lib.format.read_array_header_1_0(fh)
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0(fh)
                    )
                    header = fh.tell() if hasattr(fh, "tell") else 128
                if shape != (n_expected, n_pixels) or info.file_size < header + n_expected * n_pixels * dtype.itemsize:
                    return None
        with np.load(path) as z:
            status = z["status"]
            if status.shape != (n_expected,):
                return None
            return status, list(z["problems"])
    except Exception:
        return None


def _plan_key(paths, n_pixels, chunk_size) -> str:
    h = hashlib.sha1()
    h.update(f"{n_pixels}:{chunk_size}:{len(paths)}\n".encode())
    for p in paths:
        h.update(p.encode())
        h.update(b"\n")
    return h.hexdigest()


def _prepare_workdir(workdir: Path, key: str, n_files: int, chunk_size: int) -> None:
    """Start or resume the work folder: chunks saved for other inputs and temporary leftovers go."""
    workdir.mkdir(parents=True, exist_ok=True)
    plan_file = workdir / "plan.json"
    if plan_file.exists():
        try:
            old = json.loads(plan_file.read_text()).get("key")
        except (OSError, json.JSONDecodeError):
            old = None
        if old != key:  # different inputs: the saved chunks are of no use
            for f in workdir.glob("chunk-*.npz"):
                f.unlink()
    atomic_write_text(plan_file, json.dumps({"key": key, "n_files": n_files, "chunk_size": chunk_size}))
    for f in workdir.glob(".chunk-*.tmp"):  # leftovers of a killed worker
        f.unlink()


def read_spectra(
    paths,
    workdir,
    *,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    n_pixels: int = N_PIXELS,
    executor: str = "process",
    progress: ProgressArg = True,
    reader: Callable | None = None,
    desc: str = "reading aspcapStar",
) -> tuple[np.ndarray, list, dict]:
    """Read spectrum files into per-chunk results under ``workdir`` (resumable).

    Parameters
    ----------
    paths : sequence of str
        One file per star (``reader`` decides the format; default :func:`read_aspcapstar`).
    workdir : path
        Work folder for the chunks. A chunk saved by an earlier (interrupted) run for the same
        list of paths is not read again (unless one of its missing files has appeared since).
    workers, executor : int, {"process", "thread"}
        Parallel readers (default ``min(8, cpu_count)``).
    progress : bool or callable
        tqdm bar with ETA, silent, or ``progress(fraction, text)``.
    reader : callable, optional
        ``reader(path, n_pixels) -> (flux, err)``, a module-level function (picklable); raises
        FileNotFoundError or :class:`SpectrumFileError`.

    Returns
    -------
    status : ndarray of int8
        OK / MISSING / CORRUPT per file.
    problems : list of str
        Messages (path + reason) of the unreadable files.
    stats : dict
        Counts and timing.
    """
    paths = [str(p) for p in paths]
    workdir = Path(workdir)
    _prepare_workdir(workdir, _plan_key(paths, n_pixels, chunk_size), len(paths), chunk_size)
    n = len(paths)
    status = np.zeros(n, np.int8)
    problems: dict[int, list] = {}
    todo, resumed_files = [], 0
    for c in range((n + chunk_size - 1) // chunk_size):
        a, b = c * chunk_size, min(n, (c + 1) * chunk_size)
        got = _load_chunk(workdir / f"chunk-{c:05d}.npz", b - a, n_pixels)
        if got is not None and any(
            os.path.exists(split_hdu_spec(paths[a + i])[0]) for i in np.flatnonzero(got[0] == MISSING)
        ):
            got = None  # a file missing last time has appeared since: read the chunk again
        if got is None:
            todo.append((c, paths[a:b], str(workdir), n_pixels, reader))
        else:
            status[a:b], problems[c] = got
            resumed_files += b - a
    workers = max(1, int(workers if workers is not None else min(8, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    with reporter(progress).bar(n, desc, unit="file", initial=resumed_files) as bar:
        for c, st, pr in _run_chunks(todo, workers, executor):
            a = c * chunk_size
            status[a : a + len(st)] = st
            problems[c] = pr
            bar.update(len(st))
    elapsed = time.perf_counter() - t0
    n_read = n - resumed_files
    stats = {
        "n_files": n,
        "read_now": n_read,
        "resumed": resumed_files,
        "seconds": round(elapsed, 3),
        "files_per_second": round(n_read / elapsed, 1) if elapsed > 0 and n_read else None,
        "workers": workers,
        "executor": executor if workers > 1 else "serial",
        "n_missing": int((status == MISSING).sum()),
        "n_corrupt": int((status == CORRUPT).sum()),
    }
    return status, [p for c in sorted(problems) for p in problems[c]], stats


def _run_chunks(todo: list, workers: int, executor: str):
    """Yield ``(chunk, status, problems)`` as chunks finish: serially, or in a pool."""
    if workers == 1 or len(todo) <= 1:
        yield from (_read_chunk(t) for t in todo)
        return
    pool_cls = ProcessPoolExecutor if executor == "process" else ThreadPoolExecutor
    with pool_cls(max_workers=workers) as pool:
        futures = [pool.submit(_read_chunk, t) for t in todo]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def iter_chunk_arrays(workdir: Path, n: int, chunk_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first row, flux, err)`` of every saved chunk, in order."""
    for c in range((n + chunk_size - 1) // chunk_size):
        with np.load(Path(workdir) / f"chunk-{c:05d}.npz") as z:
            yield c * chunk_size, z["flux"], z["err"]
