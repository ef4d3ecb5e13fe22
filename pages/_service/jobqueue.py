"""One bounded queue for all background work of every gunicorn worker.

Dash starts a new OS process for every background-callback request. :class:`BoundedManager` (a
``DiskcacheManager``) puts one gate in front of that, shared by all workers through the job store
in the state folder:

* at most ``max_jobs`` job processes run at once (RSCA_MAX_JOBS, default: the number of cores);
* a request identical to a running job (same callback, arguments and data) joins it instead of
  starting another, and every caller gets the result (results are kept in the store, so the first
  reader does not take it away from the others); cancelling a joined job only detaches that caller;
* a request whose result is already in the store starts no process;
* any other request while all slots are taken is answered at once, in the page, with "busy, try
  again" (the callback runs in the web worker with :func:`admit` raising that message).

Every background callback calls :func:`admit` first inside its ``try``.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import functools
import logging
from pathlib import Path

from .errors import UserError

log = logging.getLogger("rsca_lab")

REGISTRY = "rsca-running-jobs"
_BUSY: contextvars.ContextVar[str | None] = contextvars.ContextVar("rsca_job_busy", default=None)


class Busy(UserError):
    """Every job slot is taken: try again later."""


def admit() -> None:
    """First step of every background callback: raises :class:`Busy` when it was not given a slot."""
    msg = _BUSY.get()
    if msg:
        raise Busy(msg)


def _manager_base():
    from dash import DiskcacheManager

    return DiskcacheManager


@functools.lru_cache(maxsize=1)
def _blas_threads() -> int:
    """Threads the BLAS library used when first asked, i.e. before this module limited them
    (1 if there is no BLAS threadpoolctl can see)."""
    from threadpoolctl import threadpool_info

    return max([int(i.get("num_threads") or 1) for i in threadpool_info() if i.get("user_api") == "blas"] or [1])


def _with_blas_threads(job_fn, n: int):
    """``job_fn`` run with ``n`` BLAS threads: a job process gets back the threads the web process gave up."""

    def run(*args):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
        return job_fn(*args)

    return run


class BoundedManager(_manager_base()):
    """DiskcacheManager with a cap on running jobs, joining of identical jobs and a busy answer.

    Jobs are forked from the web process. Forking while another request thread is inside a
    multi-threaded BLAS call deadlocks the worker (OpenBLAS's fork handler waits for its busy thread
    pool; seen with gunicorn ``--threads 2`` and in the browser tests). So the web process computes
    with one BLAS thread, and each job process takes back the threads the process had at start.
    """

    def __init__(self, handle, lock_path: Path, max_jobs: int, cache_by, expire: int):
        from threadpoolctl import threadpool_limits

        super().__init__(handle, cache_by=cache_by, expire=expire)
        self.lock_path = Path(lock_path)
        self.max_jobs = int(max_jobs)
        self.job_blas_threads = _blas_threads()
        threadpool_limits(limits=1, user_api="blas")  # for the life of the process (see above)

    # ------------------------------------------------------------------ registry of running jobs
    @contextlib.contextmanager
    def _locked(self):
        """An exclusive lock for all workers (flock; released explicitly so that a job process
        forked while it is held does not keep it)."""
        with open(self.lock_path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def running(self) -> dict:
        """{cache key: {"pid", "created", "refs"}} of the job processes alive now (reaps finished ones)."""
        import multiprocess
        import psutil

        multiprocess.active_children()  # reap this worker's finished jobs (no zombies)
        out = {}
        for key, e in (self.handle.get(REGISTRY) or {}).items():
            try:
                p = psutil.Process(e["pid"])
                if p.create_time() == e["created"] and p.status() != psutil.STATUS_ZOMBIE:
                    out[key] = e
            except (psutil.Error, KeyError, TypeError):
                pass
        return out

    def n_running(self) -> int:
        return len(self.running())

    # ------------------------------------------------------------------ Dash's hooks
    def call_job_fn(self, key, job_fn, args, context):
        import psutil

        with self._locked():
            reg = self.running()
            if key in reg:  # the same job is running: join it
                reg[key]["refs"] += 1
                self.handle.set(REGISTRY, reg)
                return reg[key]["pid"]
            if self.handle.get(f"{key}-transient"):  # an old "busy" answer nobody fetched: not a result
                self.clear_cache_entry(key)
                self.clear_cache_entry(f"{key}-transient")
            if self.result_ready(key):  # finished before: served from the store, no process
                return 0
            if len(reg) < self.max_jobs:
                pid = super().call_job_fn(key, _with_blas_threads(job_fn, self.job_blas_threads), args, context)
                with contextlib.suppress(psutil.Error):
                    reg[key] = {"pid": pid, "created": psutil.Process(pid).create_time(), "refs": 1}
                self.handle.set(REGISTRY, reg)
                return pid
            n = len(reg)
        token = _BUSY.set(
            f"The server is busy: {n} background job(s) are running, the limit is {self.max_jobs}. "
            "Try again in a minute."
        )
        try:  # runs the callback here; admit() makes it answer "busy" at once
            job_fn(key, self._make_progress_key(key), args, context)
        finally:
            _BUSY.reset(token)
        self.handle.set(f"{key}-transient", 1, expire=600)
        return 0

    def get_result(self, key, job):
        result = super().get_result(key, job)
        if result is not self.UNDEFINED and self.handle.get(f"{key}-transient"):
            self.clear_cache_entry(key)  # a "busy" answer is not a result to keep
            self.clear_cache_entry(f"{key}-transient")
        return result

    def terminate_job(self, job):
        """Detach one caller from a job; kill it when no caller is left. Only our own jobs."""
        import psutil

        try:
            pid = int(job)
        except (TypeError, ValueError):
            return
        if pid <= 0:
            return
        with self._locked():
            reg = self.running()
            key = next((k for k, e in reg.items() if e["pid"] == pid), None)
            if key is None:
                return  # finished already, or not a job of this app
            reg[key]["refs"] -= 1
            if reg[key]["refs"] > 0:
                self.handle.set(REGISTRY, reg)
                return
            del reg[key]
            self.handle.set(REGISTRY, reg)
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
            proc.kill()
            proc.wait(1)
