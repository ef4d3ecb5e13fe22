"""Matplotlib figures of the experiment tables: the PNG and PDF files ``reproduce`` writes.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display, no browser), so a
server without Chrome or a screen writes every figure. Every function takes what an experiment of
:mod:`rsca_core.experiments` returned and an optional ``label`` ("simulated" / "real"; by default
read from the table) and returns a :class:`matplotlib.figure.Figure`. The label is in every title
(figures of simulated data say "SIMULATED data"); paper values (``PAPER_RESULTS``) are black open
diamonds; legends sit outside the axes, so they never cover data. The dashboard keeps its Plotly
figures (:mod:`rsca_core.plotting`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .constants import PAPER_RESULTS
from .fileio import atomic_write
from .labels import (
    CLUSTER_PALETTE,
    METHOD_COLOURS,
    cluster_colours,
    data_label,
    data_tag,
    label_name,
    require_columns,
    table_seed,
)

#: Colours of the paper's figures: CV blue / no-CV green (Fig. 2); raw blue, scaled green,
#: transformed red (Fig. 4); intra-cluster blue, inter-cluster green (Fig. 9/10).
BLUE, GREEN, RED, ORANGE, GREY = "#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#7f7f7f"
VARIANT_COLOURS = {"raw": BLUE, "scaled": GREEN, "transformed": RED}
#: Markers cycled with the shared cluster colours, so clusters stay apart in print and in grey.
CLUSTER_MARKERS = ("o", "s", "^")
PAPER_STYLE = dict(marker="D", markerfacecolor="none", markeredgecolor="black", markersize=8, markeredgewidth=1.5)
FORMATS = ("png", "pdf")
DPI = 150


def cluster_styles(names) -> dict[str, dict]:
    """{cluster: matplotlib style (color, marker)}, stable by name: the colour is the cluster's colour on
    every dashboard page (:func:`rsca_core.labels.cluster_colours`), the marker cycles o, s, ^.

    Examples
    --------
    >>> s = cluster_styles([f"NGC {i}" for i in range(22)])
    >>> len({(v["color"], v["marker"]) for v in s.values()})
    22
    """
    colours = cluster_colours(names)
    return {
        name: dict(color=c, marker=CLUSTER_MARKERS[i % len(CLUSTER_MARKERS)])
        for i, (name, c) in enumerate(colours.items())
    }


def _figure(title: str, label: str, seed, figsize) -> Figure:
    """A constrained-layout figure on an Agg canvas whose title says simulated/real and the seed."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"{title}\n({data_tag(label, seed)})", fontsize=11)
    return fig


def _legend_below(fig, ax, ncols=2, **kw):
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False, fontsize=8, **kw)


def _rate_axis(ax, ylabel="global doppelganger rate"):
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


# ---------------------------------------------------------------------------- Fig. 2
def fig_k_sweep(table: pd.DataFrame, label: str | None = None) -> Figure:
    """Global rate vs K with (blue) and without (green) cross-validation; the paper's K = 30 value."""
    require_columns(table, ["k", "cv", "global_rate"], "fig_k_sweep")
    label = data_label(table, label)
    fig = _figure("Doppelganger rate vs PCA dimensionality (Fig. 2)", label, table_seed(table), (6.4, 4.4))
    ax = fig.add_subplot()
    for cv, name, colour in ((True, "with CV (leave one cluster out)", BLUE), (False, "without CV", GREEN)):
        sub = table[table["cv"] == cv].sort_values("k")
        if len(sub):
            ax.plot(sub["k"], sub["global_rate"], "o-", color=colour, label=name)
    ax.plot(
        [PAPER_RESULTS["best_k"]],
        [PAPER_RESULTS["spectra_k30"]],
        **PAPER_STYLE,
        ls="none",
        label="paper, APOGEE DR16 (K = 30, CV)",
    )
    ax.set_xlabel("number of PCA components K")
    _rate_axis(ax)
    _legend_below(fig, ax, ncols=3)
    return fig


