"""Reading the FITS files of APOGEE: the allStar and OCCAM tables, and aspcapStar spectra.

aspcapStar files with plain image HDUs are parsed directly (about 10× faster than astropy); anything
unusual (e.g. tile-compressed images) goes through astropy.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import ALLSTAR_ELEMENTS, DLOGLAM, LOGLAM0, N_PIXELS
from .layout import ALLSTAR_COLUMNS, OCCAM_MEMBER_COLUMNS, SIMULATED_KEYWORD


# ====================================================================== reading tables
def columns_ci(names, required, where: str) -> dict:
    """Map each required column name (upper-cased) to the actual name, case-insensitively; a
    ValueError names the missing ones as asked for."""
    lookup = {}
    for n in names:
        lookup.setdefault(str(n).strip().upper(), n)
    missing = [c for c in required if c.upper() not in lookup]
    if missing:
        raise ValueError(f"{where}: missing column {', '.join(missing)}")
    return {c.upper(): lookup[c.upper()] for c in required}


def open_table(path, what: str):  # -> astropy.io.fits.HDUList
    """Open a FITS table file (HDU 1 must be a table); errors name the file and ``what`` it is."""
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        hdul = fits.open(path, memmap=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read {what} FITS file ({exc})") from None
    if len(hdul) < 2 or not isinstance(hdul[1], (fits.BinTableHDU, fits.TableHDU)):
        hdul.close()
        raise ValueError(f"{path}: {what} FITS file has no table in HDU 1")
    return hdul


def fits_strings(arr) -> np.ndarray:
    """Stripped Python strings (object array) of a FITS string column."""
    out = np.asarray(arr)
    if out.dtype.kind == "S":
        out = np.char.decode(out, "ascii", errors="replace")
    return np.char.strip(out.astype(str)).astype(object)


def header_simulated(hdul) -> bool:
    """True if the primary or first extension header says the simulator wrote the file."""
    for hdu in hdul[:2]:
        val = hdu.header.get(SIMULATED_KEYWORD)
        if val is True or (isinstance(val, str) and val.strip().upper() in ("T", "TRUE", "1", "Y")):
            return True
    return False


def read_allstar(path, visits: bool = True) -> tuple[pd.DataFrame, bool]:
    """Read the columns of an allStar file the loader uses into a DataFrame.

    Returns ``(table, simulated)``: ``table`` has the upper-case column names of
    :data:`ALLSTAR_COLUMNS`, with ``X_H``/``X_M`` expanded to ``X_H_<EL>``/``X_M_<EL>`` for the
    26 elements (order :data:`ALLSTAR_ELEMENTS`); ``simulated`` is True if the file says it was
    written by the simulator (header keyword ``SIMULATD = T``). With ``visits=False`` the (wide)
    VISITS strings are not decoded (see :func:`read_allstar_visits`); the column ``ROW`` keeps each
    star's row number in the file.
    """
    with open_table(path, "allStar") as hdul:
        data = hdul[1].data
        names = hdul[1].columns.names
        cols = columns_ci(names, ALLSTAR_COLUMNS, f"{path} (allStar)")
        simulated = header_simulated(hdul)
        out = {}
        for c in ("APOGEE_ID", "TELESCOPE", "FIELD") + (("VISITS",) if visits else ()):
            out[c] = fits_strings(data[cols[c]])
        for c in ("TEFF", "LOGG", "AK_TARG", "VHELIO_AVG", "SNR"):
            out[c] = np.asarray(data[cols[c]], dtype=float)
        out["ASPCAPFLAG"] = np.asarray(data[cols["ASPCAPFLAG"]]).astype(np.int64)
        n = len(out["APOGEE_ID"])
        for arr_name in ("X_H", "X_M"):
            arr = np.asarray(data[cols[arr_name]], dtype=float)
            if arr.ndim != 2 or arr.shape != (n, len(ALLSTAR_ELEMENTS)):
                raise ValueError(
                    f"{path} (allStar): column {arr_name} has shape {arr.shape}, expected "
                    f"({n}, {len(ALLSTAR_ELEMENTS)}) in the element order "
                    f"{', '.join(ALLSTAR_ELEMENTS)}"
                )
            for j, el in enumerate(ALLSTAR_ELEMENTS):
                out[f"{arr_name}_{el.upper()}"] = arr[:, j]
        lookup = {str(c).strip().upper(): c for c in names}
        if "GAIA_SOURCE_ID" in lookup:  # Gaia DR2 source id (0 = none)
            out["GAIA_DR2_ID"] = np.asarray(data[lookup["GAIA_SOURCE_ID"]]).astype(np.int64)
        out["ROW"] = np.arange(n)
    return pd.DataFrame(out), simulated


def read_allstar_visits(path, rows) -> np.ndarray:
    """VISITS strings of the given allStar rows (decoding only those rows of the wide column)."""
    with open_table(path, "allStar") as hdul:
        col = columns_ci(hdul[1].columns.names, ("VISITS",), f"{path} (allStar)")["VISITS"]
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.array([], dtype=object)
        return fits_strings(hdul[1].data[col][rows])


def read_occam_members(path) -> pd.DataFrame:
    """Read ``occam_member-DR16.fits`` (columns of :data:`OCCAM_MEMBER_COLUMNS`, upper case)."""
    with open_table(path, "OCCAM member") as hdul:
        data = hdul[1].data
        cols = columns_ci(hdul[1].columns.names, OCCAM_MEMBER_COLUMNS, f"{path} (OCCAM members)")
        out = {"APOGEE_ID": fits_strings(data[cols["APOGEE_ID"]]), "CLUSTER": fits_strings(data[cols["CLUSTER"]])}
        for c in ("CG_PROB", "RV_PROB", "FEH_PROB", "PM_PROB"):
            a = np.asarray(data[cols[c]])
            # keep float32 columns float32: the threshold is compared in the file's precision
            out[c] = a.astype(a.dtype.newbyteorder("=")) if a.dtype.kind == "f" else a.astype(float)
    return pd.DataFrame(out)


# ====================================================================== the paper's cuts


# ====================================================================== reading spectra
class SpectrumFileError(ValueError):
    """An aspcapStar file exists but is unreadable, corrupt or wrong-shaped; the message names it."""


def read_aspcapstar(path, n_pixels: int = N_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Flux and error (float32, ``n_pixels`` each) of one aspcapStar file.

    Raises FileNotFoundError if the file is absent and :class:`SpectrumFileError` (message
    starting with the path) if it is corrupt, truncated, has fewer than 3 HDUs, arrays of the wrong
    shape or a wavelength grid other than APOGEE's. Plain image HDUs are parsed directly (about
    10× faster than astropy); anything unusual (e.g. tile-compressed images) goes through astropy.
    """
    path = Path(path)
    try:
        with open(path, "rb", buffering=0) as fh:  # only the first three HDUs are read
            out = _parse_fits_images(fh, path, n_pixels)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except IsADirectoryError:
        raise SpectrumFileError(f"{path}: is a directory") from None
    except _NeedAstropy:
        out = _read_aspcapstar_astropy(path, n_pixels)
    except SpectrumFileError:
        raise
    except OSError as exc:
        raise SpectrumFileError(f"{path}: unreadable ({exc})") from None
    flux, err, crval, cdelt = out
    if (
        crval is not None
        and cdelt is not None
        and (abs(float(crval) - LOGLAM0) > 1e-6 or abs(float(cdelt) - DLOGLAM) > 1e-9)
    ):
        raise SpectrumFileError(
            f"{path}: wavelength grid CRVAL1={crval}, CDELT1={cdelt} differs from APOGEE's {LOGLAM0}, {DLOGLAM}"
        )
    return flux, err


