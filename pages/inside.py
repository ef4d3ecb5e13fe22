"""Inside RSCA (teaching): the four steps of Fig. 1 on this dataset, and the axes in wavelength space."""

from __future__ import annotations

from urllib.parse import urlencode

import dash
import dash_bootstrap_components as dbc
import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, callback, clientside_callback, dcc, html, no_update
from plotly.colors import qualitative

from . import _service as service
from . import _ui as ui

dash.register_page(__name__, path="/inside", name="Inside RSCA", title="RSCA Lab - Inside RSCA", order=4)

P = "in"

EXPLAIN = (
    "Compress: every spectrum (8575 pixels, some missing) becomes its first K principal-component scores. "
    "Here K = 2 so we can draw it. Grey: field stars; colours: open-cluster members. PCA is linear and the "
    "spectra are not linear in the stars' labels, so the field cloud is curved.",
    "Sphere: subtract the field mean and whiten with the field covariance. Whitening is a linear map, so it "
    "cannot straighten the curved cloud of step 1: the cloud keeps its shape, sheared and rescaled until the "
    "field has variance 1 along every direction and no correlation between the axes (its covariance is the "
    "identity, below). Distances no longer favour the directions where stars vary most.",
    "Reparametrize: subtract from each cluster star its cluster's mean and find the principal axes of these "
    "residuals. Rotating into them lines the axes up with the directions along which cluster members scatter; "
    "the field's covariance stays the identity, as a rotation cannot change that. The angle of the rotation is given below: it is "
    "small when the members already scatter along the sphered axes, and then this step barely moves the plot.",
    "Rescale: divide each residual axis by σ = sqrt(σc²/(1−σc²)), where σc is the pooled robust spread of "
    "cluster members along it (the field's spread is 1), then order the axes by σ, smallest first: RSCA axis 1 "
    "is the direction in which siblings are tightest relative to the field. Axes where siblings are as spread "
    "as the field (σc ≥ 1) get weight 0. Each axis is stretched as a whole (field and clusters alike, by 1/σ, "
    "below), so the axes along which siblings are tightest count most in a distance.",
)

#: Height of the step plot (px), also in its layout: drawn first at another height, Plotly would widen the
#: fixed ranges to keep one unit the same length on both axes, and keep the wider ranges after a resize.
STEPS_HEIGHT = 640

#: The plotted axes of each step, x then y (the numbers under the text use the same order).
AXIS_TITLES = (
    ("PC 1", "PC 2"),
    ("sphered axis 1", "sphered axis 2"),
    ("residual axis 1", "residual axis 2"),
    ("RSCA axis 1 (most informative)", "RSCA axis 2"),
)

#: Strong lines in the APOGEE window (Å), SPEC §5: shown as markers on the axis vectors.
LINES = {
    "Fe": (15207, 15294, 15490, 15648, 15662, 15964, 16040, 16153, 16165, 16487),
    "Mg": (15740, 15749, 15765, 15886, 15954),
    "Si": (15377, 15888, 15960, 16060, 16095, 16380, 16681),
    "Al": (16719, 16751, 16763),
    "Ca": (16137, 16151, 16157, 16197),
    "Ti": (15544, 15603, 15716, 16635),
    "Ni": (15606, 16584, 16589, 16674),
    "Mn": (15159, 15218, 15263),
    "K": (15163, 15168),
    "Na": (16374, 16389),
    "S": (15470, 15476, 15479),
    "Cr": (15680, 15860),
    "V": (15925,),
    "Co": (16758,),
    "Cu": (16006,),
    "Ce": (15785,),
    "CO": (15580, 15780, 16190, 16610),
    "DIB": (15273, 15653),
}
#: One distinct colour per species marker (Plotly's 24-colour qualitative palette, in LINES' order).
LINE_COLOURS = dict(zip(LINES, qualitative.Dark24))


