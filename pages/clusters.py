"""Clusters: the Fig. 9/10 grid - intra- vs inter-cluster distance histograms for every cluster."""

from __future__ import annotations

import math

import dash
import dash_bootstrap_components as dbc
import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html, no_update
from plotly.subplots import make_subplots

from . import _service as service
from . import _ui as ui

dash.register_page(__name__, path="/clusters", name="Clusters", title="RSCA Lab - Clusters", order=1)

P = "cl"
COLS = 4


def layout(**query):
    s, problems = service.settings_from_query(query)
    return html.Div(
        [
            dcc.Location(id=f"{P}-url", refresh=False),
            dcc.Store(id=f"{P}-store"),
            dcc.Download(id=f"{P}-download"),
            html.H3(["Clusters: distances inside vs outside", ui.kind_badge(None, id=f"{P}-badge")], className="mb-1"),
            html.P(
                "For each cluster: distances between its own members (orange) and between its members and "
                "field stars that pass the pair filter (grey). The rate is the share of grey below the "
                "dashed line (the median orange distance) - the paper's Fig. 9/10.",
                className="text-muted small",
            ),
            ui.messages(problems),
            dbc.Row(
                [
                    dbc.Col(ui.settings_controls(P, s), md=3),
                    dbc.Col(
                        [
                            html.Div(id=f"{P}-msg"),
                            html.Div(id=f"{P}-summary", className="mb-2"),
                            dcc.Loading(
                                dcc.Graph(id=f"{P}-grid", figure=ui.empty_figure(), config=ui.GRAPH_CONFIG),
                                type="dot",
                                delay_show=400,
                            ),
                            dbc.Button(
                                "Per-cluster rates (CSV)",
                                id=f"{P}-dl-csv",
                                color="secondary",
                                size="sm",
                                class_name="me-2",
                            ),
                            dcc.Link("Same settings on Explore →", id=f"{P}-explore-link", href="/", className="small"),
                        ],
                        md=9,
                    ),
                ]
            ),
        ]
    )


ui.register_settings_callbacks(P)


def grid_figure(r):
    per = r["per_cluster"].reset_index(drop=True)
    n = len(per)
    rows = max(1, math.ceil(n / COLS))
    titles = []
    for row in per.itertuples():
        rate = "n/a" if row.rate != row.rate else f"{row.rate:.3f}"
        titles.append(f"{row.cluster} (n={row.n_stars}): rate {rate}")
    fig = make_subplots(
        rows=rows,
        cols=COLS,
        subplot_titles=titles,
        horizontal_spacing=0.04,
        vertical_spacing=min(0.35 / rows + 0.02, 0.12),
    )
    for i, row in enumerate(per.itertuples()):
        h = r["hists"][row.cluster]
        edges = h["edges"]
        c = 0.5 * (edges[1:] + edges[:-1])
        w = edges[1] - edges[0]
        rr, cc = i // COLS + 1, i % COLS + 1
        for key, colour, label in (("inter", "#7f8c8d", "cluster-field"), ("intra", "#e67e22", "within cluster")):
            cnt = np.asarray(h[key], float)
            dens = cnt / (cnt.sum() * w) if cnt.sum() else cnt
            fig.add_trace(
                go.Bar(
                    x=c,
                    y=dens,
                    width=w,
                    marker_color=colour,
                    opacity=0.6,
                    name=label,
                    legendgroup=label,
                    showlegend=(i == 0),
                    hovertemplate=f"{label}<br>d=%{{x:.3g}}<extra>{row.cluster}</extra>",
                ),
                row=rr,
                col=cc,
            )
        if row.median_intra == row.median_intra:
            fig.add_vline(x=row.median_intra, line_dash="dash", line_color="#c0392b", line_width=1, row=rr, col=cc)
    fig.update_layout(
        barmode="overlay",
        height=max(300, 210 * rows),
        bargap=0,
        legend={
            "orientation": "h",
            "y": 1.0 + 60 / max(300, 210 * rows),
            "x": 1,
            "xanchor": "right",
            "yanchor": "bottom",
        },
    )
    fig.update_annotations(font_size=10)
    fig.update_yaxes(showticklabels=False)
    fig = ui.label_figure(fig, r["label"], "Intra- vs inter-cluster distances per cluster (dashed: median intra)")
    fig.update_layout(margin={"l": 20, "r": 20, "t": 80, "b": 30})
    return fig


@callback(
    Output(f"{P}-msg", "children"),
    Output(f"{P}-summary", "children"),
    Output(f"{P}-grid", "figure"),
    Output(f"{P}-store", "data"),
    Output(f"{P}-url", "search"),
    Output(f"{P}-explore-link", "href"),
    Output(f"{P}-badge", "children"),
    *ui.settings_inputs(P),
)
def update(ds, inp, species, k, clusters, cv, top):
    try:
        s = service.settings_from_controls(ds, inp, k, species, clusters, cv, top)
        r = service.rates(s)
    except Exception as exc:
        msg = service.describe_error(exc)
        return ui.error_alert(msg), None, ui.empty_figure(msg), None, no_update, no_update, no_update
    g = r["global_rate"]
    summary = html.Div(
        [
            html.Span("Global rate "),
            html.B(f"{g:.4f}" if g == g else "undefined", id=f"{P}-global-rate"),
            html.Span(f" over {int(r['per_cluster']['rate'].notna().sum())} clusters"),
            ui.kind_badge(r["label"]),
        ]
    )
    q = service.settings_to_query(s)
    return (
        ui.messages(r.get("warnings")),
        summary,
        grid_figure(r),
        {"settings": service.settings_to_dict(s)},
        q,
        "/" + q,
        ui.kind_badge(r["label"]),
    )


@callback(
    Output(f"{P}-download", "data"),
    Input(f"{P}-dl-csv", "n_clicks"),
    State(f"{P}-store", "data"),
    prevent_initial_call=True,
)
def download(_n, store):
    if not store:
        return no_update
    s = service.settings_from_dict(store["settings"])
    try:
        return {
            "content": service.rates_csv(s),
            "type": "text/csv",
            "filename": f"rsca-rates-{service.dataset_label(s.ds)}-{s.ds}.csv",
        }
    except Exception:
        return no_update
