"""Curves: the paper's experiments (Fig. 2 K sweep, Table 1 top-N, Fig. 5 data size, Fig. 4 ablation),
and one beyond it: RSCA against the metric learners the paper cites (RCA, LDA, NCA).

Each runs as a background job (progress bar, cancel button; the page stays responsive) and its
finished result is cached on disk and shared by every user and worker (same dataset + parameters).
"""

from __future__ import annotations

import re

import dash
import dash_bootstrap_components as dbc
import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html, no_update

from . import _service as service
from . import _ui as ui

dash.register_page(__name__, path="/curves", name="Curves", title="RSCA Lab - Curves", order=2)

P = "cu"

CARDS = {
    "k_sweep": (
        "Rate vs K (Fig. 2)",
        "Global rate for each K, with and without leave-one-cluster-out CV.",
        [("ks", "K values", "5,10,15,20,25,30,40,50,60")],
    ),
    "top_n": (
        "Top-N axes (Table 1)",
        "Keep only the N most informative axes of a K map; mean ± std over "
        "compressions with different seeds (each extra seed is a new PCA: slow on a big survey).",
        [("k", "K", "30"), ("n_seeds", "seeds", "1")],
    ),
    "data_size": (
        "Rate vs number of training clusters (Fig. 5)",
        "Expected rate when the map is trained on m random clusters, averaged over trials.",
        [("ks", "K values", "10,20,30"), ("n_trials", "trials", "50")],
    ),
    "ablation": (
        "Inputs × variants (Fig. 4)",
        "Spectra, all 21 abundances and a subset, each with the raw, scaled and transformed (RSCA) metric.",
        [("k", "K", "30"), ("species", "subset", "Fe,Mg,Ni,Si,Al,C,N")],
    ),
    "methods": (
        "RSCA against other metric learners (beyond the paper)",
        "RSCA, relevant component analysis (RCA), LDA and NCA on the spectra and an abundance subset, each "
        "scored by the same leave-one-cluster-out protocol (every fold refits the method).",
        [("k", "K", "30"), ("species", "subset", "Fe,Mg,Ni,Si,Al,C,N")],
    ),
}


def _starting(name) -> str:
    """The progress text of a card's job before its first report: the job's name and what comes first."""
    return f"Starting: {CARDS[name][0]} (queued, then reading the data)…"


CAPS_TEXT = {
    "k_sweep": f"Limits on this server: at most {service.CAPS['k_values']} K values.",
    "top_n": f"Limits on this server: at most {service.CAPS['seeds']} seeds.",
    "data_size": (
        f"Limits on this server: at most {service.CAPS['data_size_ks']} K values and {service.CAPS['trials']} trials."
    ),
    "ablation": "",
    "methods": "Limits on this server: 4 methods × 2 inputs, K up to the server's largest.",
}


NOTHING_YET = "Nothing to download yet: press Run first (the CSV holds the run's table)."
NOT_YET_NOTE = "(after a run)"  # beside the CSV button while it is off
#: the first line of a figure left from an earlier run when the run after it is cancelled
PREVIOUS = "previous run"
PREVIOUS_COLOUR = "#b02a37"


def _default(name, field, value):
    if field in ("k",):
        return str(min(int(value), service.k_max()))
    if field == "ks":
        vals = [int(v) for v in value.split(",") if int(v) <= service.k_max()]
        return ",".join(map(str, vals or [service.k_max()]))
    return value


def card(name, query):
    title, text, fields = CARDS[name]
    inputs = []
    for field, label, value in fields:
        qv = query.get(f"{name}.{field}")
        inputs.append(
            dbc.Col(
                dbc.InputGroup(
                    [
                        dbc.InputGroupText(label, class_name="small"),
                        dbc.Input(
                            id=f"{P}-{name}-{field}",
                            value=str(service.one(qv))[:200] if qv is not None else _default(name, field, value),
                            size="sm",
                        ),
                    ],
                    size="sm",
                ),
                md=4,
            )
        )
    return dbc.Card(
        dbc.CardBody(
            [
                html.Div(title, className="fw-semibold"),
                html.P(
                    [text, " ", html.Span(CAPS_TEXT[name], id=f"{P}-{name}-caps")], className="small text-muted mb-2"
                ),
                dbc.Row(
                    inputs
                    + [
                        dbc.Col(
                            [
                                dbc.Button("Run", id=f"{P}-{name}-run", size="sm", color="primary", class_name="me-2"),
                                dbc.Button(
                                    "Cancel",
                                    id=f"{P}-{name}-cancel",
                                    size="sm",
                                    color="secondary",
                                    disabled=True,
                                    class_name="me-2",
                                ),
                                html.Span(  # the wrapper's tooltip too: some browsers show none on a disabled button
                                    [
                                        dbc.Button(
                                            "CSV",
                                            id=f"{P}-{name}-csv",
                                            size="sm",
                                            color="light",
                                            disabled=True,
                                            title=NOTHING_YET,
                                        ),
                                        html.Span(
                                            NOT_YET_NOTE, id=f"{P}-{name}-csv-note", className="small text-muted ms-1"
                                        ),
                                    ],
                                    id=f"{P}-{name}-csv-tip",
                                    title=NOTHING_YET,
                                    className="d-inline-block",
                                ),
                            ],
                            width="auto",
                        )
                    ],
                    class_name="g-2 mb-2",
                ),
                ui.progress_block(f"{P}-{name}-progress", _starting(name), class_name="mb-2"),
                html.Div(id=f"{P}-{name}-msg"),
                html.Div(id=f"{P}-{name}-csv-msg"),
                dcc.Graph(
                    id=f"{P}-{name}-fig",
                    figure=ui.empty_figure("press Run: the figure, its table and the CSV come here", height=260),
                    config=ui.GRAPH_CONFIG,
                ),
                html.Div(id=f"{P}-{name}-table"),
                dcc.Store(id=f"{P}-{name}-store"),
                dcc.Download(id=f"{P}-{name}-download"),
            ]
        ),
        class_name="mb-3 shadow-sm",
    )


