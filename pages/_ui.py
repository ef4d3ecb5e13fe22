"""Small layout helpers shared by the pages (controls, badges, messages, figure labels)."""

from __future__ import annotations

import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import Input, Output, dcc, html

from . import _service as service

GRAPH_CONFIG = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png", "scale": 2},
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
}
TEMPLATE = "plotly_white"
#: Star density maps under marked stars: empty bins transparent, then light to dark grey.
DENSITY_SCALE = [[0.0, "rgba(255,255,255,0)"], [0.05, "#ececec"], [1.0, "#555555"]]
TOP_NOTE = "blank = all axes"
TOP_OFF_NOTE = "RSCA only: the other methods have no ranked axes to keep"
WEIGHTS_NOTE = "spectra only; each pixel weighted by 1/σ² (capped); computed once in the background"
NO_ERRORS_NOTE = "this dataset stores no flux errors (errors.npy)"
K_HELP = "spectra only; press Enter to apply"
K_HELP_SPECTRA_ONLY = "press Enter to apply"  # a page without the input choice: K is all there is
CLUSTERS_SELECTED = "{num_selected} clusters selected"


def cluster_colours(names):
    """A stable colour per cluster name (sorted order), the same on every page."""
    return service.cluster_colours(names)


def _top_note(inp, k, species) -> str:
    """The top-N help text with its range (the one the URL and the controls check), or the plain
    note while K or the subset is not valid (their own messages say why)."""
    try:
        k = service.parse_int(k, "K", service.K_MIN, service.k_max())
        sp = service.parse_species(species) if inp == "subset" else service.PAPER_SUBSET
        return service.top_note(inp, k, sp)
    except (service.UserError, KeyError):
        return TOP_NOTE


def kind_badge(label: str | None, id=None):
    """The "simulated" / "real" badge shown next to everything derived from a dataset."""
    kw = {"id": id} if id else {}
    if label is None:
        return html.Span(**kw)
    if label == "simulated":
        return dbc.Badge("simulated", color="warning", text_color="dark", class_name="ms-2 kind-badge", **kw)
    return dbc.Badge(label, color="success", class_name="ms-2 kind-badge", **kw)


def messages(problems, color="warning", id=None):
    if not problems:
        return html.Div(id=id) if id else None
    items = [html.Li(p) for p in problems] if len(problems) > 1 else problems[0]
    body = html.Ul(items, className="mb-0") if len(problems) > 1 else items
    kw = {"id": id} if id else {}
    return dbc.Alert(body, color=color, class_name="py-2 small", **kw)


def error_alert(text, notes=()):
    """The page's error; with ``notes`` (what the page set aside, e.g. a top-N out of range) all in a list."""
    body = html.Ul([html.Li(m) for m in [text, *notes]]) if notes else text
    return dbc.Alert(body, color="danger", class_name="py-2 user-error")


def info_alert(text):
    return dbc.Alert(text, color="info", class_name="py-2")


def progress_block(id, starting: str, class_name: str = "mt-2", hidden: bool = True):
    """A background job's progress: a line of text (the phase, the EM pass and its change) above a bar.

    The text sits outside the bar so that it is readable from the first second, when the bar is still
    empty; ``starting`` names the phase shown until the job's first report (``progress_args``). Hidden
    until the job runs (``progress_running``), unless ``hidden`` is False (a container shows it)."""
    return html.Div(
        [
            html.Div(starting, id=f"{id}-text", className="small text-muted mb-1 progress-text"),
            dbc.Progress(id=id, value=0, striped=True, animated=True),
        ],
        id=f"{id}-box",
        className=class_name,
        style={"display": "none"} if hidden else {},
    )


def progress_running(id):
    """The ``running=`` entry that shows a ``progress_block`` while its job runs."""
    return (Output(f"{id}-box", "style"), {"display": "block"}, {"display": "none"})


def progress_args(id, starting: str) -> dict:
    """``progress=`` and ``progress_default=`` of a background callback reporting to a ``progress_block``:
    (percent, text); before the first report the text names the phase (``starting``)."""
    return {
        "progress": [Output(id, "value"), Output(f"{id}-text", "children")],
        "progress_default": [0, starting],
    }


