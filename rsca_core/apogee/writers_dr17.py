"""Writing a survey in the APOGEE DR17 file layout (``simulate --format dr17``).

``allStar-dr17-synspec_rev1.fits`` (HDU 1 stars with X_H/X_M float32[27] in ELEM_SYMBOL order and
NaN for missing values, ASPCAPFLAG int64, EXTRATARG, VISIT_PK int32[100], GAIAEDR3_SOURCE_ID;
HDU 2 RA index; HDU 3 ELEM_SYMBOL; HDU 4 fields), ``allVisit-dr17-synspec_rev1.fits``,
``{TELESCOPE}/{FIELD}/aspcapStar-dr17-{APOGEE_ID}.fits`` (float64 images, HDU 1 flux, HDU 2 error)
and the OCCAM DR17 files. A simulated survey gets a few duplicate rows (the same star in another
field and telescope, at lower SNR, flagged with EXTRATARG bit 4) so the release's own duplicate
rule is exercised.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import MISSING_VALUE
from ..progress import ProgressArg, reporter
from .releases import (
    ALLSTAR_NAMES,
    ALLVISIT_DR17_NAME,
    DR17_ELEMENTS,
    EXTRATARG_DUPLICATE,
    OCCAM_CLUSTER_NAMES,
    OCCAM_MEMBER_NAMES,
)
from .writers import (
    aspcapstar_templates,
    fits_data_block,
    occam_members_table,
    prepare_layout,
    primary_hdu,
    string_column,
    write_fits,
    write_occam,
    write_spectra_files,
)

#: Fill value of unused VISIT_PK slots (np.full(..., 2**31, int32) wraps to this).
VISIT_PK_FILL = -(2**31)
#: Slots of VISIT_PK in DR17.
N_VISIT_PK = 100


def duplicate_rows(frame: pd.DataFrame, seed: int | None, fraction: float) -> np.ndarray:
    """Rows of ``frame`` that get a second, lower-SNR row (none without a survey seed)."""
    if seed is None or fraction <= 0 or not len(frame):
        return np.zeros(0, np.int64)
    rng = np.random.default_rng([int(seed), 1717])
    return np.sort(rng.choice(len(frame), size=max(1, int(round(fraction * len(frame)))), replace=False))


def other_telescope(tel: str) -> str:
    """The telescope a duplicate row is observed with."""
    return "apo25m" if str(tel).strip() == "lco25m" else "lco25m"


def with_duplicates(frame: pd.DataFrame, x_h, x_m, dup: np.ndarray) -> tuple:
    """``(frame, x_h, x_m, source)`` with a duplicate row appended for each of ``dup`` (another
    field and telescope, 60 % of the SNR, DUPLICATE True); ``source[i]`` is the row whose spectrum row
    ``i`` has."""
    frame = frame.copy()
    frame["DUPLICATE"] = False
    extra = frame.iloc[dup].copy()
    extra["TELESCOPE"] = [other_telescope(t) for t in extra["TELESCOPE"]]
    extra["FIELD"] = [f"{f}-B" for f in extra["FIELD"]]
    extra["SNR"] = extra["SNR"] * 0.6
    extra["DUPLICATE"] = True
    source = np.concatenate([np.arange(len(frame)), dup])
    return pd.concat([frame, extra], ignore_index=True), x_h[source], x_m[source], source


def aspcapstar_dr17_bytes(flux, err, templates) -> bytes:
    """An aspcapStar file with float64 images (BITPIX −64), as DR17's Python writer makes them."""
    prim, h1, h2 = templates
    return b"".join((prim, h1, fits_data_block(flux, ">f8"), h2, fits_data_block(err, ">f8")))


def write_dr17(
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
    duplicate_fraction: float = 0.02,
) -> Path:
    """Write a survey in the APOGEE DR17 file layout under folder ``out``; returns ``out``.

    Parameters as :func:`~rsca_core.apogee.write_dr16`; ``duplicate_fraction`` of a simulated
    survey's stars get a flagged duplicate row. Every file is written atomically; allStar last.
    """
    out, allstar_path, tab, (frame, x_h, x_m), get_spectra = prepare_layout(
        survey_or_tables, spectra, out, ALLSTAR_NAMES["dr17"], overwrite
    )
    dup = duplicate_rows(frame, getattr(survey_or_tables, "seed", None), duplicate_fraction)
    full, x_h, x_m, source = with_duplicates(frame, x_h, x_m, dup)
    out.mkdir(parents=True, exist_ok=True)
    rep = reporter(progress)
    templates = aspcapstar_templates(simulated, bitpix=-64)
    tel, fld, sid = (full[c].tolist() for c in ("TELESCOPE", "FIELD", "APOGEE_ID"))
    write_spectra_files(
        len(full),
        lambda rows: get_spectra(source[rows]),
        lambda i: f"{tel[i].strip()}/{fld[i].strip()}/aspcapStar-dr17-{sid[i].strip()}.fits",
        out,
        lambda f, e: aspcapstar_dr17_bytes(f, e, templates),
        rep.span(0.0, 0.9),
        "writing aspcapStar-dr17",
        chunk_size,
    )
    rep.say(0.9, "writing allVisit, OCCAM and allStar tables")
    visit_pk = write_allvisit(out / ALLVISIT_DR17_NAME, full, simulated)
    members = occam_members if occam_members is not None else occam_members_table(tab, frame)
    names = (OCCAM_MEMBER_NAMES["dr17"], OCCAM_CLUSTER_NAMES["dr17"])
    write_occam(out, members, occam_clusters, simulated, names)
    write_allstar_dr17(allstar_path, full, x_h, x_m, visit_pk, simulated)
    rep.say(1.0, "DR17 layout written")
    return out


