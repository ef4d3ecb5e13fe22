"""Files: spectra of new stars (aspcapStar, mwmStar) masked with the bundle's rule, and RSCA catalogues (FITS, parquet, CSV)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import MAX_PIXEL_ERROR, PAPER_MASK_RANGES
from ..fileio import atomic_write, atomic_write_text, jsonable
from .columns import CATALOGUE_KEYWORDS


def mask_rule(dataset) -> tuple[tuple, float]:
    """(pixel ranges masked for every star, largest trusted pixel error) of a bundle.

    Read from the bundle's provenance (the DR16 loader's ``mask_ranges`` / ``max_pixel_error``, the
    simulator's ``config.mask_ranges``), else the paper's interstellar bands and 0.05.
    """
    prov = (getattr(dataset, "meta", None) or {}).get("provenance") or {}
    ranges = prov.get("mask_ranges")
    if ranges is None:
        ranges = (prov.get("config") or {}).get("mask_ranges", PAPER_MASK_RANGES)
    max_err = float(prov.get("max_pixel_error", MAX_PIXEL_ERROR))
    return tuple(tuple(int(v) for v in r) for r in ranges), max_err


ASPCAP_ID = re.compile(r"^aspcapStar-[^-]+-(.+)\.fits(?:\.gz)?$")
MWMSTAR_ID = re.compile(r"^mwmStar-[^-]+-(\d+)\.fits")


def star_id_from_path(path) -> str:
    """The APOGEE_ID in an aspcapStar file name (``aspcapStar-r12-2M00000002+7417074.fits``), else the stem.

    Examples
    --------
    >>> star_id_from_path("x/aspcapStar-r12-2M00000002+7417074.fits")
    '2M00000002+7417074'
    >>> star_id_from_path("mystar.fits")
    'mystar'
    >>> star_id_from_path("spectra/star/34/12/mwmStar-0.6.0-123412.fits[4]")
    'sdss_id:123412'
    """
    name = Path(str(path).split("[")[0]).name
    m = ASPCAP_ID.match(name)
    if m:
        return m.group(1)
    m = MWMSTAR_ID.match(name)
    return f"sdss_id:{m.group(1)}" if m else name.split(".")[0]


def read_spectrum_file(spec, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Flux and error of one spectrum file: an aspcapStar (DR16/DR17), or an SDSS-V mwmStar (DR19).

    An mwmStar file is read as ``flux / continuum`` from its APOGEE row at APO (HDU 3) or, when that
    row is empty, at LCO (HDU 4); ``file.fits[4]`` picks the HDU (see ``rsca_core.apogee.read_mwmstar``).
    """
    from ..apogee.fitsio import SpectrumFileError, read_aspcapstar, read_mwmstar, split_hdu_spec

    path, hdu = split_hdu_spec(str(spec))
    if not Path(path).name.startswith("mwmStar"):
        return read_aspcapstar(path, n_pixels)
    if hdu is not None:
        return read_mwmstar(str(spec), n_pixels)
    try:
        return read_mwmstar(f"{path}[3]", n_pixels)
    except SpectrumFileError as apo:
        try:
            return read_mwmstar(f"{path}[4]", n_pixels)
        except SpectrumFileError:
            raise apo from None


def read_spectra_files(paths, dataset=None, n_pixels: int | None = None):
    """Read aspcapStar (HDU 1 flux, HDU 2 error) or mwmStar files and mask them with the bundle's rule.

    Returns ``(ids, flux, mask)``: ids from the file names, (m, n_pixels) float32 flux and the bool
    missing-pixel mask (``rsca_core.apogee.pixel_mask`` with :func:`mask_rule` of ``dataset``).
    A missing or bad file raises FileNotFoundError / ValueError with one line naming it.
    """
    from ..constants import N_PIXELS
    from ..selection import pixel_mask

    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no spectrum files given")
    n_pixels = int(n_pixels or (dataset.n_pixels if dataset is not None else N_PIXELS))
    ranges, max_err = mask_rule(dataset)
    flux = np.empty((len(paths), n_pixels), dtype=np.float32)
    mask = np.empty((len(paths), n_pixels), dtype=bool)
    for i, p in enumerate(paths):
        f, e = read_spectrum_file(p, n_pixels)
        flux[i] = f
        mask[i] = pixel_mask(f, e, ranges, max_err)
        if mask[i].all():
            raise ValueError(f"{p}: every pixel is missing or untrustworthy (error > {max_err})")
    return [star_id_from_path(p) for p in paths], flux, mask


# ====================================================================== catalogues
def _catalogue_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] in ([".fits"], [".fit"]) or suffixes[-2:] == [".fits", ".gz"]:
        return "fits"
    if suffixes[-1:] in ([".parquet"], [".pq"]):
        return "parquet"
    if suffixes[-1:] == [".csv"]:
        return "csv"
    raise ValueError(f"{path}: unknown catalogue format; use a .fits, .parquet or .csv file name")


def sidecar_path(path) -> Path:
    """The JSON file holding a CSV catalogue's settings: ``FILE.csv.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_catalogue(table: pd.DataFrame, path, meta: dict, overwrite: bool = False) -> Path:
    """Write a table with its settings: FITS (binary table, settings in the header), parquet
    (settings in the file's key-value metadata, read back by pandas as ``DataFrame.attrs["rsca"]``)
    or CSV (settings in the sidecar ``FILE.csv.json``). Atomic; refuses to replace a file unless
    ``overwrite``.
    """
    path = Path(path)
    fmt = _catalogue_format(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass --overwrite to replace it)")
    meta = jsonable(meta)
    if fmt == "fits":
        from astropy.io import fits
        from astropy.table import Table

        hdu = fits.table_to_hdu(Table.from_pandas(table))
        hdu.name = "RSCA"
        for key, kw in CATALOGUE_KEYWORDS.items():
            if key in meta:
                v = meta[key]
                hdu.header[kw] = ",".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
        hdu.header["RSCAMETA"] = json.dumps(meta)
        hdul = fits.HDUList([fits.PrimaryHDU(), hdu])
        if meta.get("simulated"):
            hdul[0].header["SIMULATD"] = (True, "made from a simulated survey")
        atomic_write(path, lambda tmp: hdul.writeto(tmp, overwrite=True))
    elif fmt == "parquet":
        frame = table.copy()
        frame.attrs = {"rsca": meta}
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
        atomic_write_text(sidecar_path(path), json.dumps(meta, indent=2) + "\n")
    return path


def read_catalogue(path) -> tuple[pd.DataFrame, dict]:
    """Read a catalogue written by :func:`write_catalogue`: (table, settings)."""
    path = Path(path)
    fmt = _catalogue_format(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing")
    if fmt == "fits":
        from astropy.io import fits
        from astropy.table import Table

        with fits.open(path) as hdul:
            header = hdul[1].header
            table = Table(hdul[1].data).to_pandas()
            meta = json.loads(header.get("RSCAMETA", "{}"))
        return table, meta
    if fmt == "parquet":
        table = pd.read_parquet(path)
        return table, dict(table.attrs.get("rsca", {}))
    table = pd.read_csv(path, dtype={"apogee_id": str}, keep_default_na=False)
    side = sidecar_path(path)
    return table, json.loads(side.read_text()) if side.exists() else {}
