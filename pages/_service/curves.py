"""The paper's experiments (rsca_core.experiments) for the Curves page's background jobs."""

from __future__ import annotations

from rsca_core.constants import PAPER_SUBSET

from . import config
from .config import K_MIN
from .datasets import SEED, load
from .errors import UserError, short
from .jobs import UnitProgress, compression_progress, exclusive
from .settings import parse_int, parse_int_list, parse_species

EXPERIMENTS = ("k_sweep", "top_n", "data_size", "ablation", "methods")
#: per-job caps, shown beside the Curves form
CAPS = {"k_values": 12, "seeds": 5, "data_size_ks": 3, "trials": 100}


def _compressions_first(ds, ks, report):
    """Compute the exact compressions of ``ks`` not on disk yet, each EM pass reported ("compressing
    K=40 (2/3): pass 7, change 3.1e-03 → target 1e-04"); returns the ``report`` for what follows."""
    missing = [k for k in dict.fromkeys(ks) if not ds.has_compression(k, SEED)]
    if not missing:
        return report
    for i, k in enumerate(missing):
        what = f"compressing K={k} ({i + 1}/{len(missing)} not on disk yet)"
        a, b = 0.5 * i / len(missing), 0.5 * (i + 1) / len(missing)
        with exclusive(f"compress:{ds.path}:{k}:{SEED}"):
            ds.compress(k, seed=SEED, progress=compression_progress(report, what, a, b))
    return lambda f, t: report(0.5 + 0.5 * f, t)


def _k_sweep(ds, params, report, experiments, plotting):
    ks = parse_int_list(params.get("ks"), "K values", K_MIN, config.k_max(), max_len=CAPS["k_values"])
    report = _compressions_first(ds, ks, report)
    bar = UnitProgress(2 * len(ks), report, "K sweep")
    table = experiments.k_sweep(ds, ks=ks, progress=bar)
    return table, plotting.fig_k_sweep(table, ds.label)


def _top_n(ds, params, report, experiments, plotting):
    k = parse_int(params.get("k"), "K", 2, config.k_max())
    n_seeds = parse_int(params.get("n_seeds"), "seeds", 1, CAPS["seeds"])
    report = _compressions_first(ds, [k], report)
    ns = [n for n in range(1, 8) if n < k]
    bar = UnitProgress(n_seeds, report, f"top-N table, {n_seeds} compression seed(s)")
    table = experiments.top_n_table(ds, k=k, ns=ns, n_seeds=n_seeds, progress=bar)
    return table, plotting.fig_top_n(table, ds.label)


def _data_size(ds, params, report, experiments, plotting):
    ks = parse_int_list(params.get("ks"), "K values", K_MIN, config.k_max(), max_len=CAPS["data_size_ks"])
    n_trials = parse_int(params.get("n_trials"), "trials", 1, CAPS["trials"])
    report = _compressions_first(ds, ks, report)
    counts = experiments.default_cluster_counts(int((ds.cluster_sizes() >= 2).sum()))
    bar = UnitProgress(len(ks) * len(counts) * n_trials, report, "data-size curve")
    table = experiments.data_size_curve(ds, ks=ks, n_clusters=counts, n_trials=n_trials, progress=bar)
    return table, plotting.fig_data_size(table, ds.label)


def _ablation(ds, params, report, experiments, plotting):
    k = parse_int(params.get("k"), "K", 2, config.k_max())
    sub = parse_species(params.get("species") or PAPER_SUBSET)
    report = _compressions_first(ds, [k], report)
    bar = UnitProgress(3 * 3, report, "ablation")
    table = experiments.ablation(ds, k=k, subset=sub, progress=bar)
    return table, plotting.fig_ablation(table, ds.label)


def _methods(ds, params, report, experiments, plotting):
    """RSCA vs RCA, LDA and NCA on the spectra (the exact K compression) and an abundance subset."""
    from rsca_core.learners import METHODS

    k = parse_int(params.get("k"), "K", 2, config.k_max())
    sub = parse_species(params.get("species") or PAPER_SUBSET)
    report = _compressions_first(ds, [k], report)
    bar = UnitProgress(2 * len(METHODS), report, "methods")
    res = experiments.method_comparison(ds, k=k, subset=sub, methods=METHODS, progress=bar)
    return res["table"], plotting.fig_methods(res["table"], ds.label)


_RUNNERS = {
    "k_sweep": _k_sweep,
    "top_n": _top_n,
    "data_size": _data_size,
    "ablation": _ablation,
    "methods": _methods,
}


def run_experiment(name: str, key, params: dict, report=None):
    """Run one of the paper's experiments on a dataset; returns (table DataFrame, plotly Figure).

    Every K uses its exact compression (``Dataset.compress``, as ``evaluate`` and ``reproduce``): one
    not on disk yet is computed in the job and cached (minutes each on a big survey; the caps bound
    how many one job may ask)."""
    from rsca_core import experiments, plotting

    if name not in _RUNNERS:
        raise UserError(f"unknown experiment {short(name)!r}")
    if not isinstance(params, dict):
        raise UserError("the experiment's parameters are not valid: reload the page")
    ds = load(key)
    return _RUNNERS[name](ds, params, report or (lambda f, t: None), experiments, plotting)
