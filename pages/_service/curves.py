"""The paper's experiments (rsca_core.experiments) for the Curves page's background jobs."""

from __future__ import annotations

from rsca_core.constants import PAPER_SUBSET

from . import config
from .config import K_MIN
from .datasets import compression_ready, load
from .errors import UserError, short
from .jobs import UnitProgress
from .settings import parse_int, parse_int_list, parse_species

EXPERIMENTS = ("k_sweep", "top_n", "data_size", "ablation", "methods")
#: per-job caps, shown beside the Curves form
CAPS = {"k_values": 12, "seeds": 5, "data_size_ks": 3, "trials": 100}


def _k_sweep(ds, params, report, experiments, plotting):
    ks = parse_int_list(params.get("ks"), "K values", K_MIN, config.k_max(), max_len=CAPS["k_values"])
    bar = UnitProgress(2 * len(ks), report, "K sweep")
    table = experiments.k_sweep(ds, ks=ks, truncate_from=config.k_fit(), progress=bar)
    return table, plotting.fig_k_sweep(table, ds.label)


def _top_n(ds, params, report, experiments, plotting):
    kf = config.k_fit()
    k = parse_int(params.get("k"), "K", 2, config.k_max())
    n_seeds = parse_int(params.get("n_seeds"), "seeds", 1, CAPS["seeds"])
    ns = [n for n in range(1, 8) if n < k]
    bar = UnitProgress(n_seeds, report, f"top-N table, {n_seeds} compression seed(s)")
    table = experiments.top_n_table(
        ds, k=k, ns=ns, n_seeds=n_seeds, truncate_from=kf if k <= kf else None, progress=bar
    )
    return table, plotting.fig_top_n(table, ds.label)


def _data_size(ds, params, report, experiments, plotting):
    ks = parse_int_list(params.get("ks"), "K values", K_MIN, config.k_max(), max_len=CAPS["data_size_ks"])
    n_trials = parse_int(params.get("n_trials"), "trials", 1, CAPS["trials"])
    counts = experiments.default_cluster_counts(int((ds.cluster_sizes() >= 2).sum()))
    bar = UnitProgress(len(ks) * len(counts) * n_trials, report, "data-size curve")
    table = experiments.data_size_curve(
        ds, ks=ks, n_clusters=counts, n_trials=n_trials, truncate_from=config.k_fit(), progress=bar
    )
    return table, plotting.fig_data_size(table, ds.label)


def _ablation(ds, params, report, experiments, plotting):
    kf = config.k_fit()
    k = parse_int(params.get("k"), "K", 2, config.k_max())
    sub = parse_species(params.get("species") or PAPER_SUBSET)
    bar = UnitProgress(3 * 3, report, "ablation")
    table = experiments.ablation(ds, k=k, subset=sub, truncate_from=kf if k <= kf else None, progress=bar)
    return table, plotting.fig_ablation(table, ds.label)


def _methods(ds, params, report, experiments, plotting):
    """RSCA vs RCA, LDA and NCA on the spectra (leading K of the K_FIT PCA) and an abundance subset."""
    from rsca_core.learners import METHODS

    kf = config.k_fit()
    k = parse_int(params.get("k"), "K", 2, config.k_max())
    sub = parse_species(params.get("species") or PAPER_SUBSET)
    bar = UnitProgress(2 * len(METHODS), report, "methods")
    res = experiments.method_comparison(
        ds, k=k, subset=sub, methods=METHODS, truncate_from=kf if k <= kf else None, progress=bar
    )
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

    Spectra compressions are cut from the dataset's K=k_fit one (``truncate_from``), except the
    extra seeds of the top-N table, which need compressions of their own (slow on big surveys)."""
    from rsca_core import experiments, plotting

    if name not in _RUNNERS:
        raise UserError(f"unknown experiment {short(name)!r}")
    if not isinstance(params, dict):
        raise UserError("the experiment's parameters are not valid: reload the page")
    ds = load(key)
    if not compression_ready(key):
        raise UserError(f"the spectra of dataset {key!r} are not compressed yet: prepare it on the Data page")
    return _RUNNERS[name](ds, params, report or (lambda f, t: None), experiments, plotting)
