"""``python -m rsca_core reproduce``: every quantitative result of the paper on one dataset.

Writes into ``--out``: ``results.json`` (all tables, settings, timings, the paper's numbers),
one CSV and one figure (PNG and PDF, matplotlib: no browser needed) per experiment, and ``report.md`` putting each of our numbers beside the
paper's, labelled "simulated" or "real" and recording the seed. ``--quick`` uses one seed, 10 data-size
trials and a K sweep of separate compressions at K = 10, 20, 30, 40, 60 (up to 60 so that
overfitting shows); the other experiments derive from the K = 30 one. The full run computes one
compression per K (5 … 60) and 10 seeds at K = 30, with progress bars and ETAs. The report states
each calibration band of :mod:`rsca_core.bands` and whether the dataset meets it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from .bands import bands_table, check_results
from .cli_core import positive_int
from .constants import PAPER_RESULTS, PAPER_SUBSET, canonical_species
from .figures import experiment_figures, save_figure
from .fileio import atomic_write_text, jsonable
from .report import fmt, headline, report_markdown

#: Where ``--dataset default`` lives (relative to the working directory, as in the README), built if missing.
DEFAULT_DATASET = Path("data") / "default"
#: K values of the quick K sweep: a separate compression each, up to K = 60 so that overfitting shows.
QUICK_KS = (10, 20, 30, 40, 60)
EXPERIMENTS = ("k_sweep", "top_n", "ablation", "data_size", "features", "distances", "methods", "weights")


def settings_for(quick: bool, seed: int = 0, k: int = 30, subset=PAPER_SUBSET) -> dict:
    """The parameters of each experiment in quick or full mode (``k``: the K of Table 1, Fig. 3, 4, 9)."""
    k = int(k)
    thirds = tuple(sorted({max(2, round(k / 3)), max(2, round(2 * k / 3)), k}))  # (10, 20, 30) for K = 30
    if quick:
        return {
            "k_sweep": dict(ks=QUICK_KS if k in QUICK_KS else tuple(sorted({*QUICK_KS, k})), truncate_from=None),
            "top_n": dict(k=k, n_seeds=1, ns=tuple(n for n in range(1, 8) if n < k)),
            "ablation": dict(k=k, subset=tuple(subset), n_seeds=1),
            "data_size": dict(ks=thirds, n_trials=10, truncate_from=None, max_points=6),
            "features": dict(k=k),
            "distances": dict(k=k, inputs=("spectra", "subset"), subset=tuple(subset)),
            "methods": dict(k=k, inputs=("spectra", "subset"), subset=tuple(subset)),
            "weights": dict(ks=thirds, truncate_from=None),
            "seed": seed,
            "quick": True,
            "k": k,
        }
    return {
        "k_sweep": dict(ks=tuple(sorted({5, 10, 15, 20, 25, 30, 40, 50, 60, k})), truncate_from=None),
        "top_n": dict(k=k, n_seeds=10, ns=tuple(n for n in range(1, 8) if n < k)),
        "ablation": dict(k=k, subset=tuple(subset), n_seeds=10),
        "data_size": dict(ks=thirds, n_trials=50, truncate_from=None, max_points=10),
        "features": dict(k=k),
        "distances": dict(k=k, inputs=("spectra", "subset"), subset=tuple(subset)),
        "methods": dict(k=k, inputs=("spectra", "abundances", "subset"), subset=tuple(subset)),
        "weights": dict(ks=thirds, truncate_from=None),
        "seed": seed,
        "quick": False,
        "k": k,
    }


def needed_compressions(settings: dict, experiments=EXPERIMENTS) -> list[tuple[int, int]]:
    """(K, seed) compressions the run will use (each computed once, then cached)."""
    seed = settings["seed"]
    need = set()
    for name in experiments:
        s = settings[name]
        if name in ("k_sweep", "data_size", "weights"):
            tf = s.get("truncate_from")
            for k in s["ks"]:
                need.add((k if tf is None or tf < k else tf, seed))
        elif name in ("top_n", "ablation"):
            need |= {(s["k"], seed + i) for i in range(s["n_seeds"])}
        elif name == "distances" and "spectra" not in s["inputs"]:
            continue
        else:
            need.add((s["k"], seed))
    return sorted(need, key=lambda t: (t[1] != seed, t[0], t[1]))


def _units(name, s, n_usable):
    if name == "k_sweep":
        return 2 * len(s["ks"])
    if name == "top_n":
        return s["n_seeds"]
    if name == "ablation":
        return 3 * (s["n_seeds"] + 2)
    if name == "data_size":
        from .experiments import default_cluster_counts

        return len(s["ks"]) * len(default_cluster_counts(n_usable, s["max_points"])) * s["n_trials"]
    if name == "distances":
        return len(s["inputs"])
    if name == "methods":
        from .learners import METHODS

        return len(s["inputs"]) * len(METHODS)
    if name == "weights":
        return 2 * len(s["ks"])
    return 1


# ---------------------------------------------------------------------------- running
def run_experiments(ds, settings: dict, experiments=EXPERIMENTS, progress: bool = True) -> dict:
    """Run the experiments; returns {name: {"table": DataFrame, ...}, "_timings": {...}}."""
    from . import experiments as E

    seed = settings["seed"]
    out, timings = {}, {}
    t0 = time.perf_counter()
    comps = needed_compressions(settings, experiments)
    todo = [(k, s) for k, s in comps if not _is_cached(ds, k, s)]
    if todo:
        bar = tqdm(
            total=sum(k + 10 for k, _ in todo),
            desc="compressions",
            unit="work",
            file=sys.stderr,
            disable=not progress,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]",
        )
        for k, s in todo:
            bar.set_postfix_str(f"K={k} seed={s}")
            E.compression_scores(ds, k, s, progress=progress)
            bar.update(k + 10)
        bar.close()
    timings["compressions"] = time.perf_counter() - t0
    timings["n_compressions_computed"] = len(todo)
    n_usable = int((ds.cluster_sizes() >= 2).sum())
    total = sum(_units(n, settings[n], n_usable) for n in experiments)
    bar = tqdm(total=total, desc="experiments", unit="step", file=sys.stderr, disable=not progress)
    try:
        for name in experiments:
            s = dict(settings[name])
            bar.set_postfix_str(name)
            t = time.perf_counter()
            if name == "k_sweep":
                out[name] = {"table": E.k_sweep(ds, seed=seed, progress=bar, **s)}
            elif name == "top_n":
                out[name] = {"table": E.top_n_table(ds, seed=seed, progress=bar, **s)}
            elif name == "ablation":
                out[name] = {"table": E.ablation(ds, seed=seed, progress=bar, **s)}
            elif name == "data_size":
                mp = s.pop("max_points")
                n_cl = E.default_cluster_counts(n_usable, mp)
                table, trials = E.data_size_curve(ds, seed=seed, n_clusters=n_cl, return_trials=True, progress=bar, **s)
                out[name] = {"table": table, "trials": trials}
            elif name == "features":
                res = E.feature_relations(ds, seed=seed, **s)
                out[name] = {"table": res["correlations"], "result": res}
                bar.update()
            elif name == "distances":
                res = E.distance_histograms(ds, seed=seed, progress=bar, **s)
                out[name] = {"table": res["summary"], "result": res}
            elif name == "methods":
                res = E.method_comparison(ds, seed=seed, progress=bar, **s)
                out[name] = {"table": res["table"], "result": res}
            elif name == "weights":
                if ds.errors is None:  # nothing to weight by: say so instead of failing the run
                    timings[name] = 0.0
                    bar.update(_units(name, s, n_usable))
                    continue
                res = E.flux_error_weights(ds, seed=seed, progress=bar, **s)
                out[name] = {"table": res["table"], "result": res, "answer": res["answer"]}
            timings[name] = time.perf_counter() - t
    finally:
        bar.close()
    timings["total"] = time.perf_counter() - t0
    out["_timings"] = timings
    return out


def _is_cached(ds, k, seed):
    return ds.has_compression(k, seed)


# ---------------------------------------------------------------------------- writing
def write_figures(results: dict, label: str, out: Path) -> tuple[dict, str | None]:
    """Every experiment's figures as PNG and PDF (matplotlib, no browser): ({experiment: [file names]},
    warning or None). A figure that fails is reported, never at the cost of the tables already written."""
    files = {}
    try:
        for name, res in results.items():
            if name.startswith("_"):
                continue
            for stem, fig in experiment_figures(name, res, label).items():
                files.setdefault(name, []).extend(p.name for p in save_figure(fig, out, stem))
    except Exception as exc:  # a plotting bug must not cost the user the tables and the report
        return (
            files,
            f"figures not all written ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); CSV, JSON and report are complete.",
        )
    return files, None


def write_outputs(ds, results: dict, settings: dict, out: Path, figures: bool = True, command: str = "") -> dict:
    """Write the CSV tables, the figures (PNG + PDF), ``results.json`` and ``report.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    label = ds.label
    files = {}
    for name, res in results.items():
        if name.startswith("_"):
            continue
        t = res["table"].copy()
        cols = ["label", "seed"] + [c for c in t.columns if c not in ("label", "seed")]
        t["label"], t["seed"] = label, settings["seed"]
        atomic_write_text(out / f"{name}.csv", t[cols].to_csv(index=False))
        files[name] = [f"{name}.csv"]
    warning = None
    if figures:
        figs, warning = write_figures(results, label, out)
        for name, names in figs.items():
            files.setdefault(name, []).extend(names)
    doc = {
        "label": label,
        "seed": settings["seed"],
        "quick": settings["quick"],
        "command": command,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "dataset": ds.summary() | {"path": str(ds.path) if ds.path else None},
        "settings": dict(settings),
        "timings_s": results.get("_timings", {}),
        "paper": PAPER_RESULTS,
        "headline": headline(results),
        "bands": bands_table(check_results(results, k=int(settings.get("k", 30)))).to_dict("records"),
        "experiments": {
            n: {"table": r["table"], **({"settings": r["result"]["settings"]} if "result" in r else {})}
            for n, r in results.items()
            if not n.startswith("_")
        },
        "files": files,
        "figure_warning": warning,
    }
    if "data_size" in results:
        doc["experiments"]["data_size"]["trials"] = results["data_size"]["trials"]
    atomic_write_text(out / "results.json", json.dumps(jsonable(doc), indent=1))
    atomic_write_text(out / "report.md", report_markdown(doc, results))
    return doc