def write_allvisit(path: Path, frame: pd.DataFrame, simulated: bool) -> np.ndarray:
    """allVisit rows of every star's visits (``TELESCOPE-PLATE-MJD`` names in VISITS); returns
    VISIT_PK (N, 100): each row's allVisit rows, padded with :data:`VISIT_PK_FILL`.

    A star's rows are all the visits of its APOGEE_ID (DR17 matched visits on APOGEE_ID only)."""
    from astropy.io import fits

    rows = []
    by_id: dict[str, list] = {}
    for sid, visits in zip(frame["APOGEE_ID"].astype(str), frame["VISITS"].astype(str)):
        if sid in by_id:
            continue
        by_id[sid] = []
        for v in (t.strip() for t in visits.split(",")):
            parts = v.split("-")
            if len(parts) < 3:
                continue
            tel, plate, mjd = parts[0], parts[1], int(parts[2])
            fiber = 1 + zlib.crc32(f"{sid}{plate}".encode()) % 300  # a fibre per star and plate
            by_id[sid].append(len(rows))
            rows.append((sid, tel, plate, mjd, fiber))
    visit_pk = np.full((len(frame), N_VISIT_PK), VISIT_PK_FILL, np.int32)
    for i, sid in enumerate(frame["APOGEE_ID"].astype(str)):
        pk = by_id[sid][:N_VISIT_PK]
        visit_pk[i, : len(pk)] = pk
    t = pd.DataFrame(rows, columns=["APOGEE_ID", "TELESCOPE", "PLATE", "MJD", "FIBERID"])
    vid = [f"apogee.{r.TELESCOPE}.dr17.{r.PLATE}.{r.MJD}.{r.FIBERID}" for r in t.itertuples()]
    files = [f"apVisit-dr17-{r.PLATE}-{r.MJD}-{r.FIBERID:03d}.fits" for r in t.itertuples()]
    hdu = fits.BinTableHDU.from_columns(
        [
            string_column("APOGEE_ID", t["APOGEE_ID"]),
            string_column("VISIT_ID", vid),
            string_column("FILE", files),
            string_column("TELESCOPE", t["TELESCOPE"]),
            string_column("PLATE", t["PLATE"]),
            fits.Column("MJD", format="J", array=t["MJD"].to_numpy(np.int32)),
            fits.Column("FIBERID", format="I", array=t["FIBERID"].to_numpy(np.int16)),
        ]
    )
    write_fits(fits.HDUList([primary_hdu(simulated), hdu]), path)
    return visit_pk


def write_allstar_dr17(path: Path, frame: pd.DataFrame, x_h, x_m, visit_pk, simulated: bool) -> None:
    """The DR17 allStar file: HDU 1 stars, HDU 2 RA index (not filled), HDU 3 ELEM_SYMBOL, HDU 4 fields."""
    from astropy.io import fits

    ne = len(DR17_ELEMENTS)

    def dr17_array(a):  # DR16's 26 elements + C13; NaN for missing (not −9999.99)
        a = np.where(np.isclose(a, MISSING_VALUE, atol=1e-3) | ~np.isfinite(a), np.nan, a)
        return np.hstack([a, np.full((len(a), 1), np.nan)]).astype(np.float32)

    extratarg = np.where(frame["DUPLICATE"].to_numpy(bool), EXTRATARG_DUPLICATE, 0).astype(np.int32)
    nvisits = (visit_pk != VISIT_PK_FILL).sum(axis=1).astype(np.int32)
    stars = fits.BinTableHDU.from_columns(
        [
            string_column("APOGEE_ID", frame["APOGEE_ID"]),
            string_column("TELESCOPE", frame["TELESCOPE"]),
            string_column("FIELD", frame["FIELD"]),
            *[fits.Column(c, format="E", array=frame[c].to_numpy(np.float32)) for c in ("TEFF", "LOGG", "M_H")],
            fits.Column("X_H", format=f"{ne}E", array=dr17_array(x_h)),
            fits.Column("X_M", format=f"{ne}E", array=dr17_array(x_m)),
            fits.Column("ASPCAPFLAG", format="K", array=frame["ASPCAPFLAG"].to_numpy(np.int64)),
            fits.Column("EXTRATARG", format="J", array=extratarg),
            *[
                fits.Column(c, format="E", array=frame[c].to_numpy(np.float32))
                for c in ("AK_TARG", "VHELIO_AVG", "SNR")
            ],
            fits.Column("NVISITS", format="J", array=nvisits),
            fits.Column("VISIT_PK", format=f"{N_VISIT_PK}J", array=visit_pk),
            fits.Column("GAIAEDR3_SOURCE_ID", format="K", array=frame["GAIA_DR3_ID"].to_numpy(np.int64)),
        ]
    )
    ra_index = fits.ImageHDU(np.full(360, -1, np.int64))
    ra_index.header["COMMENT"] = "simulated survey: the RA index is not filled"
    symbols = np.array([[s.ljust(20) for s in DR17_ELEMENTS]], dtype="S20")
    elem = fits.BinTableHDU.from_columns(
        [fits.Column("ELEM_SYMBOL", format=f"{20 * ne}A", dim=f"(20,{ne})", array=symbols)]
    )
    pairs = frame[["TELESCOPE", "FIELD"]].drop_duplicates()
    fields = fits.BinTableHDU.from_columns(
        [string_column("TELESCOPE", pairs["TELESCOPE"]), string_column("FIELD", pairs["FIELD"])]
    )
    write_fits(fits.HDUList([primary_hdu(simulated), stars, ra_index, elem, fields]), path)
