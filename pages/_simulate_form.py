"""The Data page's "build a simulated survey" form (rsca_core.simulate, in the background).

The switchable effects come from the simulator's own table of switches (SWITCH_TABLE), so the form
follows the simulator without a copy of its parameter list.
"""

from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, clientside_callback, dcc, html, no_update

from . import _service as service
from . import _ui as ui

P = "sim"
SIMULATE_START = "Starting: simulating the survey (queued, then drawing the stars)…"
PREPARE_ID = f"{P}-prepare"  # the button under a finished build (pressed through the Data page)


def _notice_card(text):
    body = [html.Div("Build a simulated survey", className="fw-semibold"), ui.info_alert(text)]
    return dbc.Card(dbc.CardBody(body), class_name="shadow-sm")


def _fields(policy):
    def field(label, control, md):
        return dbc.Col([dbc.Label(label, class_name="small fw-semibold"), control], md=md)

    n_field = str(min(1000, policy["max_stars"]))
    return dbc.Row(
        [
            field("Name", dbc.Input(id=f"{P}-name", value="my-survey", size="sm"), 3),
            field("Field stars", dbc.Input(id=f"{P}-nfield", value=n_field, inputmode="numeric", size="sm"), 3),
            field("Seed", dbc.Input(id=f"{P}-seed", value="1", inputmode="numeric", size="sm"), 2),
        ],
        class_name="mb-2",
    )


def simulate_card():
    policy = service.build_policy()
    if not policy["allowed"]:
        return _notice_card(service.BUILDS_OFF)
    try:
        opts = service.simulate_options()
    except Exception as exc:
        return _notice_card(service.describe_error(exc))
    switches = [
        dbc.Checkbox(
            id={"type": f"{P}-flag", "flag": o["name"]}, label=o["label"], value=o["default"], class_name="small"
        )
        for o in opts["switches"]
    ]
    return dbc.Card(
        dbc.CardBody(
            [
                html.Div("Build a simulated survey", className="fw-semibold mb-1"),
                html.P(
                    "Writes a new bundle into the data folder (it then appears in every dataset menu). "
                    "Runs in the background; you can keep using the other pages. On this server: at most "
                    f"{policy['max_stars']:,} field stars, one build at a time, {policy['used_mb']:,.0f} of "
                    f"{policy['quota_mb']:,} MB of browser-built data used.",
                    className="small text-muted",
                ),
                _fields(policy),
                html.Div(
                    [dbc.Label("Effects", class_name="small fw-semibold"), html.Div(switches, className="sim-flags")]
                )
                if switches
                else None,
                dbc.Button("Build", id=f"{P}-run", color="primary", size="sm", class_name="me-2 mt-2"),
                dcc.Store(id=f"{P}-request"),  # one token per click: each click is a new build (see below)
                dbc.Button("Cancel", id=f"{P}-cancel", color="secondary", size="sm", class_name="mt-2", disabled=True),
                ui.progress_block(f"{P}-progress", SIMULATE_START),
                html.Div(id=f"{P}-result", className="small mt-2"),
            ]
        ),
        class_name="shadow-sm",
    )


def built_alert(name: str):
    """What a finished build says: the new survey, and (its spectra are not compressed yet) a button
    that prepares the compression Explore needs, instead of a link to a page that cannot show it yet."""
    parts = [f"Built {name} (now selected above). "]
    if service.compression_ready(name):
        parts.append(html.A("Explore it →", href=f"/?ds={name}", id=f"{P}-explore"))
    else:
        parts += [
            "Explore needs its spectra compressed first (a one-off job in the background; progress in the "
            "Spectra compression card above): ",
            dbc.Button("Prepare the compression, then explore →", id=PREPARE_ID, size="sm", color="success"),
        ]
    parts += [" ", html.A("(Data page)", href=f"/data?ds={name}")]
    return dbc.Alert(parts, color="success", class_name="py-1 mb-0")


def register_simulate_callbacks(dataset_select: str):
    """The build job (only when the operator allows builds: otherwise there is nothing to call).

    A finished build is offered in ``dataset_select`` (the page's dataset menu) and selected there."""
    if not service.build_policy()["allowed"]:
        return

    # Each click becomes a request token of its own (the click count and the browser's clock), which
    # the build job takes as its input: the job store never answers a click with an earlier build's
    # result (a survey deleted and built again under the same name and settings was reported "Built"
    # without being built). A second click while a build runs cannot happen: the button is disabled.
    clientside_callback(
        "function(n) { return n ? {n: n, t: Date.now()} : window.dash_clientside.no_update; }",
        Output(f"{P}-request", "data"),
        Input(f"{P}-run", "n_clicks"),
        prevent_initial_call=True,
    )

    @callback(
        Output(f"{P}-result", "children"),
        Output(dataset_select, "options"),
        Output(dataset_select, "value"),
        Input(f"{P}-request", "data"),
        State(f"{P}-name", "value"),
        State(f"{P}-nfield", "value"),
        State(f"{P}-seed", "value"),
        State({"type": f"{P}-flag", "flag": ALL}, "value"),
        State({"type": f"{P}-flag", "flag": ALL}, "id"),
        background=True,
        prevent_initial_call=True,
        running=[
            (Output(f"{P}-run", "disabled"), True, False),
            (Output(f"{P}-cancel", "disabled"), False, True),
            ui.progress_running(f"{P}-progress"),
        ],
        cancel=[Input(f"{P}-cancel", "n_clicks")],
        **ui.progress_args(f"{P}-progress", SIMULATE_START),
    )
    def build(set_progress, _n, name, n_field, seed, flag_values, flag_ids):
        try:
            service.admit()  # a slot in the job queue, or "busy, try again"
            flags = {str(i["flag"]): bool(v) for i, v in zip(flag_ids or [], flag_values or [])}
            path = service.build_simulated(name, n_field, seed, flags, report=service.progress_reporter(set_progress))
        except Exception as exc:
            return ui.error_alert(service.describe_error(exc)), no_update, no_update
        name = path.name
        choices = [{"label": c["label"], "value": c["value"]} for c in service.dataset_choices()]
        return built_alert(name), choices, name