def layout(**query):
    s, problems = service.settings_from_query(query)
    step = 1
    if query.get("step") is not None:
        try:
            step = service.parse_int(service.one(query["step"]), "step", 1, 4)
        except service.UserError as exc:
            problems.append(f"URL parameter step: {exc}; using step 1")
    return html.Div(
        [
            dcc.Location(id=f"{P}-url", refresh=False),
            dcc.Store(id=f"{P}-data"),  # the four steps' figures and texts of the current settings
            html.H3(["Inside RSCA", ui.kind_badge(None, id=f"{P}-badge")], className="mb-1"),
            html.P(
                "The four steps of the method (the paper's Fig. 1), run on the first two principal components of "
                "this dataset, then every axis of a full map drawn in wavelength space.",
                className="text-muted small",
            ),
            ui.messages(problems),
            dbc.Row(
                [
                    dbc.Col(ui.settings_controls(P, s, with_input=False, with_top=False, with_cv=False), md=3),
                    dbc.Col(
                        [
                            html.Div(id=f"{P}-msg"),
                            dbc.Card(
                                dbc.CardBody(
                                    [
                                        html.Div("Step", className="small fw-semibold"),
                                        html.Div(
                                            dcc.Slider(
                                                id=f"{P}-step",
                                                min=1,
                                                max=4,
                                                step=1,
                                                value=step,
                                                allow_direct_input=False,
                                                marks={i + 1: n for i, n in enumerate(service.STEP_NAMES)},
                                            ),
                                            className="px-4",
                                        ),
                                        html.P(id=f"{P}-explain", className="mt-3 mb-1"),
                                        html.Div(id=f"{P}-numbers", className="small text-muted"),
                                        dcc.Loading(
                                            ui.graph(f"{P}-steps", height=STEPS_HEIGHT), type="dot", delay_show=400
                                        ),
                                    ]
                                ),
                                class_name="mb-3",
                            ),
                            _axes_card(),
                        ],
                        md=9,
                    ),
                ]
            ),
        ]
    )


def _axes_card():
    axis = dcc.Dropdown(
        id=f"{P}-axis", options=[{"label": f"axis {i + 1}", "value": i} for i in range(5)], value=0, clearable=False
    )
    return dbc.Card(
        dbc.CardBody(
            [
                html.P(
                    "Each RSCA output axis is a linear function of the spectrum: below, the weight it gives to every "
                    "pixel (the map at the K chosen on the left, fitted on the selected clusters). Peaks at the "
                    "marked lines show which elements an axis reads.",
                    className="small",
                ),
                dbc.Row(
                    [dbc.Col(dbc.Label("Axis", class_name="small fw-semibold"), width="auto"), dbc.Col(axis, width=3)],
                    class_name="mb-2",
                ),
                dcc.Loading(ui.graph(f"{P}-vectors", height=380), type="dot", delay_show=400),
            ]
        )
    )


ui.register_settings_callbacks(P, with_input=False)


def steps_figure(d, step):
    f = d["field"][step]
    c = d["clusters"][step]
    names = np.asarray(d["names"]).astype(str)
    colours = ui.cluster_colours(names)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=f[:, 0].tolist(),
            y=f[:, 1].tolist(),
            mode="markers",
            name=f"field (sample of {len(f)})",
            marker={"size": 3, "color": "rgba(120,120,120,0.35)"},
            hoverinfo="skip",
        )
    )
    for name in sorted(colours):
        m = names == name
        fig.add_trace(
            go.Scatter(
                x=c[m, 0].tolist(),
                y=c[m, 1].tolist(),
                mode="markers",
                name=name,
                marker={"size": 7, "color": colours[name], "line": {"width": 0.6, "color": "white"}},
                hovertemplate=name + "<extra></extra>",
            )
        )
    axes = AXIS_TITLES[step]
    lim = np.nanpercentile(np.abs(np.concatenate([f, c])), 99) * 1.2 if step else None
    fig.update_xaxes(title_text=axes[0], range=[-lim, lim] if lim else None, zeroline=True)
    fig.update_yaxes(
        title_text=axes[1], range=[-lim, lim] if lim else None, zeroline=True, scaleanchor="x", scaleratio=1
    )
    # every cluster's legend entry visible: rows under the plot, not a scrolling column
    fig.update_layout(
        legend={"font": {"size": 10}, "orientation": "h", "yanchor": "top", "y": -0.12, "x": 0}, height=STEPS_HEIGHT
    )
    return ui.label_figure(fig, d["label"], service.STEP_NAMES[step])


