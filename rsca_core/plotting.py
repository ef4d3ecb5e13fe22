"""Plotly figures of the experiment tables of :mod:`rsca_core.experiments` (no Dash here).

Every function takes the table (or dict) an experiment returned and an optional ``label``
("simulated" / "real"; by default read from the table's ``label`` column) and returns a
``plotly.graph_objects.Figure``. The label is part of every title, so a figure made from simulated
data always says "simulated". Paper values (SPEC §3) are drawn as black open markers where the
paper has a counterpart.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .constants import PAPER_RESULTS
from .labels import METHOD_COLOURS, data_label, data_tag, label_name, require_columns, table_seed

#: Colours of the paper's figures: CV blue / no-CV green (Fig. 2); raw blue, scaled green,
#: transformed red (Fig. 4); cluster stars orange (Fig. 3).
BLUE, GREEN, RED, ORANGE, GREY = "#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#7f7f7f"
VARIANT_COLOURS = {"raw": BLUE, "scaled": GREEN, "transformed": RED}
#: x-axis title of every distance histogram (Explore's and the Clusters grid)
DISTANCE_TITLE = "distance in RSCA space"
K_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
PAPER_MARKER = dict(symbol="diamond-open", size=11, color="black", line=dict(width=2))


#: Pixels at the top of a figure kept free for plotly's modebar (the toolbar drawn over the top
#: right corner of an interactive figure, 25 px tall): titles start below it and no legend goes there.
MODEBAR_ROOM = 34


def figure_title(text: str, font_size: int | None = None, subtitle: str | None = None) -> dict:
    """A Plotly title dict: left-aligned, its top :data:`MODEBAR_ROOM` pixels below the figure's top
    edge, so the modebar never covers it (the figure's top margin must leave room for it), with an
    optional second line ``subtitle`` (a ``<br>`` in the title would move its first line up).

    Examples
    --------
    >>> figure_title("Rate vs K")["pad"]
    {'t': 34}
    """
    title = dict(text=text, x=0.01, xanchor="left", xref="container")
    title |= dict(y=1.0, yref="container", yanchor="top", pad=dict(t=MODEBAR_ROOM))
    if subtitle:
        title["subtitle"] = dict(text=subtitle)
    return title | (dict(font=dict(size=font_size)) if font_size else {})


def _title(text, label, seed=None, wrap=None):
    """The title with its data tag; ``wrap`` (default: for a title over 55 characters) puts the tag
    on a second line, so that a long title is not cut at a narrow figure's edge."""
    tag = data_tag(label, seed)
    if len(text) > 55 if wrap is None else wrap:
        return figure_title(text, subtitle=f"({tag})")
    return figure_title(f"{text} <span style='font-size:0.8em;color:#555'>({tag})</span>")


def _layout(fig, title, height=420, width=None, **kw):
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=height,
        width=width,
        margin=dict(l=60, r=20, t=MODEBAR_ROOM + 54, b=50),
        legend=dict(orientation="h", y=-0.18),
        **kw,
    )
    return fig


# ---------------------------------------------------------------------------- Fig. 2
def fig_k_sweep(table: pd.DataFrame, label: str | None = None) -> go.Figure:
    """Global rate vs K with (blue) and without (green) cross-validation; the paper's K = 30 value."""
    require_columns(table, ["k", "cv", "global_rate"], "fig_k_sweep")
    label = data_label(table, label)
    fig = go.Figure()
    for cv, name, colour in ((True, "with CV (leave one cluster out)", BLUE), (False, "without CV", GREEN)):
        sub = table[table["cv"] == cv].sort_values("k")
        if len(sub):
            fig.add_trace(
                go.Scatter(x=sub["k"], y=sub["global_rate"], mode="lines+markers", name=name, line=dict(color=colour))
            )
    fig.add_trace(
        go.Scatter(
            x=[PAPER_RESULTS["best_k"]],
            y=[PAPER_RESULTS["spectra_k30"]],
            mode="markers",
            name="paper, APOGEE DR16 (K = 30, CV)",
            marker=PAPER_MARKER,
        )
    )
    fig.update_xaxes(title="number of PCA components K")
    fig.update_yaxes(title="global doppelganger rate", rangemode="tozero")
    return _layout(fig, _title("Doppelganger rate vs PCA dimensionality", label, table_seed(table)))


