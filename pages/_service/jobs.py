"""Background jobs: the manager of Dash's background callbacks (diskcache store in the state
folder), progress reporting from a job to its page, and the compression job."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import sqlite3
import time
from pathlib import Path

from . import config
from .datasets import SEED, dataset_paths, load, pca_options, prepared_ks, read_meta

log = logging.getLogger("rsca_lab")


def ensure_state_dir() -> Path:
    """The state folder, created private to this user (0700: the job store holds Dash's signing secret)."""
    d = config.state_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    return d


def job_store_problem(folder: Path) -> str | None:
    """None if the job store's database reads and passes SQLite's quick check, else what is wrong."""
    db = Path(folder) / "cache.db"
    if not db.exists():
        return "missing"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("PRAGMA quick_check").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None if row and row[0] == "ok" else f"quick_check: {row[0] if row else 'no answer'}"


def open_job_store(folder: Path):
    """The diskcache job store in ``folder``; a corrupt one is moved aside (named in the log) and rebuilt."""
    import diskcache

    try:
        handle = diskcache.Cache(str(folder))
        problem = job_store_problem(folder)
        if problem is None:
            return handle
        handle.close()
    except sqlite3.DatabaseError as exc:
        problem = str(exc)
    aside = folder.with_name(f"{folder.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    folder.rename(aside)
    log.error(
        "job store %s is unusable (%s): moved aside to %s, starting an empty one", folder / "cache.db", problem, aside
    )
    return diskcache.Cache(str(folder))


class _Manager:
    """The one background-callback manager of this process (a single slot, made on first use)."""

    value = None


def background_manager():
    """The bounded manager of every background callback (see :mod:`.jobqueue`), shared by all workers
    through the job store in the state folder. Finished results are kept a week (keyed by the
    callback's arguments plus the dataset registry state), so joined callers all get them."""
    if _Manager.value is None:
        from .jobqueue import BoundedManager

        state = ensure_state_dir()
        with exclusive("open the job store"):  # one worker at a time checks (and maybe rebuilds) it
            store = open_job_store(state / "jobs")
        _Manager.value = BoundedManager(
            store,
            lock_path=state / "jobs.lock",
            max_jobs=config.get().max_jobs,
            cache_by=[registry_fingerprint],
            expire=7 * 86400,
        )
    return _Manager.value


def reset_background_manager() -> None:
    """Forget the manager (tests that change the state folder)."""
    _Manager.value = None


def progress_phase(text) -> str:
    """The phase a progress text belongs to: the text before its counters ("compressing K=30" of
    "compressing K=30 … pass 7, change …"; "K sweep" of "K sweep: 8/18")."""
    return re.split(r":| pass \d| \d+/\d+", str(text), maxsplit=1)[0].strip()


def progress_reporter(set_progress):
    """``report(fraction, text)`` for a background job: best effort (a busy job store must not
    fail the job). Within one phase the bar never moves back (an EM pass whose change grows again
    leaves it where it was; the text still gives the change); a new phase starts from its own value."""
    state = {"phase": None, "best": 0.0}

    def report(fraction, text):
        with contextlib.suppress(Exception):
            f = max(0.0, min(1.0, float(fraction)))
            phase = progress_phase(text)
            if phase == state["phase"]:
                f = max(f, state["best"])
            state["phase"], state["best"] = phase, f
            set_progress((int(round(100 * f)), str(text)[:200]))

    return report


def registry_fingerprint() -> str:
    """Changes whenever a dataset bundle is rebuilt (its uid changes) or its prepared compressions appear,
    so cached job results (including "not compressed yet" messages) go stale."""
    kf = config.k_fit()
    parts = [f"kfit={kf}"]
    ds_ks = prepared_ks()
    for key, path in dataset_paths().items():
        try:
            ready = all(load(key).has_compression(k, SEED) for k in ds_ks)
            parts.append(f"{key}:{read_meta(path).get('uid', '')}:{int(ready)}")
        except Exception:
            parts.append(key)
    return "|".join(parts)


class UnitProgress:
    """A counter passed as ``progress=`` to rsca_core.experiments (anything with ``update(n)``):
    reports the fraction of ``total`` units done through ``report``, at most twice a second."""

    def __init__(self, total, report, what):
        self.n, self.total, self.report, self.what = 0, max(1, int(total)), report, what
        self._last = 0.0
        if self.report:  # the phase is named as it starts, not after its first unit (seconds later)
            self.report(0.0, f"{self.what}: 0/{self.total}")

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if self.report and (now - self._last > 0.5 or self.n >= self.total):
            self._last = now
            self.report(min(1.0, self.n / self.total), f"{self.what}: {self.n}/{self.total}")


@contextlib.contextmanager
def exclusive(name: str):
    """A lock shared by every worker and job process (a file in the state folder), e.g. one
    compression of a dataset at a time: the second caller waits, then finds the first one's result."""
    folder = ensure_state_dir() / "locks"
    folder.mkdir(exist_ok=True, mode=0o700)
    path = folder / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock")
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def compression_progress(report, what: str, start: float = 0.0, end: float = 1.0):
    """A MaskedPCA ``progress(pass_index, rel_change, tol)`` callable that reports through
    ``report(fraction, text)``: the phase and pass with the change and its target (rsca_core's one
    wording), the fraction on a log scale of the change towards the target over [start, end]."""
    from rsca_core.progress import convergence_fraction, convergence_text

    def on_pass(pass_index, rel_change, tol):
        report(
            start + (end - start) * convergence_fraction(rel_change, tol),
            convergence_text(what, pass_index, rel_change, tol),
        )

    return on_pass


def prepare_compression(key, report=None, weights="none", k=None):
    """Compute (and cache on disk) the dataset's exact K = ``k`` compression (``k=None``: every K of
    :func:`.datasets.prepared_ks`), plain or weighted by the flux errors (``weights="ivar"``); for a
    background job. Returns the (last) Compression.

    One compression of a dataset and K at a time across all workers (a second caller waits, then
    reads the first one's file). ``report(fraction, text)`` is told the phase from the start:
    "loading the spectra", then each EM pass ("compressing K=30: pass 7, change 3.1e-03 → target 1e-04")."""
    report = report or (lambda f, t: None)
    report(0.0, f"loading the spectra of {key}")
    ds = load(key)
    options = pca_options(weights)
    ks = prepared_ks() if k is None else (int(k),)
    label = "" if not options else f" ({weights}-weighted)"
    out = None
    for i, kk in enumerate(ks):
        what = f"compressing K={kk}{label}" + (f" ({i + 1}/{len(ks)})" if len(ks) > 1 else "")
        a, b = i / len(ks), (i + 1) / len(ks)
        with exclusive(f"compress:{ds.path}:{kk}:{SEED}" + (f":{weights}" if options else "")):
            out = ds.compress(kk, seed=SEED, progress=compression_progress(report, what, a, b), **options)
        report(b, f"{what}: done")
    return out
