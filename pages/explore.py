"""Explore (home): the doppelganger rate of a dataset and the RSCA features, live."""

from __future__ import annotations

import math

import dash
import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html, no_update
from plotly.subplots import make_subplots

from . import _service as service
from . import _ui as ui

dash.register_page(__name__, path="/", name="Explore", title="RSCA Lab - Explore", order=0)

P = "ex"
IVAR_START = "Starting: the exact compression for these settings (queued, then reading the spectra)…"
cluster_colours = ui.cluster_colours
MAP_RSCA_ONLY = "the map file holds an RSCA map"


def layout(**query):
    s, problems = service.settings_from_query(query)
    return html.Div(
        [
            dcc.Location(id=f"{P}-url", refresh=False),
            dcc.Location(id=f"{P}-goto", refresh="callback-nav"),  # a clicked cluster star -> its siblings
            dcc.Store(id=f"{P}-store"),
            dcc.Store(id=f"{P}-ivar-need"),
            dcc.Store(id=f"{P}-ivar-ready"),
            dcc.Download(id=f"{P}-download"),
            html.H3(["Explore the doppelganger rate", ui.kind_badge(None, id=f"{P}-badge")], className="mb-1"),
            html.P(
                "How often does a random field star look as similar to a cluster member as that cluster's own "
                "members look to each other? Change any control: every view updates.",
                className="text-muted small",
            ),
            ui.messages(problems, id=f"{P}-url-msg"),
            dbc.Row(
                [
                    dbc.Col(ui.settings_controls(P, s, with_method=True, with_weights=True), md=3),
                    dbc.Col(
                        [
                            html.Div(id=f"{P}-msg"),
                            ui.progress_block(f"{P}-ivar-progress", IVAR_START, class_name="mb-2"),
                            html.Div(id=f"{P}-ivar-msg"),
                            dcc.Loading(html.Div(id=f"{P}-rate"), type="dot", delay_show=400),
                            dbc.Row(
                                [
                                    dbc.Col(
                                        dbc.Card(
                                            dbc.CardBody(
                                                [
                                                    html.Div(
                                                        "Click a bar to see that cluster's histogram.",
                                                        className="text-muted small",
                                                    ),
                                                    ui.graph(f"{P}-bars", height=330),
                                                ]
                                            )
                                        ),
                                        lg=7,
                                    ),
                                    dbc.Col(dbc.Card(dbc.CardBody([ui.graph(f"{P}-hist", height=330)])), lg=5),
                                ],
                                class_name="g-3 mb-3",
                            ),
                            dbc.Card(dbc.CardBody([ui.graph(f"{P}-features", height=500)]), class_name="mb-3"),
                            dbc.Card(dbc.CardBody([ui.graph(f"{P}-vhelio", height=330)]), class_name="mb-3"),
                            html.Div(
                                [
                                    dbc.Button(
                                        "Per-cluster rates (CSV)",
                                        id=f"{P}-dl-csv",
                                        color="secondary",
                                        size="sm",
                                        class_name="me-2",
                                        disabled=True,  # until a rate is shown
                                    ),
                                    dbc.Button(
                                        "Fitted map (.npz)",
                                        id=f"{P}-dl-map",
                                        color="secondary",
                                        size="sm",
                                        class_name="me-2",
                                        disabled=True,
                                        title="" if s.method == "rsca" else MAP_RSCA_ONLY,
                                    ),
                                    dcc.Link(
                                        "Same settings on the Clusters page →",
                                        id=f"{P}-clusters-link",
                                        href="/clusters",
                                        className="small ms-2",
                                    ),
                                    html.Span(
                                        " Figures: use the camera icon of each plot for a PNG.",
                                        className="small text-muted ms-2",
                                    ),
                                ]
                            ),
                        ],
                        md=9,
                    ),
                ]
            ),
        ]
    )


ui.register_settings_callbacks(P, with_method=True, with_weights=True)


