"""Writing files safely, and turning results into JSON: the one copy of each rule.

Every file RSCA Lab writes (bundles' metadata, cached compressions, reports, tables, FITS layouts) goes
through :func:`atomic_write`, so a reader never sees a half-written file and an interrupted write leaves
nothing behind. Every result that becomes JSON goes through :func:`jsonable`.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_open", "atomic_write", "atomic_write_text", "atomic_write_bytes", "jsonable"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, mode_bits: int = 0o644, **open_kw) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one step.

    The temporary file is hidden (``.name.…tmp``) and removed if the block raises. The finished file
    gets ``mode_bits`` (readable by others by default: ``mkstemp`` alone would make it private).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_open(p, "w") as fh:
    ...     _ = fh.write("hello")
    >>> p.read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kw) as fh:
            yield fh
        os.chmod(tmp, mode_bits)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], *, mode_bits: int = 0o644) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file beside ``path``, then move it into place.

    For writers that want a file name rather than a file object (``HDUList.writeto``, ``np.save``).
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode_bits)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, **kw) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically. Returns ``path``."""
    with atomic_open(path, "w", encoding="utf-8", newline="", **kw) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, **kw) -> Path:
    """Write ``data`` to ``path`` atomically. Returns ``path``."""
    with atomic_open(path, "wb", **kw) as fh:
        fh.write(data)
    return Path(path)


def jsonable(v: Any) -> Any:
    """``v`` with NumPy scalars and arrays, DataFrames, tuples and paths made plain JSON values.

    Non-finite floats become ``None`` (JSON has no NaN). Anything else unknown becomes its ``str``.

    Examples
    --------
    >>> jsonable({"rate": np.float32(0.5), "n": np.int64(3), "bad": float("nan"), "ks": (1, 2)})
    {'rate': 0.5, 'n': 3, 'bad': None, 'ks': [1, 2]}
    """
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    if hasattr(v, "to_dict") and hasattr(v, "columns"):  # a DataFrame: a list of records
        return [jsonable(r) for r in v.to_dict(orient="records")]
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return str(v)
