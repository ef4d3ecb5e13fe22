"""Messages for the page: :class:`UserError` and one line per failure, never a traceback or a path."""

from __future__ import annotations

import logging
import re
import traceback

log = logging.getLogger("rsca_lab")

#: absolute POSIX paths in a message (the server's folders are nobody's business but the operator's)
_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+-]+/)*[\w.@+-]+")


class UserError(ValueError):
    """A problem the user can fix (bad input, missing dataset): shown as a message in the page."""


def short(v, n: int = 60) -> str:
    """``v`` as text cut to ``n`` characters (for echoing user input in a message)."""
    s = str(v)
    return s if len(s) <= n else s[:n] + "…"


def hide_paths(text: str) -> str:
    """``text`` with every absolute path replaced by its last component (``/srv/data/x`` → ``…/x``)."""
    return _ABS_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], str(text))


def describe_error(exc: BaseException) -> str:
    """One line for the page. Unexpected errors are logged with their traceback, not shown."""
    if isinstance(exc, (UserError, ValueError, FileNotFoundError, KeyError)):
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return hide_paths(msg)[:500]
    log.error("unexpected error in a callback:\n%s", "".join(traceback.format_exception(exc)))
    return f"Internal error ({type(exc).__name__}); the server log has the details."