def label_figure(
    fig: go.Figure, label: str | None, title: str | None = None, top: int = 40, subtitle: str | None = None
) -> go.Figure:
    """Title a figure and stamp the data kind on it, so that exported PNGs say "simulated".

    The title starts below the modebar's strip (``service.MODEBAR_ROOM`` pixels); ``top`` is the
    room left under that strip for the title, its ``subtitle`` line and subplot titles above the plot."""
    tag = ""
    if label:
        colour = "#b8860b" if label == "simulated" else "#2e7d32"
        tag = f" <span style='color:{colour}'>({service.data_tag(label)})</span>"  # as on Curves and exports
    fig.update_layout(
        template=TEMPLATE,
        margin={"l": 60, "r": 20, "t": service.MODEBAR_ROOM + top, "b": 50},
        title=service.figure_title((title or "") + tag, font_size=14, subtitle=subtitle),
    )
    return fig


def empty_figure(text: str = "", height: int = 300) -> go.Figure:
    """A blank panel saying ``text`` (wrapped: an annotation does not wrap by itself)."""
    import textwrap

    text = "<br>".join(textwrap.wrap(text, 90))
    fig = go.Figure()
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        xaxis={"visible": False},
        yaxis={"visible": False},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        annotations=[
            {
                "text": text,
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "font": {"size": 14, "color": "#888"},
            }
        ]
        if text
        else [],
    )
    return fig


def graph(id, height=None, **kw):
    style = {"height": f"{height}px"} if height else {}
    return dcc.Graph(id=id, figure=empty_figure(), config=GRAPH_CONFIG, style=style, **kw)


def _field(label, control, help_=None, for_=None):
    """A labelled control; ``for_`` ties the label to a text box's id (a click on it focuses the box)."""
    return html.Div(
        [
            dbc.Label(label, class_name="small fw-semibold mb-1", **({"html_for": for_} if for_ else {})),
            control,
            dbc.FormText(help_) if help_ else None,
        ],
        className="mb-3",
    )


def _clusters_field(prefix, names, value):
    link = {"size": "sm", "color": "link"}
    return _field(
        "Training clusters",
        html.Div(
            [
                dcc.Dropdown(
                    id=f"{prefix}-clusters",
                    options=names,
                    value=value,
                    multi=True,
                    placeholder="select at least two clusters",
                    maxHeight=300,
                    # with two or more chosen the box shows only the count (app.css): the first names,
                    # cut to a few letters in a narrow column, said nothing ("B… 22 selected"); no clear
                    # button either (the "none" link below clears), so the count fits a 1024 px screen
                    labels={"selected_count": CLUSTERS_SELECTED},
                    className="cluster-select",
                    clearable=False,
                ),
                html.Div(
                    [
                        dbc.Button("all", id=f"{prefix}-clusters-all", class_name="p-0 me-2", **link),
                        dbc.Button("none", id=f"{prefix}-clusters-none", class_name="p-0", **link),
                    ],
                    className="mt-1",
                ),
            ]
        ),
    )


def settings_controls(
    prefix: str,
    s,
    *,
    with_input=True,
    with_top=True,
    with_cv=True,
    with_clusters=True,
    with_k=True,
    with_method=False,
    with_weights=False,
    k_help=None,
    k_for=None,
):
    """The common controls (dataset, input, K, clusters, CV, method, top-N) with ids ``{prefix}-…``.

    ``k_for`` ends the K label and ``k_help`` is the line under the box: a page whose K sets only part of
    it (beside other numbers of components) says which part.
    With ``with_method``, the top-N box is disabled (with a note) while the method is not RSCA
    (see :func:`register_settings_callbacks`)."""
    try:
        choices = service.dataset_choices()
    except Exception:
        choices = [{"label": "default", "value": "default"}]
    try:
        names = service.cluster_names(s.ds)
    except Exception:
        names = []
    clusters_value = list(s.clusters) if s.clusters is not None else names
    rows = [
        _field(
            "Dataset",
            dcc.Dropdown(
                id=f"{prefix}-ds",
                options=[{"label": c["label"], "value": c["value"]} for c in choices],
                value=s.ds,
                clearable=False,
            ),
        )
    ]
    if with_input:
        rows.append(
            _field(
                "Input",
                dbc.RadioItems(
                    id=f"{prefix}-input",
                    value=s.input,
                    options=[{"label": service.INPUT_LABELS[i], "value": i} for i in service.INPUTS],
                ),
            )
        )
        rows.append(
            html.Div(
                _field(
                    "Abundance subset",
                    dcc.Dropdown(
                        id=f"{prefix}-species", options=list(service.SPECIES), value=list(s.species), multi=True
                    ),
                ),
                id=f"{prefix}-species-box",
                style={} if s.input == "subset" else {"display": "none"},
            )
        )
    if with_k:
        rows.append(
            _field(
                f"K (PCA components, {service.K_MIN}–{service.k_max()})" + (f" {k_for}" if k_for else ""),
                dbc.Input(id=f"{prefix}-k", type="text", inputmode="numeric", value=str(s.k), debounce=True, size="sm"),
                k_help or (K_HELP if with_input else K_HELP_SPECTRA_ONLY),
                for_=f"{prefix}-k",
            )
        )
    if with_weights:
        try:
            errors = service.has_errors(s.ds)
        except Exception:
            errors = False
        rows.append(
            _field(
                "Compression",
                dbc.Switch(
                    id=f"{prefix}-weights",
                    label="use flux errors (weighted PCA)",
                    value=s.weights == "ivar",
                    disabled=not errors,
                ),
                html.Span(WEIGHTS_NOTE if errors else NO_ERRORS_NOTE, id=f"{prefix}-weights-note"),
            )
        )
    if with_clusters:
        rows.append(_clusters_field(prefix, names, clusters_value))
    if with_cv:
        rows.append(_field("Validation", dbc.Switch(id=f"{prefix}-cv", label="leave-one-cluster-out CV", value=s.cv)))
    if with_method:
        rows.append(
            _field(
                "Method",
                dbc.Select(
                    id=f"{prefix}-method",
                    value=s.method,
                    options=[{"label": service.METHOD_LABELS[m], "value": m} for m in service.METHODS],
                    size="sm",
                ),
                "the map each leave-one-cluster-out fold refits",
            )
        )
    if with_top:
        off = with_method and s.method != "rsca"
        rows.append(
            _field(
                "Top-N axes",
                dbc.Input(
                    id=f"{prefix}-top",
                    type="text",
                    inputmode="numeric",
                    value="" if s.top_n is None else str(s.top_n),
                    placeholder="all",
                    debounce=True,
                    size="sm",
                    disabled=off,
                ),
                html.Span(TOP_OFF_NOTE if off else _top_note(s.input, s.k, s.species), id=f"{prefix}-top-note"),
            )
        )
    return dbc.Card(dbc.CardBody(rows), class_name="shadow-sm")