# ---------------------------------------------------------------------------- Table 1
def fig_top_n(table: pd.DataFrame, label: str | None = None) -> Figure:
    """Mean ± std of the global rate keeping the top N axes (and all axes), paper values beside."""
    require_columns(table, ["n_axes", "axes", "mean", "std"], "fig_top_n")
    label = data_label(table, label)
    t = table.reset_index(drop=True)
    x = np.arange(len(t))
    n_seeds = int(t["n_seeds"].max()) if "n_seeds" in t.columns else None
    name = "this dataset (1 compression seed)" if n_seeds == 1 else f"this dataset (mean ± std, {n_seeds} seeds)"
    fig = _figure("Doppelganger rate keeping the top-N RSCA axes (Table 1)", label, table_seed(table), (6.4, 4.4))
    ax = fig.add_subplot()
    ax.errorbar(x, t["mean"], yerr=t["std"].fillna(0), fmt="o-", color=BLUE, capsize=3, label=name)
    if "paper_mean" in t.columns and t["paper_mean"].notna().any():
        p = t["paper_mean"].notna().to_numpy()
        ax.errorbar(
            x[p] + 0.15,
            t.loc[p, "paper_mean"],
            yerr=t.loc[p, "paper_std"].fillna(0),
            capsize=3,
            ecolor="black",
            ls="none",
            **PAPER_STYLE,
            label="paper, APOGEE DR16",
        )
    k = int(t["k"].iloc[0]) if "k" in t.columns else int(t["n_axes"].max())
    ax.set_xticks(x, t["axes"].tolist())
    ax.set_xlabel(f"RSCA axes kept (of a K = {k} map)")
    _rate_axis(ax)
    _legend_below(fig, ax)
    return fig


# ---------------------------------------------------------------------------- Fig. 4
def _grouped_bars(ax, table, series_col, value, styles, paper=None, err=None):
    """Bars of ``value`` per representation (x) and per ``series_col`` (one colour each, {series:
    (colour, legend name)} in ``styles``), values printed on top; ``paper`` = (series, {representation:
    value}, legend name) draws the paper's values as open diamonds beside that series' bars, so that
    they cover neither a bar nor its value."""
    order = list(dict.fromkeys(table["representation"]))
    series = list(dict.fromkeys(table[series_col]))
    width = 0.8 / len(series)
    x = np.arange(len(order))
    for i, v in enumerate(series):
        sub = table[table[series_col] == v].set_index("representation").reindex(order)
        yerr = sub[err].fillna(0).to_numpy() if err in sub.columns else None
        colour, name = styles[v]
        bars = ax.bar(
            x + (i - (len(series) - 1) / 2) * width, sub[value], width, yerr=yerr, capsize=2, color=colour, label=name
        )
        ax.bar_label(bars, labels=[f"{y:.3f}" if pd.notna(y) else "n/a" for y in sub[value]], fontsize=7, padding=2)
    if paper is not None and paper[0] in series:
        i = series.index(paper[0])
        pts = [(order.index(r), y) for r, y in paper[1].items() if r in order and pd.notna(y)]
        side = -1 if i == 0 else 1  # into the gap between groups: left of a first bar, else right
        xs = [j + (i - (len(series) - 1) / 2 + side * 0.5) * width + side * 0.06 for j, _ in pts]
        if pts:
            ax.plot(xs, [y for _, y in pts], ls="none", **PAPER_STYLE, label=paper[2])
    ax.set_xticks(x, order)
    ax.margins(y=0.15)
    _rate_axis(ax)


def fig_ablation(table: pd.DataFrame, label: str | None = None) -> Figure:
    """Grouped bars: representation × {raw, scaled, transformed}, error bars over seeds, values printed."""
    require_columns(table, ["representation", "variant", "mean"], "fig_ablation")
    label = data_label(table, label)
    fig = _figure("Doppelganger rate by representation and method (Fig. 4)", label, table_seed(table), (6.8, 4.6))
    ax = fig.add_subplot()
    styles = {v: (VARIANT_COLOURS.get(v, GREY), f"on {v}") for v in table["variant"]}
    paper = None
    if "paper" in table.columns and table["paper"].notna().any():
        p = table[table["paper"].notna()]
        paper = (p["variant"].iloc[0], dict(zip(p["representation"], p["paper"])), "paper, APOGEE DR16 (transformed)")
    _grouped_bars(ax, table, "variant", "mean", styles, paper, err="std")
    _legend_below(fig, ax, ncols=4)
    return fig


