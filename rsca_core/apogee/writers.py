"""Writing a survey in a release's file layout (allStar, spectra, OCCAM), as the simulator's
``--format`` and the tests use it, so every loader path is exercised end to end on files shaped
like the real ones. Every file is written atomically (:mod:`rsca_core.fileio`); allStar last."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import ALLSTAR_ELEMENTS, DLOGLAM, LOGLAM0, MISSING_VALUE, N_PIXELS
from ..fileio import atomic_write, atomic_write_bytes
from ..progress import ProgressArg, reporter
from .layout import (
    ALLSTAR_NAME,
    OCCAM_CLUSTER_NAME,
    OCCAM_MEMBER_COLUMNS,
    OCCAM_MEMBER_NAME,
    SIMULATED_KEYWORD,
    aspcapstar_relpath,
)


def as_fits_str(values) -> np.ndarray:
    """Strings as a fixed-width bytes array (ASCII) for a FITS table column."""
    vals = [str(v) for v in values]
    width = max([1] + [len(v) for v in vals])
    return np.array(vals, dtype=f"S{width}") if all(v.isascii() for v in vals) else np.array(vals)


def write_fits(hdul, path: Path) -> Path:
    """Write an HDUList atomically (temporary file beside ``path``, then rename)."""
    return atomic_write(path, lambda tmp: hdul.writeto(tmp, overwrite=True))


def aspcapstar_templates(simulated: bool, bitpix: int = -32) -> list:
    """FITS header blocks (bytes) of an aspcapStar file: primary, HDU 1 (flux), HDU 2 (error);
    ``bitpix`` −32 (float32, DR16) or −64 (float64, DR17)."""
    from astropy.io import fits

    prim = fits.PrimaryHDU()
    if simulated:
        prim.header[SIMULATED_KEYWORD] = (True, "written by the RSCA Lab simulator")
    heads = [prim.header.tostring().encode("ascii")]
    for name in ("FLUX", "ERROR"):
        h = fits.ImageHDU(np.zeros(N_PIXELS, np.float32 if bitpix == -32 else np.float64), name=name)
        h.header["CRVAL1"] = LOGLAM0
        h.header["CDELT1"] = DLOGLAM
        h.header["CRPIX1"] = 1
        h.header["CTYPE1"] = "LOG-LINEAR"
        heads.append(h.header.tostring().encode("ascii"))
    return heads


def fits_data_block(arr, dtype: str = ">f4") -> bytes:
    """The data of a FITS HDU: big-endian bytes padded to a multiple of 2880."""
    b = np.ascontiguousarray(arr, dtype=dtype).tobytes()
    return b + b"\0" * (-len(b) % 2880)


def aspcapstar_bytes(flux, err, templates) -> bytes:
    """A whole DR16 aspcapStar file (float32 images) from its header templates."""
    prim, h1, h2 = templates
    return b"".join((prim, h1, fits_data_block(flux), h2, fits_data_block(err)))


def dr16_frame(tab: pd.DataFrame) -> pd.DataFrame:
    """Normalise a DR16-style star table: ``(scalar columns, X_H (N, 26), X_M (N, 26))``.

    Accepts either real allStar-like columns (``X_H``/``X_M`` holding one 26-array per row) or
    per-element columns ``x_h_<el>`` / ``x_m_<el>`` (any case; absent elements → −9999.99).
    """
    cols = {str(c).upper(): c for c in tab.columns}
    n = len(tab)
    out = {}

    def get(name, default=None, required=True):
        if name in cols:
            return tab[cols[name]].to_numpy()
        if required and default is None:
            raise ValueError(f"star table: missing column {name}")
        return np.full(n, default) if not callable(default) else default()

    out["APOGEE_ID"] = get("APOGEE_ID").astype(str)
    out["TELESCOPE"] = get("TELESCOPE", "apo25m", required=False).astype(str)
    out["FIELD"] = get("FIELD").astype(str)
    for c in ("TEFF", "LOGG", "AK_TARG", "VHELIO_AVG", "SNR"):
        out[c] = get(c).astype(float)
    out["ASPCAPFLAG"] = get("ASPCAPFLAG", 0, required=False).astype(np.int64)
    out["VISITS"] = get("VISITS", "", required=False).astype(str)
    out["M_H"] = get("M_H", np.nan, required=False).astype(float)
    for c in ("SDSS_ID", "GAIA_DR3_ID", "GAIA_DR2_ID"):  # identifiers (0 = none)
        out[c] = get(c, 0, required=False).astype(np.int64)
    for arr in ("X_H", "X_M"):
        if arr in cols:
            a = np.stack([np.asarray(v, float) for v in tab[cols[arr]]]) if n else np.zeros((0, 26))
        else:
            a = np.full((n, len(ALLSTAR_ELEMENTS)), MISSING_VALUE)
            for j, el in enumerate(ALLSTAR_ELEMENTS):
                key = f"{arr}_{el.upper()}"
                if key in cols:
                    a[:, j] = tab[cols[key]].to_numpy(float)
                elif arr == "X_M" and f"X_H_{el.upper()}" in cols:
                    # [X/M] from [X/H] - [M/H] (or [Fe/H]); missing stays missing
                    xh = tab[cols[f"X_H_{el.upper()}"]].to_numpy(float)
                    mh = (
                        tab[cols["M_H"]].to_numpy(float)
                        if "M_H" in cols
                        else (tab[cols["FE_H"]].to_numpy(float) if "FE_H" in cols else np.zeros(n))
                    )
                    a[:, j] = np.where(np.isclose(xh, MISSING_VALUE), MISSING_VALUE, xh - mh)
        a = np.where(np.isfinite(a), a, MISSING_VALUE)
        out[arr] = a
    frame = pd.DataFrame({k: v for k, v in out.items() if k not in ("X_H", "X_M")})
    return frame, out["X_H"], out["X_M"]


def resolve_spectra(spectra, n: int) -> Callable:
    """Return a function rows -> (flux, err) from arrays, a (flux, err) pair or a callable."""
    if spectra is None:
        raise ValueError("spectra are needed: pass spectra=(flux, err) arrays or a callable rows -> (flux, err)")
    if callable(spectra):
        return spectra
    flux, err = spectra
    if len(flux) != n or len(err) != n:
        raise ValueError(f"spectra have {len(flux)}/{len(err)} rows for {n} stars")
    return lambda rows: (np.asarray(flux[rows]), np.asarray(err[rows]))


def prepare_layout(survey_or_tables, spectra, out, table_name: str, overwrite: bool) -> tuple:
    """Common start of the layout writers: ``(out, star table path, table, (frame, X_H, X_M), get_spectra)``;
    refuses to replace an existing star table unless ``overwrite``."""
    out = Path(out)
    table_path = out / table_name
    if table_path.exists() and not overwrite:
        raise FileExistsError(f"{table_path}: already exists (pass overwrite=True to replace it)")
    tab, spectra = survey_table_and_spectra(survey_or_tables, spectra)
    frame, x_h, x_m = dr16_frame(tab)
    return out, table_path, tab, (frame, x_h, x_m), resolve_spectra(spectra, len(frame))


def survey_table_and_spectra(survey_or_tables, spectra) -> tuple:
    """``(table, spectra)`` from a simulator survey (its ``stars_all`` and ``spectra_for``) or a
    DataFrame with ``spectra`` given."""
    if isinstance(survey_or_tables, pd.DataFrame):
        if spectra is None:
            raise ValueError("write_dr16 with a DataFrame needs spectra=(flux, err) or a callable")
        return survey_or_tables.reset_index(drop=True), spectra
    tab = getattr(survey_or_tables, "stars_all", None)
    if not isinstance(tab, pd.DataFrame):
        raise ValueError("write_dr16 needs a DR16-style DataFrame or a survey with a stars_all table")
    if spectra is None:
        for meth in ("spectra_for", "spectra_all", "spectra"):
            fn = getattr(survey_or_tables, meth, None)
            if callable(fn):
                spectra = fn
                break
    return tab.reset_index(drop=True), spectra


def write_spectra_files(n: int, get_spectra, relpath, out: Path, make_bytes, rep, desc: str, chunk_size: int) -> None:
    """One file per star: ``make_bytes(flux, err)`` written atomically to ``out / relpath(i)``."""
    with rep.bar(n, desc, unit="file") as bar:
        for a in range(0, n, chunk_size):
            rows = np.arange(a, min(n, a + chunk_size))
            flux, err = get_spectra(rows)
            flux = np.asarray(flux, np.float32)
            err = np.asarray(err, np.float32)
            if flux.shape != (len(rows), N_PIXELS) or err.shape != flux.shape:
                raise ValueError(
                    f"spectra for rows {a}..{rows[-1]} have shapes {flux.shape}/{err.shape}, "
                    f"expected ({len(rows)}, {N_PIXELS})"
                )
            for k, i in enumerate(rows):
                atomic_write_bytes(out / relpath(i), make_bytes(flux[k], err[k]))
            bar.update(len(rows))


def primary_hdu(simulated: bool):  # -> astropy.io.fits.PrimaryHDU
    """An empty primary HDU, with ``SIMULATD = T`` when written from the simulator."""
    from astropy.io import fits

    h = fits.PrimaryHDU()
    if simulated:
        h.header[SIMULATED_KEYWORD] = (True, "written by the RSCA Lab simulator")
    return h


def string_column(name: str, values):  # -> astropy.io.fits.Column
    """A FITS string column of the right width."""
    from astropy.io import fits

    s = as_fits_str(values)
    return fits.Column(name, format=f"{max(1, s.itemsize)}A", array=s)


def occam_members_table(tab: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """OCCAM member rows from the CLUSTER / *_PROB columns of a star table (empty if it has none)."""
    cols = {str(c).upper(): c for c in tab.columns}
    if "CLUSTER" not in cols:
        return pd.DataFrame(columns=list(OCCAM_MEMBER_COLUMNS))
    cl = tab[cols["CLUSTER"]].fillna("").astype(str).str.strip()
    sel = cl != ""
    members = pd.DataFrame({"APOGEE_ID": frame["APOGEE_ID"][sel], "CLUSTER": cl[sel]})
    for c in ("CG_PROB", "RV_PROB", "FEH_PROB", "PM_PROB"):
        members[c] = tab[cols[c]][sel].to_numpy(float) if c in cols else 1.0
    return members


def write_occam(
    out: Path,
    members: pd.DataFrame,
    clusters: pd.DataFrame | None,
    simulated: bool,
    names: tuple[str, str] = (OCCAM_MEMBER_NAME, OCCAM_CLUSTER_NAME),
) -> None:
    """The OCCAM member and cluster files (``names``; DR16's by default), SDSS-IV columns."""
    from astropy.io import fits

    mcols = {str(c).upper(): c for c in members.columns}
    for c in OCCAM_MEMBER_COLUMNS:
        if c not in mcols:
            raise ValueError(f"OCCAM members table: missing column {c}")
    mem = fits.BinTableHDU.from_columns(
        [
            string_column("APOGEE_ID", members[mcols["APOGEE_ID"]]),
            string_column("CLUSTER", members[mcols["CLUSTER"]]),
            *[
                fits.Column(c, format="E", array=members[mcols[c]].to_numpy(np.float32))
                for c in ("CG_PROB", "RV_PROB", "FEH_PROB", "PM_PROB")
            ],
        ]
    )
    write_fits(fits.HDUList([primary_hdu(simulated), mem]), out / names[0])
    if clusters is None:
        counts = members[mcols["CLUSTER"]].astype(str).value_counts().sort_index()
        clusters = pd.DataFrame({"NAME": counts.index.astype(str), "NMEMBERS": counts.to_numpy(np.int32)})
    ccols = []
    for c in clusters.columns:
        v = clusters[c]
        if v.dtype.kind in "if":
            ccols.append(fits.Column(str(c).upper(), format="D" if v.dtype.kind == "f" else "K", array=v.to_numpy()))
        else:
            ccols.append(string_column(str(c).upper(), v))
    write_fits(fits.HDUList([primary_hdu(simulated), fits.BinTableHDU.from_columns(ccols)]), out / names[1])


def write_dr16(
    survey_or_tables,
    out,
    *,
    spectra=None,
    occam_members=None,
    occam_clusters=None,
    simulated: bool = True,
    overwrite: bool = False,
    chunk_size: int = 512,
    progress: ProgressArg = True,
) -> Path:
    """Write a survey in the APOGEE DR16 file layout (SPEC §4) under folder ``out``.

    Parameters
    ----------
    survey_or_tables : SimulatedSurvey or DataFrame
        A simulator survey (``stars_all``, the pre-cut DR16-like table, and its spectra) or a
        DR16-style DataFrame with columns APOGEE_ID, TELESCOPE, FIELD, TEFF, LOGG, X_H/X_M
        (26-arrays) or x_h_<el>/x_m_<el> columns, ASPCAPFLAG, AK_TARG, VHELIO_AVG, SNR, VISITS
        (any case) and optionally CLUSTER / CG_PROB / RV_PROB / FEH_PROB / PM_PROB.
    spectra : (flux, err) arrays or callable, optional
        One row per table row, or ``rows -> (flux, err)``; default the survey's ``spectra_for``.
    occam_members, occam_clusters : DataFrame, optional
        Override the members taken from the CLUSTER column / the per-cluster table (default one
        row per cluster with NAME and NMEMBERS).
    simulated : bool
        Writes ``SIMULATD = T`` into every file's primary header, so bundles built from these
        files stay labelled "simulated".
    progress : bool or callable
        See :mod:`rsca_core.progress`.

    Returns
    -------
    Path
        ``out``. Every file is written to a temporary name and renamed; allStar is written last.
    """
    out, allstar_path, tab, (frame, x_h, x_m), get_spectra = prepare_layout(
        survey_or_tables, spectra, out, ALLSTAR_NAME, overwrite
    )
    n = len(frame)
    if frame["APOGEE_ID"].duplicated().any():
        dup = frame.loc[frame["APOGEE_ID"].duplicated(), "APOGEE_ID"].iloc[0]
        raise ValueError(f"star table: duplicate APOGEE_ID {dup!r}")
    out.mkdir(parents=True, exist_ok=True)
    rep = reporter(progress)
    templates = aspcapstar_templates(simulated)
    tel, fld, sid = (frame[c].tolist() for c in ("TELESCOPE", "FIELD", "APOGEE_ID"))
    write_spectra_files(
        n,
        get_spectra,
        lambda i: aspcapstar_relpath(tel[i], fld[i], sid[i]),
        out,
        lambda f, e: aspcapstar_bytes(f, e, templates),
        rep.span(0.0, 0.95),
        "writing aspcapStar",
        chunk_size,
    )
    rep.say(0.95, "writing OCCAM and allStar tables")
    members = occam_members if occam_members is not None else occam_members_table(tab, frame)
    write_occam(out, members, occam_clusters, simulated)
    write_allstar_dr16(allstar_path, frame, x_h, x_m, simulated)
    rep.say(1.0, "DR16 layout written")
    return out


def write_allstar_dr16(path: Path, frame: pd.DataFrame, x_h, x_m, simulated: bool) -> None:
    """The DR16 allStar table (HDU 1) of a normalised frame (:func:`dr16_frame`)."""
    from astropy.io import fits

    ne = len(ALLSTAR_ELEMENTS)
    table = fits.BinTableHDU.from_columns(
        [
            string_column("APOGEE_ID", frame["APOGEE_ID"]),
            string_column("TELESCOPE", frame["TELESCOPE"]),
            string_column("FIELD", frame["FIELD"]),
            fits.Column("TEFF", format="E", array=frame["TEFF"].to_numpy(np.float32)),
            fits.Column("LOGG", format="E", array=frame["LOGG"].to_numpy(np.float32)),
            fits.Column("X_H", format=f"{ne}E", array=x_h.astype(np.float32)),
            fits.Column("X_M", format=f"{ne}E", array=x_m.astype(np.float32)),
            fits.Column("ASPCAPFLAG", format="K", array=frame["ASPCAPFLAG"].to_numpy(np.int64)),
            fits.Column("AK_TARG", format="E", array=frame["AK_TARG"].to_numpy(np.float32)),
            fits.Column("VHELIO_AVG", format="E", array=frame["VHELIO_AVG"].to_numpy(np.float32)),
            fits.Column("SNR", format="E", array=frame["SNR"].to_numpy(np.float32)),
            string_column("VISITS", frame["VISITS"]),
            fits.Column("GAIA_SOURCE_ID", format="K", array=frame["GAIA_DR2_ID"].to_numpy(np.int64)),
        ]
    )
    write_fits(fits.HDUList([primary_hdu(simulated), table]), path)
