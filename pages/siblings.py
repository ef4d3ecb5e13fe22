"""Siblings: a star's nearest stars in RSCA space, a cluster's candidate escapees, uploads placed among them."""

from __future__ import annotations

import math
from urllib.parse import urlencode

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, callback, ctx, dash_table, dcc, html, no_update

from . import _service as service
from . import _siblings_figures as figs
from . import _ui as ui

data = service.siblings
dash.register_page(__name__, path="/siblings", name="Siblings", title="RSCA Lab - Siblings", order=6)

P = "sb"
MODES = {"star": "a star's siblings", "cluster": "a cluster's candidates", "upload": "upload spectra"}
N_DEFAULT, N_MAX = 50, 500
#: why the pair filter is off for uploads: it compares two stars' VHELIO_AVG and AK_TARG
PF_UPLOAD_NOTE = "not used for uploads: an uploaded spectrum has no VHELIO or AK to compare"
TABLE_COLUMNS = (
    ("apogee_id", "APOGEE_ID", None),
    ("distance", "distance", ".4f"),
    ("sibling_score", "sibling score", ".3f"),
    ("d_fe_h", "Δ[Fe/H]", "+.3f"),
    ("d_teff", "ΔTeff", "+.0f"),
    ("d_logg", "Δlogg", "+.2f"),
    ("d_vhelio", "ΔVHELIO", "+.1f"),
    ("d_ak", "ΔAK", "+.3f"),
    ("cluster", "cluster", None),
)


def _columns(keys):
    out = []
    for key, name, fmt in TABLE_COLUMNS:
        if key in keys:
            col = {"id": key, "name": name}
            if fmt:
                col |= {"type": "numeric", "format": {"specifier": fmt}}
            out.append(col)
    return out


def _page_params(query) -> tuple[dict, list[str]]:
    """mode, star, n, pf, cluster, sib from the URL query; a bad value falls back with a message."""
    q = {k: (v[-1] if isinstance(v, list) else v) for k, v in (query or {}).items()}
    problems = []
    mode = q.get("mode") or "star"
    if mode not in MODES:
        problems.append(f"URL parameter mode: {str(mode)[:30]!r} is not one of {', '.join(MODES)}; showing a star")
        mode = "star"
    n = N_DEFAULT
    if q.get("n") is not None:
        try:
            n = service.parse_int(q["n"], "n", 1, N_MAX)
        except service.UserError as exc:
            problems.append(f"URL parameter n: {exc}; using {N_DEFAULT}")
    pf = str(q.get("pf", "0")).lower() in ("1", "true", "on")
    star, cluster, sib = (str(q[k])[:60] if q.get(k) else None for k in ("star", "cluster", "sib"))
    return {"mode": mode, "star": star, "n": n, "pf": pf, "cluster": cluster, "sib": sib}, problems


def _controls(s, p):
    try:
        names = service.cluster_names(s.ds)
        star = p["star"] or data.default_star(s.ds)
        options = data.star_options(s.ds, None, star)
    except Exception:
        names, star, options = [], p["star"], []
    cluster = p["cluster"] or (names[0] if names else None)

    def field(label, control, help_=None, id=None):
        return html.Div(
            [
                dbc.Label(label, class_name="small fw-semibold mb-1"),
                control,
                dbc.FormText(help_) if help_ is not None else None,
            ],
            className="mb-3",
            **({"id": id} if id else {}),
        )

    return dbc.Card(
        dbc.CardBody(
            [
                field(
                    "Show",
                    dbc.RadioItems(
                        id=f"{P}-mode", value=p["mode"], options=[{"label": v, "value": k} for k, v in MODES.items()]
                    ),
                ),
                field(
                    "Star (type part of an APOGEE_ID)",
                    dcc.Dropdown(id=f"{P}-star", options=options, value=star, searchable=True, clearable=False),
                    id=f"{P}-star-box",
                ),
                field(
                    "Cluster",
                    dcc.Dropdown(id=f"{P}-cluster", options=names, value=cluster, clearable=False),
                    id=f"{P}-cluster-box",
                ),
                field(
                    f"Number of siblings (1–{N_MAX})",
                    dbc.Input(
                        id=f"{P}-n", type="text", inputmode="numeric", value=str(p["n"]), debounce=True, size="sm"
                    ),
                ),
                field(
                    "Pair filter",
                    dbc.Switch(
                        id=f"{P}-pf",
                        label="|ΔVHELIO| < 5 km/s, |ΔAK| < 0.05",
                        value=p["pf"],
                        disabled=p["mode"] == "upload",
                    ),
                    html.Span(PF_UPLOAD_NOTE if p["mode"] == "upload" else None, id=f"{P}-pf-note"),
                ),
                field(
                    "aspcapStar files",
                    dcc.Upload(
                        id=f"{P}-upload",
                        children=html.Div(["Drop or ", html.A("choose"), " aspcapStar FITS files"]),
                        multiple=True,
                        className="upload-box small text-center border rounded p-2",
                    ),
                    f"up to {data.MAX_UPLOAD_FILES} files of {data.MAX_UPLOAD_BYTES // 2**20} MB each; "
                    "HDU 1 flux, HDU 2 error, 8575 pixels",
                    id=f"{P}-upload-box",
                ),
            ]
        ),
        class_name="shadow-sm mt-3",
    )


