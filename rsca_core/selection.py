"""The paper's sample selection (SPEC §4): the cuts, the cut-flow, the pixel mask and the star table.

One copy of each rule, used by the real-data loader (:mod:`rsca_core.apogee`) and by the simulator
(:mod:`rsca_core.simulate`), so a simulated survey and the loader agree star by star.

The tables handled here are *allStar-like*: one row per allStar row, upper-case columns
``APOGEE_ID, TELESCOPE, FIELD, TEFF, LOGG, X_H_<EL>`` (and optionally ``X_M_<EL>``) for the
elements of :data:`~rsca_core.constants.ALLSTAR_ELEMENTS`, ``ASPCAPFLAG, AK_TARG, VHELIO_AVG, SNR,
VISITS``. Membership tables have ``APOGEE_ID, CLUSTER, CG_PROB``.

Examples
--------
>>> import numpy as np
>>> star_cuts(np.array([4500.0, 5100.0]), np.array([2.0, 2.0]), {}, np.array([0, 0]))
array([ True, False])
>>> is_measured(np.array([0.1, -9999.99, np.nan]))
array([ True, False, False])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .constants import (
    ANOMALOUS_STAR,
    LOGG_RANGE,
    MAX_PIXEL_ERROR,
    MIN_CG_PROB,
    MISSING_VALUE,
    PAPER_MASK_RANGES,
    SPECIES,
    STAR_BAD_BIT,
    TEFF_RANGE,
    abundance_column,
    ranges_to_mask,
)

__all__ = [
    "CUTFLOW_COLUMNS",
    "CutFlow",
    "bundle_order",
    "finalise_clusters",
    "format_cutflow",
    "is_measured",
    "pixel_mask",
    "select_stars",
    "star_bad",
    "star_cuts",
    "stars_table",
]

#: Identifier columns copied into the bundle's star table when the release has them.
OPTIONAL_STAR_COLUMNS = ("sdss_id", "gaia_dr3_id", "gaia_dr2_id")
#: Columns of a cut-flow table.
CUTFLOW_COLUMNS = ("step", "field", "cluster_stars", "clusters")


def is_measured(values) -> np.ndarray:
    """True where a label is measured: finite and not APOGEE's −9999.99 sentinel (anything ≤ −9000).

    DR16 writes −9999.99 for "not measured", DR17 and DR19 write NaN; both count as missing.
    """
    v = np.asarray(values, dtype=float)
    return np.isfinite(v) & (v > MISSING_VALUE + 999)


def star_bad(aspcapflag) -> np.ndarray:
    """True where ASPCAPFLAG has the STAR_BAD bit (23) set."""
    return ((np.asarray(aspcapflag, dtype=np.int64) >> STAR_BAD_BIT) & 1) == 1


def star_cuts(teff, logg, xh: Mapping[str, np.ndarray], aspcapflag) -> np.ndarray:
    """The per-star cuts of the paper on observed labels: Teff and logg windows, every species of
    ``xh`` measured (``{species: values}``), STAR_BAD unset. Strict inequalities, as the paper."""
    teff = np.asarray(teff, float)
    logg = np.asarray(logg, float)
    ok = (teff > TEFF_RANGE[0]) & (teff < TEFF_RANGE[1])
    ok &= (logg > LOGG_RANGE[0]) & (logg < LOGG_RANGE[1])
    for v in xh.values():
        ok &= is_measured(v)
    return ok & ~star_bad(aspcapflag)


class CutFlow:
    """Collects the cut-flow rows: after each cut, the field stars, cluster stars and clusters left.

    ``is_member`` marks the stars counted as cluster members, ``cluster_of`` their cluster names.
    """

    def __init__(self, is_member: np.ndarray, cluster_of: np.ndarray, rows: list | None = None):
        self.is_member = np.asarray(is_member, bool)
        self.cluster_of = np.asarray(cluster_of, dtype=object)
        self.rows = rows if rows is not None else []

    def add(self, step: str, field: int, cluster_stars: int, clusters: int) -> None:
        """Append a row with explicit counts."""
        self.rows.append(
            {"step": step, "field": int(field), "cluster_stars": int(cluster_stars), "clusters": int(clusters)}
        )

    def record(self, step: str, keep: np.ndarray) -> None:
        """Append the counts of the stars still kept after ``step``."""
        m = keep & self.is_member
        self.add(step, (keep & ~self.is_member).sum(), m.sum(), len(set(self.cluster_of[m])))


def _membership(ids: np.ndarray, members: pd.DataFrame, min_prob: float):
    """(cluster_of, prob, any_member, n_not_found, members found) for each id (the most probable cluster)."""
    mem = members[members["APOGEE_ID"].isin(set(ids))]
    any_member = pd.Series(ids).isin(set(mem["APOGEE_ID"])).to_numpy()
    cg_col = mem["CG_PROB"].to_numpy()
    # keep float32 columns float32: the threshold is compared in the file's precision
    threshold = cg_col.dtype.type(min_prob) if cg_col.dtype.kind == "f" else min_prob
    high = mem[cg_col > threshold].sort_values("CG_PROB", ascending=False, kind="stable")
    high = high[~high["APOGEE_ID"].duplicated(keep="first")]  # a star in two clusters: most probable
    id_series = pd.Series(ids)
    cluster_of = id_series.map(dict(zip(high["APOGEE_ID"], high["CLUSTER"]))).fillna("").to_numpy(dtype=object)
    prob = id_series.map(dict(zip(high["APOGEE_ID"], high["CG_PROB"]))).to_numpy(dtype=float)
    return cluster_of, prob, any_member, int(len(members) - len(mem)), mem


def select_stars(
    allstar: pd.DataFrame,
    members: pd.DataFrame,
    *,
    species: Sequence[str] = SPECIES,
    min_prob: float = MIN_CG_PROB,
    prob_name: str = "CG_PROB",
    duplicates: str = "snr",
    exclude: Sequence[str] = (ANOMALOUS_STAR,),
    members_note: str | None = None,
    bad_label: str = f"STAR_BAD unset (ASPCAPFLAG bit {STAR_BAD_BIT})",
) -> tuple[pd.DataFrame, list]:
    """Apply the paper's per-star cuts (SPEC §4) to an allStar-like table and a membership table.

    Parameters
    ----------
    allstar : DataFrame
        allStar-like table (see the module docstring). ``X_M_<EL>`` columns, when present, must be
        measured too (the DR16 loader checks both X_H and X_M).
    members : DataFrame
        ``APOGEE_ID, CLUSTER, CG_PROB``: candidates; members are those with ``CG_PROB > min_prob``
        (compared in the column's precision). A star in two clusters joins the most probable.
    species : sequence of str
        Species that must all be measured (default: the paper's 21).
    min_prob, prob_name : float, str
        Membership threshold and the name shown for it in the cut-flow.
    duplicates : {"snr", "flag", "snr-first", "none"}
        How repeated APOGEE_IDs are resolved: after the cuts, keep the highest-SNR row ("snr", DR16,
        whose loader always did so); before the cuts, drop the rows whose ``DUPLICATE`` column is
        True ("flag": the release's own flag, DR17 EXTRATARG bit 4) or keep each star's
        highest-SNR row ("snr-first": DR19, one row per telescope); or not at all.
    exclude : sequence of str
        APOGEE_IDs dropped by name (the paper's anomalous star).
    members_note : str, optional
        How the membership catalogue was matched (shown in the cut-flow's first row).
    bad_label : str
        Cut-flow label of the bad-star cut. A boolean ``STAR_BAD`` column, when present, is the
        release's own bad flag (DR19 ``flag_bad``); otherwise ASPCAPFLAG bit 23 is used.

    Returns
    -------
    selected : DataFrame
        Rows passing every per-star cut, in allStar order, with ``CLUSTER`` ("" for field stars),
        ``CG_PROB``, ``OCCAM_CANDIDATE`` and ``ROW`` (row number in ``allstar``). Cluster sizes are
        checked later (after the spectra are read): :func:`finalise_clusters`.
    cutflow : list of dict
        Rows ``{"step", "field", "cluster_stars", "clusters"}``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"APOGEE_ID": ["a", "b", "c"], "TEFF": [4500.0, 4500.0, 6000.0],
    ...                   "LOGG": [2.0, 2.0, 2.0], "ASPCAPFLAG": [0, 0, 0], "SNR": [100.0] * 3})
    >>> m = pd.DataFrame({"APOGEE_ID": ["b"], "CLUSTER": ["M67"], "CG_PROB": [0.9]})
    >>> sel, flow = select_stars(t, m, species=())
    >>> list(sel["APOGEE_ID"]), list(sel["CLUSTER"]), flow[-1]["field"]
    (['a', 'b'], ['', 'M67'], 1)

    Over 80 lines only through this docstring.
    """
    n = len(allstar)
    ids = allstar["APOGEE_ID"].to_numpy(dtype=object)
    cluster_of, prob, any_member, n_not_found, mem = _membership(ids, members, min_prob)
    is_member = cluster_of != ""
    flow = CutFlow(is_member, cluster_of)
    note = members_note or f"{n_not_found} candidate rows not in allStar"
    flow.add(
        f"input: allStar rows / membership candidates in allStar ({note})",
        n,
        any_member.sum(),
        mem["CLUSTER"].nunique(),
    )
    keep = np.ones(n, bool)
    if duplicates in ("flag", "snr-first"):
        _resolve_duplicates(allstar, ids, keep, duplicates, flow)
    flow.record(f"{prob_name} > {min_prob:g} members, removed from the field", keep)
    teff = allstar["TEFF"].to_numpy(float)
    keep &= (teff > TEFF_RANGE[0]) & (teff < TEFF_RANGE[1])
    flow.record(f"{TEFF_RANGE[0]:g} < TEFF < {TEFF_RANGE[1]:g}", keep)
    logg = allstar["LOGG"].to_numpy(float)
    keep &= (logg > LOGG_RANGE[0]) & (logg < LOGG_RANGE[1])
    flow.record(f"{LOGG_RANGE[0]:.1f} < LOGG < {LOGG_RANGE[1]:.1f}", keep)
    for el in species:
        for arr in ("X_H", "X_M"):
            col = f"{arr}_{el.upper()}"
            if arr == "X_H" or col in allstar.columns:
                keep &= is_measured(allstar[col].to_numpy(float))
    flow.record(f"all {len(species)} species measured (X_H, X_M not missing)", keep)
    if "STAR_BAD" in allstar.columns:
        keep &= ~allstar["STAR_BAD"].to_numpy(bool)
    else:
        keep &= ~star_bad(allstar["ASPCAPFLAG"].to_numpy(np.int64))
    flow.record(bad_label, keep)
    for sid in exclude:
        keep &= ids != sid
        flow.record(f"drop {sid}", keep)
    if duplicates == "snr":
        _resolve_duplicates(allstar, ids, keep, duplicates, flow)
    selected = allstar[keep].copy()
    if "ROW" not in selected.columns:
        selected["ROW"] = np.flatnonzero(keep)
    selected["CLUSTER"] = cluster_of[keep]
    selected["CG_PROB"] = prob[keep]
    selected["OCCAM_CANDIDATE"] = any_member[keep]
    return selected.reset_index(drop=True), flow.rows


def _resolve_duplicates(allstar: pd.DataFrame, ids: np.ndarray, keep: np.ndarray, how: str, flow: CutFlow) -> None:
    """Drop repeated APOGEE_ID rows from ``keep`` (in place), recording a cut-flow row if any."""
    if how == "flag":
        keep &= ~allstar["DUPLICATE"].to_numpy(bool)
        flow.record("duplicates dropped by the release's own flag (EXTRATARG bit 4: not the highest-SNR row)", keep)
        how = "snr"  # a star still repeated after the flag (should not happen): highest SNR
    if how not in ("snr", "snr-first"):
        return
    sel = np.flatnonzero(keep)
    if pd.Index(ids[sel]).is_unique:
        return
    snr = allstar["SNR"].to_numpy(float)[sel]
    order = np.lexsort((sel, -np.nan_to_num(snr, nan=-np.inf)))
    first = pd.Index(ids[sel][order]).duplicated(keep="first")
    keep[sel[order][first]] = False
    what = "one row per star (sdss_id): the highest-SNR telescope row kept" if how == "snr-first" else None
    flow.record(what or "duplicate APOGEE_ID rows (highest SNR kept)", keep)


def finalise_clusters(
    selected: pd.DataFrame, ok: np.ndarray, rows: list, n_missing: int, n_corrupt: int, what: str = "aspcapStar"
) -> np.ndarray:
    """Drop stars without a readable spectrum, then clusters left with one star; returns the kept mask.

    The lone member of a dropped cluster does not join the field. Appends two rows to ``rows``.
    """
    cl = selected["CLUSTER"].to_numpy(dtype=object)
    is_member = cl != ""
    flow = CutFlow(is_member, cl, rows)
    keep = np.asarray(ok, bool).copy()
    flow.record(f"{what} readable ({n_missing} missing, {n_corrupt} unreadable files skipped)", keep)
    counts = pd.Series(cl[keep & is_member]).value_counts()
    singles = set(counts.index[counts < 2])
    keep &= ~(is_member & np.isin(cl, list(singles)))
    flow.record(f"drop clusters left with one star ({len(singles)} clusters)", keep)
    return keep


def bundle_order(keep: np.ndarray, is_member: np.ndarray) -> np.ndarray:
    """Rows of a bundle in bundle order: kept field stars, then kept cluster stars, each in input order.

    >>> bundle_order(np.array([True, True, False, True]), np.array([True, False, False, False]))
    array([1, 3, 0])
    """
    keep = np.asarray(keep, bool)
    is_member = np.asarray(is_member, bool)
    return np.concatenate([np.flatnonzero(keep & ~is_member), np.flatnonzero(keep & is_member)])


def format_cutflow(cutflow) -> str:
    """A plain-text table of a cut-flow (list of row dicts or DataFrame).

    >>> print(format_cutflow([{"step": "input", "field": 10, "cluster_stars": 3, "clusters": 1}]))
    step       field  cluster stars  clusters
    input         10              3         1
    """
    df = pd.DataFrame(cutflow)
    w = max(len("step"), *(len(s) for s in df["step"])) if len(df) else 4
    lines = [f"{'step':<{w}}  {'field':>9}  {'cluster stars':>13}  {'clusters':>8}"]
    for r in df.itertuples(index=False):
        lines.append(f"{r.step:<{w}}  {r.field:>9d}  {r.cluster_stars:>13d}  {r.clusters:>8d}")
    return "\n".join(lines)


def pixel_mask(flux, err, mask_ranges=PAPER_MASK_RANGES, max_pixel_error: float = MAX_PIXEL_ERROR) -> np.ndarray:
    """Missing-pixel mask of spectra (True = missing): error > ``max_pixel_error``, non-finite
    values, chip-gap zeros (flux exactly 0) and the ``mask_ranges`` pixel ranges (by default the
    paper's interstellar bands).

    >>> pixel_mask(np.array([[1.0, 0.0, 1.0]]), np.array([[0.01, 0.01, 0.2]]), ()).tolist()
    [[False, True, True]]
    """
    flux = np.asarray(flux)
    err = np.asarray(err)
    m = ~np.isfinite(flux) | ~np.isfinite(err) | (err > max_pixel_error) | (flux == 0)
    return m | ranges_to_mask(mask_ranges, flux.shape[-1])


def stars_table(sel: pd.DataFrame) -> pd.DataFrame:
    """The bundle's star table from selected allStar-like rows (with ``CLUSTER`` and ``CG_PROB``).

    Columns: apogee_id, cluster, teff, logg, fe_h, x_h_<species> (the 21), ak_targ, vhelio_avg,
    snr, visits, telescope, field, aspcapflag, cg_prob; plus ``sdss_id``, ``gaia_dr3_id`` and
    ``gaia_dr2_id`` when the table has them (upper-case ``SDSS_ID`` ...).
    """
    out = pd.DataFrame(
        {
            "apogee_id": sel["APOGEE_ID"].astype(str).to_numpy(),
            "cluster": sel["CLUSTER"].astype(str).to_numpy(),
            "teff": sel["TEFF"].to_numpy(float),
            "logg": sel["LOGG"].to_numpy(float),
            "fe_h": sel["X_H_FE"].to_numpy(float),
        }
    )
    for el in SPECIES:
        out[abundance_column(el)] = sel[f"X_H_{el.upper()}"].to_numpy(float)
    out["ak_targ"] = sel["AK_TARG"].to_numpy(float)
    out["vhelio_avg"] = sel["VHELIO_AVG"].to_numpy(float)
    out["snr"] = sel["SNR"].to_numpy(float)
    out["visits"] = sel["VISITS"].astype(str).to_numpy()
    out["telescope"] = sel["TELESCOPE"].astype(str).to_numpy()
    out["field"] = sel["FIELD"].astype(str).to_numpy()
    out["aspcapflag"] = sel["ASPCAPFLAG"].to_numpy(np.int64)
    out["cg_prob"] = sel["CG_PROB"].to_numpy(float)
    for col in OPTIONAL_STAR_COLUMNS:  # only when the release has the ids (0 / -1 = none)
        if col.upper() in sel.columns and (sel[col.upper()].to_numpy(np.int64) > 0).any():
            out[col] = sel[col.upper()].to_numpy(np.int64)
    return out
