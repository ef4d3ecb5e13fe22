"""Issue 11's calibration bands on several seeds of the simulated survey, in one table.

For each seed: simulate the survey (``rsca_core.simulate``, default settings unless ``--set`` changes
one), run ``reproduce``'s own experiments with its ``--quick`` settings (Table 1's top-N, Fig. 4's
ablation, the cross-validated K sweep, Fig. 3's feature correlations) and check every band with
``rsca_core.bands``. Prints one markdown row per seed (the table of docs/simulator.md) and writes
the band values as JSON. ``--set name=value`` measures a physical parameter of ``SimulationConfig``
at other values (each change must keep to SPEC §5's ranges and be documented with its reason).

    python benchmarks/calibration_seeds.py --seeds 0 1 2            (1.5–5 min a seed on 2 cores)
    python benchmarks/calibration_seeds.py --seeds 1 --set element_scatter=0.018 --out /tmp/cal

Surveys are kept under ``--out`` (``<tag>_seed<S>``) and reused when asked again with the same
settings and simulator version, so re-running with more seeds only simulates the new ones; the JSON
(``<tag>.json``) keeps the seeds of earlier runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common  # noqa: F401
import numpy as np
from _common import ROOT

from rsca_core import Dataset, bands
from rsca_core.experiments_cli import run_experiments, settings_for
from rsca_core.simulate import SimulationConfig, simulate
from rsca_core.simulate.config import SIMULATOR_VERSION

EXPERIMENTS = ("top_n", "ablation", "k_sweep", "features")


def parse_set(items) -> dict:
    """``["name=value", ...]`` → a dict of SimulationConfig settings (values parsed as JSON, else text)."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected name=value")
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value
    try:  # unknown names and invalid values fail here, in one line, before any work
        SimulationConfig.from_dict(out)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--set: {exc}") from None
    return out


def survey(out: Path, tag: str, seed: int, n_field: int, settings: dict) -> Dataset:
    path = out / f"{tag}_seed{seed}"
    wanted = {"n_field": n_field, "seed": seed, "settings": settings, "simulator_version": SIMULATOR_VERSION}
    stamp = path / "calibration_settings.json"
    if not (stamp.exists() and json.loads(stamp.read_text()) == wanted):
        simulate(
            path,
            n_field=n_field,
            seed=seed,
            config=SimulationConfig.from_dict(settings),
            progress=False,
            overwrite=True,
        )
        stamp.write_text(json.dumps(wanted))
    return Dataset.load(path)


def row(seed: int, checked: list, res: dict) -> str:
    """One markdown row: every band's value and ✓/✗, then how many are met."""
    cells = [str(seed)]
    for b in checked:
        v = b.value
        text = (
            "—"
            if v is None or (isinstance(v, float) and not np.isfinite(v))
            else (f"{v:.4g}" if isinstance(v, float) else str(v))
        )
        cells.append(f"{text} {'✓' if b.ok else ('✗' if b.ok is False else '?')}")
    ks = res["k_sweep"]["table"]
    cv = ks[ks["cv"].astype(bool)]
    cells.append(", ".join(f"{r:.4f}" for r in cv["global_rate"]))
    cells.append(f"{sum(bool(b.ok) for b in checked)} of {len(checked)}")
    return "| " + " | ".join(cells) + " |"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-field", type=int, default=20000, help="field stars (the default survey's 20,000)")
    ap.add_argument("--set", action="append", metavar="NAME=VALUE", help="a SimulationConfig setting (repeatable)")
    ap.add_argument("--tag", default=None, help="name of this setting's surveys (default: from --set)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "_work" / "calibration")
    args = ap.parse_args(argv)
    settings = parse_set(args.set)
    tag = args.tag or ("defaults" if not settings else "_".join(f"{k}-{v}" for k, v in sorted(settings.items())))
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"setting: {settings or 'the defaults'}; {args.n_field} field stars; seeds {args.seeds}", flush=True)
    out_json = args.out / f"{tag}.json"
    record = {"settings": settings, "n_field": args.n_field, "simulator_version": SIMULATOR_VERSION, "seeds": {}}
    if out_json.exists():  # keep the seeds of earlier runs of this setting
        old = json.loads(out_json.read_text())
        if {k: old.get(k) for k in ("settings", "n_field", "simulator_version")} == {
            k: record[k] for k in ("settings", "n_field", "simulator_version")
        }:
            record["seeds"] = old.get("seeds", {})
    lines = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        ds = survey(args.out, tag, seed, args.n_field, settings)
        res = run_experiments(ds, settings_for(True, 0), experiments=EXPERIMENTS, progress=False)
        checked = bands.check_results(res)
        if not lines:
            lines.append(
                "| seed | "
                + " | ".join(b.name.replace("|", "\\|") for b in checked)
                + " | K sweep CV ("
                + ", ".join(str(k) for k in settings_for(True, 0)["k_sweep"]["ks"])
                + ") | bands met |"
            )
            lines.append("|" + " --- |" * (len(checked) + 3))
        lines.append(row(seed, checked, res))
        record["seeds"][str(seed)] = {b.name: {"value": b.value, "band": b.band, "ok": b.ok} for b in checked}
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
        print("\n".join(lines), flush=True)
    out_json.write_text(json.dumps(record, indent=1, default=float))
    print(f"written {out_json} (seeds {', '.join(sorted(record['seeds'], key=int))})")


if __name__ == "__main__":
    main()
