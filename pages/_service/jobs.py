"""Background jobs: the manager of Dash's background callbacks (diskcache store in the state
folder), progress reporting from a job to its page, and the compression job."""

from __future__ import annotations

import contextlib
import functools
import time

from . import config
from .datasets import SEED, dataset_paths, load, read_meta


def background_manager(cached: bool = False):
    """diskcache-backed manager for background callbacks (shared by all workers on the machine).

    ``cached=True`` returns a manager whose finished results are cached on disk and shared between
    users and workers (keyed by the callback's arguments plus the dataset registry state)."""
    import diskcache

    d = config.state_dir() / "jobs"
    d.mkdir(parents=True, exist_ok=True)
    handle = diskcache.Cache(str(d))
    cls = _safe_manager_class()
    if cached:
        return cls(handle, cache_by=[registry_fingerprint], expire=7 * 86400)
    return cls(handle)


@functools.lru_cache(maxsize=1)
def _safe_manager_class():
    """DiskcacheManager that tolerates a job process vanishing while it is being terminated
    (dash 4.4 lets psutil.NoSuchProcess escape from ``process.children()`` as an HTTP 500)."""
    import psutil
    from dash import DiskcacheManager

    class SafeDiskcacheManager(DiskcacheManager):
        def terminate_job(self, job):
            with contextlib.suppress(psutil.NoSuchProcess):
                super().terminate_job(job)

    return SafeDiskcacheManager


def progress_reporter(set_progress):
    """``report(fraction, text)`` for a background job: best effort (a busy job store must not
    fail the job)."""

    def report(fraction, text):
        with contextlib.suppress(Exception):
            set_progress((int(round(100 * max(0.0, min(1.0, float(fraction))))), str(text)[:80]))

    return report


def registry_fingerprint() -> str:
    """Changes whenever a dataset bundle is rebuilt (its uid changes) or its compression appears,
    so cached job results (including "not compressed yet" messages) go stale."""
    kf = config.k_fit()
    parts = [f"kfit={kf}"]
    for key, path in dataset_paths().items():
        try:
            ready = load(key).has_compression(kf, SEED)
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

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if self.report and (now - self._last > 0.5 or self.n >= self.total):
            self._last = now
            self.report(min(1.0, self.n / self.total), f"{self.what}: {self.n}/{self.total}")


def prepare_compression(key, report=None, mask=()):
    """Compute (and cache on disk) the dataset's K=k_fit compression; for a background job.

    The PCA reports no progress of its own (rsca_core's MaskedPCA takes only ``progress=bool``),
    so the page shows a start and an end."""
    ds = load(key)
    kf = config.k_fit()
    if report is not None:
        report(0.02, f"PCA K={kf} of {ds.name}: computing")
    out = ds.compress(kf, seed=SEED, extra_mask_ranges=mask)
    if report is not None:
        report(1.0, f"PCA K={kf}: done")
    return out