# ---------------------------------------------------------------------------- Table 1
def fig_top_n(table: pd.DataFrame, label: str | None = None) -> go.Figure:
    """Mean ± std of the global rate keeping the top N axes (and all axes), paper values beside."""
    require_columns(table, ["n_axes", "axes", "mean", "std"], "fig_top_n")
    label = data_label(table, label)
    t = table.reset_index(drop=True)
    x = t["axes"].tolist()
    n_seeds = int(t["n_seeds"].max()) if "n_seeds" in t.columns else None
    name = (
        "this dataset (1 compression seed)"
        if n_seeds == 1
        else f"this dataset (mean ± std over {n_seeds} compression seeds)"
    )
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=t["mean"],
            mode="markers+lines",
            name=name,
            error_y=dict(type="data", array=t["std"].fillna(0)),
            line=dict(color=BLUE),
        )
    )
    if "paper_mean" in t.columns and t["paper_mean"].notna().any():
        p = t[t["paper_mean"].notna()]
        fig.add_trace(
            go.Scatter(
                x=p["axes"],
                y=p["paper_mean"],
                mode="markers",
                name="paper, APOGEE DR16",
                marker=PAPER_MARKER,
                error_y=dict(type="data", array=p["paper_std"].fillna(0), color="black"),
            )
        )
    k = int(t["k"].iloc[0]) if "k" in t.columns else int(t["n_axes"].max())
    fig.update_xaxes(title=f"RSCA axes kept (of a K = {k} map)", type="category")
    fig.update_yaxes(title="global doppelganger rate", rangemode="tozero")
    return _layout(fig, _title("Doppelganger rate keeping the top-N axes", label, table_seed(table)))


# ---------------------------------------------------------------------------- Fig. 4
def fig_ablation(table: pd.DataFrame, label: str | None = None) -> go.Figure:
    """Grouped bars: representation × {raw, scaled, transformed}, error bars over seeds."""
    require_columns(table, ["representation", "variant", "mean"], "fig_ablation")
    label = data_label(table, label)
    order = list(dict.fromkeys(table["representation"]))
    fig = go.Figure()
    for v in dict.fromkeys(table["variant"]):
        sub = table[table["variant"] == v].set_index("representation").reindex(order)
        err = sub["std"].fillna(0) if "std" in sub.columns else None
        fig.add_trace(
            go.Bar(
                x=order,
                y=sub["mean"],
                name=f"on {v}",
                offsetgroup=str(v),
                marker_color=VARIANT_COLOURS.get(v, GREY),
                error_y=None if err is None else dict(type="data", array=err),
                text=[f"{y:.3f}" if pd.notna(y) else "n/a" for y in sub["mean"]],
                textposition="outside",
            )
        )
    if "paper" in table.columns and table["paper"].notna().any():
        p = table[table["paper"].notna()]
        fig.add_trace(
            go.Scatter(
                x=p["representation"],
                y=p["paper"],
                mode="markers",
                name="paper, APOGEE DR16 (transformed)",
                marker=PAPER_MARKER,
                offsetgroup="transformed",  # over the bar it compares with, not the group's middle
            )
        )
    fig.update_layout(barmode="group", scattermode="group")
    fig.update_xaxes(title="input representation")
    fig.update_yaxes(title="global doppelganger rate", rangemode="tozero")
    return _layout(fig, _title("Doppelganger rate by representation and method", label, table_seed(table)))


