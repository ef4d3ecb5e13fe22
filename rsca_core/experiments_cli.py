"""``python -m rsca_core reproduce``: every quantitative result of the paper on one dataset.

Writes into ``--out``: ``results.json`` (all tables, settings, timings, the paper's numbers),
one CSV and one PNG per experiment, and ``report.md`` putting each of our numbers beside the
paper's, labelled "simulated" or "real" and recording the seed. ``--quick`` derives everything from
a single K = 30 compression (K sweep truncated from it, one seed, 10 data-size trials); the full
run computes one compression per K and 10 seeds at K = 30, with progress bars and ETAs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .cli_core import positive_int
from .constants import PAPER_RESULTS, PAPER_SUBSET, canonical_species

EXPERIMENTS = ("k_sweep", "top_n", "ablation", "data_size", "features", "distances")
TITLES = {
    "k_sweep": "Fig. 2 — global rate vs number of PCA components K",
    "top_n": "Table 1 — keeping only the top-N RSCA axes",
    "ablation": "Fig. 4 — representations × methods",
    "data_size": "Fig. 5 — expected rate vs number of training clusters",
    "features": "Fig. 3 — the top RSCA features",
    "distances": "Fig. 9/10 — intra- vs inter-cluster distances",
}


def settings_for(quick: bool, seed: int = 0, k: int = 30, subset=PAPER_SUBSET) -> dict:
    """The parameters of each experiment in quick or full mode (``k``: the K of Table 1, Fig. 3, 4, 9)."""
    k = int(k)
    thirds = tuple(sorted({max(2, round(k / 3)), max(2, round(2 * k / 3)), k}))  # (10, 20, 30) for K = 30
    if quick:
        return {
            "k_sweep": dict(ks=tuple(x for x in (5, 10, 15, 20, 25) if x < k) + (k,), truncate_from=k),
            "top_n": dict(k=k, n_seeds=1, ns=tuple(n for n in range(1, 8) if n < k)),
            "ablation": dict(k=k, subset=tuple(subset), n_seeds=1),
            "data_size": dict(ks=thirds, n_trials=10, truncate_from=k, max_points=6),
            "features": dict(k=k),
            "distances": dict(k=k, inputs=("spectra", "subset"), subset=tuple(subset)),
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
        if name == "k_sweep" or name == "data_size":
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
            timings[name] = time.perf_counter() - t
    finally:
        bar.close()
    timings["total"] = time.perf_counter() - t0
    out["_timings"] = timings
    return out


def _is_cached(ds, k, seed):
    return ds.has_compression(k, seed)


# ---------------------------------------------------------------------------- writing
def _atomic_write_text(path: Path, text: str):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, pd.DataFrame):
        return [_jsonable(r) for r in v.to_dict(orient="records")]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    return v


def _ensure_browser():
    """kaleido 1.x drives a Chrome: point it at the system chromium when none is configured."""
    if not os.environ.get("BROWSER_PATH"):
        for cand in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"):
            if os.path.exists(cand):
                os.environ["BROWSER_PATH"] = cand
                break


def write_pngs(figs: dict, out: Path) -> tuple[list, str | None]:
    """Write {name: figure} as PNGs in one browser session; returns (paths, warning or None)."""
    if not figs:
        return [], None
    _ensure_browser()
    import plotly.io as pio

    names = list(figs)
    tmps = [out / f".{n}.png.tmp.png" for n in names]
    finals = [out / f"{n}.png" for n in names]
    try:
        sizes = [dict(width=f.layout.width or 900, height=f.layout.height or 450) for f in figs.values()]
        if hasattr(pio, "write_images"):
            pio.write_images(
                list(figs.values()),
                tmps,
                format="png",
                width=[s["width"] for s in sizes],
                height=[s["height"] for s in sizes],
            )
        else:  # pragma: no cover - older plotly
            for f, t, s in zip(figs.values(), tmps, sizes):
                f.write_image(t, format="png", **s)
        for t, f in zip(tmps, finals):
            os.replace(t, f)
        return finals, None
    except Exception as exc:  # no Chrome, kaleido missing or failing: keep CSV/JSON/report
        for t in tmps:
            t.unlink(missing_ok=True)
        return [], (
            f"PNG figures not written ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "install Chrome/Chromium for kaleido or set BROWSER_PATH. CSV, JSON and report are complete."
        )


def make_figures(results: dict, label: str) -> dict:
    from . import plotting as P

    figs = {}
    for name, res in results.items():
        if name.startswith("_"):
            continue
        if name in ("features", "distances"):
            figs[name] = P.FIGURES[name](res["result"], label=label)
        else:
            figs[name] = P.FIGURES[name](res["table"], label=label)
        if name == "features":
            figs["features_correlations"] = P.fig_feature_correlations(res["table"], label=label)
    return figs


def write_outputs(ds, results: dict, settings: dict, out: Path, png: bool = True, command: str = "") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    label = ds.label
    files = {}
    for name, res in results.items():
        if name.startswith("_"):
            continue
        t = res["table"].copy()
        cols = ["label", "seed"] + [c for c in t.columns if c not in ("label", "seed")]
        t["label"], t["seed"] = label, settings["seed"]
        path = out / f"{name}.csv"
        _atomic_write_text(path, t[cols].to_csv(index=False))
        files[name] = [path.name]
    warning = None
    if png:
        paths, warning = write_pngs(make_figures(results, label), out)
        for p in paths:
            key = p.stem if p.stem in files else p.stem.split("_correlations")[0]
            files.setdefault(key, []).append(p.name)
    doc = {
        "label": label,
        "seed": settings["seed"],
        "quick": settings["quick"],
        "command": command,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "dataset": ds.summary() | {"path": str(ds.path) if ds.path else None},
        "settings": {k: v for k, v in settings.items()},
        "timings_s": results.get("_timings", {}),
        "paper": PAPER_RESULTS,
        "headline": headline(results),
        "experiments": {
            n: {"table": r["table"], **({"settings": r["result"]["settings"]} if "result" in r else {})}
            for n, r in results.items()
            if not n.startswith("_")
        },
        "files": files,
        "png_warning": warning,
    }
    if "data_size" in results:
        doc["experiments"]["data_size"]["trials"] = results["data_size"]["trials"]
    _atomic_write_text(out / "results.json", json.dumps(_jsonable(doc), indent=1))
    _atomic_write_text(out / "report.md", report_markdown(doc, results))
    return doc


# ---------------------------------------------------------------------------- report
def headline(results: dict) -> dict:
    """Our numbers that the paper quotes (SPEC §3)."""
    h = {}
    if "top_n" in results:
        t = results["top_n"]["table"].set_index("axes")
        last = t.iloc[-1]
        h["spectra_k30_all_axes"] = (last["mean"], last["std"])
        if "top 4" in t.index:
            h["spectra_k30_top4"] = (t.loc["top 4", "mean"], t.loc["top 4", "std"])
        if "top 1" in t.index:
            h["spectra_k30_top1"] = (t.loc["top 1", "mean"], t.loc["top 1", "std"])
    if "ablation" in results:
        a = results["ablation"]["table"]
        sub = a[(a["input"] == "subset") & (a["variant"] == "transformed")]
        if len(sub):
            h["abundance_subset"] = sub["mean"].iloc[0]
        spec = a[(a["input"] == "spectra") & (a["variant"] == "transformed")]
        if len(spec):
            h["spectra_k30"] = spec["mean"].iloc[0]
    if "k_sweep" in results:
        ks = results["k_sweep"]["table"]
        cv = ks[ks["cv"] & ks["global_rate"].notna()]
        if len(cv):
            best = cv.loc[cv["global_rate"].idxmin()]
            h["best_k"] = int(best["k"])
            h["best_k_rate"] = float(best["global_rate"])
            k30 = cv[cv["k"] == 30]
            if len(k30) and "spectra_k30" not in h:
                h["spectra_k30"] = float(k30["global_rate"].iloc[0])
    return h


def _fmt(v, digits=4):
    if isinstance(v, (tuple, list)):
        m, s = v
        if m is None or (isinstance(m, float) and not math.isfinite(m)):
            return "n/a"
        if s is None or (isinstance(s, float) and not math.isfinite(s)):
            return f"{m:.{digits}f}"
        return f"{m:.{digits}f} ± {s:.{digits}f}"
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


def md_table(df: pd.DataFrame, columns=None, digits=4) -> str:
    cols = list(columns or df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in df[cols].itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, digits).replace("|", "/") for v in r) + " |")
    return "\n".join(lines)


def report_markdown(doc: dict, results: dict) -> str:
    label = doc["label"]
    sim = label == "simulated"
    d = doc["dataset"]
    h = doc["headline"]
    P = PAPER_RESULTS
    ours = f"this dataset ({label})"
    K = int(doc["settings"].get("k", 30))
    L = []
    L.append(f"# RSCA Lab — reproduction of de Mijolla & Ness (2022) on {'SIMULATED' if sim else 'real'} data\n")
    if sim:
        L.append(
            "> **Simulated data.** Every number, table and figure below comes from the simulated APOGEE-like "
            "survey of `rsca_core.simulate`, not from real stars. They test the pipeline and show how the "
            "method behaves on the simulator; they are *not* a measurement and are not expected to match "
            "the paper's APOGEE DR16 numbers, which are shown beside them for reference.\n"
        )
    else:
        L.append("> Real survey data. The paper's APOGEE DR16 numbers are shown beside ours.\n")
    L.append(
        f"- dataset: **{d['name']}** ({label}; {d['n_field']:,} field stars, {d['n_cluster_stars']} stars in "
        f"{d['n_clusters']} clusters, {d['n_pixels']} pixels, {100 * d['missing_fraction']:.1f}% missing "
        f"pixels; uid `{d['uid']}`)"
    )
    L.append(
        f"- mode: **{'quick' if doc['quick'] else 'full'}**; seed **{doc['seed']}**; created {doc['created_utc']} UTC"
    )
    if doc.get("command"):
        L.append(f"- command: `{doc['command']}`")
    tm = doc["timings_s"]
    if tm:
        parts = [f"{k} {v:.0f} s" for k, v in tm.items() if isinstance(v, float) and k != "total"]
        L.append(
            f"- wall time: **{tm.get('total', float('nan')):.0f} s** ({'; '.join(parts)}; "
            f"{tm.get('n_compressions_computed', 0)} compressions computed, the rest from the cache)"
        )
    if doc.get("png_warning"):
        L.append(f"- **warning:** {doc['png_warning']}")
    L.append("")
    L.append("## Headline numbers\n")
    rows = [
        (f"spectra, K = {K}, all axes (Table 1)", h.get("spectra_k30_all_axes"), P["spectra_k30_all_axes"]),
        (f"spectra, K = {K}, top 4 axes (Table 1)", h.get("spectra_k30_top4"), P["spectra_k30_top4"]),
        (f"spectra, K = {K}, top 1 axis (Table 1)", h.get("spectra_k30_top1"), P["spectra_k30_top1"]),
        (
            "abundance subset Fe, Mg, Ni, Si, Al, C, N (Fig. 4, transformed)",
            h.get("abundance_subset"),
            P["abundance_subset"],
        ),
        ("best K with cross-validation (Fig. 2)", h.get("best_k"), P["best_k"]),
        ("rate at the best K (Fig. 2)", h.get("best_k_rate"), P["spectra_k30"]),
        ("field stars", d["n_field"], P["n_field"]),
        (
            "cluster stars / clusters",
            f"{d['n_cluster_stars']} / {d['n_clusters']}",
            f"{P['n_cluster_stars']} / {P['n_clusters']}",
        ),
    ]
    L.append(f"| quantity | {ours} | paper (APOGEE DR16) |\n|---|---|---|")
    for q, o, p in rows:
        if o is None:
            continue
        L.append(f"| {q} | {_fmt(o)} | {_fmt(p)} |")
    L.append(
        "\nRates are global doppelganger rates (SPEC §2: leave-one-cluster-out, pair filter |ΔVHELIO_AVG| < "
        "5 km/s and |ΔAK_TARG| < 0.05, n_c-weighted mean over clusters); lower is better.\n"
    )

    def img(name):
        return f"![{name}]({name}.png)\n" if name in doc["files"] and f"{name}.png" in doc["files"][name] else ""

    if "k_sweep" in results:
        t = results["k_sweep"]["table"]
        piv = pd.DataFrame({"K": sorted(set(t["k"]))})
        for cv, name in ((True, "with CV"), (False, "without CV")):
            sub = t[t["cv"] == cv].set_index("k")["global_rate"]
            if len(sub):
                piv[name] = [sub.get(k, np.nan) for k in piv["K"]]
        comp = ", ".join(dict.fromkeys(t["compression"]))
        L.append(f"## {TITLES['k_sweep']}\n")
        L.append(img("k_sweep"))
        L.append(md_table(piv))
        L.append(
            f"\nCompressions: {comp} (seed {doc['seed']}). Paper: rates fall with K up to K = 30 "
            f"({P['spectra_k30']}) and rise above (overfitting); without CV they are optimistic."
            + (f" This sweep stops at K = {max(t['k'])}, so the best K cannot exceed it." if max(t["k"]) <= K else "")
            + "\n"
        )
        trunc = t[t["compression"].str.startswith("truncated") & t["cv"] & (t["k"] == K)]
        if len(trunc) and "top_n" in results:
            exact = results["top_n"]["table"]
            col = f"rate_seed{doc['seed']}"
            if col in exact.columns:
                L.append(
                    f"Truncation matters with missing pixels: at K = {K} the truncated compression gives "
                    f"{trunc['global_rate'].iloc[0]:.4f}, a K = {K} fit (same seed, Table 1 below) "
                    f"{exact[col].iloc[-1]:.4f}.\n"
                )
    if "top_n" in results:
        t = results["top_n"]["table"]
        L.append(f"## {TITLES['top_n']} (K = {K})\n")
        L.append(img("top_n"))
        tt = t.assign(
            ours=[(m, s) for m, s in zip(t["mean"], t["std"])],
            paper=[
                (m, s if pd.notna(s) else None) if pd.notna(m) else None
                for m, s in zip(t["paper_mean"], t["paper_std"])
            ],
        )
        tt = tt.rename(columns={"ours": f"{ours}: mean ± std", "paper": "paper"})
        L.append(md_table(tt, ["axes", f"{ours}: mean ± std", "n_seeds", "paper"]))
        L.append(
            f"\nMean ± sample std over compressions with seeds {t['seeds'].iloc[0]}. The paper's std comes "
            "from its stochastic PPCA; `MaskedPCA` converges to (nearly) the same fixed point from any seed, so "
            "our spread over seeds is small by construction.\n"
        )
    if "ablation" in results:
        t = results["ablation"]["table"]
        L.append(f"## {TITLES['ablation']}\n")
        L.append(img("ablation"))
        piv = t.pivot_table(index="representation", columns="variant", values="mean", sort=False).reset_index()
        L.append(md_table(piv))
        L.append(
            f"\nPaper: spectra / transformed {P['spectra_k30']}, abundance subset / transformed "
            f"{P['abundance_subset']}; the full method matters most for spectra. Abundances are the bundle's "
            f"[X/H] (the paper used [X/Fe] for all but Fe); all representations are evaluated on the same "
            f"{int(t['n_field'].iloc[0]):,} field and {int(t['n_cluster_stars'].iloc[0])} cluster stars "
            f"(those with all 21 species measured).\n"
        )
    if "data_size" in results:
        t = results["data_size"]["table"]
        L.append(f"## {TITLES['data_size']}\n")
        L.append(img("data_size"))
        piv = t.pivot_table(index="n_train_clusters", columns="k", values="mean_rate").reset_index()
        piv.columns = ["training clusters"] + [f"K = {c}" for c in piv.columns[1:]]
        L.append(md_table(piv))
        L.append(
            f"\n{int(t['n_trials'].max())} random trials per point (seed {doc['seed']}). Method: in each trial, "
            "every cluster is scored with a map trained on a random subset of m of the *other* clusters; the "
            "point is the mean over trials of the n_c-weighted global rate (at m = J − 1 it equals the "
            "leave-one-cluster-out rate). Draws with too few cluster stars to constrain K axes cannot be "
            "fitted; points where any draw failed are omitted from the figure "
            f"(fraction per point in `data_size.csv`). Paper: larger K still improves with more clusters.\n"
        )
    if "features" in results:
        r = results["features"]["result"]
        c = r["correlations"]
        s = r["settings"]
        L.append(f"## {TITLES['features']}\n")
        L.append(img("features"))
        if "features" in doc["files"] and "features_correlations.png" in doc["files"]["features"]:
            L.append("![features_correlations](features_correlations.png)\n")
        labs = [
            x for x in ("fe_h", "x_h_mg", "x_h_c", "x_h_n", "teff", "logg", "vhelio_avg", "ak_targ") if x in c.columns
        ]
        L.append(md_table(c.head(6), ["feature", "scale"] + labs + ["r2_all_labels"], digits=2))
        L.append(
            f"\nPearson r over the field stars (K = {s['k']}, map fitted on all clusters; sign of each feature "
            f"chosen to correlate positively with [Fe/H]). Feature #{s['vhelio_feature']} is shown against "
            "VHELIO_AVG (the most VHELIO-correlated feature after the top ones). Paper: feature #1 tracks [Fe/H] "
            "almost one-to-one, #2 shows the α-bimodality, a later one trends with radial velocity.\n"
        )
    if "distances" in results:
        t = results["distances"]["table"]
        L.append(f"## {TITLES['distances']}\n")
        L.append(img("distances"))
        piv = t.pivot_table(index="cluster", columns="representation", values="rate", sort=False)
        n = t.drop_duplicates("cluster").set_index("cluster")["n_stars"]
        piv.insert(0, "n_stars", n.reindex(piv.index))
        L.append(md_table(piv.reset_index()))
        L.append("\nPer-cluster doppelganger rates (leave-one-cluster-out; cf. the paper's App. E).\n")
    L.append("## Method notes\n")
    L.append(
        "- Spectra are compressed by `MaskedPCA` (PCA with missing pixels; the bundle's mask) fitted on field "
        "and cluster stars together; compressions are cached in the bundle's `cache/`."
    )
    st = doc["settings"]
    ksw = st.get("k_sweep", {})
    if ksw:
        how = (
            f"one K = {ksw['truncate_from']} compression whose leading components serve every smaller K (with "
            "missing pixels this approximates, but is not identical to, a separate fit per K)"
            if ksw.get("truncate_from")
            else "a separate compression for every K"
        )
        L.append(f"- K sweep: {how}.")
    if "top_n" in st:
        L.append(
            f"- Table 1 and the spectra bars of Fig. 4: {st['top_n']['n_seeds']} compression seed(s) "
            f"({doc['seed']}…{doc['seed'] + st['top_n']['n_seeds'] - 1}); the paper used 10."
        )
    if "data_size" in st:
        L.append(
            f"- Fig. 5: {st['data_size']['n_trials']} trials per point (the paper used 50), K = "
            f"{', '.join(map(str, st['data_size']['ks']))}."
        )
    L.append(
        f"- Reproduce: `{doc.get('command') or 'python -m rsca_core reproduce --dataset DIR --out DIR'}`. All "
        "tables are in `results.json` and the CSV files (each row carries `label` and `seed`)."
    )
    return "\n".join(L) + "\n"


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

        path = ensure_default_dataset(progress=not args.quiet)
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
    doc = write_outputs(ds, results, settings, out, png=not args.no_png, command=command)
    if doc.get("png_warning"):
        print(f"warning: {doc['png_warning']}", file=sys.stderr)
    h = doc["headline"]
    print(f"[{ds.label}] done in {doc['timings_s']['total']:.0f} s; wrote {out / 'report.md'}")
    for key, txt in (
        ("spectra_k30_all_axes", "spectra K=30 all axes"),
        ("spectra_k30_top4", "top 4 axes"),
        ("abundance_subset", "abundance subset"),
        ("best_k", "best K"),
    ):
        if key in h:
            print(f"  {txt}: {_fmt(h[key])}   (paper: {_fmt(PAPER_RESULTS[key])})")
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="run every experiment of the paper on a dataset (tables, figures, report)",
        description="Reproduce the paper's quantitative results (Fig. 2, 3, 4, 5, 9/10, Table 1) on a dataset "
        "bundle: writes results.json, one CSV and one PNG per experiment and report.md (our numbers "
        "beside the paper's, labelled simulated/real, seed recorded).",
    )
    p.add_argument("--dataset", required=True, help="dataset bundle directory ('default' = the simulated default)")
    p.add_argument("--out", required=True, help="output directory (created; our files in it are replaced)")
    p.add_argument(
        "--quick", action="store_true", help="one K=30 compression, one seed, 10 data-size trials (a few minutes)"
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
        help="K values of the sweep, comma-separated (default 5,10,15,20,25,30,40,50,60; quick up to 30)",
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
    p.add_argument("--no-png", action="store_true", help="skip the PNG figures (CSV, JSON and report only)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)
