"""Progress reporting: one adaptor from the ``progress`` argument of the engine to what it reports.

Every long-running function of the engine (``simulate``, ``ensure_default_dataset``,
``build_apogee``) takes ``progress`` as

* ``True``: tqdm bars on stderr (the command line);
* ``False`` / ``None``: silent;
* a callable ``progress(fraction: float, text: str) -> None``: called with the overall fraction
  done (0 … 1, never decreasing) and a short human-readable phase, e.g. ``"spectra 1024/20000"``
  (the app's progress bar).

:func:`reporter` turns that argument into a :class:`Reporter`. A long step is given a slice
``[start, end]`` of the overall fraction (:meth:`Reporter.span`); its counted work is reported with
:meth:`Reporter.bar`.

Examples
--------
>>> seen = []
>>> rep = reporter(lambda f, t: seen.append((round(f, 2), t)))
>>> rep.say(0.0, "drawing stars")
>>> with rep.bar(4, "spectra", start=0.5, end=1.0, unit="star") as bar:
...     bar.update(2)
...     bar.update(2)
>>> seen[0], seen[-1]
((0.0, 'drawing stars'), (1.0, 'spectra 4/4'))
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

ProgressArg = bool | None | Callable[[float, str], None]

__all__ = ["ProgressArg", "Reporter", "reporter"]


class _Bar:
    """A counted step: forwards to tqdm (``progress=True``) or to the callable, throttled."""

    def __init__(self, rep: Reporter, total: int, desc: str, start: float, end: float, unit: str, initial: int):
        self.rep, self.total, self.desc, self.unit = rep, max(0, int(total)), desc, unit
        self.start, self.end, self.n = float(start), float(end), int(initial)
        self._t0 = time.perf_counter()
        self._n0 = self.n
        self._last = 0.0
        self._tqdm = None
        if rep.mode == "tqdm":
            from tqdm.auto import tqdm

            self._tqdm = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, file=sys.stderr, smoothing=0.05)
        self._emit(force=True)

    def _text(self) -> str:
        text = f"{self.desc} {self.n}/{self.total}"
        done = self.n - self._n0
        left = self.total - self.n
        dt = time.perf_counter() - self._t0
        if done > 0 and left > 0 and dt > 2.0:
            text += f" (about {left * dt / done:.0f} s left)"
        return text

    def _emit(self, force: bool = False) -> None:
        if self.rep.mode != "callable":
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.2 and self.n < self.total:
            return
        self._last = now
        frac = self.start + (self.end - self.start) * (self.n / self.total if self.total else 1.0)
        self.rep.say(frac, self._text())

    def update(self, k: int = 1) -> None:
        """Count ``k`` more units of work done."""
        self.n += int(k)
        if self._tqdm is not None:
            self._tqdm.update(int(k))
        self._emit(force=self.n >= self.total)

    def close(self) -> None:
        """Close the tqdm bar, if any."""
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


class Reporter:
    """Reports phases and counted work to tqdm, to a callable, or nowhere (see :func:`reporter`)."""

    def __init__(self, progress: ProgressArg = False, start: float = 0.0, end: float = 1.0, _root=None):
        if callable(progress):
            self.mode = "callable"
        elif progress:
            self.mode = "tqdm"
        else:
            self.mode = "off"
        self.fn = progress if callable(progress) else None
        self.start, self.end = float(start), float(end)
        self._root = _root if _root is not None else self
        if _root is None:
            self._high = 0.0

    @property
    def enabled(self) -> bool:
        """True unless reporting is off."""
        return self.mode != "off"

    def say(self, fraction: float, text: str) -> None:
        """Report that ``fraction`` (0 … 1 of this reporter's slice) is done and the current phase.

        Only the callable mode shows phases; the fraction never goes backwards.
        """
        if self.mode != "callable":
            return
        f = self.start + (self.end - self.start) * min(1.0, max(0.0, float(fraction)))
        root = self._root
        root._high = max(root._high, f)
        self.fn(root._high, str(text))

    def span(self, start: float, end: float) -> Reporter:
        """A reporter for the sub-step covering ``[start, end]`` of this reporter's slice."""
        a = self.start + (self.end - self.start) * start
        b = self.start + (self.end - self.start) * end
        return Reporter(self.fn if self.mode == "callable" else self.mode == "tqdm", a, b, _root=self._root)

    def bar(
        self, total: int, desc: str, *, start: float = 0.0, end: float = 1.0, unit: str = "it", initial: int = 0
    ) -> _Bar:
        """A context manager counting ``total`` units of work over ``[start, end]`` of this slice."""
        sub = self.span(start, end)
        return _Bar(sub, total, desc, 0.0, 1.0, unit, initial)


def reporter(progress: ProgressArg | Reporter) -> Reporter:
    """Turn a ``progress`` argument (bool, None, callable or :class:`Reporter`) into a :class:`Reporter`.

    Examples
    --------
    >>> reporter(False).enabled, reporter(True).mode, reporter(print).mode
    (False, 'tqdm', 'callable')
    """
    if isinstance(progress, Reporter):
        return progress
    return Reporter(progress)
