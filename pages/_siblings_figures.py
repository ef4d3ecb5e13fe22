"""Figures of the Siblings page, from plain arrays (no data access here).

Built as plain plotly dicts where a figure has many points: plotly's validators would cost more than
the drawing.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import _ui as ui

STAR_COLOUR = "#d4a017"
SIBLING_COLOUR = "#c0392b"
CHOSEN_COLOUR = "#1f77b4"
NEW_COLOUR = "#2e7d32"
DENSITY_BINS = 70
DENSITY_SCALE = ui.DENSITY_SCALE
#: Axis ranges cover this share of all stars (and every marked star): outliers do not squeeze the view.
RANGE_PERCENTILES = (0.5, 99.5)


def _range(values, marked):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    m = np.asarray(marked, float)
    m = m[np.isfinite(m)]
    if not len(v):
        return None
    lo, hi = np.percentile(v, RANGE_PERCENTILES)
    if len(m):
        lo, hi = min(lo, m.min()), max(hi, m.max())
    pad = 0.05 * (hi - lo or 1.0)
    return [float(lo - pad), float(hi + pad)]


def _density(x, y, xr, yr, bins=DENSITY_BINS):
    """log10(1 + counts) of the stars on a grid over the plotted ranges ``xr`` × ``yr``."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any() or xr is None or yr is None:
        return None
    counts, xe, ye = np.histogram2d(x[ok], y[ok], bins=bins, range=[xr, yr])
    return {
        "x": (0.5 * (xe[1:] + xe[:-1])).round(5).tolist(),
        "y": (0.5 * (ye[1:] + ye[:-1])).round(5).tolist(),
        "z": np.round(np.log10(1 + counts.T), 4).tolist(),
        "colorscale": DENSITY_SCALE,
        "showscale": False,
        "hoverinfo": "skip",
        "type": "heatmap",
        "name": "all stars",
    }


def _layers(fe_h, coords, star, siblings, chosen, new_points, members, siblings_label):
    """(legend, colour, size, symbol, [Fe/H] values, (n, axes) coordinates, names) of each marked set."""
    out = []
    for legend, colour, size, symbol, rows_ids in (
        (siblings_label, SIBLING_COLOUR, 7, "circle", siblings),
        ("cluster members", STAR_COLOUR, 9, "circle", members),
        ("chosen", CHOSEN_COLOUR, 12, "diamond", None if chosen is None else ([chosen[0]], [chosen[1]])),
        ("the star", STAR_COLOUR, 16, "star", None if star is None else ([star[0]], [star[1]])),
    ):
        if rows_ids is not None and len(rows_ids[0]):
            rows = np.asarray(rows_ids[0], dtype=int)
            out.append((legend, colour, size, symbol, fe_h[rows], coords[rows], list(rows_ids[1])))
    if new_points is not None and len(new_points["names"]):
        legend = "uploaded (at its siblings' median [Fe/H])"
        out.append((legend, NEW_COLOUR, 13, "x", new_points["fe_h"], new_points["coords"], new_points["names"]))
    return out


def features_vs_feh(
    coords,
    fe_h,
    label,
    star=None,
    siblings=None,
    chosen=None,
    new_points=None,
    members=None,
    siblings_label="siblings",
    n_features=3,
    title="Siblings among all stars",
):
    """Top RSCA features vs [Fe/H]: every star as a grey density, the siblings (or candidates) in
    red, the chosen one in blue, the star as a gold star, a cluster's ``members`` as gold circles and
    projected new stars (``new_points``: dict with ``coords``, ``fe_h`` and ``names``) as green
    crosses, drawn at their siblings' median [Fe/H] (their own is not known).

    ``star``, ``chosen``: (row, apogee_id) or None; ``siblings``, ``members``: (rows, apogee_ids).
    Marker hover texts are the stars' APOGEE_IDs (the page reads clicks from them). The axes cover
    RANGE_PERCENTILES of all stars plus every marked star.
    """
    n = min(n_features, coords.shape[1])
    fe_h = np.asarray(fe_h, float)
    fig = make_subplots(rows=1, cols=n, horizontal_spacing=0.07)
    for i in range(n):
        fig.update_xaxes(title_text="[Fe/H]", row=1, col=i + 1)
        fig.update_yaxes(title_text=f"RSCA feature {i + 1}", title_standoff=4, row=1, col=i + 1)
    fig = ui.label_figure(fig, label, f"{title}: RSCA features vs [Fe/H]")
    fig.update_layout(legend={"orientation": "h", "y": -0.25, "font": {"size": 11}})
    out = fig.to_plotly_json()
    layers = _layers(fe_h, coords, star, siblings, chosen, new_points, members, siblings_label)
    xr = _range(fe_h, np.concatenate([np.asarray(lay[4], float) for lay in layers]) if layers else [])
    traces = []
    for i in range(n):
        xa, ya = ("x", "y") if i == 0 else (f"x{i + 1}", f"y{i + 1}")
        yr = _range(coords[:, i], np.concatenate([lay[5][:, i] for lay in layers]) if layers else [])
        d = _density(fe_h, coords[:, i], xr, yr)
        if d is not None:
            traces.append(d | {"xaxis": xa, "yaxis": ya})
        for legend, colour, size, symbol, x, xy, names in layers:
            traces.append(
                _markers(x, xy[:, i], names, legend, colour, size, xa, ya)
                | {"showlegend": i == 0, "legendgroup": legend, "marker": _marker(colour, size, symbol)}
            )
        for key, rng in (("xaxis", xr), ("yaxis", yr)):
            if rng is not None:
                out["layout"].setdefault(key if i == 0 else f"{key}{i + 1}", {})["range"] = rng
    out["data"] = traces
    return out