def layout(**query):
    s, problems = service.settings_from_query({k: v for k, v in query.items() if k == "ds"})
    try:
        choices = service.dataset_choices()
    except Exception:
        choices = [{"label": "default", "value": "default"}]
    return html.Div(
        [
            html.H3(
                ["Curves: the paper's experiments", ui.kind_badge(None, id=f"{P}-badge")],
                className="mb-1",
                id=f"{P}-title",
            ),
            html.P(
                "Each experiment runs in the background: keep exploring meanwhile. Finished results are cached "
                "and shared; the same run again answers at once.",
                className="text-muted small",
            ),
            ui.messages(problems),
            dbc.Row(
                [
                    dbc.Col(dbc.Label("Dataset", class_name="small fw-semibold"), width="auto"),
                    dbc.Col(
                        dcc.Dropdown(
                            id=f"{P}-ds",
                            options=[{"label": c["label"], "value": c["value"]} for c in choices],
                            value=s.ds,
                            clearable=False,
                        ),
                        md=3,
                    ),
                ],
                class_name="mb-3",
                align="center",
            ),
            dbc.Row([dbc.Col(card("k_sweep", query), lg=6), dbc.Col(card("top_n", query), lg=6)]),
            dbc.Row([dbc.Col(card("data_size", query), lg=6), dbc.Col(card("ablation", query), lg=6)]),
            dbc.Row([dbc.Col(card("methods", query), lg=6)]),
        ]
    )


@callback(Output(f"{P}-badge", "children"), Input(f"{P}-ds", "value"))
def badge(ds):
    try:
        return ui.kind_badge(service.dataset_label(ds))
    except Exception:
        return None


#: the cards whose run shows a table under its figure
TABLES = ("top_n", "ablation", "methods")


def _table_view(name, table):
    if name not in TABLES:
        return None
    if name == "top_n":
        t = table[["axes", "mean", "std"] + [c for c in ("paper_mean", "paper_std") if c in table.columns]].copy()
    elif name == "ablation":
        t = table[["representation", "variant", "mean"] + [c for c in ("paper",) if c in table.columns]].copy()
    else:  # methods
        t = table[["representation", "method_name", "global_rate", "n_clusters_rated", "notes"]].copy()
        t = t.rename(columns={"method_name": "method", "n_clusters_rated": "clusters rated"})
    for c in t.columns:
        if pd.api.types.is_float_dtype(t[c]):
            t[c] = t[c].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    return dbc.Table.from_dataframe(t, size="sm", striped=True, class_name="small mb-0", id=f"{P}-{name}-tab")