def layout(**query):
    s, problems = service.settings_from_query(query)
    p, more = _page_params(query)
    return html.Div(
        [
            dcc.Location(id=f"{P}-url", refresh=False),
            dcc.Download(id=f"{P}-download"),
            dcc.Store(id=f"{P}-init", data={"sib": p["sib"]}),
            dcc.Store(id=f"{P}-csv"),
            html.H3(["Chemical siblings", ui.kind_badge(None, id=f"{P}-badge")], className="mb-1"),
            html.P(
                "The stars nearest a star in RSCA space (the map fitted on every cluster): its chemical "
                "siblings. The sibling score is the share of known cluster-member pairs that are farther "
                "apart (1 = closer than every known sibling pair). Pick a row to compare the spectra.",
                className="text-muted small",
            ),
            ui.messages(problems + more),
            dbc.Row(
                [
                    dbc.Col(
                        [
                            ui.settings_controls(P, s, with_cv=False, with_top=False, with_clusters=False),
                            _controls(s, p),
                        ],
                        md=3,
                    ),
                    dbc.Col(
                        [
                            html.Div(id=f"{P}-msg"),
                            dcc.Loading(html.Div(id=f"{P}-summary", className="mb-2"), type="dot", delay_show=400),
                            dash_table.DataTable(
                                id=f"{P}-table",
                                columns=_columns([c[0] for c in TABLE_COLUMNS]),
                                data=[],
                                sort_action="native",
                                row_selectable="single",
                                selected_rows=[],
                                page_size=12,
                                style_table={"overflowX": "auto"},
                                style_cell={"fontSize": "0.8rem", "padding": "2px 6px"},
                            ),
                            html.Div(
                                dbc.Button(
                                    "Table (CSV)", id=f"{P}-dl-csv", color="secondary", size="sm", disabled=True
                                ),
                                className="mt-2 mb-3",
                            ),
                            html.Div(id=f"{P}-uploads", className="mb-3"),
                            dbc.Card(dbc.CardBody(ui.graph(f"{P}-features", height=380)), class_name="mb-3"),
                            dbc.Card(dbc.CardBody(ui.graph(f"{P}-spectrum", height=460)), class_name="mb-3"),
                        ],
                        md=9,
                    ),
                ]
            ),
        ]
    )


ui.register_settings_callbacks(P, with_clusters=False)


@callback(
    Output(f"{P}-star", "options"),
    Input(f"{P}-star", "search_value"),
    State(f"{P}-star", "value"),
    State(f"{P}-ds", "value"),
    prevent_initial_call=True,
)
def star_options(search, current, ds):
    if not search:
        return no_update
    try:
        return data.star_options(ds, search, current)
    except Exception:
        return no_update


