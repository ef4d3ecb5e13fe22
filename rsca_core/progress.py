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

import math
import sys
import time
from collections.abc import Callable

ProgressArg = bool | None | Callable[[float, str], None]

__all__ = [
    "ConvergenceBar",
    "PassCallback",
    "ProgressArg",
    "Reporter",
    "convergence_fraction",
    "convergence_text",
    "reporter",
]


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


# ---------------------------------------------------------------- iterative fits (EM passes)
PassCallback = Callable[[int, float, float], None]


def convergence_fraction(rel_change: float, tol: float) -> float:
    """How far an iterative fit is towards its stopping rule, on a log scale (0 … 1).

    0 while no change has been measured (or it is ≥ 1), 1 when ``rel_change ≤ tol``; in between,
    ``log10(rel_change) / log10(tol)``, so each decade of improvement moves the bar the same amount.

    Examples
    --------
    >>> convergence_fraction(float("inf"), 1e-4), convergence_fraction(1e-2, 1e-4), convergence_fraction(1e-5, 1e-4)
    (0.0, 0.5, 1.0)
    """
    rel, tol = float(rel_change), float(tol)
    if not (0 < tol < 1) or not rel < 1:
        return 0.0
    if rel <= tol:
        return 1.0
    return max(0.0, min(1.0, float(math.log10(rel) / math.log10(tol))))


def convergence_text(what: str, pass_index: int, rel_change: float, tol: float) -> str:
    """The one wording of an iterative fit's state, e.g. ``"compressing K=30: pass 7, change 3.1e-03 → target 1e-04"``.

    Examples
    --------
    >>> convergence_text("compressing K=30", 7, 3.1e-3, 1e-4)
    'compressing K=30: pass 7, change 3.1e-03 → target 1e-04'
    >>> convergence_text("compressing K=30", 0, float("inf"), 1e-4)
    'compressing K=30: reading the spectra'
    """
    if pass_index <= 0:
        return f"{what}: reading the spectra"
    change = "not measured yet" if not math.isfinite(rel_change) else f"{rel_change:.1e}"
    return f"{what}: pass {pass_index}, change {change} → target {tol:.0e}"


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ConvergenceBar:
    """Shows an iterative fit converging: called as ``bar(pass_index, rel_change, tol)`` after each pass.

    ``progress=True``: a tqdm bar on stderr over −log10(change) towards −log10(tol) (the bar is full
    when the stopping rule is met), with the pass number, the change and the target beside it — not a
    bar over ``max_iter`` that stops part-way when the fit converges. When stderr is not a terminal (a
    log file), one plain line a pass instead. A callable
    ``progress(pass_index, rel_change, tol)`` is called as is; False/None: silent.

    Examples
    --------
    >>> seen = []
    >>> bar = ConvergenceBar(lambda i, r, t: seen.append(i), "fit")
    >>> bar(0, float("inf"), 1e-4); bar(1, 0.01, 1e-4); bar.close()
    >>> seen
    [0, 1]
    """

    _STEPS_PER_DECADE = 10

    def __init__(self, progress: bool | PassCallback | None, what: str):
        self.what = what
        self.fn = progress if callable(progress) else None
        self._tqdm = None
        self._tqdm_wanted = bool(progress) and self.fn is None

    def __call__(self, pass_index: int, rel_change: float, tol: float) -> None:
        if self.fn is not None:
            self.fn(int(pass_index), float(rel_change), float(tol))
            return
        if not self._tqdm_wanted:
            return
        total = max(1, round(-math.log10(tol) * self._STEPS_PER_DECADE)) if 0 < tol < 1 else 1
        text = convergence_text(self.what, pass_index, rel_change, tol)
        if not _is_terminal(sys.stderr):
            # a log file: one plain line a pass (a bar under another bar would write cursor-up codes)
            print(text, file=sys.stderr, flush=True)
            return
        if self._tqdm is None:
            from tqdm.auto import tqdm

            self._tqdm = tqdm(
                total=total, desc=text, file=sys.stderr, leave=False, bar_format="{desc} |{bar}| {elapsed}"
            )
        self._tqdm.n = round(convergence_fraction(rel_change, tol) * total)
        self._tqdm.set_description_str(text, refresh=True)

    def close(self) -> None:
        """Remove the bar (if any)."""
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
