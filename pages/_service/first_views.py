"""Each dataset's first view, kept on disk: the rates and feature panels of its default Explore
settings (the page ``/?ds=<key>`` opens on), computed once and read back by every later worker.

The warm-up of a starting worker (:mod:`.warm`), the first visitor and ``python app.py
--prepare-only`` store them; after that a fresh worker — a restarted server, a recycled gunicorn
worker, another process on the same state folder — answers a survey's first view by reading two
small files instead of reading the compression's scores and fitting RSCA on every field star (on a
1,000,000-star survey: seconds). Other settings stay in the ordinary result cache (:mod:`.compute`).

Where and how: one file per view in ``RSCA_STATE_DIR/first-views`` (pickles, like the filesystem
result cache beside them; never in a bundle), at most ``MAX_ENTRIES`` files, the least recently
written removed first. The folder is used only if this user owns it and nobody else may write in it.
An entry is answered only if it was computed

* for the same settings (the dataset's uid among them),
* from the same compression file (name — which carries the fitting algorithm's version —, size,
  time and inode, unchanged while the view was computed: a refitted compression is a new file),
* by the same code (:func:`code_fingerprint`: the source of the modules that compute a view);

anything else is computed again and replaces it. A file that cannot be read or written is a miss,
never an error (a read-only state folder: the views are computed as without this module).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path

from . import config

log = logging.getLogger("rsca_lab")

#: Files kept at most (two a dataset: rates and panels); the least recently written go first.
MAX_ENTRIES = 64


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the source of the modules a first view is computed by (the service's computations,
    rsca_core's rates, RSCA, folds, learners and dataset): any change to them retires every entry."""
    import rsca_core._folds
    import rsca_core.dataset
    import rsca_core.learners
    import rsca_core.metrics
    import rsca_core.rsca

    from . import compute, settings

    h = hashlib.sha256()
    for mod in (
        compute,
        settings,
        rsca_core.metrics,
        rsca_core.rsca,
        rsca_core._folds,
        rsca_core.learners,
        rsca_core.dataset,
    ):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:16]


_warned = threading.Event()


def folder() -> Path | None:
    """The store's folder (made private to this user), or None when it cannot be used safely."""
    where = config.state_dir() / "first-views"
    try:
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.stat(where)
        ok = st.st_uid == os.geteuid() and not st.st_mode & 0o022 and os.access(where, os.R_OK | os.W_OK | os.X_OK)
    except OSError as exc:
        ok, why = False, exc.strerror or str(exc)
    else:
        why = "it belongs to another user, is writable by others, or is not readable and writable"
    if not ok and not _warned.is_set():
        _warned.set()
        log.warning("first views are not kept on disk: %s (%s)", where, why)
    return where if ok else None


def source_tag(s) -> str | None:
    """The identity of the compression file a default view is computed from
    (:func:`.datasets.compression_file_id`), or None when the settings are not a dataset's default
    view or it has no compression."""
    from .datasets import compression_file_id
    from .settings import settings_from_query

    if s.input != "spectra":
        return None
    default, _problems = settings_from_query({"ds": s.ds})
    if default.key() != s.key():
        return None
    return compression_file_id(s.ds, s.k, s.mask, s.weights)


def _entry(where: Path, kind: str, key: str, extra: tuple) -> Path:
    return where / (hashlib.sha256(repr((kind, key, extra)).encode()).hexdigest()[:40] + ".pkl")


def _read(path: Path, tag: str):
    """The stored view at ``path`` if it was computed from ``tag`` by this code, else None."""
    try:
        with open(path, "rb") as fh:
            rec = pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception as exc:  # damaged, kept by another pandas, unreadable: a miss
        log.warning("first view %s unreadable (%s): computed again", path.name, str(exc)[:200])
        return None
    if isinstance(rec, dict) and rec.get("tag") == tag and rec.get("code") == code_fingerprint():
        return rec.get("value")
    return None


def _write(path: Path, tag: str, value) -> bool:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            pickle.dump({"tag": tag, "code": code_fingerprint(), "value": value}, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except Exception as exc:  # a full disk, a read-only folder: the view is still answered
        log.warning("first view not kept on disk (%s)", str(exc)[:200])
        tmp.unlink(missing_ok=True)
        return False
    _prune(path.parent)
    return True


def _prune(where: Path) -> None:
    """At most MAX_ENTRIES files: the least recently written are removed."""
    try:
        files = sorted(where.glob("*.pkl"), key=lambda p: p.stat().st_mtime_ns)
    except OSError:
        return
    for old in files[: max(0, len(files) - MAX_ENTRIES)]:
        old.unlink(missing_ok=True)


def _locate(kind: str, key: str, extra: tuple):
    """``(settings, tag, entry path)`` of a view; the path is None when it is not a default view with
    a compression or the store cannot be used."""
    from .settings import settings_from_key

    s = settings_from_key(key)
    tag = source_tag(s)
    where = folder() if tag is not None else None
    return s, tag, None if where is None else _entry(where, kind, key, extra)


def keep(kind: str, key: str, compute: Callable[[], object], *extra) -> tuple[object, bool]:
    """``compute()``, read from the store instead when ``key`` is a dataset's default view stored
    from the same compression by the same code, and stored when it is computed; also whether the view
    is now on disk (read from it or stored)."""
    s, tag, path = _locate(kind, key, extra)
    if path is None:
        return compute(), False
    hit = _read(path, tag)
    if hit is not None:
        return hit, True
    out = compute()
    if source_tag(s) != tag:  # the compression was rewritten while the view was computed: not kept
        return out, False
    return out, _write(path, tag, out)


def stored(kind: str, key: str, *extra) -> bool:
    """Is this view on disk, from the dataset's current compression and this code?"""
    _s, tag, path = _locate(kind, key, extra)
    return path is not None and _read(path, tag) is not None