def _marker(colour, size, symbol="circle"):
    return {"size": size, "color": colour, "symbol": symbol, "line": {"width": 0.8, "color": "white"}}


def _markers(x, y, names, legend, colour, size, xa, ya):
    return {
        "type": "scatter",
        "mode": "markers",
        "x": np.asarray(x, float).round(5).tolist(),
        "y": np.asarray(y, float).round(5).tolist(),
        "text": [str(s) for s in names],
        "name": legend,
        "xaxis": xa,
        "yaxis": ya,
        "marker": _marker(colour, size),
        "hovertemplate": "%{text}<br>[Fe/H] %{x:.3f}<br>feature %{y:.3f}<extra></extra>",
    }


def spectrum_pair(wave, star, other, label, lines=()):
    """The star's spectrum with another's overlaid (top) and their difference (bottom), masked pixels
    left out, element lines marked (``lines``: (wavelength Å, element) pairs).

    ``star`` / ``other``: dicts with ``name``, ``flux`` and ``mask`` (True = missing); ``other`` may be None.
    """
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.05)
    title = f"Spectrum of {star['name']}" + (f" and {other['name']}" if other else "")
    fig = ui.label_figure(fig, label, title, top=50)  # room for the element names above the plot
    fig.update_yaxes(title_text="normalised flux", row=1, col=1)
    fig.update_yaxes(title_text="difference", row=2, col=1)
    fig.update_xaxes(title_text="wavelength (Å)", row=2, col=1)
    fig.update_layout(legend={"orientation": "h", "y": -0.18, "x": 0}, hovermode="x")
    wave = np.asarray(wave, float)

    def masked(flux, mask):
        f = np.asarray(flux, float).copy()
        f[np.asarray(mask, bool)] = np.nan
        return f

    fs = masked(star["flux"], star["mask"])
    fig.add_trace(
        go.Scatter(x=wave, y=fs, mode="lines", name=star["name"], line={"color": STAR_COLOUR, "width": 1}),
        row=1,
        col=1,
    )
    if other is not None:
        fo = masked(other["flux"], other["mask"])
        fig.add_trace(
            go.Scatter(
                x=wave,
                y=fo,
                mode="lines",
                name=other["name"],
                line={"color": CHOSEN_COLOUR, "width": 1},
                opacity=0.6,  # the star's spectrum shows through where the two agree
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=wave, y=fs - fo, mode="lines", name="difference", line={"color": "#555", "width": 1}, showlegend=False
            ),
            row=2,
            col=1,
        )
    shapes, notes = [], []
    # names of lines closer than ~1/70 of the window would be drawn on top of each other: each line is
    # drawn, but a name only when it clears the previous one or is its element's first
    min_sep = (np.nanmax(wave) - np.nanmin(wave)) / 70 if len(wave) else 0.0
    last, named = -np.inf, set()
    for w, element in sorted(lines):
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": w,
                "x1": w,
                "y0": 0,
                "y1": 1,
                "line": {"color": "rgba(120,120,200,0.3)", "width": 1},
            }
        )
        if w - last < min_sep and element in named:  # every element keeps at least one name
            continue
        last = w
        named.add(element)
        notes.append(
            {
                "x": w,
                "y": 1.0,
                "xref": "x",
                "yref": "paper",
                "yanchor": "bottom",
                "text": element,
                "showarrow": False,
                "textangle": -90,
                "font": {"size": 8, "color": "#4a4aa0"},
            }
        )
    fig.update_layout(shapes=shapes, annotations=list(fig.layout.annotations) + notes)
    return fig
