"""A starting worker warms itself: a background thread loads the datasets' bundles (the default one
first, at most as many as a worker keeps loaded) and, where the default K's compression is prepared,
computes each one's default Explore view (the rates and bars, the feature panels; read back from disk
when an earlier worker kept them, :mod:`.first_views`) into the result cache, then reads the
compression for the visitor's next settings, so that a visitor arriving later gets answers at once.

A request arriving while the thread works on the same bundle or view waits for that one computation
(:mod:`.flight`), never starts a second; anything else is answered as usual. ``/healthz`` reports
:func:`status`. Nothing here computes a compression: a dataset without the default K's compression
is only loaded. RSCA_WARM=0 turns it off.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from . import config
from .errors import UserError, hide_paths

log = logging.getLogger("rsca_lab")


class _State:
    """This process's warm-up: one thread, its progress per dataset (at most :func:`max_loaded` keys)."""

    lock = threading.Lock()
    pid: int | None = None  # the process that started it (a forked worker starts its own)
    generation = 0  # a new app in the same process (tests) starts a new warm-up; an older one's notes are dropped
    thread: threading.Thread | None = None
    state = "off"  # "off" | "warming" | "ready"
    datasets: dict = {}  # key -> "waiting" | "loading" | "view" | "ready" | "loaded" | "failed: …"
    seconds: float | None = None


def start(server, again: bool = False) -> bool:
    """Start the warm-up thread of this process: once (the app's creation; a forked child's first
    request starts its own), or ``again`` for a newly created app. False when it is off
    (RSCA_WARM=0) or this process has started one and ``again`` is not set."""
    with _State.lock:
        if _State.pid == os.getpid() and not again:
            return False
        _State.pid = os.getpid()
        _State.generation += 1
        if not config.get().warm:
            _State.state, _State.datasets, _State.seconds = "off", {}, None
            return False
        _State.state, _State.datasets, _State.seconds = "warming", {}, None
        _State.thread = threading.Thread(target=_run, args=(server, _State.generation), name="rsca-warm", daemon=True)
        _State.thread.start()
    return True


def status() -> dict:
    """{"state": "off" | "warming" | "ready", "datasets": {key: progress}, "seconds": time taken}."""
    with _State.lock:
        out = {"state": _State.state, "datasets": dict(_State.datasets)}
        if _State.seconds is not None:
            out["seconds"] = round(_State.seconds, 2)
    return out


def wait(timeout: float | None = None) -> bool:
    """Wait for this process's warm-up to end (tests, benchmarks); True if it has."""
    t = _State.thread
    if t is not None:
        t.join(timeout)
    return status()["state"] != "warming"


def _note(key: str, what: str, generation: int | None = None) -> None:
    with _State.lock:
        if generation in (None, _State.generation):
            _State.datasets[key] = what


def targets() -> list[str]:
    """The dataset keys a worker warms: "default" first, then the data folder's bundles in menu
    order, as many as a worker keeps loaded (more would evict the first ones again)."""
    from .datasets import dataset_paths, max_loaded

    return list(dataset_paths())[: max_loaded()]


def _run(server, generation: int) -> None:
    t0 = time.perf_counter()
    try:
        keys = targets()
    except Exception as exc:  # the data folder vanished: the pages will say so
        log.warning("warm-up: no datasets listed (%s)", hide_paths(str(exc))[:200])
        keys = []
    for key in keys:
        _note(key, "waiting", generation)
    _first_requests(server)
    for key in keys:
        if generation != _State.generation:
            return  # a newer app of this process warms itself
        try:
            with server.app_context():
                _note(key, warm_dataset(key, lambda what, k=key: _note(k, what, generation)), generation)
        except Exception as exc:  # a missing or broken bundle: its pages explain it to a visitor
            _note(key, f"failed: {hide_paths(str(exc))[:200]}", generation)
            if not isinstance(exc, UserError):
                log.warning("warm-up of dataset %r failed: %s", key, hide_paths(str(exc))[:300])
    with _State.lock:
        if generation != _State.generation:
            return
        _State.state, _State.seconds = "ready", time.perf_counter() - t0
        done = dict(_State.datasets)
    log.info("worker %d warmed in %.1f s: %s", os.getpid(), time.perf_counter() - t0, done)


def _first_requests(server) -> None:
    """Dash sets itself up on a worker's first request (its callback map, the pages' registry, the
    index page): made here, so that a visitor's first page does not wait for it."""
    try:
        with server.test_client() as client:
            for path in ("/", "/_dash-layout", "/_dash-dependencies"):
                client.get(path)
    except Exception as exc:  # the visitor's request will do it, and say what is wrong
        log.warning("warm-up: the first requests failed (%s)", hide_paths(str(exc))[:200])


def default_view(key: str):
    """Load dataset ``key``; the Settings of its default Explore view (``/?ds=<key>``), or None when
    that view's compression is not prepared (nothing here computes one)."""
    from .datasets import compression_ready, load
    from .settings import settings_from_query

    load(key)
    s, _problems = settings_from_query({"ds": key})
    return s if s.input == "spectra" and compression_ready(key, k=s.k) else None


def warm_dataset(key: str, note=lambda what: None) -> str:
    """Load one dataset and compute its default Explore view (the settings of ``/?ds=<key>``):
    "ready", or "loaded" when its default K's compression is not prepared (not computed here).
    ``note(what)`` is told the step ("loading", "view")."""
    from .compute import compression, features, rates

    note("loading")
    s = default_view(key)
    if s is None:
        return "loaded"
    note("view")
    rates(s)  # read back from disk when an earlier worker or --prepare-only kept it (first_views)
    features(s)
    compression(key, s.k)  # for the visitor's next settings (already read when the view was computed)
    return "ready"


def prepare(server, say=print) -> dict:
    """Keep on disk the first view of every dataset of the data folder whose default compression is
    prepared, in this process (``python app.py --prepare-only``; :mod:`.first_views`), so that any
    worker started later answers them at once. Returns {key: "kept" | "not kept" | "no compression" |
    "failed: …"}; ``say`` is told each one."""
    from .compute import keep_first_view
    from .datasets import dataset_paths

    out = {}
    for key in dataset_paths():
        t = time.perf_counter()
        try:
            with server.app_context():
                s = default_view(key)
                out[key] = "no compression" if s is None else "kept" if keep_first_view(s) else "not kept"
        except Exception as exc:  # a broken bundle: say so and go on with the others
            out[key] = f"failed: {hide_paths(str(exc))[:200]}"
        what = {
            "kept": "first view on disk",
            "not kept": "first view computed but not kept (see the log: state folder not usable?)",
            "no compression": "default compression not prepared: nothing to keep",
        }
        say(f"dataset {key}: {what.get(out[key], out[key])} ({time.perf_counter() - t:.1f} s)")
    return out


def _new_lock_in_child() -> None:
    """A process forked while the warm-up thread held the lock (a background job's) gets a free one."""
    _State.lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)
