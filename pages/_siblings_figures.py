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


def _density(x, y, bins=DENSITY_BINS):
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) == 0:
        return None
    counts, xe, ye = np.histogram2d(x, y, bins=bins)
    return {
        "x": (0.5 * (xe[1:] + xe[:-1])).round(5).tolist(),
        "y": (0.5 * (ye[1:] + ye[:-1])).round(5).tolist(),
        "z": np.round(np.log10(1 + counts.T), 4).tolist(),
    }


def features_vs_feh(coords, fe_h, label, star=None, siblings=(), chosen=None, new_points=None, n_features=3):
    """Top RSCA features vs [Fe/H]: every star as a grey density, the siblings in red, the chosen
    sibling in blue, the star as a gold star and projected new stars (``new_points``: dict with
    ``coords``, ``fe_h`` (may be NaN) and ``names``) in green.

    ``star``: (row, apogee_id) or None; ``siblings``: (rows, apogee_ids).
    """
    n = min(n_features, coords.shape[1])
    fig = make_subplots(
        rows=1, cols=n, horizontal_spacing=0.07, subplot_titles=[f"RSCA feature {i + 1}" for i in range(n)]
    )
    for i in range(n):
        fig.update_xaxes(title_text="[Fe/H]", row=1, col=i + 1)
    fig = ui.label_figure(fig, label, "Siblings among all stars: RSCA features vs [Fe/H]", top=70)
    fig.update_layout(legend={"orientation": "h", "y": -0.25, "font": {"size": 11}})
    out = fig.to_plotly_json()
    traces = []
    sib_rows, sib_ids = siblings if len(siblings) else ([], [])
    sib_rows = np.asarray(sib_rows, dtype=int)
    for i in range(n):
        xa, ya = ("x", "y") if i == 0 else (f"x{i + 1}", f"y{i + 1}")
        first = i == 0
        d = _density(np.asarray(fe_h, float), coords[:, i])
        if d is not None:
            traces.append(
                {"type": "heatmap", **d, "colorscale": "Greys", "showscale": False, "hoverinfo": "skip"}
                | {"name": "all stars", "xaxis": xa, "yaxis": ya}
            )
        if len(sib_rows):
            traces.append(
                _markers(fe_h[sib_rows], coords[sib_rows, i], list(sib_ids), "siblings", SIBLING_COLOUR, 7, xa, ya)
                | {"showlegend": first, "legendgroup": "sib", "customdata": list(sib_ids)}
            )
        if chosen is not None:
            r, name = chosen
            traces.append(
                _markers([fe_h[r]], [coords[r, i]], [name], "chosen sibling", CHOSEN_COLOUR, 12, xa, ya)
                | {"showlegend": first, "legendgroup": "chosen", "marker": _marker(CHOSEN_COLOUR, 12, "diamond")}
            )
        if star is not None:
            r, name = star
            traces.append(
                _markers([fe_h[r]], [coords[r, i]], [name], "the star", STAR_COLOUR, 16, xa, ya)
                | {"showlegend": first, "legendgroup": "star", "marker": _marker(STAR_COLOUR, 16, "star")}
            )
        if new_points is not None and len(new_points["names"]):
            traces.append(
                _markers(
                    new_points["fe_h"],
                    new_points["coords"][:, i],
                    new_points["names"],
                    "uploaded",
                    NEW_COLOUR,
                    13,
                    xa,
                    ya,
                )
                | {"showlegend": first, "legendgroup": "new", "marker": _marker(NEW_COLOUR, 13, "x")}
            )
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
    fig = ui.label_figure(fig, label, title, top=50)
    fig.update_yaxes(title_text="normalised flux", row=1, col=1)
    fig.update_yaxes(title_text="difference", row=2, col=1)
    fig.update_xaxes(title_text="wavelength (Å)", row=2, col=1)
    fig.update_layout(legend={"orientation": "h", "y": 1.08, "x": 1, "xanchor": "right"}, hovermode="x")
    wave = np.asarray(wave, float)

    def masked(flux, mask):
        f = np.asarray(flux, float).copy()
        f[np.asarray(mask, bool)] = np.nan
        return f

    fs = masked(star["flux"], star["mask"])
    fig.add_trace(
        go.Scattergl(x=wave, y=fs, mode="lines", name=star["name"], line={"color": STAR_COLOUR, "width": 1}),
        row=1,
        col=1,
    )
    if other is not None:
        fo = masked(other["flux"], other["mask"])
        fig.add_trace(
            go.Scattergl(x=wave, y=fo, mode="lines", name=other["name"], line={"color": CHOSEN_COLOUR, "width": 1}),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scattergl(
                x=wave, y=fs - fo, mode="lines", name="difference", line={"color": "#555", "width": 1}, showlegend=False
            ),
            row=2,
            col=1,
        )
    finite = np.isfinite(fs)
    if finite.any():
        top = float(np.nanmax(fs))
        shapes, xs, ys, texts = [], [], [], []
        for w, element in lines:
            shapes.append(
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "paper",
                    "x0": w,
                    "x1": w,
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": "rgba(120,120,200,0.35)", "width": 1},
                }
            )
            xs.append(w)
            ys.append(top)
            texts.append(element)
        fig.update_layout(shapes=shapes)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="text",
                text=texts,
                textposition="top center",
                textfont={"size": 9, "color": "#4a4aa0"},
                name="element lines",
                hovertemplate="%{text} %{x:.1f} Å<extra></extra>",
            ),
            row=1,
            col=1,
        )
    return fig
