"""The Data page's simulator form: the simulator's own table of switches, and a build into the data
folder whose progress comes back through rsca_core.simulate's progress callback."""

from __future__ import annotations

from pathlib import Path

from . import config
from .errors import UserError, short


def simulate_options() -> dict:
    """The switchable effects of the simulator (rsca_core.simulate.SWITCH_TABLE) for the form."""
    try:
        from rsca_core.simulate import SWITCH_TABLE
    except ImportError as exc:
        raise UserError(f"the survey simulator is not available in this build ({exc})") from None
    return {"switches": [{"name": s.name, "label": s.help, "default": bool(s.default)} for s in SWITCH_TABLE]}


def build_simulated(name: str, n_field: int, seed: int, flags: dict, report=None) -> Path:
    """Simulate a survey into the data folder with the chosen effects (for a background job).

    ``flags``: {switch name: on}; ``report(fraction, text)`` receives the simulator's progress."""
    from rsca_core.simulate import SWITCHES, SimulationConfig, simulate

    out = config.data_dir() / name
    if out.exists():
        raise UserError(f"a dataset named {name!r} already exists: choose another name")
    unknown = [f for f in flags if f not in SWITCHES]
    if unknown:
        raise UserError(f"unknown simulator option {short(unknown[0], 30)}")
    cfg = SimulationConfig(**{k: bool(v) for k, v in flags.items()})
    simulate(out, n_field=int(n_field), seed=int(seed), config=cfg, progress=report or False)
    return out
