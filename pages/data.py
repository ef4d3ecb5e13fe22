"""Data: what the dataset is (kind, provenance, cut-flow, counts), its compression, and a simulator form."""

from __future__ import annotations

import json

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, clientside_callback, dcc, html, no_update

from . import _service as service
from . import _ui as ui
from ._simulate_form import PREPARE_ID, register_simulate_callbacks, simulate_card

dash.register_page(__name__, path="/data", name="Data", title="RSCA Lab - Data", order=5)

P = "dt"
PCA_START = "Starting: preparing the compression (queued, then reading the spectra)…"


def layout(**query):
    s, problems = service.settings_from_query({k: v for k, v in query.items() if k == "ds"})
    extra = sorted(set(query) - {"ds"})
    if extra:
        problems.append(f"URL parameter(s) {', '.join(service.short(e, 20) for e in extra[:5])} not used on this page")
    try:
        choices = service.dataset_choices()
    except Exception:
        choices = [{"label": "default", "value": "default"}]
    return html.Div(
        [
            dcc.Location(id=f"{P}-url", refresh=False),
            html.H3(["Data", ui.kind_badge(None, id=f"{P}-badge")], className="mb-1"),
            html.P(
                "What the current dataset is, where it comes from, and how to make another one.",
                className="text-muted small",
            ),
            ui.messages(problems),
            dbc.Row(
                [
                    dbc.Col(
                        [
                            dbc.Card(
                                dbc.CardBody(
                                    [
                                        dbc.Label("Dataset", class_name="small fw-semibold"),
                                        dcc.Dropdown(
                                            id=f"{P}-ds",
                                            options=[{"label": c["label"], "value": c["value"]} for c in choices],
                                            value=s.ds,
                                            clearable=False,
                                        ),
                                    ]
                                ),
                                class_name="mb-3 shadow-sm",
                            ),
                            dbc.Card(
                                dbc.CardBody(
                                    [
                                        html.Div("Spectra compression", className="fw-semibold mb-1"),
                                        html.Div(id=f"{P}-pca-status", className="small mb-2"),
                                        dbc.Button(
                                            "Prepare compression",
                                            id=f"{P}-pca-run",
                                            size="sm",
                                            color="primary",
                                            class_name="me-2",
                                        ),
                                        dbc.Button(
                                            "Cancel", id=f"{P}-pca-cancel", size="sm", color="secondary", disabled=True
                                        ),
                                        ui.progress_block(f"{P}-pca-progress", PCA_START),
                                        html.Div(id=f"{P}-pca-result", className="small mt-2"),
                                    ]
                                ),
                                class_name="mb-3 shadow-sm",
                            ),
                        ],
                        md=4,
                    ),
                    dbc.Col(
                        [html.Div(id=f"{P}-msg"), dcc.Loading(html.Div(id=f"{P}-info"), type="dot", delay_show=400)],
                        md=8,
                    ),
                ],
                class_name="mb-3",
            ),
            simulate_card(),
        ]
    )


def _table(df, id=None):
    kw = {"id": id} if id else {}
    return dbc.Table.from_dataframe(
        df, striped=True, bordered=False, hover=True, size="sm", class_name="small mb-0", **kw
    )


def _clusters_and_provenance(o):
    prov = o["provenance"]
    text = json.dumps(
        {k: v for k, v in prov.items() if k != "cutflow"} if isinstance(prov, dict) else prov, indent=1, default=str
    )[:20000]
    scroll = {"maxHeight": "420px", "overflowY": "auto"}
    return dbc.Row(
        [
            dbc.Col(
                dbc.Card(
                    dbc.CardBody(
                        [
                            html.Div("Open clusters", className="fw-semibold mb-2"),
                            html.Div(_table(o["sizes"]), style=scroll),
                        ]
                    ),
                    class_name="shadow-sm",
                ),
                md=5,
            ),
            dbc.Col(
                dbc.Card(
                    dbc.CardBody(
                        [
                            html.Div("Provenance", className="fw-semibold mb-2"),
                            html.Pre(service.hide_paths(text), className="small mb-0", style=scroll),
                        ]
                    ),
                    class_name="shadow-sm",
                ),
                md=7,
            ),
        ]
    )


def _release_facts(o) -> list[tuple[str, str]]:
    """The data release a real bundle was built from, its membership catalogue, and the inputs that
    release lacks (substituted, or switched off) - stated, never silently zero."""
    prov = o["provenance"] if isinstance(o["provenance"], dict) else {}
    release = o["meta"].get("release") or prov.get("release")
    if not release:
        return []
    rows = [
        ("release", f"{str(release).upper()} (detected by {prov.get('release_detected_by', 'the --release option')})")
    ]
    member = prov.get("membership") or {}
    if member.get("format"):
        rows.append(("membership", f"{member['format']}, probability > {member.get('min_prob', '?')}"))
    for what, how in (prov.get("substitutes") or {}).items():
        rows.append((f"{what} (substitute)", str(how)))
    for what, why in (prov.get("unavailable") or {}).items():
        rows.append((f"{what} (not available)", str(why)))
    return rows