def settings_inputs(
    prefix: str,
    with_input=True,
    with_top=True,
    with_cv=True,
    with_clusters=True,
    with_k=True,
    with_method=False,
    with_weights=False,
):
    ids = [
        ("ds", True),
        ("input", with_input),
        ("species", with_input),
        ("k", with_k),
        ("clusters", with_clusters),
        ("cv", with_cv),
        ("top", with_top),
        ("method", with_method),
        ("weights", with_weights),
    ]
    return [Input(f"{prefix}-{name}", "value") for name, on in ids if on]


def register_settings_callbacks(
    prefix: str, with_input=True, with_clusters=True, with_method=False, with_weights=False
):
    """Wire the helper behaviour of :func:`settings_controls` (cluster list per dataset, all/none,
    top-N off for a method other than RSCA)."""
    from dash import Output, State, callback, ctx, no_update

    if with_method:

        @callback(
            Output(f"{prefix}-top", "disabled"),
            Output(f"{prefix}-top-note", "children"),
            Input(f"{prefix}-method", "value"),
            Input(f"{prefix}-input", "value"),
            Input(f"{prefix}-k", "value"),
            Input(f"{prefix}-species", "value"),
        )
        def _top_for_method(method, inp, k, species):
            off = method != "rsca"
            return off, TOP_OFF_NOTE if off else _top_note(inp, k, species)

    if with_weights:

        @callback(
            Output(f"{prefix}-weights", "disabled"),
            Output(f"{prefix}-weights-note", "children"),
            Output(f"{prefix}-weights", "value"),
            Input(f"{prefix}-ds", "value"),
            prevent_initial_call=True,
        )
        def _weights_for_dataset(ds):
            try:
                errors = service.has_errors(ds)
            except Exception:
                errors = False
            return not errors, WEIGHTS_NOTE if errors else NO_ERRORS_NOTE, no_update if errors else False

    if with_clusters:

        @callback(
            Output(f"{prefix}-clusters", "options"),
            Output(f"{prefix}-clusters", "value"),
            Input(f"{prefix}-ds", "value"),
            Input(f"{prefix}-clusters-all", "n_clicks"),
            Input(f"{prefix}-clusters-none", "n_clicks"),
            State(f"{prefix}-clusters", "options"),
            prevent_initial_call=True,
        )
        def _clusters(ds, _all, _none, options):
            if ctx.triggered_id == f"{prefix}-clusters-none":
                return no_update, []
            try:
                names = service.cluster_names(ds)
            except Exception:
                return [], []
            return names, names

    if with_input:

        @callback(Output(f"{prefix}-species-box", "style"), Input(f"{prefix}-input", "value"))
        def _species_box(inp):
            return {} if inp == "subset" else {"display": "none"}
