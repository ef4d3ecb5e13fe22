"""Each dataset's first view, kept on disk: the rates and feature panels of its default Explore
settings (the page ``/?ds=<key>`` opens on), computed once and read back by every later worker.

The warm-up of a starting worker (:mod:`.warm`) and ``python app.py --prepare-only`` compute them;
after that a fresh worker — a restarted server, a recycled gunicorn worker, another container on the
same state folder — answers a survey's first view by reading two small files instead of reading the
compression's scores and fitting RSCA on every field star (on a 1,000,000-star survey: seconds).
Other settings stay in the ordinary result cache (:mod:`.compute`).

The files live in the app's private state folder (``RSCA_STATE_DIR/first-views``, at most
``MAX_ENTRIES`` of them; pickles, like the filesystem result cache beside them, never in a bundle).
An entry's name holds the settings' cache key (the dataset's uid among them) and the identity of
the compression file the result comes from (its name carries the fitting algorithm's version; its
size and time change when it is refitted): a rebuilt bundle or a new compression is never answered
from an old entry. A store that cannot be written (a read-only state folder) is skipped.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from . import config

log = logging.getLogger("rsca_lab")

#: Entries kept at most (two a dataset: rates and panels; the oldest go first beyond).
MAX_ENTRIES = 64


class _Store:
    lock = threading.Lock()
    cache = None
    where = None


def _store():
    """This process's store (cachelib's file cache in the state folder), or None when unusable."""
    where = config.state_dir() / "first-views"
    with _Store.lock:
        if _Store.where != where:
            _Store.where, _Store.cache = where, None
            try:
                from cachelib import FileSystemCache

                where.mkdir(parents=True, exist_ok=True)
                _Store.cache = FileSystemCache(str(where), threshold=MAX_ENTRIES, default_timeout=0, mode=0o600)
            except OSError as exc:
                log.warning("first views are not kept on disk (%s)", exc.strerror or exc)
        return _Store.cache


def source_tag(s) -> str | None:
    """The identity of the compression a default view is computed from (file name, size, time in ns),
    or None when the settings are not a dataset's default view or it has no compression yet."""
    from .datasets import SEED, load, pca_options
    from .settings import settings_from_query

    if s.input != "spectra":
        return None
    default, _problems = settings_from_query({"ds": s.ds})
    if default.key() != s.key():
        return None
    path = load(s.ds).compression_path(s.k, SEED, tuple(s.mask), **pca_options(s.weights))
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def kept(kind: str, key: str, compute: Callable[[], object], *extra) -> object:
    """``compute()``, read from the store instead when ``key`` is a dataset's default view already
    stored for the same compression, and stored when it is computed."""
    from .settings import settings_from_key

    tag = source_tag(settings_from_key(key))
    store = _store() if tag is not None else None
    if store is None:
        return compute()
    name = repr((kind, key, extra, tag))
    try:
        hit = store.get(name)
    except Exception as exc:  # e.g. kept by another version of pandas: computed and kept again
        log.warning("first view on disk unreadable (%s): computed again", str(exc)[:200])
        hit = None
    if hit is not None:
        return hit
    out = compute()
    try:
        store.set(name, out)
    except Exception as exc:  # a full disk: the view is still answered
        log.warning("first view not kept on disk (%s)", str(exc)[:200])
    return out