def spread_text(r) -> str | None:
    """ "± sd" of the global rate over the clusters resampled (rsca_core.metrics.rate_spread), or None."""
    sd = r.get("rate_spread")
    if sd is None or not math.isfinite(sd):
        return None
    return f"± {sd:.4f} (sd over the clusters resampled)"


def rate_card(r, s):
    """The global rate of settings ``s``. When ``r["preview"]`` is set, the rate comes from a stand-in
    compression while the exact one is computed in the background: said in the card, never beside a
    second number. The full-precision rate is in the number's ``data-rate`` attribute."""
    g = r["global_rate"]
    shown = "undefined" if (g is None or (isinstance(g, float) and math.isnan(g))) else f"{g:.4f}"
    preview = r.get("preview")
    per = r["per_cluster"]
    used = int(per["rate"].notna().sum())
    pca = "flux-error-weighted PCA" if s.weights == "ivar" else "PCA"
    what = (
        f"spectra, K = {s.k} ({pca} fitted at K = {s.k})"
        if s.input == "spectra" and not preview
        else f"spectra, K = {s.k} (preview: "
        + (
            f"unweighted PCA fitted at K = {s.k})"
            if preview["k_from"] == s.k
            else f"leading {s.k} axes of the K = {preview['k_from']} fit)"
        )
        if s.input == "spectra"
        else service.INPUT_LABELS[s.input] + ("" if s.input == "abundances" else f" ({', '.join(s.species)})")
    )
    return dbc.Card(
        dbc.CardBody(
            dbc.Row(
                [
                    dbc.Col(
                        [
                            html.Div(
                                f"Global doppelganger rate, {service.METHOD_LABELS[s.method]}",
                                id=f"{P}-rate-title",
                                className="small text-muted",
                            ),
                            html.Div(
                                preview["text"],
                                id=f"{P}-pending",
                                className="small fw-semibold text-warning-emphasis",
                                style={"maxWidth": "22em"},
                            )
                            if preview
                            else None,
                            html.Div(
                                shown,
                                id=f"{P}-global-rate",
                                className="display-6 fw-bold",
                                **{"data-rate": repr(float(g)) if g is not None else "nan"},
                                **{"data-preview": "1" if preview else "0"},
                            ),
                            html.Div(spread_text(r), id=f"{P}-rate-spread", className="small text-muted"),
                            ui.kind_badge(r["label"]),
                        ],
                        width="auto",
                    ),
                    dbc.Col(
                        [
                            html.Div("Paper (APOGEE DR16)", className="small text-muted"),
                            html.Div(service.paper_value(s), id=f"{P}-paper", className="fs-5"),
                        ],
                        width="auto",
                    ),
                    dbc.Col(
                        html.Ul(
                            [
                                html.Li(what),
                                html.Li(
                                    f"{'leave-one-cluster-out CV' if s.cv else 'no CV (map fitted on all selected clusters)'}; "
                                    + (
                                        f"top-N = {s.top_n or 'all'}"
                                        if s.method == "rsca"
                                        else f"method {s.method.upper()}"
                                    )
                                ),
                                html.Li(
                                    f"{used} clusters with a rate, {r['n_cluster_stars']} cluster stars, "
                                    f"{r['n_field']:,} field stars"
                                ),
                            ],
                            className="small mb-0",
                        ),
                        # beside the numbers from 1200 px; under them on a narrower screen, where a third
                        # column was a word wide
                        width=12,
                        xl=True,
                        class_name="mt-2 mt-xl-0",
                    ),
                ],
                align="center",
            )
        ),
        class_name="mb-3 shadow-sm",
    )


