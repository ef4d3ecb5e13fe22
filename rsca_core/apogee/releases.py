"""The data releases the loader reads: detecting them and mapping their star tables and spectra
onto the loader's allStar-like table (see :mod:`rsca_core.selection`).

* **DR16** (SDSS-IV, the paper's): ``allStar-r12-l33.fits`` HDU 1; ``aspcapStar-r12-{ID}.fits``.
* **DR17** (SDSS-IV): ``allStar-dr17-synspec_rev1.fits`` HDU 1: X_H/X_M float32[27] in the order of
  HDU 3's ``ELEM_SYMBOL`` (DR16's 26, then C13), NaN for missing values, ASPCAPFLAG int64
  (STAR_BAD bit 23), EXTRATARG bit 4 = not the highest-SNR duplicate, GAIAEDR3_SOURCE_ID, no
  VISITS (visits through VISIT_PK into ``allVisit-dr17-synspec_rev1.fits``);
  ``{TELESCOPE}/{FIELD}/aspcapStar-dr17-{ID}.fits``.
* **DR19** (SDSS-V, Astra 0.6.0): ``astraAllStarASPCAP-0.6.0.fits.gz`` HDU 2 (APOGEE), lower-case
  columns, one row per telescope spectrum (``sdss_id`` repeats), ``flag_bad``, ``v_rad``, ``ebv``
  (no AK_TARG, no VISITS); spectra in ``spectra/star/{gg}/{ss}/mwmStar-0.6.0-{sdss_id}.fits``
  HDU 3 (APO) / HDU 4 (LCO), normalised by Astra's continuum.

Sources of every fact: ``docs/data-releases.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import ALLSTAR_ELEMENTS, SPECIES
from .fitsio import fits_strings, header_simulated, read_allstar, read_allstar_visits, read_table_columns
from .layout import aspcapstar_relpath

RELEASES = ("dr16", "dr17", "dr19")
#: File names of each release's star table, membership and cluster catalogues.
ALLSTAR_NAMES = {
    "dr16": "allStar-r12-l33.fits",
    "dr17": "allStar-dr17-synspec_rev1.fits",
    "dr19": "astraAllStarASPCAP-0.6.0.fits.gz",
}
OCCAM_MEMBER_NAMES = {
    "dr16": "occam_member-DR16.fits",
    "dr17": "occam_member-DR17.fits",
    "dr19": "occam_member-DR19.fits",
}
OCCAM_CLUSTER_NAMES = {
    "dr16": "occam_cluster-DR16.fits",
    "dr17": "occam_cluster-DR17.fits",
    "dr19": "occam_cluster-DR19.fits",
}
ALLVISIT_DR17_NAME = "allVisit-dr17-synspec_rev1.fits"
#: DR17's element order (HDU 3 ELEM_SYMBOL): DR16's 26, then C13. Used only if HDU 3 is absent.
DR17_ELEMENTS = (*ALLSTAR_ELEMENTS, "C13")
#: DR19 (Astra) column of each of the paper's 21 species ([X/H], dex).
DR19_ABUNDANCE_COLUMNS = {
    "C": "c_h",
    "CI": "c_1_h",
    "N": "n_h",
    "O": "o_h",
    "Na": "na_h",
    "Mg": "mg_h",
    "Al": "al_h",
    "Si": "si_h",
    "S": "s_h",
    "K": "k_h",
    "Ca": "ca_h",
    "Ti": "ti_h",
    "TiII": "ti_2_h",
    "V": "v_h",
    "Cr": "cr_h",
    "Mn": "mn_h",
    "Fe": "fe_h",
    "Co": "co_h",
    "Ni": "ni_h",
    "Cu": "cu_h",
    "Ce": "ce_h",
}
#: A_Ks / E(B−V) (Schlafly & Finkbeiner 2011, Table 6, 2MASS Ks, R_V = 3.1): DR19's A_K substitute.
AK_PER_EBV = 0.302
#: DR17 EXTRATARG bit 4: "non-primary (not highest S/N) duplicate".
EXTRATARG_DUPLICATE = 16
#: HDU of an mwmStar file holding each telescope's APOGEE spectrum.
MWMSTAR_HDU = {"apo25m": 3, "apo1m": 3, "lco25m": 4}
#: How each release resolves repeated rows of a star (see :func:`rsca_core.selection.select_stars`).
DUPLICATES = {"dr16": "snr", "dr17": "flag", "dr19": "snr-first"}
BAD_LABELS = {
    "dr16": "STAR_BAD unset (ASPCAPFLAG bit 23)",
    "dr17": "STAR_BAD unset (ASPCAPFLAG bit 23)",
    "dr19": "flag_bad unset (Astra ASPCAP; DR19 has no STAR_BAD)",
}


def detect_release(path, release: str | None = None) -> tuple[str, str]:
    """The release of a star table: ``(release, how)``, ``how`` one of "forced", "file name",
    "header", "columns".

    Examples
    --------
    >>> detect_release("x/allStar-dr17-synspec_rev1.fits")
    ('dr17', 'file name')
    >>> detect_release("anything.fits", "DR19")
    ('dr19', 'forced')
    """
    if release:
        r = str(release).lower()
        if r not in RELEASES:
            raise ValueError(f"--release {release!r}: choose one of {', '.join(RELEASES)}")
        return r, "forced"
    name = Path(path).name
    for r, pattern in (("dr16", r"allStar-r12"), ("dr17", r"allStar-dr17"), ("dr19", r"astraAllStarASPCAP")):
        if re.search(pattern, name, re.IGNORECASE):
            return r, "file name"
    return _detect_from_contents(Path(path))


def _detect_from_contents(path: Path) -> tuple[str, str]:
    from astropy.io import fits

    if not path.is_file():
        raise FileNotFoundError(f"{path}: allStar file not found")
    try:
        with fits.open(path, memmap=False) as hdul:
            head = hdul[0].header
            if "V_ASTRA" in head or str(head.get("PIPELINE", "")).upper() == "ASPCAP":
                return "dr19", "header"
            if len(hdul) > 2 and isinstance(hdul[2], fits.BinTableHDU) and "sdss_id" in hdul[2].columns.names:
                return "dr19", "columns"
            if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                raise ValueError(f"{path}: no star table in HDU 1 or 2; pass --release dr16|dr17|dr19")
            cols = {c.upper(): c for c in hdul[1].columns.names}
            if "VISITS" in cols:
                return "dr16", "columns"
            if "VISIT_PK" in cols or "EXTRATARG" in cols:
                return "dr17", "columns"
    except (ValueError, FileNotFoundError):
        raise
    except Exception as exc:
        raise ValueError(f"{path}: cannot read allStar FITS file ({exc})") from None
    raise ValueError(f"{path}: cannot tell the release from its name, header or columns; pass --release dr16|dr17|dr19")


def read_star_table(release: str, path) -> tuple[pd.DataFrame, bool, dict]:
    """The release's star table as the loader's allStar-like table: ``(table, simulated, notes)``.

    ``notes`` records what was substituted or is unavailable (``substitutes``, ``unavailable``)
    and how the element order was found (DR17).
    """
    if release == "dr16":
        table, simulated = read_allstar(path, visits=False)
        return table, simulated, {"substitutes": {}, "unavailable": {}}
    if release == "dr17":
        return _read_dr17(path)
    if release == "dr19":
        return _read_dr19(path)
    raise ValueError(f"unknown release {release!r}")


def _dr17_element_order(path) -> tuple[tuple, str]:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        if len(hdul) > 3 and isinstance(hdul[3], fits.BinTableHDU) and "ELEM_SYMBOL" in hdul[3].columns.names:
            sym = np.asarray(hdul[3].data["ELEM_SYMBOL"][0])
            if sym.ndim == 0:  # one 540-character string: 27 names of 20 characters
                text = str(sym)
                sym = [text[i : i + 20] for i in range(0, len(text), 20)]
            return tuple(str(s).strip() for s in np.asarray(sym).ravel()), "HDU 3 ELEM_SYMBOL"
    return DR17_ELEMENTS, "documented DR17 order (the file has no HDU 3 ELEM_SYMBOL)"


def _read_dr17(path) -> tuple[pd.DataFrame, bool, dict]:
    required = ("APOGEE_ID", "TELESCOPE", "FIELD", "TEFF", "LOGG", "X_H", "X_M", "ASPCAPFLAG", "EXTRATARG")
    required += ("AK_TARG", "VHELIO_AVG", "SNR")
    cols, n, head = read_table_columns(path, "allStar", 1, required, ("GAIAEDR3_SOURCE_ID",))
    order, order_from = _dr17_element_order(path)
    out = {c: fits_strings(cols[c]) for c in ("APOGEE_ID", "TELESCOPE", "FIELD")}
    for c in ("TEFF", "LOGG", "AK_TARG", "VHELIO_AVG", "SNR"):
        out[c] = np.asarray(cols[c], dtype=float)
    out["ASPCAPFLAG"] = np.asarray(cols["ASPCAPFLAG"]).astype(np.int64)
    for arr_name in ("X_H", "X_M"):
        arr = np.asarray(cols[arr_name], dtype=float)
        if arr.shape != (n, len(order)):
            raise ValueError(
                f"{path} (allStar): column {arr_name} has shape {arr.shape}, expected ({n}, {len(order)}) "
                f"for the elements {', '.join(order)} ({order_from})"
            )
        for el in SPECIES:
            if el not in order:
                raise ValueError(f"{path} (allStar): element {el} not in the element order ({order_from})")
            out[f"{arr_name}_{el.upper()}"] = arr[:, order.index(el)]
    out["DUPLICATE"] = (np.asarray(cols["EXTRATARG"]).astype(np.int64) & EXTRATARG_DUPLICATE) != 0
    if "GAIAEDR3_SOURCE_ID" in cols:  # (E)DR3 source ids are DR3's
        out["GAIA_DR3_ID"] = np.asarray(cols["GAIAEDR3_SOURCE_ID"]).astype(np.int64)
    out["VISITS"] = np.full(n, "", dtype=object)
    out["ROW"] = np.arange(n)
    notes = {"element_order": order_from, "substitutes": {}, "unavailable": {}}
    return pd.DataFrame(out), _simulated(head), notes


def _read_dr19(path) -> tuple[pd.DataFrame, bool, dict]:
    required = ("sdss_id", "sdss4_apogee_id", "telescope", "teff", "logg", "snr", "v_rad", "ebv", "flag_bad")
    required += tuple(DR19_ABUNDANCE_COLUMNS.values())
    optional = ("gaia_dr3_source_id", "gaia_dr2_source_id", "field", "result_flags")
    cols, n, head = read_table_columns(path, "astraAllStarASPCAP", 2, required, optional)
    sdss_id = np.asarray(cols["SDSS_ID"]).astype(np.int64)
    apogee = fits_strings(cols["SDSS4_APOGEE_ID"])
    out = {"APOGEE_ID": np.where(apogee != "", apogee, np.char.add("sdss_id:", sdss_id.astype(str)).astype(object))}
    out["TELESCOPE"] = fits_strings(cols["TELESCOPE"])
    out["FIELD"] = fits_strings(cols["FIELD"]) if "FIELD" in cols else np.full(n, "", dtype=object)
    out["TEFF"] = np.asarray(cols["TEFF"], dtype=float)
    out["LOGG"] = np.asarray(cols["LOGG"], dtype=float)
    for el, c in DR19_ABUNDANCE_COLUMNS.items():
        out[f"X_H_{el.upper()}"] = np.asarray(cols[c.upper()], dtype=float)
    out["STAR_BAD"] = np.asarray(cols["FLAG_BAD"]).astype(bool)
    flags = cols.get("RESULT_FLAGS")
    out["ASPCAPFLAG"] = np.asarray(flags).astype(np.int64) if flags is not None else np.zeros(n, np.int64)
    out["AK_TARG"] = AK_PER_EBV * np.asarray(cols["EBV"], dtype=float)
    out["VHELIO_AVG"] = np.asarray(cols["V_RAD"], dtype=float)
    out["SNR"] = np.asarray(cols["SNR"], dtype=float)
    out["VISITS"] = np.full(n, "", dtype=object)
    out["SDSS_ID"] = sdss_id
    for c, dst in (("GAIA_DR3_SOURCE_ID", "GAIA_DR3_ID"), ("GAIA_DR2_SOURCE_ID", "GAIA_DR2_ID")):
        if c in cols:
            out[dst] = np.asarray(cols[c]).astype(np.int64)
    out["ROW"] = np.arange(n)
    notes = {
        "substitutes": {
            "ak_targ": f"A_K = {AK_PER_EBV} × ebv (E(B−V) of the DR19 summary file; A_Ks/E(B−V) of Schlafly & "
            "Finkbeiner 2011, Table 6, R_V = 3.1): DR19 has no AK_TARG",
            "vhelio_avg": "v_rad (Doppler barycentric radial velocity of the DR19 summary file) stands for VHELIO_AVG",
            "apogee_id": "stars new in SDSS-V (no sdss4_apogee_id) are named 'sdss_id:<sdss_id>'",
            "star_bad": "flag_bad (Astra ASPCAP) stands for STAR_BAD, which DR19 does not have",
        },
        "unavailable": {
            "visits": "the DR19 summary file lists no visits: the shared-visits diagnostic (App. C) is off for "
            "this bundle",
        },
    }
    return pd.DataFrame(out), _simulated(head), notes


def _simulated(header) -> bool:
    class _H:  # header_simulated reads ``hdu.header`` of the first HDUs
        def __init__(self, h):
            self.header = h

    return header_simulated([_H(header)])


def star_visits(release: str, path, selected: pd.DataFrame, allvisit=None) -> tuple[np.ndarray, dict]:
    """Visit names of the selected rows, and notes on what is unavailable.

    DR16: the VISITS column. DR17: through VISIT_PK into ``allVisit`` (``allvisit`` path), as
    ``{TELESCOPE}-{PLATE}-{MJD}-{FIBERID}``; without it, empty. DR19: empty.
    """
    rows = selected["ROW"].to_numpy(np.int64)
    if release == "dr16":
        return read_allstar_visits(path, rows), {}
    if release == "dr17" and allvisit is not None:
        return _dr17_visits(path, rows, allvisit), {}
    empty = np.full(len(rows), "", dtype=object)
    if release == "dr17":
        return empty, {
            "visits": "DR17 allStar has no VISITS column; pass --allvisit allVisit-dr17-synspec_rev1.fits to name "
            "the visits through VISIT_PK. Without it the shared-visits diagnostic (App. C) is off for this bundle"
        }
    return empty, {}


def _dr17_visits(path, rows: np.ndarray, allvisit) -> np.ndarray:
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        col = {c.upper(): c for c in hdul[1].columns.names}
        if "VISIT_PK" not in col:
            raise ValueError(f"{path} (allStar): missing column VISIT_PK (needed with --allvisit)")
        pk = np.asarray(hdul[1].data[col["VISIT_PK"]][rows]).astype(np.int64)
    vis, n_vis, _ = read_table_columns(allvisit, "allVisit", 1, ("TELESCOPE", "PLATE", "MJD", "FIBERID"))
    names = np.char.add(
        np.char.add(
            np.char.add(fits_strings(vis["TELESCOPE"]).astype(str), "-"), fits_strings(vis["PLATE"]).astype(str)
        ),
        np.char.add(np.char.add("-", np.asarray(vis["MJD"]).astype(np.int64).astype(str)), "-"),
    )
    names = np.char.add(names, np.asarray(vis["FIBERID"]).astype(np.int64).astype(str))
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(np.atleast_2d(pk)):
        valid = row[(row >= 0) & (row < n_vis)]  # unused slots hold -2147483648
        out[i] = ",".join(names[valid].tolist())
    return out


def spectrum_paths(release: str, selected: pd.DataFrame, root: Path) -> list[str]:
    """Spectrum file of each selected row (DR19: ``path[hdu]`` of the row's telescope)."""
    root = Path(root)
    tel, fld, ids = (selected[c].astype(str).tolist() for c in ("TELESCOPE", "FIELD", "APOGEE_ID"))
    if release == "dr16":
        return [str(root / aspcapstar_relpath(t, f, i)) for t, f, i in zip(tel, fld, ids)]
    if release == "dr17":
        return [
            str(root / t.strip() / f.strip() / f"aspcapStar-dr17-{i.strip()}.fits") for t, f, i in zip(tel, fld, ids)
        ]
    out = []
    for t, sid in zip(tel, selected["SDSS_ID"].to_numpy(np.int64).tolist()):
        out.append(f"{root / mwmstar_relpath(sid)}[{MWMSTAR_HDU.get(t.strip(), 3)}]")
    return out


def mwmstar_relpath(sdss_id: int) -> str:
    """Path of a star's DR19 mwmStar file relative to the folder holding ``spectra/``.

    >>> mwmstar_relpath(103020000)
    'spectra/star/00/00/mwmStar-0.6.0-103020000.fits'
    """
    sid = int(sdss_id)
    return f"spectra/star/{(sid // 100) % 100:02d}/{sid % 100:02d}/mwmStar-0.6.0-{sid}.fits"