def info_view(o):
    s = o["summary"]
    import pandas as pd

    facts = pd.DataFrame(
        [
            ("kind", s["kind"]),
            ("name", s["name"]),
            ("stars", f"{s['n_stars']:,}"),
            ("field stars", f"{s['n_field']:,}"),
            ("cluster stars", f"{s['n_cluster_stars']:,}"),
            ("clusters", s["n_clusters"]),
            ("pixels per spectrum", f"{s['n_pixels']:,}"),
            ("missing pixels (first 2000 stars)", f"{100 * s['missing_fraction']:.2f} %"),
            ("uid", s["uid"]),
            ("folder", o["folder"]),
            *_release_facts(o),
        ],
        columns=["", "value"],
    )
    parts = [
        dbc.Card(
            dbc.CardBody(
                [
                    html.Div(["About this dataset", ui.kind_badge(o["label"])], className="fw-semibold mb-2"),
                    html.P(
                        "Simulated: an APOGEE-like survey made by rsca_core.simulate; every number and figure made "
                        "from it is labelled simulated."
                        if o["label"] == "simulated"
                        else "Real data: built from APOGEE DR16 allStar + OCCAM files by rsca_core.apogee.",
                        className="small",
                    ),
                    _table(facts, id=f"{P}-facts"),
                ]
            ),
            class_name="mb-3 shadow-sm",
        )
    ]
    if o["cutflow"] is not None:
        parts.append(
            dbc.Card(
                dbc.CardBody(
                    [
                        html.Div("Cut-flow (stars left after each cut)", className="fw-semibold mb-2"),
                        _table(o["cutflow"]),
                    ]
                ),
                class_name="mb-3 shadow-sm",
            )
        )
    parts.append(_clusters_and_provenance(o))
    return parts


def _explore_link(ds, id):
    return html.A("Explore it →", href="/" if ds == "default" else f"/?ds={ds}", id=id)


@callback(
    Output(f"{P}-msg", "children"),
    Output(f"{P}-info", "children"),
    Output(f"{P}-pca-status", "children"),
    Output(f"{P}-url", "search"),
    Output(f"{P}-badge", "children"),
    Input(f"{P}-ds", "value"),
    Input(f"{P}-pca-result", "children"),
)
def update(ds, _done):
    try:
        o = service.dataset_overview(ds)
    except Exception as exc:
        msg = service.describe_error(exc)
        return ui.error_alert(msg), None, "no dataset", no_update, no_update
    status = (
        [
            f"Ready: the exact PCA compressions at K = {', '.join(map(str, o['prepared_ks']))} are cached "
            f"({len(o['ready_ks'])} K values in all); any other K is computed in the background when a page "
            "asks for it. ",
            _explore_link(ds, f"{P}-explore"),
        ]
        if o["compression_ready"]
        else f"Not computed yet: the spectra pages need the PCA compressions at K = "
        f"{', '.join(map(str, o['prepared_ks']))} of this dataset (one-off; minutes on a large survey). "
        "Abundance inputs work without them."
    )
    q = "" if ds == "default" else "?ds=" + ds
    return None, info_view(o), status, q, ui.kind_badge(o["label"])


@callback(
    Output(f"{P}-pca-result", "children"),
    Input(f"{P}-pca-run", "n_clicks"),
    State(f"{P}-ds", "value"),
    background=True,
    prevent_initial_call=True,
    running=[
        (Output(f"{P}-pca-run", "disabled"), True, False),
        (Output(f"{P}-pca-cancel", "disabled"), False, True),
        ui.progress_running(f"{P}-pca-progress"),
    ],
    cancel=[Input(f"{P}-pca-cancel", "n_clicks")],
    cache_args_to_ignore=[0],  # the click count: repeated clicks join one job
    **ui.progress_args(f"{P}-pca-progress", PCA_START),
)
def prepare(set_progress, _n, ds):
    try:
        service.admit()  # a slot in the job queue, or "busy, try again"
        service.prepare_compression(ds, report=service.progress_reporter(set_progress))
    except Exception as exc:
        return ui.error_alert(service.describe_error(exc))
    return dbc.Alert(
        [f"Compression ready for {ds}. ", _explore_link(ds, f"{P}-explore-ready")],
        color="success",
        class_name="py-1 mb-0",
    )


# The button under a finished build presses "Prepare compression" (the build selected the new survey)
# and scrolls to that card, where the job's progress and then the "Explore it →" link appear.
clientside_callback(
    """
    function(n, current) {
        if (!n) { return window.dash_clientside.no_update; }
        var card = document.getElementById("dt-pca-run");  // show the job's progress where it is drawn
        if (card) { card.scrollIntoView({block: "center"}); }
        return (current || 0) + 1;
    }
    """,
    Output(f"{P}-pca-run", "n_clicks"),
    Input(PREPARE_ID, "n_clicks"),
    State(f"{P}-pca-run", "n_clicks"),
    prevent_initial_call=True,
)

register_simulate_callbacks(dataset_select=f"{P}-ds")