def vectors_figure(v, axis):
    w = v["wavelength"]
    y = v["vectors"][axis]
    fig = go.Figure(
        go.Scatter(
            x=w,
            y=y,
            mode="lines",
            line={"width": 1, "color": "#2c3e50"},
            name=f"axis {axis + 1}",
            hovertemplate="%{x:.1f} Å<br>%{y:.3g}<extra></extra>",
        )
    )
    top = float(np.nanmax(np.abs(y))) if np.isfinite(y).any() else 1.0
    for el, waves in LINES.items():
        xs = [x for x in waves if w[0] <= x <= w[-1]]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[top * 1.08] * len(xs),
                mode="markers",
                name=el,
                marker={"symbol": "triangle-down", "size": 8, "color": LINE_COLOURS[el]},
                hovertemplate=el + " %{x} Å<extra></extra>",
            )
        )
    sc = v["scales"][axis]
    fig.update_layout(
        xaxis_title="wavelength (Å)",
        yaxis_title="weight per pixel",
        legend={"font": {"size": 10}, "orientation": "h", "yanchor": "top", "y": -0.22, "x": 0},
    )
    return ui.label_figure(
        fig, v["label"], f"RSCA axis {axis + 1} of the K = {v['k']} map in wavelength space (σ = {sc:.3g})"
    )


def _num(x) -> str:
    return "∞" if not np.isfinite(x) else f"{x:.3f}"


def rotation_degrees(d) -> float:
    """The angle (0–90°) by which step 3 turns the sphered axes: from the linear map between the cluster
    stars' coordinates after steps 2 and 3 (a rotation, possibly with a reflection or a swap of axes)."""
    a, b = np.asarray(d["clusters"][1], float), np.asarray(d["clusters"][2], float)
    R = np.linalg.lstsq(a - a.mean(0), b - b.mean(0), rcond=None)[0]
    return float(np.degrees(np.arccos(min(1.0, abs(R[0, 0]) / max(np.linalg.norm(R[:, 0]), 1e-300)))))


def step_numbers(d, step) -> str:
    """The numbers under a step's text, axis by axis in the order of its plot (x, then y)."""
    if step == 0:
        sd = np.sqrt(np.diag(d["field_cov"][0]))
        return (
            f"x: PC 1, field standard deviation {sd[0]:.3g}; y: PC 2, field standard deviation {sd[1]:.3g}. "
            f"{d['n_field']:,} field stars in all (a sample of {len(d['field'][0]):,} drawn)."
        )
    if step == 1:
        c = d["field_cov"][1]
        return (
            f"Field covariance after sphering (all {d['n_field']:,} field stars): variance along x {c[0, 0]:.3f}, "
            f"along y {c[1, 1]:.3f}, covariance {c[0, 1]:+.3f}."
        )
    sc = d["sigma_c"]
    if step == 2:
        return (
            f"The rotation turns the axes by {rotation_degrees(d):.1f}°. "
            f"Pooled robust spread of cluster members σc: x: residual axis 1, σc = {_num(sc[0])}; "
            f"y: residual axis 2, σc = {_num(sc[1])}."
        )
    parts = []
    for i, name in enumerate(("x", "y")):
        j = int(d["order"][i])
        sigma = d["scales"][i]
        weight = "0" if not np.isfinite(sigma) else f"{1 / sigma:.3g}"
        parts.append(
            f"{name}: RSCA axis {i + 1} = residual axis {j + 1}, σc = {_num(sc[j])}, σ = {_num(sigma)} "
            f"(multiplied by 1/σ = {weight})"
        )
    return "; ".join(parts) + "."