# ---------------------------------------------------------------------------- Fig. 5
def fig_data_size(table: pd.DataFrame, label: str | None = None) -> Figure:
    """Expected global rate vs number of training clusters, one line per K (± standard error).

    Points where some draws could not be fitted (too few cluster stars for K axes) are left out.
    """
    require_columns(table, ["k", "n_train_clusters", "mean_rate"], "fig_data_size")
    label = data_label(table, label)
    fig = _figure("Doppelganger rate vs number of training clusters (Fig. 5)", label, table_seed(table), (6.4, 4.4))
    ax = fig.add_subplot()
    for i, (k, sub) in enumerate(table.groupby("k", sort=True)):
        sub = sub.sort_values("n_train_clusters")
        if "fraction_unfit" in sub.columns:
            sub = sub[sub["fraction_unfit"] == 0]
        err = sub["sem"].fillna(0) if "sem" in sub.columns else None
        ax.errorbar(
            sub["n_train_clusters"],
            sub["mean_rate"],
            yerr=err,
            fmt="o-",
            capsize=3,
            color=CLUSTER_PALETTE[i % len(CLUSTER_PALETTE)],
            label=f"K = {k}",
        )
    ax.set_xlabel("number of training clusters")
    _rate_axis(ax, "expected global doppelganger rate")
    _legend_below(fig, ax, ncols=4)
    return fig


# ---------------------------------------------------------------------------- Fig. 3
def _robust_range(v, extra):
    lo, hi = np.percentile(v, [0.2, 99.8]) if len(v) else (0.0, 1.0)
    extra = extra[np.isfinite(extra)]
    if len(extra):
        lo, hi = min(lo, extra.min()), max(hi, extra.max())
    pad = 0.03 * (hi - lo if hi > lo else 1.0)
    return lo - pad, hi + pad


def fig_feature_relations(result: dict, label: str | None = None, bins: int = 80) -> Figure:
    """Density of the field in ([Fe/H], feature) for the top features and (VHELIO_AVG, feature) for the
    radial-velocity example, with the cluster stars overlaid, one colour and marker per cluster."""
    if not isinstance(result, dict) or "stars" not in result:
        raise ValueError("fig_feature_relations: expected the dict returned by experiments.feature_relations")
    label = data_label(result, label)
    st, s = result["stars"], result.get("settings", {})
    vf = s.get("vhelio_feature")
    panels = [(f"feature_{i}", "fe_h", f"Feature #{i}", "[Fe/H]") for i in range(1, int(s.get("n_features", 3)) + 1)]
    if vf is not None and f"feature_{vf}" in st.columns:
        panels.append((f"feature_{vf}", "vhelio_avg", f"Feature #{vf}", "VHELIO_AVG (km/s)"))
    fig = _figure(
        f"Top RSCA features (K = {s.get('k', '?')}, Fig. 3)", label, s.get("seed"), (3.2 * len(panels) + 1.0, 4.6)
    )
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    field, clust = st[~st["is_cluster"]], st[st["is_cluster"]]
    styles = cluster_styles(clust["cluster"])
    mesh = None
    for ax, (fx, fy, nx, ny) in zip(axes, panels):
        x, y = field[fy].to_numpy(float), field[fx].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        rx = _robust_range(x[ok], clust[fy].to_numpy(float))
        ry = _robust_range(y[ok], clust[fx].to_numpy(float))
        H, xe, ye = np.histogram2d(x[ok], y[ok], bins=bins, range=[rx, ry])
        mesh = ax.pcolormesh(
            xe, ye, np.where(H > 0, H, np.nan).T, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(2.0, H.max()))
        )
        for name, grp in clust.groupby("cluster", sort=True):
            ax.scatter(grp[fy], grp[fx], s=16, edgecolors="black", linewidths=0.4, label=name, **styles[str(name)])
        ax.set(xlabel=ny, ylabel=nx, xlim=rx, ylim=ry, title=f"{nx} vs {ny}")
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes), label="field stars per bin", shrink=0.8)
    _legend_below(fig, axes[0], ncols=min(8, max(1, len(styles))), title="open-cluster stars", title_fontsize=8)
    return fig