# ---------------------------------------------------------------------------- beyond the paper
def fig_methods(table: pd.DataFrame, label: str | None = None) -> go.Figure:
    """Grouped bars: global rate of each method (RSCA, RCA, LDA, NCA) on each representation
    (:func:`~rsca_core.experiments.method_comparison`), values printed; the paper's RSCA values
    (spectra at K = 30, abundance subset) as open diamonds.

    Examples
    --------
    >>> t = pd.DataFrame({"representation": ["spectra"] * 2, "method": ["rsca", "rca"],
    ...                   "method_name": ["RSCA (paper)", "RCA"], "global_rate": [0.02, 0.03], "k": [30, 30],
    ...                   "label": "simulated"})
    >>> [tr.name for tr in fig_methods(t).data]
    ['RSCA (paper)', 'RCA', 'paper, APOGEE DR16 (RSCA)']
    """
    require_columns(table, ["representation", "method", "global_rate"], "fig_methods")
    label = data_label(table, label)
    order = list(dict.fromkeys(table["representation"]))
    names = dict(zip(table["method"], table["method_name"] if "method_name" in table.columns else table["method"]))
    fig = go.Figure()
    for m in dict.fromkeys(table["method"]):
        sub = table[table["method"] == m].set_index("representation").reindex(order)
        fig.add_trace(
            go.Bar(
                x=order,
                y=sub["global_rate"],
                name=names[m],
                offsetgroup=str(m),
                marker_color=METHOD_COLOURS.get(m, GREY),
                text=[f"{y:.3f}" if pd.notna(y) else "n/a" for y in sub["global_rate"]],
                textposition="outside",
            )
        )
    at_k30 = "k" not in table.columns or (table["k"].dropna() == 30).all()  # the paper's numbers are for K = 30
    paper = {"spectra": PAPER_RESULTS["spectra_k30"], "abundance subset": PAPER_RESULTS["abundance_subset"]}
    pts = [(r, y) for r, y in paper.items() if r in order]
    if at_k30 and "rsca" in set(table["method"]) and pts:
        fig.add_trace(
            go.Scatter(
                x=[r for r, _ in pts],
                y=[y for _, y in pts],
                mode="markers",
                name="paper, APOGEE DR16 (RSCA)",
                marker=PAPER_MARKER,
                offsetgroup="rsca",  # over RSCA's bar, not the group's middle
            )
        )
    fig.update_layout(barmode="group", scattermode="group")
    fig.update_xaxes(title="input representation")
    fig.update_yaxes(title="global doppelganger rate", rangemode="tozero")
    title = "RSCA against the metric learners it cites (leave-one-cluster-out)"
    return _layout(fig, _title(title, label, table_seed(table)))


# ---------------------------------------------------------------------------- Fig. 5
def fig_data_size(table: pd.DataFrame, label: str | None = None) -> go.Figure:
    """Expected global rate vs number of training clusters, one line per K (± standard error).

    Points where some draws could not be fitted (too few cluster stars for K axes) are left out.
    """
    require_columns(table, ["k", "n_train_clusters", "mean_rate"], "fig_data_size")
    label = data_label(table, label)
    fig = go.Figure()
    for i, (k, sub) in enumerate(table.groupby("k", sort=True)):
        sub = sub.sort_values("n_train_clusters")
        if "fraction_unfit" in sub.columns:
            sub = sub[sub["fraction_unfit"] == 0]
        n = int(sub["n_trials"].max()) if "n_trials" in sub.columns and len(sub) else 0
        fig.add_trace(
            go.Scatter(
                x=sub["n_train_clusters"],
                y=sub["mean_rate"],
                mode="lines+markers",
                name=f"K = {k}",
                line=dict(color=K_COLOURS[i % len(K_COLOURS)]),
                error_y=dict(type="data", array=sub["sem"].fillna(0)) if "sem" in sub else None,
                hovertemplate=f"K = {k}<br>%{{x}} training clusters<br>rate %{{y:.4f}}<extra>{n} trials</extra>",
            )
        )
    fig.update_xaxes(title="number of training clusters")
    fig.update_yaxes(title="expected global doppelganger rate", rangemode="tozero")
    return _layout(fig, _title("Doppelganger rate vs number of training clusters", label, table_seed(table)))