def _not_ready_note(ds) -> list:
    """What to do when the dataset's compressions are missing (a freshly built survey): the Data page
    prepares every one this page draws (K = 2 and the map's K); Explore computes K = 2 alone."""
    return [
        "These steps are drawn from the dataset's K = 2 compression, which is not computed yet: prepare the "
        "dataset's compressions on the ",
        dcc.Link("Data page", href="/data"),
        " (“Prepare compression”, with its progress), or ",
        dcc.Link("open Explore at K = 2", href="/?" + urlencode({"ds": ds or "", "k": 2})),
        ", which computes that one in the background; then come back here.",
    ]


def _empty_store(text) -> dict:
    """The slider's store when there is nothing to draw: ``text`` in place of every step's plot."""
    empty = ui.empty_figure(text).to_plotly_json()
    return {"figs": [empty] * 4, "numbers": [None] * 4, "explain": list(EXPLAIN)}


def steps_store(s) -> dict:
    """Everything the step slider shows, for every step, so that moving it only redraws (in the browser)."""
    d = service.inside_steps(s)
    return {
        "figs": [steps_figure(d, i).to_plotly_json() for i in range(4)],
        "numbers": [step_numbers(d, i) for i in range(4)],
        "explain": list(EXPLAIN),
        "query": service.settings_to_query(s, keys=("ds", "k", "clusters")),
    }


@callback(
    Output(f"{P}-msg", "children"),
    Output(f"{P}-data", "data"),
    Output(f"{P}-badge", "children"),
    *ui.settings_inputs(P, with_input=False, with_top=False, with_cv=False),
)
def update(ds, k, clusters):
    try:
        s = service.settings_from_controls(ds, "spectra", k, None, clusters, True, None)
        return None, steps_store(s), ui.kind_badge(service.dataset_label(s.ds))
    except service.CompressionNotReady:
        # The K = 2 fit this page draws is missing (a freshly built survey): the Data page or Explore
        # computes it in the background (the one job queue), with its progress; no work starts here.
        return ui.info_alert(_not_ready_note(ds)), _empty_store("the K = 2 compression is not computed yet"), no_update
    except Exception as exc:
        msg = service.describe_error(exc)
        return ui.error_alert(msg), _empty_store(msg), no_update


# Moving the slider picks the step from the store in the browser: no round trip to the server.
clientside_callback(
    """
    function(step, data) {
        var nu = window.dash_clientside.no_update;
        var i = (step >= 1 && step <= 4) ? step - 1 : 0;
        if (!data || !data.figs) { return [nu, nu, nu, nu]; }
        var q = data.query === undefined ? nu : (data.query ? data.query + "&" : "?") + "step=" + (i + 1);
        // a copy: Plotly writes the ranges it draws back into the figure, and the store's is drawn again
        var fig = JSON.parse(JSON.stringify(data.figs[i]));
        return [fig, data.explain[i], data.numbers[i], q];
    }
    """,
    Output(f"{P}-steps", "figure"),
    Output(f"{P}-explain", "children"),
    Output(f"{P}-numbers", "children"),
    Output(f"{P}-url", "search"),
    Input(f"{P}-step", "value"),
    Input(f"{P}-data", "data"),
)


@callback(
    Output(f"{P}-vectors", "figure"),
    Input(f"{P}-axis", "value"),
    *ui.settings_inputs(P, with_input=False, with_top=False, with_cv=False),
)
def update_vectors(axis, ds, k, clusters):
    try:
        s = service.settings_from_controls(ds, "spectra", k, None, clusters, True, None)
        v = service.axis_vectors(s)
        axis = int(axis) if axis is not None and 0 <= int(axis) < len(v["vectors"]) else 0
        return vectors_figure(v, axis)
    except service.CompressionNotReady:
        return ui.empty_figure(f"the K = {k} compression is not computed yet: prepare it on the Data page")
    except Exception as exc:
        return ui.empty_figure(service.describe_error(exc))