def fig_feature_correlations(table: pd.DataFrame, label: str | None = None) -> Figure:
    """Heatmap of the Pearson correlation of each RSCA feature with each observed label."""
    if isinstance(table, dict):
        table = table["correlations"]
    require_columns(table, ["feature"], "fig_feature_correlations")
    label = data_label(table, label)
    skip = {"feature", "axis", "scale", "r2_all_labels", "seed", "label"}
    cols = [c for c in table.columns if c not in skip]
    rows = [f"#{a}" for a in table["axis"]] if "axis" in table else list(table["feature"])
    fig = _figure(
        "Correlation of RSCA features with observed labels",
        label,
        table_seed(table),
        (max(6.0, 0.32 * len(cols) + 2.5), 0.32 * len(rows) + 2.4),
    )
    ax = fig.add_subplot()
    im = ax.imshow(table[cols].to_numpy(float), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), [label_name(c) for c in cols], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylabel("RSCA feature (most discriminative first)")
    fig.colorbar(im, ax=ax, label="Pearson r")
    return fig


# ---------------------------------------------------------------------------- Fig. 9/10
SHORT_INPUTS = {"spectra": "spectra", "abundances": "all abund.", "subset": "abund. subset"}


def fig_distance_histograms(result: dict, label: str | None = None, inputs=None, ncols: int = 4) -> Figure:
    """Grid of per-cluster histograms of intra- (blue) vs inter-cluster (green) distances; the median
    intra-cluster distance dashed; each panel's title gives the cluster's doppelganger rate.

    With several representations they are side by side for each cluster, as in Fig. 9/10.
    """
    if not isinstance(result, dict) or "histograms" not in result:
        raise ValueError("fig_distance_histograms: expected the dict returned by experiments.distance_histograms")
    label = data_label(result, label)
    h, summ = result["histograms"], result["summary"]
    inputs = list(inputs or dict.fromkeys(summ["input"]))
    clusters = [c for c in dict.fromkeys(summ["cluster"]) if (h["cluster"] == c).any()] if len(h) else []
    panels = [(c, i) for c in clusters for i in inputs]
    ncols = max(len(inputs), ncols - ncols % len(inputs))
    nrows = max(1, math.ceil(len(panels) / ncols))
    g = summ.drop_duplicates("input").set_index("input")["global_rate"] if len(summ) else {}
    glob = ", ".join(f"{SHORT_INPUTS.get(i, i)} {g[i]:.4f}" for i in inputs if i in g and pd.notna(g[i]))
    fig = _figure(
        f"Intra- vs inter-cluster distances (Fig. 9/10; global rate: {glob})",
        label,
        table_seed(summ),
        (2.4 * ncols, 1.6 * nrows + 1.2),
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    info = summ.set_index(["input", "cluster"])
    for ax, (c, i) in zip(axes, panels):
        sub = h[(h["cluster"] == c) & (h["input"] == i)]
        edges = np.append(sub["left"].to_numpy(float), float(sub["right"].iloc[-1]))
        ax.stairs(
            sub["inter_density"].fillna(0),
            edges,
            fill=True,
            color=GREEN,
            alpha=0.55,
            label="inter-cluster (member, field star)",
        )
        ax.stairs(sub["intra_density"], edges, fill=True, color=BLUE, alpha=0.55, label="intra-cluster (member pairs)")
        r = info.loc[(i, c)] if (i, c) in info.index else None
        if r is not None and pd.notna(r["median_intra"]):
            ax.axvline(float(r["median_intra"]), color="black", ls="--", lw=1, label="median intra-cluster distance")
        rate = "n/a" if r is None or pd.isna(r["rate"]) else f"{r['rate']:.3f}"
        ax.set_title(f"{c} · {SHORT_INPUTS.get(i, i)} · rate {rate}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    fig.supxlabel("distance in the learned space (intra: member pairs; inter: member–field pairs)", fontsize=9)
    fig.supylabel("density", fontsize=9)
    if panels:
        _legend_below(fig, axes[0], ncols=3)
    return fig


# ---------------------------------------------------------------------------- beyond the paper


def fig_methods(table: pd.DataFrame, label: str | None = None) -> Figure:
    """Grouped bars: global rate of each method (RSCA, RCA, LDA, NCA) on each representation, values
    printed; the paper's RSCA values (spectra K = 30, abundance subset) as open diamonds."""
    require_columns(table, ["representation", "method", "global_rate"], "fig_methods")
    label = data_label(table, label)
    fig = _figure(
        "RSCA against the metric learners it cites (leave-one-cluster-out)", label, table_seed(table), (7.0, 4.6)
    )
    ax = fig.add_subplot()
    names = dict(zip(table["method"], table.get("method_name", table["method"])))
    styles = {m: (METHOD_COLOURS.get(m, GREY), names[m]) for m in table["method"]}
    paper = None
    if "k" not in table.columns or (table["k"].dropna() == 30).all():  # the paper's numbers are for K = 30
        values = {"spectra": PAPER_RESULTS["spectra_k30"], "abundance subset": PAPER_RESULTS["abundance_subset"]}
        paper = ("rsca", values, "paper, APOGEE DR16 (RSCA)")
    _grouped_bars(ax, table, "method", "global_rate", styles, paper)
    _legend_below(fig, ax, ncols=5)
    return fig


def fig_weights(table: pd.DataFrame, label: str | None = None) -> Figure:
    """Leave-one-cluster-out rate vs K with the plain and the inverse-variance-weighted compression."""
    require_columns(table, ["k", "compression_weights", "global_rate"], "fig_weights")
    label = data_label(table, label)
    fig = _figure("Compression that uses the flux errors", label, table_seed(table), (6.4, 4.4))
    ax = fig.add_subplot()
    for w, name, colour in (
        ("none", "plain PCA (every observed pixel alike)", BLUE),
        ("ivar", "PCA weighted by 1/σ² (capped)", RED),
    ):
        sub = table[table["compression_weights"] == w].sort_values("k")
        if len(sub):
            ax.plot(sub["k"], sub["global_rate"], "o-", color=colour, label=name)
    ax.set_xticks(sorted(set(table["k"])))
    ax.set_xlabel("number of PCA components K")
    _rate_axis(ax)
    _legend_below(fig, ax)
    return fig


# ---------------------------------------------------------------------------- files
def save_figure(fig: Figure, directory: str | Path, stem: str, formats=FORMATS) -> list[Path]:
    """Write ``fig`` as ``directory/stem.<fmt>`` for each format, each file atomically. Returns the paths.

    Examples
    --------
    >>> import tempfile
    >>> fig = _figure("demo", "simulated", 0, (2, 2))
    >>> [p.name for p in save_figure(fig, tempfile.mkdtemp(), "demo")]
    ['demo.png', 'demo.pdf']
    """
    out = []
    for fmt in formats:
        path = Path(directory) / f"{stem}.{fmt}"
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=DPI))
        out.append(path)
    return out


def experiment_figures(name: str, res: dict, label: str) -> dict[str, Figure]:
    """{file stem: figure} for one experiment's result as ``run_experiments`` returns it."""
    if name == "features":
        return {
            "features": fig_feature_relations(res["result"], label),
            "features_correlations": fig_feature_correlations(res["table"], label),
        }
    if name == "distances":
        return {"distances": fig_distance_histograms(res["result"], label)}
    return {name: FIGURES[name](res["table"], label)}


#: experiment name → figure function of its table (``features``/``distances`` take the result dict)
FIGURES = {
    "k_sweep": fig_k_sweep,
    "top_n": fig_top_n,
    "ablation": fig_ablation,
    "data_size": fig_data_size,
    "features": fig_feature_relations,
    "distances": fig_distance_histograms,
    "methods": fig_methods,
    "weights": fig_weights,
}
