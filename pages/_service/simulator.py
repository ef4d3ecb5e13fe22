"""The Data page's simulator form: the simulator's own table of switches, and browser builds into
the data folder (progress through rsca_core.simulate's callback), bounded for hosting: only when the
operator allows them, capped in size, within a disk quota, one at a time, leftovers removed."""

from __future__ import annotations

import fcntl
import json
import logging
import re
import shutil
from pathlib import Path

from rsca_core.fileio import atomic_write_text

from . import config
from .datasets import dataset_paths
from .errors import UserError, short
from .jobs import ensure_state_dir
from .settings import N_PIXELS, parse_int

log = logging.getLogger("rsca_lab")

MB = 2**20
BYTES_PER_PIXEL = 9  # float32 flux + float32 error + bool mask
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
BUILDS_OFF = (
    "Building surveys from the browser is turned off on this server "
    "(the operator can allow it with RSCA_ALLOW_BUILD=1)."
)


def simulate_options() -> dict:
    """The switchable effects of the simulator (rsca_core.simulate.SWITCH_TABLE) for the form."""
    try:
        from rsca_core.simulate import SWITCH_TABLE
    except ImportError as exc:
        raise UserError(f"the survey simulator is not available in this build ({exc})") from None
    return {"switches": [{"name": s.name, "label": s.help, "default": bool(s.default)} for s in SWITCH_TABLE]}


def build_policy() -> dict:
    """What a visitor may build: {"allowed", "max_stars", "quota_mb", "used_mb"} (shown on the Data page)."""
    cfg = config.get()
    return {
        "allowed": cfg.allow_build,
        "max_stars": cfg.build_max_stars,
        "quota_mb": cfg.build_quota_mb,
        "used_mb": round(built_bytes() / MB, 1),
    }


def _journal_path() -> Path:
    return config.state_dir() / "builds.json"


def _journal() -> dict:
    try:
        d = json.loads(_journal_path().read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _set_journal(name: str, status: str) -> None:
    d = _journal()
    d[name] = status
    atomic_write_text(_journal_path(), json.dumps(d, indent=1), mode_bits=0o600)


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def built_bytes() -> int:
    """Disk used by the bundles built from the browser (and their leftovers), in bytes."""
    d = config.data_dir()
    total = 0
    for name in _journal():
        total += _folder_bytes(d / name) + sum(_folder_bytes(t) for t in d.glob(f"{name}.tmp-*"))
    return total


def estimate_bytes(n_field: int) -> int:
    """Disk a simulated bundle of ``n_field`` field stars takes (spectra, errors, mask; about
    600 cluster stars on top)."""
    return (int(n_field) + 600) * N_PIXELS * BYTES_PER_PIXEL


def cleanup_interrupted_builds() -> list[str]:
    """Remove what browser builds that never finished left behind (``<name>.tmp-*`` folders of
    a cancelled or killed build); returns the names cleaned. Skipped while a build is running."""
    lock = _build_lock(blocking=False)
    if lock is None:
        return []
    try:
        return _cleanup_locked()
    finally:
        lock.close()


def _cleanup_locked() -> list[str]:
    d = config.data_dir()
    cleaned = []
    for name, status in _journal().items():
        if status != "running":
            continue
        for tmp in d.glob(f"{name}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        if not (d / name / "meta.json").is_file():
            shutil.rmtree(d / name, ignore_errors=True)
        _set_journal(name, "interrupted")
        cleaned.append(name)
        log.warning("removed the leftovers of the interrupted browser build %r", name)
    return cleaned


def _build_lock(blocking: bool):
    """The one-build-at-a-time lock (an open file holding an flock), or None if another build holds it."""
    path = ensure_state_dir() / "build.lock"
    f = open(path, "a+")  # noqa: SIM115 - closed by the caller (closing releases the lock)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        f.close()
        return None
    return f


def build_simulated(name: str, n_field, seed, flags: dict, report=None) -> Path:
    """Build a simulated survey into the data folder from the browser (for a background job).

    Only if the operator allows it (RSCA_ALLOW_BUILD), at most RSCA_BUILD_MAX_STARS field stars,
    within RSCA_BUILD_QUOTA_MB for all browser-built bundles together, one build at a time; the
    leftovers of an interrupted build are removed before the next one starts (and at app start)."""
    cfg = config.get()
    if not cfg.allow_build:
        raise UserError(BUILDS_OFF)
    name = str(name or "").strip()
    if not NAME_RE.match(name) or name == "default":
        raise UserError("name: 1-40 letters, digits, '-' or '_' (and not 'default')")
    n_field = parse_int(n_field, "field stars", 100, cfg.build_max_stars)
    seed = parse_int(seed, "seed", 0, 2**31 - 1)
    if not isinstance(flags, dict):
        raise UserError("the simulator options are not valid: reload the page")
    lock = _build_lock(blocking=False)
    if lock is None:
        raise UserError("another survey is being built on this server: try again when it is done")
    try:
        _cleanup_locked()
        out = config.data_dir() / name
        if out.exists() or name in dataset_paths():
            raise UserError(f"a dataset named {name!r} already exists: choose another name")
        used, need = built_bytes(), estimate_bytes(n_field)
        if used + need > cfg.build_quota_mb * MB:
            raise UserError(
                f"not enough of the browser-build disk quota left ({cfg.build_quota_mb} MB): "
                f"{used / MB:.0f} MB used, this survey needs about {need / MB:.0f} MB"
            )
        _set_journal(name, "running")
        _run_simulator(out, n_field, seed, flags, report)
        _set_journal(name, "done")
    finally:
        lock.close()
    return out


def _run_simulator(out: Path, n_field: int, seed: int, flags: dict, report) -> None:
    """rsca_core.simulate with the chosen switches; ``report(fraction, text)`` gets its progress."""
    from rsca_core.simulate import SWITCHES, SimulationConfig, simulate

    unknown = [f for f in flags if f not in SWITCHES]
    if unknown:
        raise UserError(f"unknown simulator option {short(unknown[0], 30)}")
    cfg = SimulationConfig(**{k: bool(v) for k, v in flags.items()})
    simulate(out, n_field=int(n_field), seed=int(seed), config=cfg, progress=report or False)
