"""Systematics: the paper's App. A (interstellar bands), App. B (radial velocity) and App. C (visits)."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html, no_update

from . import _service as service
from . import _ui as ui

dash.register_page(__name__, path="/systematics", name="Systematics", title="RSCA Lab - Systematics", order=3)

P = "sy"
RESID_START = "Starting: App. A/B residuals (queued, then compressing the spectra)…"
RATE_START = "Starting: the rate with these pixels masked (queued, then compressing)…"


def layout(**query):
    s, problems = service.settings_from_query(query)
    unit = "A"
    try:
        mask_text = service.mask_text(s.ds, s.mask, unit)
    except Exception:  # no usable wavelength grid: show the ranges in pixels
        unit, mask_text = "px", service.mask_text(s.ds, s.mask, "px")
    return html.Div(
        [
            dcc.Location(id=f"{P}-url", refresh=False),
            dcc.Store(id=f"{P}-resid"),
            html.H3(["Systematics", ui.kind_badge(None, id=f"{P}-badge")], className="mb-1"),
            html.P(
                "Where do non-chemical signals hide in the spectra? Residuals of high-extinction and high-velocity "
                "stars from a PCA of their quiet counterparts (paper App. A and B), and whether siblings observed "
                "together look more alike than siblings observed apart (App. C).",
                className="text-muted small",
            ),
            ui.messages(problems),
            dbc.Row(
                [
                    dbc.Col(_controls(s), md=3),
                    dbc.Col(
                        [html.Div(id=f"{P}-msg"), _residuals_card(), _mask_card(mask_text, unit), _visits_card()], md=9
                    ),
                ]
            ),
        ]
    )


#: The page has two numbers of PCA components that do different things; each box says which part it sets.
K_FOR = "for App. C and the masked rate"
K_HELP = "the compression of every star that App. C and the rate with bands masked use; press Enter to apply"
NCOMP_MIN, NCOMP_MAX = 2, 60
NCOMP_LABEL = f"App. A/B: PCA components of the quiet stars ({NCOMP_MIN}–{NCOMP_MAX})"
NCOMP_HELP = (
    "not K: a separate PCA of the low-extinction and low-velocity stars, whose residuals the App. A and B "
    "panels show; runs in the background, cached for everyone; press Enter to apply"
)


def _controls(s):
    return [
        ui.settings_controls(
            P, s, with_input=False, with_top=False, with_cv=False, with_clusters=False, k_help=K_HELP, k_for=K_FOR
        ),
        dbc.Card(
            dbc.CardBody(
                [
                    dbc.Label(NCOMP_LABEL, html_for=f"{P}-ncomp", class_name="small fw-semibold mb-1"),
                    dbc.Input(id=f"{P}-ncomp", type="text", value="30", inputmode="numeric", size="sm", debounce=True),
                    dbc.FormText(NCOMP_HELP),
                ]
            ),
            class_name="mt-3 shadow-sm",
        ),
    ]


def _residuals_card():
    running = dbc.Row(
        [
            # shown with the row (``{P}-running``), which also holds the Cancel button
            dbc.Col(ui.progress_block(f"{P}-progress", RESID_START, class_name="", hidden=False)),
            dbc.Col(dbc.Button("Cancel", id=f"{P}-cancel", size="sm", color="secondary"), width="auto"),
        ],
        align="center",
        class_name="mb-2",
    )
    return dbc.Card(
        dbc.CardBody(
            [
                html.Div(running, id=f"{P}-running", style={"display": "none"}),
                ui.graph(f"{P}-ext", height=400),
                ui.graph(f"{P}-rv", height=400),
            ]
        ),
        class_name="mb-3",
    )


MASK_PLACEHOLDER = {"A": "e.g. 15267-15280, 15640-15660", "px": "e.g. 720-910, 2370-2470"}


def _mask_card(mask_text, unit):
    ranges = dbc.InputGroup(
        [
            dbc.InputGroupText("extra masked ranges", class_name="small"),
            dbc.Input(id=f"{P}-mask", value=mask_text, placeholder=MASK_PLACEHOLDER[unit], debounce=True, size="sm"),
            dbc.Select(
                id=f"{P}-mask-unit",
                options=[{"label": label, "value": u} for u, label in service.MASK_UNITS.items()],
                value=unit,
                size="sm",
                style={"maxWidth": "6.5rem"},
            ),
            dbc.Button("paper's bands", id=f"{P}-mask-paper", size="sm", color="light"),
            dbc.Button("suggested (App. A)", id=f"{P}-mask-suggested", size="sm", color="light"),
        ],
        size="sm",
        class_name="mb-2",
    )
    return dbc.Card(
        dbc.CardBody(
            [
                html.Div("Masked bands and the rate", className="fw-semibold mb-1"),
                html.P(
                    "Shaded above: the ranges below (grey) and the bands App. A and B suggest (pink). Enter "
                    "wavelength ranges in Å (every pixel whose wavelength lies in a range is masked) or switch "
                    "to pixel indices, and compute the rate with them masked (a new compression of the spectra: "
                    f"runs in the background; at most {service.MAX_MASK_RANGES} ranges).",
                    className="small",
                ),
                ranges,
                html.Div(id=f"{P}-mask-msg"),
                html.Div(id=f"{P}-mask-pixels", className="small text-muted mb-2"),
                dbc.Button(
                    "Compute the rate with these bands masked",
                    id=f"{P}-rate-run",
                    size="sm",
                    color="primary",
                    class_name="me-2",
                ),
                dbc.Button("Cancel", id=f"{P}-rate-cancel", size="sm", color="secondary", disabled=True),
                ui.progress_block(f"{P}-rate-progress", RATE_START),
                html.Div(id=f"{P}-rate-result", className="mt-2"),
            ]
        ),
        class_name="mb-3",
    )


def _visits_card():
    return dbc.Card(
        dbc.CardBody([html.Div(id=f"{P}-visits-summary", className="small mb-1"), ui.graph(f"{P}-visits", height=380)])
    )


USER_BAND = "rgba(90, 100, 110, 0.35)"  # the ranges typed below the panels
SUGGESTED_BAND = "rgba(232, 67, 147, 0.40)"  # the bands App. A/B suggest
MIN_BAND_FRACTION = 0.0015  # a band is drawn at least this fraction of the axis wide, so one pixel shows


def _band(w, a, b, colour):
    """A shaded wavelength band over pixels [a, b) (clipped to the spectrum), at least
    MIN_BAND_FRACTION of the axis wide (centred on the band) so that a band of one pixel is visible."""
    a, b = min(a, len(w) - 1), min(b, len(w)) - 1
    x0, x1 = float(w[a]), float(w[max(a, b)])
    room = MIN_BAND_FRACTION * float(w[-1] - w[0])
    if x1 - x0 < room:
        mid = 0.5 * (x0 + x1)
        x0, x1 = mid - room / 2, mid + room / 2
    return {
        "type": "rect",
        "xref": "x",
        "yref": "paper",
        "x0": x0,
        "x1": x1,
        "y0": 0,
        "y1": 1,
        "fillcolor": colour,
        "line": {"width": 0},
        "layer": "below",
    }


def _legend_entry(name, colour):
    """A legend line for the shaded bands (shapes have no legend entries of their own)."""
    return go.Scatter(
        x=[None],
        y=[None],
        mode="markers",
        name=name,
        marker={"symbol": "square", "size": 12, "color": colour},
        hoverinfo="skip",
    )


def residual_figure(d, kind, user_mask, label):
    title, selection = {
        "extinction": ("App. A: residuals of high-extinction stars", "AK_TARG > 0.5 against AK_TARG < 0.005"),
        "rv": ("App. B: residuals of high-velocity stars", "VHELIO_AVG > 80 km/s against |VHELIO_AVG| < 5 km/s"),
    }[kind]
    if d is None:
        return ui.empty_figure("not computed yet")
    if "error" in d:
        return ui.label_figure(ui.empty_figure(d["error"]), label, title)
    w = np.asarray(d["wavelength"])
    fig = go.Figure(
        go.Scatter(
            x=w,
            y=d["residual"],
            mode="lines",
            line={"width": 1, "color": "#2c3e50"},
            name="mean residual",
            hovertemplate="%{x:.1f} Å: %{y:.4f}<extra></extra>",
        )
    )
    n_bands = len(d["bands"])
    fig.add_trace(_legend_entry(f"suggested band ({n_bands})", SUGGESTED_BAND))
    if user_mask:
        fig.add_trace(_legend_entry(f"your masked range ({len(user_mask)})", USER_BAND))
    # one list of shapes set once: adding them one by one costs the square of their number
    shapes = [_band(w, a, b, USER_BAND) for a, b in user_mask] + [_band(w, a, b, SUGGESTED_BAND) for a, b in d["bands"]]
    sm = d["summary"]
    fig.update_layout(
        shapes=shapes,
        xaxis_title="wavelength (Å)",
        yaxis_title="mean residual flux",
        legend={"orientation": "h", "x": 0, "y": -0.32, "xanchor": "left", "yanchor": "top", "font": {"size": 11}},
    )
    subtitle = f"{selection}: {sm.get('n_high', '?')} against {sm.get('n_low', '?')} stars" + (
        f"; quiet-star PCA with {sm['n_components']} components" if sm.get("n_components") else ""
    )
    # the data tag ends the short first line: at the end of the long second one a narrow screen cut it off
    fig = ui.label_figure(fig, label, title, top=60, subtitle=f"<span style='font-size:11px'>{subtitle}</span>")
    fig.update_layout(margin={"b": 95})
    return fig


@callback(
    Output(f"{P}-resid", "data"),
    Input(f"{P}-ds", "value"),
    Input(f"{P}-ncomp", "value"),
    background=True,
    running=[(Output(f"{P}-running", "style"), {}, {"display": "none"})],
    cancel=[Input(f"{P}-cancel", "n_clicks")],
    **ui.progress_args(f"{P}-progress", RESID_START),
)
def run_residuals(set_progress, ds, ncomp):
    try:
        service.admit()  # a slot in the job queue, or "busy, try again"
        n = service.parse_int(ncomp, "App. A/B PCA components", NCOMP_MIN, NCOMP_MAX)
        return service.residual_diagnostics(ds, n_components=n, report=service.progress_reporter(set_progress))
    except Exception as exc:
        return {"error": service.describe_error(exc)}


@callback(
    Output(f"{P}-mask", "value"),
    Output(f"{P}-mask", "placeholder"),
    Input(f"{P}-mask-paper", "n_clicks"),
    Input(f"{P}-mask-suggested", "n_clicks"),
    Input(f"{P}-mask-unit", "value"),
    State(f"{P}-resid", "data"),
    State(f"{P}-mask", "value"),
    State(f"{P}-ds", "value"),
    prevent_initial_call=True,
)
def fill_mask(_p, _s, unit, resid, text, ds):
    unit = unit if unit in service.MASK_UNITS else "A"
    placeholder = MASK_PLACEHOLDER[unit]
    trigger = dash.ctx.triggered_id
    try:
        if trigger == f"{P}-mask-paper":
            ranges = service.paper_mask_ranges()
        elif trigger == f"{P}-mask-suggested":
            try:
                ranges = service.check_residuals(resid).get("extinction", {}).get("bands") or []
            except service.UserError:
                ranges = []
        else:  # the unit was switched: the text is in the other unit; rewrite it in this one
            ranges = service.parse_mask_text(ds, text, "px" if unit == "A" else "A")
        return service.mask_text(ds, ranges, unit), placeholder
    except Exception:  # unreadable text: leave it for the message under the box
        return no_update, placeholder


@callback(
    Output(f"{P}-msg", "children"),
    Output(f"{P}-ext", "figure"),
    Output(f"{P}-rv", "figure"),
    Output(f"{P}-mask-msg", "children"),
    Output(f"{P}-mask-pixels", "children"),
    Output(f"{P}-url", "search"),
    Output(f"{P}-badge", "children"),
    Input(f"{P}-resid", "data"),
    Input(f"{P}-mask", "value"),
    Input(f"{P}-ds", "value"),
    Input(f"{P}-mask-unit", "value"),
    State(f"{P}-k", "value"),
)
def draw(resid, mask_text, ds, unit, k):
    try:
        label = service.dataset_label(ds)
    except Exception as exc:
        msg = service.describe_error(exc)
        return ui.error_alert(msg), ui.empty_figure(msg), ui.empty_figure(msg), None, None, no_update, no_update
    if dash.ctx.triggered_id == f"{P}-mask-unit" and _reads_as(ds, mask_text, "px" if unit == "A" else "A"):
        return (no_update,) * 7  # fill_mask rewrites the text in the new unit, which draws again
    mask_msg, mask, pixels = None, (), None
    try:
        mask = service.parse_mask_text(ds, mask_text, unit)
    except service.UserError as exc:
        mask_msg = ui.error_alert(str(exc))
    if mask and unit == "A":
        pixels = "= pixels " + ", ".join(f"{a}-{b}" for a, b in mask) + " (start included, stop excluded)"
    msg = None
    try:
        resid = service.check_residuals(resid)
    except service.UserError as exc:
        msg, resid = ui.error_alert(str(exc)), {}
    search = service.settings_to_query(service.Settings(ds=ds, mask=mask, k=_k(k)), keys=("ds", "k", "mask"))
    return (
        msg,
        residual_figure(resid.get("extinction"), "extinction", mask, label),
        residual_figure(resid.get("rv"), "rv", mask, label),
        mask_msg,
        pixels,
        search,
        ui.kind_badge(label),
    )


def _reads_as(ds, text, unit) -> bool:
    try:
        service.parse_mask_text(ds, text, unit)
        return True
    except Exception:
        return False


def _k(k):
    try:
        return service.parse_int(k, "K", service.K_MIN, service.k_max())
    except service.UserError:
        return service.Settings().k


@callback(
    Output(f"{P}-rate-result", "children"),
    Input(f"{P}-rate-run", "n_clicks"),
    State(f"{P}-ds", "value"),
    State(f"{P}-k", "value"),
    State(f"{P}-mask", "value"),
    State(f"{P}-mask-unit", "value"),
    background=True,
    prevent_initial_call=True,
    running=[
        (Output(f"{P}-rate-run", "disabled"), True, False),
        (Output(f"{P}-rate-cancel", "disabled"), False, True),
        ui.progress_running(f"{P}-rate-progress"),
    ],
    cancel=[Input(f"{P}-rate-cancel", "n_clicks")],
    cache_args_to_ignore=[0],  # the click count: repeated clicks join one job
    **ui.progress_args(f"{P}-rate-progress", RATE_START),
)
def rate_with_mask(set_progress, _n, ds, k, mask_text, unit):
    try:
        service.admit()  # a slot in the job queue, or "busy, try again"
        s = service.settings_from_controls(ds, "spectra", k, None, service.ALL, True, None)
        mask = service.parse_mask_text(ds, mask_text, unit)
        if not mask:
            raise service.UserError("enter at least one range to mask")
        r = service.rate_with_mask(s, mask, report=service.progress_reporter(set_progress))
    except Exception as exc:
        return ui.error_alert(service.describe_error(exc))
    label = service.dataset_label(ds)
    return html.Div(
        [
            html.Span(f"K = {s.k}, CV, all clusters: global rate "),
            html.B(f"{r['without']:.4f}", id=f"{P}-rate-without"),
            html.Span(" without these bands → "),
            html.B(f"{r['with']:.4f}", id=f"{P}-rate-with"),
            html.Span(" with them masked"),
            ui.kind_badge(label),
        ]
    )


@callback(
    Output(f"{P}-visits", "figure"),
    Output(f"{P}-visits-summary", "children"),
    Input(f"{P}-ds", "value"),
    Input(f"{P}-k", "value"),
)
def visits(ds, k):
    try:
        s = service.settings_from_controls(ds, "spectra", k, None, service.ALL, True, None)
        v = service.visit_comparison(s)
    except Exception as exc:
        msg = service.describe_error(exc)
        return ui.empty_figure(msg), None
    fig = go.Figure()
    for key, colour in (("together", "#27ae60"), ("separate", "#8e44ad")):
        vals = v[key]
        fig.add_histogram(
            x=vals,
            name=f"observed {key} ({len(vals)} pairs)",
            histnorm="probability density",
            opacity=0.6,
            marker_color=colour,
            nbinsx=30,
        )
    fig.update_layout(
        barmode="overlay",
        xaxis_title="pair distance / median pair distance of its cluster (RSCA space; smaller = more alike)",
        yaxis_title="probability density",
        legend={"orientation": "h", "x": 0, "y": -0.3, "xanchor": "left", "yanchor": "top"},
    )
    sm = v["summary"]
    mt, ms = sm.get("median_together"), sm.get("median_separate")
    p = next((sm[key] for key in ("mannwhitney_p", "p_mannwhitney", "p_value") if sm.get(key) is not None), None)
    text = (
        f"Median normalised pair distance: together {mt:.3f}, separate {ms:.3f}"
        if mt is not None and ms is not None
        else "Not enough pairs in one of the groups"
    ) + (
        f"; one-sided Mann-Whitney test of 'together closer than separate': p = {p:.3g}, "
        + (
            "significant at 5 % (siblings observed together are closer)"
            if p < 0.05
            else "not significant at 5 % (no evidence here of a shared-visit effect)"
        )
        if p is not None and np.isfinite(p)
        else ""
    )
    fig = ui.label_figure(
        fig, v["label"], f"App. C: distances between siblings observed together vs separately (K = {s.k})"
    )
    fig.update_layout(margin={"b": 90})
    return fig, text


ui.register_settings_callbacks(P, with_input=False, with_clusters=False)
