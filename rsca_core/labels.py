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


def label_name(column: str) -> str:
    """Display name of a star-table column.

    Examples
    --------
    >>> label_name("x_h_tiii"), label_name("vhelio_avg")
    ('[TiII/H]', 'VHELIO_AVG')
    """
    return LABEL_NAMES.get(column, column)


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