# ---------------------------------------------------------------------------- Fig. 3
def fig_feature_relations(result: dict, label: str | None = None, bins: int = 80) -> go.Figure:
    """Density of the field in (feature, [Fe/H]) for the top features and (feature, VHELIO_AVG) for
    the radial-velocity example, with the cluster stars overlaid in orange."""
    if not isinstance(result, dict) or "stars" not in result:
        raise ValueError("fig_feature_relations: expected the dict returned by experiments.feature_relations")
    label = data_label(result, label)
    st = result["stars"]
    s = result.get("settings", {})
    n_feat = int(s.get("n_features", 3))
    vf = s.get("vhelio_feature")
    panels = [(f"feature_{i}", "fe_h", f"Feature #{i}", "[Fe/H]") for i in range(1, n_feat + 1)]
    if vf is not None and f"feature_{vf}" in st.columns:
        panels.append((f"feature_{vf}", "vhelio_avg", f"Feature #{vf}", "VHELIO_AVG (km/s)"))
    fig = make_subplots(
        rows=1, cols=len(panels), horizontal_spacing=0.06, subplot_titles=[f"{a} vs {b}" for _, _, a, b in panels]
    )
    field, clust = st[~st["is_cluster"]], st[st["is_cluster"]]
    for j, (fx, fy, nx, ny) in enumerate(panels, start=1):
        x, y = field[fy].to_numpy(float), field[fx].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        # robust ranges (0.2–99.8 percentiles of the field, widened to include every cluster star)
        rng = []
        for v, c in ((x[ok], clust[fy].to_numpy(float)), (y[ok], clust[fx].to_numpy(float))):
            lo, hi = np.percentile(v, [0.2, 99.8]) if len(v) else (0.0, 1.0)
            c = c[np.isfinite(c)]
            if len(c):
                lo, hi = min(lo, c.min()), max(hi, c.max())
            pad = 0.03 * (hi - lo if hi > lo else 1.0)
            rng.append((lo - pad, hi + pad))
        H, xe, ye = np.histogram2d(x[ok], y[ok], bins=bins, range=rng)
        z = np.log10(np.where(H > 0, H, np.nan))
        fig.add_trace(
            go.Heatmap(
                x=0.5 * (xe[1:] + xe[:-1]),
                y=0.5 * (ye[1:] + ye[:-1]),
                z=z.T,
                colorscale="Blues",
                showscale=j == len(panels),
                colorbar=dict(title="log10 N", len=0.8),
                name="field stars",
                hovertemplate=f"{ny} %{{x:.2f}}<br>{nx} %{{y:.2f}}<br>log10 N %{{z:.1f}}<extra>field</extra>",
            ),
            row=1,
            col=j,
        )
        fig.add_trace(
            go.Scattergl(
                x=clust[fy],
                y=clust[fx],
                mode="markers",
                name="open-cluster stars",
                marker=dict(color=ORANGE, size=5, line=dict(width=0.5, color="black")),
                text=clust["cluster"],
                showlegend=j == 1,
                hovertemplate="%{text}<extra></extra>",
            ),
            row=1,
            col=j,
        )
        fig.update_xaxes(title_text=ny, range=list(rng[0]), row=1, col=j)
        fig.update_yaxes(title_text=nx, range=list(rng[1]), row=1, col=j)
    return _layout(
        fig,
        _title(f"Top RSCA features (K = {s.get('k', '?')})", label, s.get("seed")),
        height=420,
        width=max(700, 330 * len(panels)),
    )