@callback(
    Output(f"{P}-star-box", "style"),
    Output(f"{P}-cluster-box", "style"),
    Output(f"{P}-upload-box", "style"),
    Output(f"{P}-pf", "disabled"),
    Output(f"{P}-pf-note", "children"),
    Input(f"{P}-mode", "value"),
)
def boxes(mode):
    """The controls of the chosen mode; the pair filter is kept (as set) but off for uploads."""
    hide = {"display": "none"}
    upload = mode == "upload"
    return (
        {} if mode == "star" else hide,
        {} if mode == "cluster" else hide,
        {} if upload else hide,
        upload,
        PF_UPLOAD_NOTE if upload else None,
    )


def _query(s, mode, star, n, pf, cluster, sib):
    q = service.settings_to_query(s, keys=("ds", "input", "k", "species"))
    extra = {"mode": mode} if mode != "star" else {}
    if mode == "star" and star:
        extra["star"] = star
    if mode == "cluster" and cluster:
        extra["cluster"] = cluster
    if n != N_DEFAULT:
        extra["n"] = n
    if pf:
        extra["pf"] = 1
    if sib:
        extra["sib"] = sib
    if not extra:
        return q
    return (q + "&" if q else "?") + urlencode(extra, safe=",")


@callback(
    Output(f"{P}-msg", "children"),
    Output(f"{P}-summary", "children"),
    Output(f"{P}-table", "data"),
    Output(f"{P}-table", "columns"),
    Output(f"{P}-table", "selected_rows"),
    Output(f"{P}-uploads", "children"),
    Output(f"{P}-features", "figure"),
    Output(f"{P}-spectrum", "figure"),
    Output(f"{P}-url", "search"),
    Output(f"{P}-badge", "children"),
    Output(f"{P}-csv", "data"),
    Output(f"{P}-star", "value"),
    Input(f"{P}-ds", "value"),
    Input(f"{P}-input", "value"),
    Input(f"{P}-species", "value"),
    Input(f"{P}-k", "value"),
    Input(f"{P}-mode", "value"),
    Input(f"{P}-star", "value"),
    Input(f"{P}-cluster", "value"),
    Input(f"{P}-n", "value"),
    Input(f"{P}-pf", "value"),
    Input(f"{P}-upload", "contents"),
    Input(f"{P}-table", "selected_rows"),
    Input(f"{P}-features", "clickData"),
    State(f"{P}-upload", "filename"),
    State(f"{P}-table", "data"),
    State(f"{P}-init", "data"),
)
def update(ds, inp, species, k, mode, star, cluster, n, pf, contents, selected, click, filenames, old_rows, init):
    trigger = ctx.triggered_id
    if trigger == f"{P}-features":  # a click on a marked star: show that star's siblings
        clicked = ((click or {}).get("points") or [{}])[0].get("text")
        if mode != "star" or not clicked:
            return (no_update,) * 12
        star, selected = clicked, []
    label = None
    try:
        s = service.settings_from_controls(ds, inp, k, species, service.ALL, True, None)
        n = service.parse_int(n, "number of siblings", 1, N_MAX)
        emb = data.embedding(s)
        label = emb.label
        want = _wanted_row(trigger, selected, old_rows, init)
        if mode == "cluster":
            out = _cluster_view(s, emb, cluster, pf, want)
        elif mode == "upload":
            out = _upload_view(s, emb, contents, filenames, n, want)
        else:
            out = _star_view(s, emb, star, n, pf, want)
    except Exception as exc:  # a message in the page, never a traceback
        msg = service.describe_error(exc)
        empty = ui.empty_figure(msg)
        badge = no_update if label is None else ui.kind_badge(label)
        return ui.error_alert(msg), None, [], no_update, [], None, empty, empty, no_update, badge, None, no_update
    table, chosen_index, summary, uploads, feat, spec, csv, sib_id = out
    rows = table.reset_index().to_dict("records") if table is not None else []
    shown = (
        []
        if table is None
        else [c for c in table.columns if not (table[c].dtype.kind == "f" and table[c].isna().all())]
    )
    columns = _columns(shown)  # no column of NaN (an uploaded star has no labels to compare)
    return (
        None,
        summary,
        rows,
        columns,
        [chosen_index] if chosen_index is not None else [],
        uploads,
        feat,
        spec,
        _query(s, mode, star, n, pf, cluster, sib_id),
        ui.kind_badge(label),
        csv,
        star if mode == "star" else no_update,
    )


