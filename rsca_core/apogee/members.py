"""Cluster membership catalogues, matched to a release's stars: OCCAM (DR16, DR17 by APOGEE_ID;
DR19 by SDSS_ID), Hunt & Reffert 2023 (Gaia DR3 source ids) and Cantat-Gaudin et al. 2020 (Gaia
DR2 source ids).

Each reader returns the loader's membership table ``APOGEE_ID, CLUSTER, CG_PROB`` (``APOGEE_ID``
being the star's key in the loader's table), the name of the probability column and a note of
the match counts for the cut-flow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .fitsio import fits_strings, read_occam_members, read_table_columns

MEMBER_FORMATS = ("occam", "hunt2023", "cantat2020")
#: (cluster, Gaia id, probability) columns and the star table's Gaia id column of each Gaia catalogue.
GAIA_CATALOGUES = {
    "hunt2023": ("Name", "GaiaDR3", "Prob", "GAIA_DR3_ID", "Gaia DR3"),
    "cantat2020": ("Cluster", "GaiaDR2", "proba", "GAIA_DR2_ID", "Gaia DR2"),
}


def read_members(path, fmt: str, release: str, table: pd.DataFrame) -> tuple[pd.DataFrame, str, str | None, dict]:
    """Membership candidates of ``table``'s stars: ``(members, prob_name, note, counts)``.

    Parameters
    ----------
    path : path
        The catalogue: OCCAM member FITS file, or a Gaia catalogue as FITS, CSV or TSV (VizieR).
    fmt : {"occam", "hunt2023", "cantat2020"}
    release : {"dr16", "dr17", "dr19"}
    table : DataFrame
        The loader's star table (``APOGEE_ID`` and, as needed, ``SDSS_ID``, ``GAIA_DR3_ID``,
        ``GAIA_DR2_ID``).
    """
    if fmt not in MEMBER_FORMATS:
        raise ValueError(f"--members-format {fmt!r}: choose one of {', '.join(MEMBER_FORMATS)}")
    if fmt == "occam" and release in ("dr16", "dr17"):
        members = read_occam_members(path)
        return members, "CG_PROB", None, {"catalogue_rows": len(members)}
    if fmt == "occam":
        cols, n, _ = read_table_columns(path, "OCCAM member", 1, ("Cluster", "SDSS_ID", "CG_Prob"))
        keys = _key_map(table, "SDSS_ID", "DR19 sdss_id")
        ids = np.asarray(cols["SDSS_ID"]).astype(np.int64)
        return _matched(path, ids, fits_strings(cols["CLUSTER"]), cols["CG_PROB"], keys, "CG_Prob", "SDSS_ID")
    name_col, id_col, prob_col, table_col, what = GAIA_CATALOGUES[fmt]
    cols = read_catalogue(path, fmt, (name_col, id_col, prob_col))
    if table_col not in table.columns:
        raise ValueError(
            f"{release.upper()} star table has no {what} source ids, through which {fmt} is matched "
            f"(DR16: GAIA_SOURCE_ID = DR2; DR17: GAIAEDR3_SOURCE_ID = DR3; DR19: both)"
        )
    keys = _key_map(table, table_col, f"{what} source_id")
    ids = pd.to_numeric(pd.Series(cols[id_col.upper()]), errors="coerce").fillna(-1).to_numpy(np.int64)
    names = np.asarray([str(v).strip() for v in cols[name_col.upper()]], dtype=object)
    return _matched(path, ids, names, cols[prob_col.upper()], keys, prob_col, f"{what} source_id")


def _key_map(table: pd.DataFrame, column: str, what: str) -> dict:
    if column not in table.columns:
        raise ValueError(f"the star table has no {what} column to match members through")
    ids = table[column].to_numpy(np.int64)
    keys = table["APOGEE_ID"].to_numpy(dtype=object)
    ok = ids > 0  # 0 / -1: no id
    return dict(zip(ids[ok].tolist(), keys[ok].tolist()))


def _matched(path, ids, clusters, prob, keys: dict, prob_name: str, via: str):
    prob = np.asarray(prob)
    prob = prob.astype(prob.dtype.newbyteorder("=")) if prob.dtype.kind == "f" else prob.astype(float)
    key = np.array([keys.get(int(i), "") for i in ids], dtype=object)
    hit = key != ""
    members = pd.DataFrame(
        {"APOGEE_ID": key[hit], "CLUSTER": np.asarray(clusters, dtype=object)[hit], "CG_PROB": prob[hit]}
    )
    counts = {"catalogue_rows": int(len(ids)), "matched_rows": int(hit.sum()), "matched_through": via}
    note = f"{Path(path).name}: {int(hit.sum())} of {len(ids)} catalogue rows matched through {via}"
    return members, prob_name, note, counts


def read_catalogue(path, what: str, required) -> dict:
    """Columns (upper-cased keys) of a membership catalogue: FITS (HDU 1), CSV or TSV, case-insensitive."""
    path = Path(path)
    suffixes = "".join(path.suffixes).lower()
    if ".csv" in suffixes or ".tsv" in suffixes or ".txt" in suffixes:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {what} file not found")
        try:
            df = pd.read_csv(path, sep="\t" if ".tsv" in suffixes else ",", comment="#", dtype=str)
        except Exception as exc:
            raise ValueError(f"{path}: cannot read {what} table ({exc})") from None
        lookup = {str(c).strip().upper(): c for c in df.columns}
        missing = [c for c in required if c.upper() not in lookup]
        if missing:
            raise ValueError(f"{path} ({what}): missing column {', '.join(missing)}")
        out = {c.upper(): df[lookup[c.upper()]].to_numpy() for c in required}
        prob = required[-1].upper()
        out[prob] = pd.to_numeric(pd.Series(out[prob]), errors="coerce").to_numpy(float)
        return out
    cols, _, _ = read_table_columns(path, what, 1, required)
    return cols