def fig_feature_correlations(table: pd.DataFrame, label: str | None = None) -> go.Figure:
    """Heatmap of the Pearson correlation of each RSCA feature with each observed label."""
    if isinstance(table, dict):
        table = table["correlations"]
    require_columns(table, ["feature"], "fig_feature_correlations")
    label = data_label(table, label)
    skip = {"feature", "axis", "scale", "r2_all_labels", "seed", "label"}
    cols = [c for c in table.columns if c not in skip]
    names = [label_name(c) for c in cols]
    fig = go.Figure(
        go.Heatmap(
            z=table[cols].to_numpy(float),
            x=names,
            y=[f"#{a}" for a in table["axis"]] if "axis" in table else table["feature"],
            zmin=-1,
            zmax=1,
            colorscale="RdBu_r",
            colorbar=dict(title="Pearson r"),
            hovertemplate="feature %{y}<br>%{x}<br>r = %{z:.2f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="observed label")
    fig.update_yaxes(autorange="reversed", title="RSCA feature (most discriminative first)")
    return _layout(
        fig, _title("Correlation of RSCA features with observed labels", label, table_seed(table)), height=440
    )


# ---------------------------------------------------------------------------- Fig. 9/10
def _distance_panel(fig, sub, median, row, col, legend):
    """One cluster's panel: inter (green) and intra (blue) densities, the median intra distance dashed."""
    if not len(sub):
        return
    centre = 0.5 * (sub["left"] + sub["right"])
    width = (sub["right"] - sub["left"]).to_numpy()
    for column, colour, name, group in (
        ("inter_density", GREEN, "inter-cluster (member, field star)", "inter"),
        ("intra_density", BLUE, "intra-cluster (member pairs)", "intra"),
    ):
        bar = go.Bar(
            x=centre,
            y=sub[column],
            width=width,
            marker_color=colour,
            opacity=0.6,
            name=name,
            showlegend=legend,
            legendgroup=group,
        )
        fig.add_trace(bar, row=row, col=col)
    if pd.notna(median):
        fig.add_vline(x=float(median), line=dict(color="black", dash="dash", width=1), row=row, col=col)


def fig_distance_histograms(
    result: dict, label: str | None = None, inputs=None, ncols: int = 4, panel_height: int = 135, panel_width: int = 225
) -> go.Figure:
    """Grid of per-cluster histograms of intra- (blue) vs inter-cluster (green) distances; the median
    intra-cluster distance dashed; each panel's title gives the cluster's doppelganger rate.

    With several representations (e.g. spectra and the abundance subset) they are shown side by side
    for each cluster, as in the paper's Fig. 9/10.
    """
    if not isinstance(result, dict) or "histograms" not in result:
        raise ValueError("fig_distance_histograms: expected the dict returned by experiments.distance_histograms")
    label = data_label(result, label)
    h, summ = result["histograms"], result["summary"]
    inputs = list(inputs or dict.fromkeys(summ["input"]))
    short = {"spectra": "spectra", "abundances": "all abund.", "subset": "abund. subset"}
    clusters = [c for c in dict.fromkeys(summ["cluster"]) if (h["cluster"] == c).any()] if len(h) else []
    panels = [(c, i) for c in clusters for i in inputs]
    ncols = max(len(inputs), ncols - ncols % len(inputs))
    nrows = max(1, math.ceil(len(panels) / ncols))
    info = summ.set_index(["input", "cluster"])
    titles = []
    for c, i in panels:
        r = info.loc[(i, c)] if (i, c) in info.index else None
        rate = "n/a" if r is None or pd.isna(r["rate"]) else f"{r['rate']:.3f}"
        n = f" (n={int(r['n_stars'])})" if r is not None and "n_stars" in r and pd.notna(r["n_stars"]) else ""
        what = f" · {short.get(i, i)}" if len(inputs) > 1 else ""
        titles.append(f"{c}{n}{what} · rate {rate}")
    fig = make_subplots(
        rows=nrows,
        cols=ncols,
        subplot_titles=titles or None,
        horizontal_spacing=0.04,
        vertical_spacing=min(0.08, 0.35 / nrows),
        x_title=DISTANCE_TITLE,
        y_title="density (each histogram normalised to area 1)",
    )
    for n, (c, i) in enumerate(panels):
        med = info.loc[(i, c), "median_intra"] if (i, c) in info.index else np.nan
        _distance_panel(fig, h[(h["cluster"] == c) & (h["input"] == i)], med, n // ncols + 1, n % ncols + 1, n == 0)
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_annotations(font_size=10)
    fig.update_xaxes(showticklabels=True, tickfont_size=8)
    fig.update_yaxes(showticklabels=False)
    g = summ.drop_duplicates("input").set_index("input")["global_rate"] if len(summ) else {}
    glob = ", ".join(f"{short.get(i, i)} {g[i]:.4f}" for i in inputs if i in g and pd.notna(g[i]))
    fig = _layout(
        fig,
        _title(
            f"Intra- vs inter-cluster distances (global rate: {glob}; dashed = median intra)",
            label,
            table_seed(summ),
            wrap=False,  # one line: the legend sits under it
        ),
        height=130 + panel_height * nrows,
        width=panel_width * ncols,
    )
    # the legend on its own line under the title, left: clear of the modebar and of the title
    top = MODEBAR_ROOM + 80
    fig.update_layout(
        legend=dict(orientation="h", yanchor="top", y=1.0 + (top - MODEBAR_ROOM - 24) / (fig.layout.height - top - 60)),
        margin=dict(t=top, b=60, l=50),
    )
    fig.update_layout(legend_x=0.0, legend_xanchor="left")
    return fig


def distance_histogram_result(
    per_cluster: pd.DataFrame, hists: dict, label: str, input: str = "spectra", global_rate: float | None = None
) -> dict:
    """The ``{"summary", "histograms", "settings"}`` dict that :func:`fig_distance_histograms` draws,
    from one representation's per-cluster table (``cluster, n_stars, rate, median_intra``) and the
    per-cluster histograms of :func:`rsca_core.metrics.distance_histogram` (``{"edges", "intra",
    "inter"}``; densities are counts / (all counts × bin width), as in experiments.distance_histograms).

    Examples
    --------
    >>> per = pd.DataFrame({"cluster": ["A"], "n_stars": [3], "rate": [0.5], "median_intra": [1.0]})
    >>> h = {"A": {"edges": np.array([0.0, 1.0, 2.0]), "intra": np.array([2, 1]), "inter": np.array([1, 3])}}
    >>> res = distance_histogram_result(per, h, "simulated")
    >>> res["histograms"]["intra_density"].round(3).tolist()
    [0.667, 0.333]
    """
    rows = []
    for name in per_cluster["cluster"]:
        h = hists.get(name)
        if h is None:
            continue
        edges = np.asarray(h["edges"], float)
        width = np.diff(edges)
        dens = {}
        for key in ("intra", "inter"):
            counts = np.asarray(h[key], float)
            dens[key] = counts / (counts.sum() * width) if counts.sum() else np.full(len(width), np.nan)
        for b in range(len(width)):
            rows.append(
                {
                    "input": input,
                    "cluster": name,
                    "bin": b,
                    "left": edges[b],
                    "right": edges[b + 1],
                    "intra_density": dens["intra"][b],
                    "inter_density": dens["inter"][b],
                }
            )
    summary = per_cluster[["cluster", "n_stars", "rate", "median_intra"]].copy()
    summary.insert(0, "input", input)
    summary["global_rate"] = np.nan if global_rate is None else float(global_rate)
    summary["label"] = label
    return {"summary": summary, "histograms": pd.DataFrame(rows), "settings": {"label": label}}


#: experiment name → figure function (the CLI and the dashboard use this mapping)
FIGURES = {
    "k_sweep": fig_k_sweep,
    "top_n": fig_top_n,
    "ablation": fig_ablation,
    "data_size": fig_data_size,
    "features": fig_feature_relations,
    "distances": fig_distance_histograms,
}