# ---------------------------------------------------------------------------- CLI
def _int_list(text):
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return vals


def _experiment_list(text):
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown experiment(s) {', '.join(bad) or text!r}; choose from {', '.join(EXPERIMENTS)}"
        )
    return names


def cmd_reproduce(args) -> int:
    from .dataset import Dataset

    if args.dataset == "default":
        from .simulate import ensure_default_dataset

        path = ensure_default_dataset(DEFAULT_DATASET, progress=not args.quiet)
    else:
        path = args.dataset
    ds = Dataset.load(path)
    subset = [canonical_species(s) for s in args.subset.split(",")] if args.subset else list(PAPER_SUBSET)
    settings = settings_for(args.quick, args.seed, k=args.k, subset=subset)
    if args.seeds is not None:
        settings["top_n"]["n_seeds"] = settings["ablation"]["n_seeds"] = args.seeds
    if args.trials is not None:
        settings["data_size"]["n_trials"] = args.trials
    if args.ks is not None:
        settings["k_sweep"]["ks"] = tuple(sorted(set(args.ks)))
        if settings["k_sweep"]["truncate_from"] is not None:
            settings["k_sweep"]["truncate_from"] = max(max(args.ks), settings["k_sweep"]["truncate_from"])
    experiments = args.experiments or list(EXPERIMENTS)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    print(
        f"[{ds.label}] reproducing the paper's experiments on {ds.name} "
        f"({'quick' if args.quick else 'full'} mode, seed {args.seed}) -> {out}",
        file=sys.stderr,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # collected into each table's notes column instead
        results = run_experiments(ds, settings, experiments, progress=not args.quiet)
    command = (
        "python -m rsca_core reproduce --dataset "
        + str(args.dataset)
        + " --out "
        + str(args.out)
        + (" --quick" if args.quick else "")
        + f" --seed {args.seed}"
        + (f" --k {args.k}" if args.k != 30 else "")
        + (f" --seeds {args.seeds}" if args.seeds is not None else "")
        + (f" --trials {args.trials}" if args.trials is not None else "")
        + (f" --ks {','.join(map(str, args.ks))}" if args.ks is not None else "")
        + (f" --experiments {','.join(experiments)}" if args.experiments else "")
    )
    doc = write_outputs(ds, results, settings, out, figures=not args.no_figures, command=command)
    if doc.get("figure_warning"):
        print(f"warning: {doc['figure_warning']}", file=sys.stderr)
    h = doc["headline"]
    print(f"[{ds.label}] done in {doc['timings_s']['total']:.0f} s; wrote {out / 'report.md'}")
    for key, txt in (
        ("spectra_k30_all_axes", "spectra K=30 all axes"),
        ("spectra_k30_top4", "top 4 axes"),
        ("abundance_subset", "abundance subset"),
        ("best_k", "best K"),
    ):
        if key in h:
            print(f"  {txt}: {fmt(h[key])}   (paper: {fmt(PAPER_RESULTS[key])})")
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="run every experiment of the paper on a dataset (tables, figures, report)",
        description="Reproduce the paper's quantitative results (Fig. 2, 3, 4, 5, 9/10, Table 1) on a dataset, "
        "plus RSCA against RCA/LDA/NCA (methods) and error-aware compression (weights), "
        "bundle: writes results.json, one CSV and one PNG + PDF figure per experiment and report.md (our numbers "
        "beside the paper's, labelled simulated/real, seed recorded).",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset bundle directory ('default' = the simulated default survey in ./data/default, built if missing)",
    )
    p.add_argument("--out", required=True, help="output directory (created; our files in it are replaced)")
    p.add_argument(
        "--quick", action="store_true", help="one seed, 10 data-size trials, K sweep 10,20,30,40,60 (a few minutes)"
    )
    p.add_argument("--seed", type=int, default=0, help="compression / sampling seed (default 0)")
    p.add_argument(
        "--k",
        type=positive_int,
        default=30,
        help="PCA components of the main map (Table 1, Fig. 3, 4, 9/10; default 30 as the paper)",
    )
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        help="compression seeds for Table 1 and the spectra bars of Fig. 4 (default 10; quick 1)",
    )
    p.add_argument(
        "--trials",
        type=positive_int,
        default=None,
        help="random trials per point of the data-size curve (default 50; quick 10)",
    )
    p.add_argument(
        "--ks",
        type=_int_list,
        default=None,
        help="K values of the sweep, comma-separated (default 5,10,15,20,25,30,40,50,60; quick 10,20,30,40,60)",
    )
    p.add_argument(
        "--experiments",
        type=_experiment_list,
        default=None,
        help=f"comma-separated subset of {','.join(EXPERIMENTS)} (default all)",
    )
    p.add_argument(
        "--subset", default=None, help=f"abundance subset for Fig. 4 and 9/10 (default {','.join(PAPER_SUBSET)})"
    )
    p.add_argument(
        "--no-figures",
        "--no-png",
        dest="no_figures",
        action="store_true",
        help="skip the PNG/PDF figures (CSV, JSON and report only)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)