def _register(name):
    fields = [f for f, _, _ in CARDS[name][2]]

    @callback(
        Output(f"{P}-{name}-fig", "figure"),
        Output(f"{P}-{name}-table", "children"),
        Output(f"{P}-{name}-store", "data"),
        Output(f"{P}-{name}-msg", "children"),
        Input(f"{P}-{name}-run", "n_clicks"),
        # the card's own id: every card's job function has the same source, so without it two cards
        # with the same values (ablation and methods: K, subset) would share one cached result
        State(f"{P}-{name}-run", "id"),
        State(f"{P}-ds", "value"),
        *[State(f"{P}-{name}-{f}", "value") for f in fields],
        background=True,
        prevent_initial_call=True,
        running=[
            (Output(f"{P}-{name}-run", "disabled"), True, False),
            (Output(f"{P}-{name}-cancel", "disabled"), False, True),
            ui.progress_running(f"{P}-{name}-progress"),
        ],
        cancel=[Input(f"{P}-{name}-cancel", "n_clicks")],
        **ui.progress_args(f"{P}-{name}-progress", _starting(name)),
        cache_args_to_ignore=[0],
    )
    def run(set_progress, _n, _card, ds, *values):
        try:
            service.admit()  # a slot in the job queue, or "busy, try again"
            table, fig = service.run_experiment(
                name, ds, dict(zip(fields, values)), report=service.progress_reporter(set_progress)
            )
        except Exception as exc:
            msg = service.describe_error(exc)
            return ui.empty_figure(msg, height=260), None, None, ui.error_alert(msg)
        fig.update_layout(height=380, width=None, template=ui.TEMPLATE)
        label = service.dataset_label(ds)
        params = {f: str(v) for f, v in zip(fields, values)}
        meta = {"experiment": name, "dataset": ds} | ({} if "label" in table.columns else {"data": label})
        csv = service.with_columns(table, meta | params).to_csv(index=False)
        return fig, _table_view(name, table), {"csv": csv, "label": label, "ds": ds, "params": params}, None

    @callback(
        Output(f"{P}-{name}-fig", "figure", allow_duplicate=True),
        Output(f"{P}-{name}-msg", "children", allow_duplicate=True),
        Input(f"{P}-{name}-cancel", "n_clicks"),
        State(f"{P}-{name}-fig", "figure"),
        State(f"{P}-{name}-store", "data"),
        prevent_initial_call=True,
    )
    def cancelled(_n, fig, store):
        """A cancelled run leaves the figure of the run before it: say so on it (and in exported PNGs)."""
        return cancelled_view(name, fig, store)

    @callback(
        Output(f"{P}-{name}-csv", "disabled"),
        Output(f"{P}-{name}-csv", "title"),
        Output(f"{P}-{name}-csv-tip", "title"),
        Output(f"{P}-{name}-csv-note", "children"),
        Input(f"{P}-{name}-store", "data"),
    )
    def csv_ready(store):
        ok = _valid(store)
        tip = "the run's table as CSV" if ok else NOTHING_YET
        return not ok, tip, tip, None if ok else NOT_YET_NOTE

    @callback(
        Output(f"{P}-{name}-download", "data"),
        Output(f"{P}-{name}-csv-msg", "children"),
        Input(f"{P}-{name}-csv", "n_clicks"),
        State(f"{P}-{name}-store", "data"),
        prevent_initial_call=True,
    )
    def download(_n, store):
        if not _valid(store):
            return no_update, ui.info_alert(NOTHING_YET)
        rest = "_".join(f"{service.name_part(f)}-{_value_part(v)}" for f, v in store["params"].items())
        filename = service.download_name("curves", name, store["ds"], rest, "csv")
        return {"content": store["csv"], "filename": filename, "type": "text/csv"}, None


def run_settings(name, store) -> str:
    """A finished run's parameters as the card names them, e.g. "K values 5,10,15" or "K 30, seeds 2"
    (and its dataset when it is not the default one)."""
    labels = {field: label for field, label, _ in CARDS[name][2]}
    parts = [f"{labels.get(f, f)} {v}" for f, v in store["params"].items()]
    if store["ds"] != "default":
        parts.append(f"dataset {store['ds']}")
    return ", ".join(parts)


def cancelled_view(name, fig, store):
    """(figure, message) after a cancelled run: the previous run's figure titled "previous run: <its
    settings>" (its own title below), or a blank panel when no run has finished in this card."""
    if not _valid(store) or not isinstance(fig, dict):
        text = "Run cancelled: nothing computed. Press Run to start again."
        return ui.empty_figure(text, height=260), ui.info_alert(text)
    settings = run_settings(name, store)
    what = "figure and table below are" if name in TABLES else "figure below is"
    msg = ui.info_alert(f"Run cancelled. The {what} the previous run's ({settings}).")
    fig = go.Figure(fig)
    title = fig.layout.title
    old = title.text or ""
    if old.startswith(f"<b>{PREVIOUS}</b>"):  # already labelled (a second cancel)
        return fig, msg
    below = " ".join(t for t in (old, title.subtitle.text if title.subtitle else None) if t)
    head = service.figure_title(f"<b>{PREVIOUS}</b>: {settings}", subtitle=below or None)
    fig.update_layout(title=head | {"font": {"size": 14, "color": PREVIOUS_COLOUR}})
    return fig, msg


def _valid(store) -> bool:
    """Whether a card's store holds a finished run (a browser store may hold anything)."""
    return (
        isinstance(store, dict)
        and all(isinstance(store.get(k), str) for k in ("csv", "label", "ds"))
        and isinstance(store.get("params"), dict)
    )


def _value_part(value) -> str:
    """A typed parameter for a file name: a list "5, 10,15" as "5.10.15"."""
    return service.name_part(".".join(p for p in re.split(r"[,; ]+", str(value)) if p), 40)


for _name in CARDS:
    _register(_name)