def _wanted_row(trigger, selected, old_rows, init):
    """APOGEE_ID of the row to show: the user's pick; on first load the URL's; else None (the first)."""
    if trigger == f"{P}-table" and selected:
        rows = old_rows or []
        return rows[selected[0]].get("apogee_id") if selected[0] < len(rows) else None
    if trigger is None:
        return (init or {}).get("sib")
    return None


def _chosen(table, want):
    """Position in ``table`` of apogee_id ``want`` (else the first row), or None for an empty table."""
    if table is None or not len(table):
        return None
    ids = table["apogee_id"].tolist()
    return ids.index(want) if want in ids else 0


def _fmt(v, spec):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _star_view(s, emb, star, n, pf, want):
    if not star:
        raise service.UserError("choose a star")
    info = data.star_info(s, star)
    table = emb.siblings(info["row"], n=n, pair_filter=bool(pf))
    pos = _chosen(table, want)
    home = f"member of {info['cluster']}" if info["cluster"] else "field star"
    n_members = int((table["cluster"] != "").sum())
    summary = html.Div(
        [
            html.Span(info["apogee_id"], id=f"{P}-star-id", className="fw-bold me-2"),
            html.Span(
                f"{home}; Teff {_fmt(info['teff'], '.0f')} K, logg {_fmt(info['logg'], '.2f')}, "
                f"[Fe/H] {_fmt(info['fe_h'], '+.3f')}. {len(table)} nearest stars"
                f"{' passing the pair filter' if pf else ''}, {n_members} of them cluster members; "
                f"{int((table['sibling_score'] > 0).sum())} closer than some known sibling pair.",
                className="small",
            ),
        ],
        id=f"{P}-star-summary",
    )
    sib_rows = table.index.to_numpy()
    chosen_row = None if pos is None else int(sib_rows[pos])
    feat = figs.features_vs_feh(
        emb.coords,
        data.fe_h(s),
        emb.label,
        star=(info["row"], info["apogee_id"]),
        siblings=(sib_rows, table["apogee_id"].tolist()),
        chosen=None if chosen_row is None else (chosen_row, emb.apogee_id[chosen_row]),
    )
    other = None if chosen_row is None else data.spectrum(s, chosen_row)
    spec = figs.spectrum_pair(data.wavelength(s), data.spectrum(s, info["row"]), other, emb.label, data.element_lines())
    csv = data.siblings_download(table, s, "star", info["apogee_id"], emb.label, pf, n)
    return table, pos, summary, None, feat, spec, csv, None if other is None else other["name"]


def _cluster_view(s, emb, cluster, pf, want):
    if not cluster:
        raise service.UserError("choose a cluster")
    res = emb.candidates(cluster, pair_filter=bool(pf))
    table = res.table
    pos = _chosen(table, want)
    rate = _fmt(res.loo_rate, ".4f")
    expected = (
        "undefined"
        if not np.isfinite(res.expected_chance)
        else f"{res.expected_chance:.1f} ± {res.expected_chance_sd:.1f}"
    )
    summary = html.Div(
        [
            html.Div(
                [
                    html.Span(f"{res.n_candidates}", id=f"{P}-n-candidates", className="fs-4 fw-bold me-2"),
                    html.Span(
                        f"field stars within {res.radius:.3f} (the median distance between {res.cluster}'s "
                        f"{res.n_members} members) of the members' median position"
                    ),
                ]
            ),
            html.Div(
                [
                    "expected by chance: ",
                    html.Span(expected, id=f"{P}-expected", className="fw-bold"),
                    f" = leave-one-cluster-out rate {rate} × {res.n_searched:,} field stars searched"
                    f"{' (pair-filtered)' if pf else ''}",
                ],
                className="small",
            ),
        ]
    )
    members = np.flatnonzero(emb.cluster == res.cluster)
    fe_h = data.fe_h(s)
    rows = table.index.to_numpy()
    chosen_row = None if pos is None else int(rows[pos])
    feat = figs.features_vs_feh(
        emb.coords,
        fe_h,
        emb.label,
        siblings=(rows, table["apogee_id"].tolist()),
        chosen=None if chosen_row is None else (chosen_row, emb.apogee_id[chosen_row]),
        members=(members, emb.apogee_id[members].tolist()),
        siblings_label="candidates",
        title=f"Candidate members of {res.cluster} among all stars",
    )
    centre_member = int(members[np.argmin(((emb.coords[members] - res.centre) ** 2).sum(1))])
    other = None if chosen_row is None else data.spectrum(s, chosen_row)
    spec = figs.spectrum_pair(
        data.wavelength(s), data.spectrum(s, centre_member), other, emb.label, data.element_lines()
    )
    csv = data.siblings_download(table, s, "cluster", f"{res.cluster}-candidates", emb.label, pf)
    return table, pos, summary, None, feat, spec, csv, None if other is None else other["name"]


