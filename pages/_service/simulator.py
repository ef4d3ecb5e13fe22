"""The Data page's simulator form: the simulator's switches and a build into the data folder.

Transitional: until rsca_core.simulate offers its table of switches and a progress callback, the
switches are read from the ``simulate`` command's options and progress from its tqdm output.
"""

from __future__ import annotations

import io
from pathlib import Path

from . import config
from .errors import UserError, short


class ProgressStream(io.TextIOBase):
    """A stderr stand-in that turns tqdm's "n/total" output into ``report(fraction, text)`` calls."""

    _pat = None

    def __init__(self, report, min_interval: float = 0.5):
        import re
        import time

        self._re = re.compile(r"(?:([^:|\r\n]*):\s*)?\s*(\d+)%\|[^|]*\|\s*(\d+)/(\d+)")
        self._report, self._min, self._time, self._last = report, min_interval, time.monotonic, 0.0

    last_error = ""

    def write(self, text):
        for line in text.replace("\r", "\n").splitlines():
            if line.startswith("error:"):
                self.last_error = line[6:].strip()
        m = next(reversed(list(self._re.finditer(text))), None)
        if m:
            now = self._time()
            done, total = int(m.group(3)), int(m.group(4))
            if now - self._last >= self._min or done >= total:
                self._last = now
                desc = (m.group(1) or "").strip()
                self._report(done / total if total else 0.0, f"{desc} {done}/{total}".strip())
        return len(text)

    def flush(self):
        pass


def run_with_progress(fn, report, *args, **kwargs):
    """Call ``fn`` (which draws tqdm bars on stderr) reporting its progress through ``report``."""
    import contextlib

    stream = ProgressStream(report)
    with contextlib.redirect_stderr(stream):
        out = fn(*args, **kwargs)
    if stream.last_error and out not in (None, 0):
        raise UserError(stream.last_error)
    return out


def _simulate_parser():
    """The argparse parser of ``python -m rsca_core simulate`` (UserError if the simulator is absent)."""
    import argparse

    try:
        from rsca_core import cli

        parser = cli.build_parser()
    except Exception as exc:
        raise UserError(f"the RSCA engine's CLI is not available ({exc})") from None
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and "simulate" in action.choices:
            return action.choices["simulate"]
    raise UserError("the survey simulator (rsca_core.simulate) is not installed in this build")


_NOT_EFFECTS = {"out", "n_field", "seed", "format", "overwrite", "progress", "quiet", "help", "func", "force"}


def simulate_options() -> dict:
    """The switchable effects of the simulator, read from its CLI options (boolean flags)."""
    import argparse

    sp = _simulate_parser()
    switches = []
    for a in sp._actions:
        if a.dest in _NOT_EFFECTS or not a.option_strings:
            continue
        flag = max(a.option_strings, key=len)
        help_ = (a.help or a.dest.replace("_", " ")).split(";")[0].split(". ")[0]
        if isinstance(a, argparse.BooleanOptionalAction):
            pos = next(o for o in a.option_strings if not o.startswith("--no-"))
            switches.append({"flag": pos, "label": help_, "default": bool(a.default), "kind": "bool-optional"})
        elif isinstance(a, argparse._StoreFalseAction):  # e.g. --no-dibs: checkbox "dibs" on by default
            switches.append({"flag": flag, "label": help_, "default": True, "kind": "store-false"})
        elif isinstance(a, argparse._StoreTrueAction):
            switches.append({"flag": flag, "label": help_, "default": False, "kind": "store-true"})
    return {"switches": switches}


def build_simulated(name: str, n_field: int, seed: int, flags: dict, report=None) -> Path:
    """Run the simulator into config.data_dir()/name with the chosen effects (for a background job)."""
    from rsca_core import cli

    kinds = {o["flag"]: o for o in simulate_options()["switches"]}
    out = config.data_dir() / name
    if out.exists():
        raise UserError(f"a dataset named {name!r} already exists: choose another name")
    argv = ["simulate", "--out", str(out), "--n-field", str(int(n_field)), "--seed", str(int(seed))]
    for flag, on in flags.items():
        o = kinds.get(flag)
        if o is None:
            raise UserError(f"unknown simulator option {short(flag, 30)}")
        if o["kind"] == "bool-optional":
            argv.append(flag if on else "--no-" + flag[2:])
        elif o["kind"] == "store-false" and not on or o["kind"] == "store-true" and on:
            argv.append(flag)
    rc = run_with_progress(cli.main, report or (lambda f, t: None), argv)
    if rc:
        raise UserError(f"the simulator failed (exit code {rc}); see the server log")
    return out
