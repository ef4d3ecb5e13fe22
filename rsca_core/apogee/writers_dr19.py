"""Writing a survey in the SDSS-V DR19 (Astra 0.6.0) file layout (``simulate --format dr19``).

``astraAllStarASPCAP-0.6.0.fits.gz`` (HDU 1 BOSS, empty; HDU 2 APOGEE: lower-case columns, one row
per telescope spectrum), ``spectra/star/{gg}/{ss}/mwmStar-0.6.0-{sdss_id}.fits`` (HDU 3
APOGEE/APO, HDU 4 APOGEE/LCO, 0 or 1 row each: flux, ivar, pixel_flags, continuum) and
``occam_member-DR19.fits`` / ``occam_cluster-DR19.fits`` (matched through SDSS_ID).

The normalised spectra of the survey are turned into mwmStar rows with a smooth continuum
(:func:`simulated_continuum`): ``flux = F × continuum``, ``ivar = (E × continuum)**-2``; pixels
without data (F exactly 0) get no continuum (NaN), pixels the simulator marks bad (error ≥ 1)
get ``pixel_flags`` bit 0. A simulated survey also gets stars seen from both observatories (a
second, lower-SNR row) and stars new in SDSS-V (no ``sdss4_apogee_id``).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import (
    ALLSTAR_ELEMENTS,  # noqa: E402  (element order of the frame's X_H)
    DLOGLAM,
    LOGLAM0,
    MISSING_VALUE,
    N_PIXELS,
    apogee_wavelength,
)
from ..fileio import atomic_write_bytes
from ..progress import ProgressArg, reporter
from .fitsio import MASKED_PIXEL_ERROR
from .layout import SIMULATED_KEYWORD
from .releases import (
    AK_PER_EBV,
    ALLSTAR_NAMES,
    DR19_ABUNDANCE_COLUMNS,
    MWMSTAR_HDU,
    OCCAM_CLUSTER_NAMES,
    OCCAM_MEMBER_NAMES,
    mwmstar_relpath,
)
from .writers import (
    fits_data_block,
    occam_members_table,
    prepare_layout,
    primary_hdu,
    string_column,
    write_fits,
)
from .writers_dr17 import duplicate_rows, with_duplicates


def simulated_continuum(n_pixels: int = N_PIXELS) -> np.ndarray:
    """A smooth positive continuum (flux units of 1e-17 erg/s/cm²/Å) of the simulated mwmStar rows:
    a Rayleigh-Jeans-like λ^-2.5 slope times a gentle throughput curve."""
    wl = apogee_wavelength(n_pixels)
    x = (wl - wl.mean()) / (wl.max() - wl.min())
    return 800.0 * (wl / 16000.0) ** -2.5 * (1.0 + 0.15 * x - 0.2 * x * x)


def mwmstar_row(flux, err, continuum) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(flux, ivar, pixel_flags, continuum)`` float32 of an mwmStar row from normalised flux/error."""
    f = np.asarray(flux, np.float64)
    e = np.asarray(err, np.float64)
    data = f != 0
    cont = np.where(data, continuum, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ivar = np.where(data & (e > 0), 1.0 / (e * continuum) ** 2, 0.0)
    flags = np.where(data & (e >= MASKED_PIXEL_ERROR), 1.0, 0.0)  # bit 0: bad pixel
    return (
        (f * continuum).astype(np.float32),
        ivar.astype(np.float32),
        flags.astype(np.float32),
        cont.astype(np.float32),
    )


class MwmStarWriter:
    """mwmStar files as raw FITS bytes from headers made once by astropy (one file per star)."""

    def __init__(self, simulated: bool):
        from astropy.io import fits

        prim = fits.PrimaryHDU()
        prim.header["SDSS_ID"] = (10**15, "SDSS-V identifier")
        if simulated:
            prim.header[SIMULATED_KEYWORD] = (True, "written by the RSCA Lab simulator")
        self.prim = prim.header.tostring().encode("ascii")
        self.placeholder = fits.Card("SDSS_ID", 10**15, "SDSS-V identifier").image.encode("ascii")
        self.dtype = np.dtype(
            [("sdss_id", ">i8"), ("telescope", "S6"), ("snr", ">f4")]
            + [(c, ">f4", (N_PIXELS,)) for c in ("flux", "ivar", "pixel_flags", "continuum")]
        )
        cols = [
            fits.Column("sdss_id", format="K"),
            fits.Column("telescope", format="6A"),
            fits.Column("snr", format="E"),
            *[fits.Column(c, format=f"{N_PIXELS}E") for c in ("flux", "ivar", "pixel_flags", "continuum")],
        ]
        self.heads = {}
        for hdu, name in ((1, "BOSS/APO"), (2, "BOSS/LCO"), (3, "APOGEE/APO"), (4, "APOGEE/LCO")):
            for n_rows in (0, 1):
                h = fits.BinTableHDU.from_columns(cols if hdu >= 3 else cols[:3], nrows=n_rows, name=name)
                if hdu >= 3:
                    for k, v in (("CRVAL", LOGLAM0), ("CDELT", DLOGLAM), ("CRPIX", 1), ("CTYPE", "LOG-LINEAR")):
                        h.header[k] = v
                    h.header["NPIXELS"] = N_PIXELS
                    h.header["DC-FLAG"] = 1
                self.heads[hdu, n_rows] = h.header.tostring().encode("ascii")

    def file_bytes(self, sdss_id: int, rows: dict) -> bytes:
        """A whole mwmStar file; ``rows`` maps HDU (3, 4) to ``(telescope, snr, flux, err, continuum)``."""
        card = self.placeholder.replace(b"%20d" % 10**15, b"%20d" % int(sdss_id))
        parts = [self.prim.replace(self.placeholder, card), self.heads[1, 0], self.heads[2, 0]]
        for hdu in (3, 4):
            if hdu not in rows:
                parts.append(self.heads[hdu, 0])
                continue
            tel, snr, flux, err, continuum = rows[hdu]
            rec = np.zeros(1, self.dtype)
            rec["sdss_id"], rec["telescope"], rec["snr"] = sdss_id, tel.encode(), snr
            rec["flux"][0], rec["ivar"][0], rec["pixel_flags"][0], rec["continuum"][0] = mwmstar_row(
                flux, err, continuum
            )
            parts += [self.heads[hdu, 1], fits_data_block(rec.view(np.uint8), "u1")]
        return b"".join(parts)


def write_dr19(
    survey_or_tables,
    out,
    *,
    spectra=None,
    occam_members=None,
    simulated: bool = True,
    overwrite: bool = False,
    chunk_size: int = 256,
    progress: ProgressArg = True,
    duplicate_fraction: float = 0.02,
    new_fraction: float = 0.05,
) -> Path:
    """Write a survey in the SDSS-V DR19 layout under folder ``out`` (the folder holding ``spectra/``).

    Parameters as :func:`~rsca_core.apogee.write_dr16`; of a simulated survey's stars,
    ``duplicate_fraction`` are also observed from the other observatory (a lower-SNR row) and
    ``new_fraction`` are new in SDSS-V (no ``sdss4_apogee_id``). Returns ``out``.
    """
    out, summary, tab, (frame, x_h, _), get_spectra = prepare_layout(
        survey_or_tables, spectra, out, ALLSTAR_NAMES["dr19"], overwrite
    )
    if not (frame["SDSS_ID"] > 0).all():
        frame["SDSS_ID"] = np.where(frame["SDSS_ID"] > 0, frame["SDSS_ID"], 10**8 + np.arange(len(frame)))
    seed = getattr(survey_or_tables, "seed", None)
    frame["NEW_IN_SDSS5"] = False
    if seed is not None and new_fraction > 0:
        new = np.random.default_rng([int(seed), 1919]).random(len(frame)) < new_fraction
        frame["NEW_IN_SDSS5"] = new & frame["CLUSTER"].eq("").to_numpy() if "CLUSTER" in frame else new
    dup = duplicate_rows(frame, seed, duplicate_fraction)
    full, x_h, _, source = with_duplicates(frame, x_h, x_h, dup)
    out.mkdir(parents=True, exist_ok=True)
    rep = reporter(progress)
    _write_mwmstar_files(out, frame, full, source, get_spectra, simulated, rep.span(0.0, 0.9), chunk_size)
    rep.say(0.9, "writing OCCAM and the astraAllStarASPCAP summary")
    members = occam_members if occam_members is not None else occam_members_table(tab, frame)
    write_occam_dr19(out, members, frame, simulated)
    write_astra_summary(summary, full, x_h, simulated)
    rep.say(1.0, "DR19 layout written")
    return out


def _write_mwmstar_files(out, frame, full, source, get_spectra, simulated, rep, chunk_size) -> None:
    """One mwmStar file per star, with a row in the HDU of each telescope that observed it."""
    writer = MwmStarWriter(simulated)
    continuum = simulated_continuum()
    rows_of: dict[int, list] = {}
    for i, src in enumerate(source):
        rows_of.setdefault(int(src), []).append(i)
    tel, snr = full["TELESCOPE"].astype(str).tolist(), full["SNR"].to_numpy(float)
    ids = frame["SDSS_ID"].to_numpy(np.int64)

    def file_bytes(flux, err, star):
        rows = {
            MWMSTAR_HDU.get(tel[i].strip(), 3): (tel[i].strip(), snr[i], flux, err, continuum) for i in rows_of[star]
        }
        return writer.file_bytes(ids[star], rows)

    n = len(frame)
    with rep.bar(n, "writing mwmStar", unit="file") as bar:
        for a in range(0, n, chunk_size):
            rows = np.arange(a, min(n, a + chunk_size))
            flux, err = get_spectra(rows)
            for k, star in enumerate(rows):
                atomic_write_bytes(out / mwmstar_relpath(ids[star]), file_bytes(flux[k], err[k], int(star)))
            bar.update(len(rows))


def write_astra_summary(path: Path, full: pd.DataFrame, x_h, simulated: bool) -> None:
    """``astraAllStarASPCAP-0.6.0.fits.gz``: HDU 1 BOSS (0 rows), HDU 2 APOGEE (lower-case columns)."""
    from astropy.io import fits

    def nan_missing(a):
        a = np.asarray(a, float)
        return np.where(np.isclose(a, MISSING_VALUE, atol=1e-3) | ~np.isfinite(a), np.nan, a).astype(np.float32)

    apogee_id = np.where(full["NEW_IN_SDSS5"].to_numpy(bool), "", full["APOGEE_ID"].astype(str))
    cols = [
        fits.Column("sdss_id", format="K", array=full["SDSS_ID"].to_numpy(np.int64)),
        string_column("sdss4_apogee_id", apogee_id),
        fits.Column("gaia_dr2_source_id", format="K", array=full["GAIA_DR2_ID"].to_numpy(np.int64)),
        fits.Column("gaia_dr3_source_id", format="K", array=full["GAIA_DR3_ID"].to_numpy(np.int64)),
        string_column("release", np.where(full["NEW_IN_SDSS5"].to_numpy(bool), "sdss5", "dr17")),
        string_column("telescope", full["TELESCOPE"].astype(str)),
        string_column("field", full["FIELD"].astype(str)),
        fits.Column("snr", format="E", array=full["SNR"].to_numpy(np.float32)),
        fits.Column("v_rad", format="E", array=full["VHELIO_AVG"].to_numpy(np.float32)),
        fits.Column("ebv", format="E", array=(full["AK_TARG"].to_numpy(float) / AK_PER_EBV).astype(np.float32)),
        fits.Column("teff", format="E", array=nan_missing(full["TEFF"])),
        fits.Column("logg", format="E", array=nan_missing(full["LOGG"])),
        fits.Column("m_h_atm", format="E", array=nan_missing(full["M_H"])),
    ]
    for el, c in DR19_ABUNDANCE_COLUMNS.items():
        cols.append(fits.Column(c, format="E", array=nan_missing(x_h[:, ALLSTAR_ELEMENTS.index(el)])))
    flag = full["ASPCAPFLAG"].to_numpy(np.int64)
    bad = ((flag >> 23) & 1).astype(bool)
    cols += [
        fits.Column("result_flags", format="K", array=np.where(bad, 1 << 24, 0).astype(np.int64)),
        fits.Column("flag_warn", format="L", array=bad),
        fits.Column("flag_bad", format="L", array=bad),
    ]
    prim = primary_hdu(simulated)
    prim.header["PIPELINE"] = "ASPCAP"
    prim.header["V_ASTRA"] = "0.6.0"
    boss = fits.BinTableHDU.from_columns([fits.Column("sdss_id", format="K", array=np.zeros(0, np.int64))])
    boss.header["INSTRMNT"] = "BOSS"
    apogee = fits.BinTableHDU.from_columns(cols)
    apogee.header["INSTRMNT"] = "APOGEE"
    buf = io.BytesIO()
    fits.HDUList([prim, boss, apogee]).writeto(buf)
    atomic_write_bytes(path, gzip.compress(buf.getvalue(), compresslevel=6))


def write_occam_dr19(out: Path, members: pd.DataFrame, frame: pd.DataFrame, simulated: bool) -> None:
    """``occam_member-DR19.fits`` (Cluster, SDSS_ID, Gaia ids, OBJ_ID, CG_Prob, ...) and the cluster file."""
    from astropy.io import fits

    by_id = frame.set_index("APOGEE_ID")
    m = members.reset_index(drop=True)
    ids = m["APOGEE_ID"].astype(str)
    new = by_id.loc[ids, "NEW_IN_SDSS5"].to_numpy(bool)
    cols = [
        string_column("Cluster", m["CLUSTER"].astype(str)),
        fits.Column("SDSS_ID", format="K", array=by_id.loc[ids, "SDSS_ID"].to_numpy(np.int64)),
        fits.Column("GaiaDR3_ID", format="K", array=by_id.loc[ids, "GAIA_DR3_ID"].to_numpy(np.int64)),
        fits.Column("GaiaDR2_ID", format="K", array=by_id.loc[ids, "GAIA_DR2_ID"].to_numpy(np.int64)),
        string_column("OBJ_ID", np.where(new, "", ids)),
        fits.Column("CG_Prob", format="D", array=m["CG_PROB"].to_numpy(float)),
        fits.Column("RV_Prob", format="D", array=m["RV_PROB"].to_numpy(float)),
        fits.Column("FeH_Prob_ASPCAP", format="D", array=m["FEH_PROB"].to_numpy(float)),
        fits.Column("EH_Prob", format="D", array=m["CG_PROB"].to_numpy(float)),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="OCCAM data")
    write_fits(fits.HDUList([primary_hdu(simulated), hdu]), out / OCCAM_MEMBER_NAMES["dr19"])
    counts = m["CLUSTER"].astype(str).value_counts().sort_index()
    clusters = fits.BinTableHDU.from_columns(
        [
            string_column("Name", counts.index.astype(str)),
            fits.Column("Num_Stars_ASPCAP", format="K", array=counts.to_numpy()),
        ],
        name="OCCAM data",
    )
    write_fits(fits.HDUList([primary_hdu(simulated), clusters]), out / OCCAM_CLUSTER_NAMES["dr19"])