class _NeedAstropy(Exception):
    pass


_BITPIX = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _card_value(card: str):
    v = card[10:]
    if v.lstrip().startswith("'"):
        body = v.lstrip()[1:]
        return body[: body.find("'")].strip() if "'" in body else body.strip()
    v = v.split("/")[0].strip()
    if v in ("T", "F"):
        return v == "T"
    try:
        return int(v)
    except ValueError:
        try:
            return float(v.replace("D", "E"))
        except ValueError:
            return v


def _read_exactly(fh, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        b = fh.read(n - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _read_header(fh, path, index: int, what: str) -> dict | None:
    """Cards (``{KEY: value}``) of the next HDU's header; None at the end of the file.

    ``what`` completes the message when the file ends before HDU ``index`` ("expected ...").
    """
    head = {}
    while True:
        block = _read_exactly(fh, 2880)
        if index == 0 and not head and block[:9] != b"SIMPLE  =":
            raise SpectrumFileError(f"{path}: not a FITS file (no SIMPLE card)")
        if len(block) < 2880:
            if index == 0 or head or block:
                raise SpectrumFileError(f"{path}: truncated FITS header in HDU {index}")
            raise SpectrumFileError(f"{path}: {index} HDUs, expected {what}")
        try:
            text = block.decode("ascii")
        except UnicodeDecodeError:
            raise SpectrumFileError(f"{path}: corrupt FITS header in HDU {index}") from None
        for i in range(0, 2880, 80):
            card = text[i : i + 80]
            key = card[:8].strip()
            if key == "END":
                return head
            if card[8:10] == "= " and key not in head:
                head[key] = _card_value(card)


def _data_size(head: dict, path, index: int) -> tuple[int, int, list]:
    """``(bytes of data, BITPIX, dims)`` of an HDU from its header."""
    try:
        bitpix = int(head["BITPIX"])
        naxis = int(head["NAXIS"])
        dims = [int(head[f"NAXIS{j}"]) for j in range(1, naxis + 1)]
    except (KeyError, TypeError, ValueError):
        raise SpectrumFileError(f"{path}: corrupt FITS header in HDU {index} (BITPIX/NAXIS missing)") from None
    if bitpix not in _BITPIX:
        raise SpectrumFileError(f"{path}: invalid BITPIX {bitpix} in HDU {index}")
    size = (
        (abs(bitpix) // 8)
        * int(head.get("GCOUNT", 1) or 1)
        * (int(head.get("PCOUNT", 0) or 0) + (int(np.prod(dims)) if naxis else 0))
    )
    return size, bitpix, dims


def _parse_fits_images(fh, path, n_pixels):
    """Flux (HDU 1), error (HDU 2) and HDU 1's CRVAL1/CDELT1 of an open FITS file (binary, unbuffered)."""
    hdus = []
    while len(hdus) < 3:
        index = len(hdus)
        head = _read_header(fh, path, index, "flux in HDU 1 and error in HDU 2")
        size, bitpix, dims = _data_size(head, path, index)
        if index == 0:  # primary data (normally empty): skip
            fh.seek(size + (-size % 2880), 1)
            hdus.append((None, head))
            continue
        data = _read_exactly(fh, size)
        if len(data) < size:
            raise SpectrumFileError(f"{path}: truncated (HDU {index} data has {len(data)} of {size} bytes)")
        if index == 1:
            fh.seek(-size % 2880, 1)
        xt = str(head.get("XTENSION", "")).strip().upper()
        if xt != "IMAGE" or head.get("ZIMAGE"):
            raise _NeedAstropy()
        what = "flux (HDU 1)" if index == 1 else "error (HDU 2)"
        if dims != [n_pixels]:
            raise SpectrumFileError(f"{path}: {what} has shape {tuple(dims[::-1])}, expected ({n_pixels},)")
        arr = np.frombuffer(data, dtype=_BITPIX[bitpix]).astype(np.float32)
        bscale, bzero = float(head.get("BSCALE", 1.0)), float(head.get("BZERO", 0.0))
        if bscale != 1.0 or bzero != 0.0:
            arr = (arr * np.float32(bscale) + np.float32(bzero)).astype(np.float32)
        hdus.append((arr, head))
    (flux, h1), (err, _) = hdus[1], hdus[2]
    return flux, err, h1.get("CRVAL1"), h1.get("CDELT1")


#: Bytes per element of the binary-table TFORM codes.
_TFORM_BYTES = {"L": 1, "B": 1, "A": 1, "I": 2, "J": 4, "K": 8, "E": 4, "D": 8, "C": 8, "M": 16, "P": 8, "Q": 16}
_MWM_COLUMNS = ("flux", "ivar", "pixel_flags", "continuum")


def _mwmstar_columns_raw(path, hdu: int, n_pixels: int) -> tuple[dict, object, object]:
    """The four arrays of the first row of binary-table HDU ``hdu``, parsed directly; raises
    _NeedAstropy for anything unusual (scaled columns, bit arrays, other column types)."""
    with open(path, "rb", buffering=0) as fh:
        for index in range(hdu + 1):
            head = _read_header(fh, path, index, f"the APOGEE spectrum in HDU {hdu}")
            size, _, dims = _data_size(head, path, index)
            if index < hdu:
                fh.seek(size + (-size % 2880), 1)
        if str(head.get("XTENSION", "")).strip().upper() != "BINTABLE" or len(dims) != 2:
            raise _NeedAstropy()
        if dims[1] == 0:
            raise SpectrumFileError(f"{path}: HDU {hdu} ({head.get('EXTNAME', '')}) has no spectrum row")
        row = _read_exactly(fh, dims[0])
        if len(row) < dims[0]:
            raise SpectrumFileError(f"{path}: truncated (HDU {hdu} row has {len(row)} of {dims[0]} bytes)")
    offset, found = 0, {}
    for j in range(1, int(head.get("TFIELDS", 0)) + 1):
        name = str(head.get(f"TTYPE{j}", "")).strip().lower()
        form = str(head.get(f"TFORM{j}", "")).strip().upper()
        digits = form[: len(form) - len(form.lstrip("0123456789"))]
        code = form[len(digits) : len(digits) + 1]
        repeat = int(digits or 1)
        if code not in _TFORM_BYTES or f"TSCAL{j}" in head or f"TZERO{j}" in head:
            raise _NeedAstropy()
        if name in _MWM_COLUMNS:
            if code not in ("E", "D"):
                raise _NeedAstropy()
            if repeat != n_pixels:
                raise SpectrumFileError(
                    f"{path}: HDU {hdu} column {name} has shape ({repeat},), expected ({n_pixels},)"
                )
            found[name] = np.frombuffer(row, dtype=">f4" if code == "E" else ">f8", count=repeat, offset=offset)
        offset += repeat * _TFORM_BYTES[code]
    for c in _MWM_COLUMNS:
        if c not in found:
            raise SpectrumFileError(f"{path}: HDU {hdu} has no column {c}")
    return found, head.get("CRVAL"), head.get("CDELT")


def _read_aspcapstar_astropy(path, n_pixels):
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            if len(hdul) < 3:
                raise SpectrumFileError(f"{path}: {len(hdul)} HDUs, expected flux in HDU 1 and error in HDU 2")
            flux, err, hdr = hdul[1].data, hdul[2].data, hdul[1].header
            for what, arr in (("flux (HDU 1)", flux), ("error (HDU 2)", err)):
                if arr is None or np.shape(arr) != (n_pixels,):
                    raise SpectrumFileError(
                        f"{path}: {what} has shape {None if arr is None else np.shape(arr)}, expected ({n_pixels},)"
                    )
            return (
                np.array(flux, dtype=np.float32),
                np.array(err, dtype=np.float32),
                hdr.get("CRVAL1"),
                hdr.get("CDELT1"),
            )
    except SpectrumFileError:
        raise
    except Exception as exc:  # astropy raises OSError / TypeError / ValueError on damaged files
        raise SpectrumFileError(f"{path}: unreadable FITS ({type(exc).__name__}: {exc})") from None


#: Error given to pixels a reader marks missing (anything above MAX_PIXEL_ERROR is masked).
MASKED_PIXEL_ERROR = 1.0


def split_hdu_spec(spec: str) -> tuple[str, int | None]:
    """``"file.fits[3]"`` → ``("file.fits", 3)`` (CFITSIO's extension syntax); no suffix → ``(spec, None)``.

    >>> split_hdu_spec("a/mwmStar-0.6.0-1.fits[4]"), split_hdu_spec("b.fits")
    (('a/mwmStar-0.6.0-1.fits', 4), ('b.fits', None))
    """
    spec = str(spec)
    if spec.endswith("]") and "[" in spec:
        head, _, idx = spec[:-1].rpartition("[")
        if idx.isdigit():
            return head, int(idx)
    return spec, None


def read_mwmstar(spec, n_pixels: int = N_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Normalised flux and error (float32) of one APOGEE row of an SDSS-V ``mwmStar`` file.

    ``spec`` is ``"path[hdu]"``: HDU 3 holds the spectrum from APO (apo25m, apo1m), HDU 4 from LCO;
    each has 0 or 1 rows. Flux is ``flux / continuum`` (Astra's NMF continuum), error
    ``ivar**-0.5 / continuum``; pixels with any ``pixel_flags`` bit, no positive ``ivar`` or no
    finite continuum get flux 0 and error :data:`MASKED_PIXEL_ERROR` (so they are masked).

    Raises FileNotFoundError if the file is absent and :class:`SpectrumFileError` naming the file
    if it is unreadable, lacks the HDU or its row, or has arrays of the wrong shape. The row is
    parsed directly (plain binary tables); anything unusual goes through astropy.
    """
    path, hdu = split_hdu_spec(spec)
    hdu = 3 if hdu is None else hdu
    try:
        cols, crval, cdelt = _mwmstar_columns_raw(path, hdu, n_pixels)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except IsADirectoryError:
        raise SpectrumFileError(f"{path}: is a directory") from None
    except _NeedAstropy:
        cols, crval, cdelt = _mwmstar_columns_astropy(path, hdu, n_pixels)
    except OSError as exc:
        raise SpectrumFileError(f"{path}: unreadable ({exc})") from None
    if crval is not None and cdelt is not None and (abs(crval - LOGLAM0) > 1e-6 or abs(cdelt - DLOGLAM) > 1e-9):
        raise SpectrumFileError(f"{path}: wavelength grid CRVAL={crval}, CDELT={cdelt} differs from APOGEE's")
    return normalise_mwmstar(cols["flux"], cols["ivar"], cols["pixel_flags"], cols["continuum"])


def _mwmstar_columns_astropy(path, hdu: int, n_pixels: int) -> tuple[dict, object, object]:
    """The four arrays of the first row of HDU ``hdu`` through astropy (files the raw parser declines)."""
    from astropy.io import fits

    try:
        with warnings.catch_warnings(record=True) as caught, fits.open(path, memmap=False) as hdul:
            warnings.simplefilter("always")
            if len(hdul) <= hdu:
                raise SpectrumFileError(f"{path}: {len(hdul)} HDUs, expected the APOGEE spectrum in HDU {hdu}")
            data = hdul[hdu].data
            head = hdul[hdu].header
            if data is None or len(data) == 0:
                raise SpectrumFileError(f"{path}: HDU {hdu} ({head.get('EXTNAME', '')}) has no spectrum row")
            names = {n.lower(): n for n in data.columns.names}
            cols = {}
            for c in ("flux", "ivar", "pixel_flags", "continuum"):
                if c not in names:
                    raise SpectrumFileError(f"{path}: HDU {hdu} has no column {c}")
                arr = np.asarray(data[names[c]][0])
                if arr.shape != (n_pixels,):
                    raise SpectrumFileError(
                        f"{path}: HDU {hdu} column {c} has shape {arr.shape}, expected ({n_pixels},)"
                    )
                cols[c] = arr
            if any("truncated" in str(w.message) for w in caught):  # astropy pads a short file with zeros
                raise SpectrumFileError(f"{path}: truncated (shorter than its headers say)")
            return cols, head.get("CRVAL"), head.get("CDELT")
    except SpectrumFileError:
        raise
    except Exception as exc:  # astropy raises OSError / TypeError / ValueError on damaged files
        raise SpectrumFileError(f"{path}: unreadable FITS ({type(exc).__name__}: {exc})") from None


def normalise_mwmstar(flux, ivar, pixel_flags, continuum) -> tuple[np.ndarray, np.ndarray]:
    """``(flux / continuum, ivar**-0.5 / continuum)`` with flagged or unusable pixels set to
    (0, :data:`MASKED_PIXEL_ERROR`).

    >>> f, e = normalise_mwmstar(np.array([50.0, 50, 50]), np.array([1e4, 0, 1e4]), np.array([0, 0, 4.0]),
    ...                          np.array([100.0, 100, 100]))
    >>> f.tolist(), [round(float(v), 4) for v in e]
    ([0.5, 0.0, 0.0], [0.0001, 1.0, 1.0])
    """
    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64)
    cont = np.asarray(continuum, np.float64)
    flags = np.nan_to_num(np.asarray(pixel_flags, np.float64), nan=1.0).astype(np.uint64)  # float32 on disk
    ok = (flags == 0) & (ivar > 0) & np.isfinite(ivar) & np.isfinite(cont) & (cont > 0) & np.isfinite(flux)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(ok, flux / cont, 0.0)
        e = np.where(ok, 1.0 / np.sqrt(ivar) / cont, MASKED_PIXEL_ERROR)
    return f.astype(np.float32), e.astype(np.float32)


def read_table_columns(path, what: str, hdu: int, required, optional=()) -> tuple[dict, int, object]:
    """Columns of table HDU ``hdu`` (case-insensitive): ``({NAME: array}, n_rows, header of HDU 0)``.

    A missing required column is a ValueError naming the file and the column.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        hdul = fits.open(path, memmap=not str(path).endswith(".gz"))
    except Exception as exc:
        raise ValueError(f"{path}: cannot read {what} FITS file ({exc})") from None
    with hdul:
        if len(hdul) <= hdu or not isinstance(hdul[hdu], (fits.BinTableHDU, fits.TableHDU)):
            raise ValueError(f"{path}: {what} FITS file has no table in HDU {hdu}")
        names = hdul[hdu].columns.names
        cols = columns_ci(names, tuple(required), f"{path} ({what})")
        lookup = {str(n).strip().upper(): n for n in names}
        data = hdul[hdu].data
        out = {c: np.asarray(data[cols[c]]) for c in cols}
        for c in optional:
            if c.upper() in lookup:
                out[c.upper()] = np.asarray(data[lookup[c.upper()]])
        return out, len(data), hdul[0].header.copy()
