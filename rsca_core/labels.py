"""Names shown on figures and tables: display names of star-table columns, and whether a result is
of simulated or real data. One copy for the matplotlib files (:mod:`rsca_core.figures`) and the
dashboard's Plotly figures (:mod:`rsca_core.plotting`)."""

from __future__ import annotations

import pandas as pd

from .constants import SPECIES

LABEL_NAMES = {
    "teff": "Teff",
    "logg": "logg",
    "fe_h": "[Fe/H]",
    "ak_targ": "AK_TARG",
    "vhelio_avg": "VHELIO_AVG",
    "snr": "SNR",
} | {f"x_h_{sp.lower()}": f"[{sp}/H]" for sp in SPECIES}

#: One colour per method of ``doppelganger_rates`` (RSCA red, as the transformed bars of Fig. 4).
METHOD_COLOURS = {"rsca": "#d62728", "rca": "#0072B2", "lda": "#E69F00", "nca": "#009E73"}

#: One colour per open cluster, for every page that colours clusters (22 = the paper's sample).
#: Chosen by a farthest-point search in CIELAB over an sRGB grid, kept to lightness 32-75 and at
#: least 18 CIEDE2000 from every grey (so each shows on white and on the grey field-density maps):
#: every pair differs by at least 21 CIEDE2000 (plotly's Alphabet, used before: 11, with near-white
#: entries). Listed farthest-first, so the first few colours of a small survey are far apart too.
CLUSTER_PALETTE = (
    "#ff0f00",
    "#00d200",
    "#2dc3ff",
    "#0f00ff",
    "#005a3c",
    "#c3a5e1",
    "#ff9600",
    "#783c00",
    "#ff1e87",
    "#960078",
    "#5ac3b4",
    "#a50f2d",
    "#5a87ff",
    "#d200ff",
    "#786996",
    "#f0a5a5",
    "#5a5a00",
    "#c3b478",
    "#a5785a",
    "#008796",
    "#005a96",
    "#0f8700",
)


def cluster_colours(names) -> dict[str, str]:
    """{cluster name: colour} from :data:`CLUSTER_PALETTE`, assigned in sorted-name order, so a
    cluster keeps its colour on every page; past 22 clusters the colours repeat.

    Examples
    --------
    >>> c = cluster_colours(["NGC_188", "Berkeley_17", "NGC_188"])
    >>> list(c), c["Berkeley_17"] == CLUSTER_PALETTE[0]
    (['Berkeley_17', 'NGC_188'], True)
    """
    ordered = sorted(set(map(str, names)))
    return {n: CLUSTER_PALETTE[i % len(CLUSTER_PALETTE)] for i, n in enumerate(ordered)}


def label_name(column: str) -> str:
    """Display name of a star-table column.

    Examples
    --------
    >>> label_name("x_h_tiii"), label_name("vhelio_avg")
    ('[TiII/H]', 'VHELIO_AVG')
    """
    return LABEL_NAMES.get(column, column)


def data_tag(label: str | None, seed=None) -> str:
    """The tag every figure's title carries, so that nothing made from simulated data passes for real:
    one spelling for the matplotlib files, the Plotly figures and every page of the dashboard.

    Examples
    --------
    >>> data_tag("simulated"), data_tag("real", seed=3)
    ('SIMULATED data', 'real data, seed 3')
    """
    tag = "SIMULATED data" if label == "simulated" else f"{label} data"
    return tag if seed is None else f"{tag}, seed {seed}"


def data_label(table, label: str | None = None) -> str:
    """ "simulated" or "real": ``label`` if given, else the table's (or result dict's) ``label``.

    Examples
    --------
    >>> data_label(pd.DataFrame({"label": ["real"]}))
    'real'
    """
    if label:
        return str(label)
    if isinstance(table, dict):
        if isinstance(table.get("settings"), dict) and table["settings"].get("label"):
            return str(table["settings"]["label"])
        for v in table.values():
            if isinstance(v, pd.DataFrame) and "label" in v.columns and len(v):
                return str(v["label"].iloc[0])
    elif isinstance(table, pd.DataFrame) and "label" in table.columns and len(table):
        return str(table["label"].iloc[0])
    raise ValueError("cannot tell whether the data are simulated or real: pass label='simulated' or 'real'")


def table_seed(table) -> int | None:
    """The random seed a result was made with (its ``seed`` column or ``settings["seed"]``), if any.

    Examples
    --------
    >>> table_seed(pd.DataFrame({"seed": [3, 3]})), table_seed({"settings": {}})
    (3, None)
    """
    if isinstance(table, pd.DataFrame) and "seed" in table.columns and len(table):
        return int(table["seed"].iloc[0])
    if isinstance(table, dict) and isinstance(table.get("settings"), dict):
        return table["settings"].get("seed")
    return None


def require_columns(table, columns, what: str) -> None:
    """ValueError naming ``what`` unless ``table`` is a DataFrame with every one of ``columns``.

    Examples
    --------
    >>> require_columns(pd.DataFrame({"k": [1]}), ["k", "cv"], "fig_k_sweep")
    Traceback (most recent call last):
    ...
    ValueError: fig_k_sweep: the table lacks column(s) cv
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{what}: expected a DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: the table lacks column(s) {', '.join(missing)}")
