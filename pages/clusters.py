"""Clusters: the Fig. 9/10 grid - intra- vs inter-cluster distance histograms for every cluster."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dcc, html, no_update

from . import _service as service
from . import _ui as ui

dash.register_page(__name__, path="/clusters", name="Clusters", title="RSCA Lab - Clusters", order=1)

P = "cl"


def layout(**query):
    s, problems = service.settings_from_query(query)
    return html.Div(
        [
            dcc.Location(id=f"{P}-url", refresh=False),
            dcc.Store(id=f"{P}-store"),
            dcc.Download(id=f"{P}-download"),
            html.H3(["Clusters: distances inside vs outside", ui.kind_badge(None, id=f"{P}-badge")], className="mb-1"),
            html.P(
                "For each cluster: distances between its own members (blue) and between its members and "
                "field stars that pass the pair filter (green). The rate is the share of green below the "
                "dashed line (the median blue distance) - the paper's Fig. 9/10.",
                className="text-muted small",
            ),
            ui.messages(problems),
            dbc.Row(
                [
                    dbc.Col(ui.settings_controls(P, s, with_method=True), md=3),
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
                                disabled=True,  # until a rate is shown
                            ),
                            dcc.Link("Same settings on Explore →", id=f"{P}-explore-link", href="/", className="small"),
                        ],
                        md=9,
                    ),
                ]
            ),
        ]
    )


ui.register_settings_callbacks(P, with_method=True)


def grid_figure(r):
    """The Fig. 9/10 grid of rsca_core.plotting, sized to the page."""
    fig = service.distance_grid(r)
    fig.update_layout(width=None, autosize=True)
    return fig


@callback(
    Output(f"{P}-msg", "children"),
    Output(f"{P}-summary", "children"),
    Output(f"{P}-grid", "figure"),
    Output(f"{P}-store", "data"),
    Output(f"{P}-url", "search"),
    Output(f"{P}-explore-link", "href"),
    Output(f"{P}-badge", "children"),
    Output(f"{P}-dl-csv", "disabled"),
    *ui.settings_inputs(P, with_method=True),
)
def update(ds, inp, species, k, clusters, cv, top, method):
    notes = []  # a top-N out of range: all axes and a message, as in a URL
    try:
        s = service.settings_from_controls(ds, inp, k, species, clusters, cv, top, method=method, notes=notes)
        r = service.rates(s)
    except Exception as exc:
        msg = service.describe_error(exc)
        alert = ui.error_alert(msg, notes)
        return alert, None, ui.empty_figure(msg), None, no_update, no_update, no_update, True
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
        ui.messages(notes + list(r.get("warnings") or [])),
        summary,
        grid_figure(r),
        {"settings": service.settings_to_dict(s)},
        q,
        "/" + q,
        ui.kind_badge(r["label"]),
        False,
    )


@callback(
    Output(f"{P}-download", "data"),
    Input(f"{P}-dl-csv", "n_clicks"),
    State(f"{P}-store", "data"),
    prevent_initial_call=True,
)
def download(_n, store):
    if not isinstance(store, dict) or not isinstance(store.get("settings"), dict):
        return no_update
    try:
        s = service.settings_from_dict(store["settings"])
        name = service.download_name("clusters", "rates", s.ds, service.settings_name(s), "csv")
        return {"content": service.rates_csv(s), "type": "text/csv", "filename": name}
    except Exception:
        return no_update