def bars_figure(r, method="rsca"):
    per = r["per_cluster"]
    names = per["cluster"].astype(str).tolist()
    rates = per["rate"].to_numpy(float)
    fig = go.Figure(
        go.Bar(
            x=names,
            y=np.nan_to_num(rates, nan=0.0).tolist(),
            customdata=np.stack([per["n_stars"], per["n_inter_pairs"]], 1).tolist(),
            text=["n/a" if np.isnan(v) else "" for v in rates],
            textposition="outside",
            marker_color=["#bbbbbb" if np.isnan(v) else "#3b6ea8" for v in rates],
            hovertemplate="%{x}<br>rate %{y:.4f}<br>%{customdata[0]} stars, %{customdata[1]} field pairs<extra></extra>",
        )
    )
    if r["global_rate"] == r["global_rate"]:
        # labelled in the right margin, at the line's height: never over the y tick labels or a bar
        fig.add_hline(
            y=r["global_rate"],
            line_dash="dash",
            line_color="#c0392b",
            annotation_text=f"global<br>{r['global_rate']:.4f}",
            annotation_position="right",
            annotation_font_color="#c0392b",
        )
    fig.update_layout(
        xaxis_title="cluster",
        yaxis_title="doppelganger rate",
        xaxis_tickangle=-45,
        clickmode="event",
        yaxis_rangemode="tozero",
    )
    fig = ui.label_figure(fig, r["label"], f"Per-cluster doppelganger rates ({method.upper()})")
    fig.update_layout(margin_r=70)
    return fig