def _upload_view(s, emb, contents, filenames, n, want):
    if not contents:
        msg = "upload aspcapStar files to place them among the survey's stars"
        return None, None, ui.info_alert(msg), None, ui.empty_figure(msg), ui.empty_figure(msg), None, None
    files, problems = data.decode_uploads(contents, filenames)
    results, bad = data.project_uploads(s, files, n)
    problems += bad
    cards = [ui.messages(problems, color="danger", id=f"{P}-upload-msg")] if problems else []
    if not results:
        msg = "no uploaded file could be read"
        return (
            None,
            None,
            ui.messages(problems, color="danger", id=f"{P}-upload-msg"),
            None,
            ui.empty_figure(msg),
            ui.empty_figure(msg),
            None,
            None,
        )
    first = results[0]
    table = first["siblings"]
    pos = _chosen(table, want)
    items = []
    for r in results:
        sib = r["siblings"]
        items.append(
            html.Li(
                [
                    html.Span(r["name"], className="fw-bold me-1 uploaded-name"),
                    f"nearest {sib['apogee_id'].iloc[0]} at {sib['distance'].iloc[0]:.3f} "
                    f"(sibling score {_fmt(float(sib['sibling_score'].iloc[0]), '.3f')}"
                    f"{', member of ' + sib['cluster'].iloc[0] if sib['cluster'].iloc[0] else ''})",
                ]
            )
        )
    cards.append(html.Ul(items, className="small", id=f"{P}-upload-list"))
    summary = html.Div(
        f"{len(results)} uploaded star(s) placed in RSCA space; the table lists the siblings of {first['name']}.",
        className="small",
    )
    fe_h = data.fe_h(s)
    new = {
        "names": [r["name"] for r in results],
        "coords": np.array([r["coords"] for r in results]),
        # [Fe/H] of an uploaded star is unknown: drawn at its siblings' median (said in the legend)
        "fe_h": np.array([np.nanmedian(fe_h[r["siblings"].index.to_numpy()]) for r in results]),
    }
    rows = table.index.to_numpy()
    chosen_row = None if pos is None else int(rows[pos])
    feat = figs.features_vs_feh(
        emb.coords,
        fe_h,
        emb.label,
        siblings=(rows, table["apogee_id"].tolist()),
        chosen=None if chosen_row is None else (chosen_row, emb.apogee_id[chosen_row]),
        new_points=new,
    )
    other = None if chosen_row is None else data.spectrum(s, chosen_row)
    spec = figs.spectrum_pair(data.wavelength(s), first["spectrum"], other, emb.label, data.element_lines())
    csv = data.siblings_download(table, s, "upload", first["name"], emb.label, False, n)
    return (
        table,
        pos,
        summary,
        html.Div(cards),
        feat,
        spec,
        csv,
        None if chosen_row is None else emb.apogee_id[chosen_row],
    )


def _download_ready(store) -> bool:
    return isinstance(store, dict) and all(isinstance(store.get(k), str) for k in ("content", "filename"))


@callback(Output(f"{P}-dl-csv", "disabled"), Input(f"{P}-csv", "data"))
def csv_ready(store):
    """The CSV button is off while there is no table to download."""
    return not _download_ready(store)


@callback(
    Output(f"{P}-download", "data"),
    Input(f"{P}-dl-csv", "n_clicks"),
    State(f"{P}-csv", "data"),
    prevent_initial_call=True,
)
def download(_n, store):
    if not _download_ready(store):
        return no_update
    return {"content": store["content"], "filename": service.name_part(store["filename"], 200), "type": "text/csv"}