def hist_figure(r, name):
    h = r["hists"][name]
    per = r["per_cluster"].set_index("cluster")
    row = per.loc[name]
    edges = np.asarray(h["edges"], float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    width = edges[1] - edges[0]
    fig = go.Figure()
    for key, colour, label in (("inter", "#7f8c8d", "cluster-field pairs"), ("intra", "#e67e22", "within cluster")):
        c = np.asarray(h[key], float)
        dens = c / (c.sum() * width) if c.sum() else c
        fig.add_bar(x=centres, y=dens, width=width, name=f"{label} ({int(c.sum())})", marker_color=colour, opacity=0.6)
    if row["median_intra"] == row["median_intra"]:
        fig.add_vline(
            x=row["median_intra"],
            line_color="#c0392b",
            line_dash="dash",
            annotation_text="median intra",
            annotation_position="top right",
        )
    rate = "n/a" if row["rate"] != row["rate"] else f"{row['rate']:.4f}"
    fig.update_layout(
        barmode="overlay",
        xaxis_title=service.DISTANCE_TITLE,
        yaxis_title="density",
        legend={"orientation": "h", "y": -0.25},
    )
    return ui.label_figure(fig, r["label"], f"{name}: rate {rate} ({int(row['n_stars'])} stars)")


def axis_name(method, i):
    """Name of the ``i``-th (from 0) axis of a map: "feature 1" for RSCA, "RCA axis 1" otherwise."""
    return f"feature {i + 1}" if method == "rsca" else f"{method.upper()} axis {i + 1}"


def features_figure(f):
    """Built as a plain figure dict: ~70 traces through plotly's validators cost more than the science."""
    n = len(f["features"])
    method = f.get("method", "rsca")
    titles = (
        [f"{axis_name(method, i)} (σ = {f['scales'][i]:.3g})" for i in range(n)]
        if f.get("scales") is not None
        else [axis_name(method, i) for i in range(n)]
    )
    fig = make_subplots(rows=1, cols=max(n, 1), horizontal_spacing=0.07, subplot_titles=titles)
    for i in range(n):
        fig.update_xaxes(title_text="[Fe/H]", row=1, col=i + 1)
        fig.update_yaxes(title_text=axis_name(method, i), title_standoff=4, row=1, col=i + 1)
    # every cluster's legend entry visible: rows under the panels, not a scrolling column
    fig.update_layout(legend={"font": {"size": 10}, "orientation": "h", "yanchor": "top", "y": -0.2, "x": 0})
    what = "Top RSCA features" if method == "rsca" else f"First {method.upper()} axes (unranked, no CV)"
    fig = ui.label_figure(
        fig, f["label"], f"{what} vs [Fe/H] ({field_note(f['features'])}, {service.members_note(f)})", top=55
    )
    fig.update_annotations(yshift=4)
    out = fig.to_plotly_json()
    out["data"] = [t for i, feat in enumerate(f["features"]) for t in _density_traces(feat, i + 1, i == 0)]
    return out


def _density_traces(feat, col, showlegend):
    """Field density (heatmap) + one marker trace per cluster, on subplot ``col``, as plain dicts."""
    xa, ya = ("x", "y") if col == 1 else (f"x{col}", f"y{col}")
    traces = []
    d = feat["field"]
    if d is not None:
        traces.append(
            {
                "type": "heatmap",
                "x": np.asarray(d["x"]).tolist(),
                "y": np.asarray(d["y"]).tolist(),
                "z": np.round(np.log10(1 + np.asarray(d["counts"])), 4).tolist(),
                "colorscale": ui.DENSITY_SCALE,
                "showscale": False,
                "hoverinfo": "skip",
                "name": "field",
                "xaxis": xa,
                "yaxis": ya,
            }
        )
    cl = feat["clusters"]
    colours = cluster_colours(cl["name"])
    names = np.asarray(cl["name"]).astype(str)
    x, y = np.asarray(cl["x"], float), np.asarray(cl["y"], float)
    ids = np.asarray(cl.get("id", np.full(len(names), "")), dtype=str)
    for name in sorted(colours):
        m = names == name
        traces.append(
            {
                "type": "scatter",
                "x": x[m].tolist(),
                "y": y[m].tolist(),
                "mode": "markers",
                "name": name,
                "legendgroup": name,
                "showlegend": showlegend,
                "xaxis": xa,
                "yaxis": ya,
                "marker": {"size": 6, "color": colours[name], "line": {"width": 0.5, "color": "white"}},
                "customdata": ids[m].tolist(),
                "hovertemplate": name
                + " %{customdata}<br>x %{x:.3f}<br>y %{y:.3f}<br>click: its siblings<extra></extra>",
            }
        )
    return traces


def field_note(panels) -> str:
    """What the field's heat map shows: every field star is counted in bins, none drawn one by one."""
    d = next((p["field"] for p in panels if p.get("field") is not None), None)
    if d is None or "n" not in d:
        return "field density"
    return f"field: all {d['n']:,} stars counted in bins (log), {d['n'] - d['n_binned']:,} beyond the axes"


def vhelio_figure(f):
    fig = go.Figure()
    fig.update_xaxes(title_text="VHELIO_AVG (km/s)")
    name = axis_name(f.get("method", "rsca"), 0)
    fig.update_yaxes(title_text=name)
    fig = ui.label_figure(
        fig,
        f["label"],
        f"{name[0].upper() + name[1:]} vs VHELIO_AVG (a good feature does not follow the velocity)",
        top=55,
        subtitle=f"{field_note([f['vhelio']])}; {service.members_note(f)}",
    )
    out = fig.to_plotly_json()
    out["data"] = _density_traces(f["vhelio"], 1, False)
    return out


_UPDATE_OUTPUTS = (
    Output(f"{P}-msg", "children"),
    Output(f"{P}-rate", "children"),
    Output(f"{P}-bars", "figure"),
    Output(f"{P}-store", "data"),
    Output(f"{P}-url", "search"),
    Output(f"{P}-clusters-link", "href"),
    Output(f"{P}-badge", "children"),
    Output(f"{P}-dl-csv", "disabled"),
    Output(f"{P}-dl-map", "disabled"),
    Output(f"{P}-dl-map", "title"),
)


@callback(*_UPDATE_OUTPUTS, *ui.settings_inputs(P, with_method=True, with_weights=True))
def update(ds, inp, species, k, clusters, cv, top, method, weights):
    notes = []  # a top-N out of range: all axes and a message, as in a URL
    try:
        w = "ivar" if weights else "none"
        s = service.settings_from_controls(
            ds, inp, k, species, clusters, cv, top, method=method, weights=w, notes=notes
        )
        # a K (or weighting) whose exact compression is not ready yet: a labelled preview meanwhile,
        # while the background job (prepare_exact) computes it
        pending = s.input == "spectra" and not service.compression_ready(s.ds, s.mask, s.weights, k=s.k)
        r = service.preview_rates(s) if pending else service.rates(s)
    except Exception as exc:  # a message in the page, never a traceback
        msg = service.describe_error(exc)
        none = "nothing to download: the view has no result"
        fig = ui.empty_figure(msg)
        alert = ui.error_alert(msg, notes)
        return alert, None, fig, None, no_update, no_update, no_update, True, True, none
    q = service.settings_to_query(s)
    warn = ui.messages(notes + list(r.get("warnings") or []), color="warning")
    # the histogram callback draws from the store, so it never recomputes rates on another worker
    per = r["per_cluster"]
    hists = {
        name: {
            "edges": np.round(h["edges"], 6).tolist(),
            "intra": np.asarray(h["intra"]).tolist(),
            "inter": np.asarray(h["inter"]).tolist(),
        }
        for name, h in r["hists"].items()
    }
    store = {
        "settings": service.settings_to_dict(s),
        "label": r["label"],
        "hists": hists,
        "per_cluster": per[["cluster", "n_stars", "rate", "median_intra"]]
        .astype(object)
        .where(per[["cluster", "n_stars", "rate", "median_intra"]].notna(), None)
        .to_dict("records"),
    }
    badge = ui.kind_badge(r["label"])
    # the Clusters page has no compression switch: its link carries everything else
    cq = service.settings_to_query(s, keys=("ds", "input", "k", "species", "clusters", "cv", "top", "method"))
    return (
        warn,
        rate_card(r, s),
        bars_figure(r, s.method),
        store,
        q,
        "/clusters" + cq,
        badge,
        False,
        s.method != "rsca",
        "" if s.method == "rsca" else MAP_RSCA_ONLY,
    )


@callback(
    Output(f"{P}-ivar-need", "data"),
    Input(f"{P}-ds", "value"),
    Input(f"{P}-input", "value"),
    Input(f"{P}-k", "value"),
    Input(f"{P}-weights", "value"),
)
def need_compression(ds, inp, k, weights):
    """The exact compression the view needs and that is not on disk yet ({"ds", "k", "weights"}),
    which starts the background job; nothing when it is ready or the controls are not valid. Only
    the controls that decide the compression are inputs, so other changes leave a running job alone."""
    try:
        w = "ivar" if weights else "none"
        if inp != "spectra":
            return no_update
        k = service.parse_int(k, "K", service.K_MIN, service.k_max())
        if service.compression_ready(ds, (), w, k=k) or (w != "none" and not service.has_errors(ds)):
            return no_update
    except Exception:
        return no_update
    return {"ds": ds, "k": int(k), "weights": w}


@callback(
    Output(f"{P}-ivar-ready", "data"),
    Output(f"{P}-ivar-msg", "children"),
    Input(f"{P}-ivar-need", "data"),
    background=True,
    prevent_initial_call=True,
    running=[ui.progress_running(f"{P}-ivar-progress")],
    **ui.progress_args(f"{P}-ivar-progress", IVAR_START),
)
def prepare_exact(set_progress, need):
    """The exact K compression (plain or flux-error-weighted), through the one bounded job queue
    (seconds to minutes); its progress bar names the phase and the EM pass."""
    if not isinstance(need, dict) or not need.get("ds"):
        return no_update, None
    try:
        service.admit()  # a slot in the job queue, or "busy, try again"
        k = service.parse_int(need.get("k"), "K", service.K_MIN, service.k_max())
        w = service.parse_weights(need.get("weights"))
        service.prepare_compression(need["ds"], report=service.progress_reporter(set_progress), weights=w, k=k)
    except Exception as exc:
        msg = service.describe_error(exc)
        return no_update, ui.error_alert(f"Exact compression: {msg} (change K or reload to retry)")
    return need, None


@callback(
    *[Output(o.component_id, o.component_property, allow_duplicate=True) for o in _UPDATE_OUTPUTS],
    Input(f"{P}-ivar-ready", "data"),
    *[State(i.component_id, i.component_property) for i in ui.settings_inputs(P, with_method=True, with_weights=True)],
    prevent_initial_call=True,
)
def refresh_when_ready(_ready, *controls):
    """The exact result once the background job has written the compression. A callback of its own:
    were the job's output an input of :func:`update`, Dash would hold ``update`` (and the preview)
    back until the job had finished."""
    return update(*controls)


def _settings(store):
    """The settings a result store was made with (UserError if the store is forged)."""
    if not store:
        return None
    if not isinstance(store, dict) or not isinstance(store.get("settings"), dict):
        raise service.UserError("the page's stored result is not valid: reload the page")
    return service.settings_from_dict(store["settings"])


@callback(Output(f"{P}-hist", "figure"), Input(f"{P}-bars", "clickData"), Input(f"{P}-store", "data"))
def update_hist(click, store):
    if not store or "hists" not in store:
        return ui.empty_figure("no result")
    try:
        per = pd.DataFrame(store["per_cluster"]).astype({"rate": float, "median_intra": float})
        r = {"hists": store["hists"], "per_cluster": per, "label": store["label"]}
        names = per["cluster"].astype(str).tolist()
        name = None
        if click and click.get("points"):
            name = str(click["points"][0].get("x"))
        if name not in names:  # default: the largest cluster
            name = str(per.loc[per["n_stars"].idxmax(), "cluster"])
        return hist_figure(r, name)
    except Exception as exc:
        return ui.empty_figure(service.describe_error(exc))


@callback(Output(f"{P}-features", "figure"), Output(f"{P}-vhelio", "figure"), Input(f"{P}-store", "data"))
def update_features(store):
    try:
        s = _settings(store)
        if s is None:
            return ui.empty_figure("no result"), ui.empty_figure("no result")
        f = service.features(s)
        return features_figure(f), vhelio_figure(f)
    except service.CompressionNotReady:  # a preview is shown: the features wait for the exact fit
        msg = f"The features appear when the exact K = {s.k} compression is ready (being computed: see the bar above)."
        return ui.empty_figure(msg), ui.empty_figure(msg)
    except Exception as exc:
        msg = service.describe_error(exc)
        return ui.empty_figure(msg), ui.empty_figure(msg)


@callback(
    Output(f"{P}-download", "data"),
    Input(f"{P}-dl-csv", "n_clicks"),
    Input(f"{P}-dl-map", "n_clicks"),
    State(f"{P}-store", "data"),
    prevent_initial_call=True,
)
def download(_csv, _map, store):
    try:
        s = _settings(store)
        if s is None:
            return no_update
        if dash.ctx.triggered_id == f"{P}-dl-csv":
            name = service.download_name("explore", "rates", s.ds, service.settings_name(s), "csv")
            return {"content": service.rates_csv(s), "filename": name, "type": "text/csv"}
        # the map is RSCA's, fitted once on the chosen clusters (no CV): its name says no method or CV
        rest = service.settings_name(s, keys=("input", "k", "top", "clusters", "mask", "weights"))
        return dcc.send_bytes(service.map_npz(s), service.download_name("explore", "rsca-map", s.ds, rest, "npz"))
    except Exception:
        return no_update


@callback(
    Output(f"{P}-goto", "href"),
    Input(f"{P}-features", "clickData"),
    Input(f"{P}-vhelio", "clickData"),
    State(f"{P}-store", "data"),
    prevent_initial_call=True,
)
def go_to_siblings(click_features, click_vhelio, store):
    """A click on a cluster member in the feature plots opens the Siblings page on that star."""
    from urllib.parse import urlencode

    click = dash.ctx.triggered[0]["value"] if dash.ctx.triggered else None
    point = (click or {}).get("points", [{}])[0]
    star = point.get("customdata")
    if not isinstance(star, str) or not star or len(star) > 60:
        return no_update  # the field's density map has no star to open
    ds = (store or {}).get("settings", {}).get("ds") or "default"
    return "/siblings?" + urlencode({"ds": ds, "star": star})
