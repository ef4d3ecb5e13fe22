"""APOGEE DR16 + OCCAM: the real-data loader and the DR16 file-layout writer (SPEC §4).

``build_apogee`` (CLI ``python -m rsca_core build-apogee``) turns the public files

    allStar-r12-l33.fits                                    HDU 1 table (one row per star)
    {TELESCOPE}/{FIELD}/aspcapStar-r12-{APOGEE_ID}.fits    HDU 1 flux, HDU 2 error (8575 px)
    occam_member-DR16.fits                                  APOGEE_ID, CLUSTER, CG_PROB, …

into a :class:`~rsca_core.dataset.Dataset` bundle, applying exactly the cuts of the paper and
printing a cut-flow. ``write_dr16`` writes the same layout (used by the simulator's
``--format dr16`` and by the tests), so the loader is exercised end to end on files shaped like
the real ones.

Robustness of the loader:

* missing aspcapStar files are skipped and counted; unreadable, corrupt or wrong-shaped files are
  reported by path and skipped (never zero-filled);
* the files are read in chunks by a pool of worker processes (``workers``) with a tqdm bar (ETA);
* every finished chunk is saved atomically in ``<out>.partial/``; an interrupted run restarted
  with the same inputs reads only the unfinished chunks. The bundle itself is written by
  :class:`~rsca_core.dataset.BundleWriter` (temporary directory, ``meta.json`` last, rename), so
  an interrupted run never leaves a bundle that loads as if complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .constants import (
    ALLSTAR_ELEMENTS,
    DLOGLAM,
    LOGLAM0,
    MAX_PIXEL_ERROR,
    MISSING_VALUE,
    N_PIXELS,
    PAPER_MASK_RANGES,
    SPECIES,
    STAR_BAD_BIT,
    abundance_column,
    apogee_wavelength,
    ranges_to_mask,
)

#: File names of the DR16 layout.
ALLSTAR_NAME = "allStar-r12-l33.fits"
OCCAM_MEMBER_NAME = "occam_member-DR16.fits"
OCCAM_CLUSTER_NAME = "occam_cluster-DR16.fits"
#: The star the paper drops for its anomalous metallicity.
ANOMALOUS_STAR = "2M19203303+3755558"
#: Cluster membership threshold of the paper (Cantat-Gaudin probability).
MIN_CG_PROB = 0.8
TEFF_RANGE = (4000.0, 5000.0)
LOGG_RANGE = (1.5, 3.0)
#: Header keyword (primary HDU of allStar) marking files written from the simulator.
SIMULATED_KEYWORD = "SIMULATD"

ALLSTAR_COLUMNS = (
    "APOGEE_ID",
    "TELESCOPE",
    "FIELD",
    "TEFF",
    "LOGG",
    "X_H",
    "X_M",
    "ASPCAPFLAG",
    "AK_TARG",
    "VHELIO_AVG",
    "SNR",
    "VISITS",
)
OCCAM_MEMBER_COLUMNS = ("APOGEE_ID", "CLUSTER", "CG_PROB", "RV_PROB", "FEH_PROB", "PM_PROB")

# Per-star read status codes.
OK, MISSING, CORRUPT = 0, 1, 2
CHUNK_SIZE = 256


def aspcapstar_relpath(telescope: str, field: str, apogee_id: str) -> str:
    """Path of a star's aspcapStar file relative to the spectra root (SPEC §4)."""
    return f"{str(telescope).strip()}/{str(field).strip()}/aspcapStar-r12-{str(apogee_id).strip()}.fits"


# ====================================================================== reading tables
def _columns_ci(names, required, where):
    """Map each required upper-case column name to the actual name, case-insensitively."""
    lookup = {}
    for n in names:
        lookup.setdefault(str(n).strip().upper(), n)
    missing = [c for c in required if c not in lookup]
    if missing:
        raise ValueError(f"{where}: missing column {', '.join(missing)}")
    return {c: lookup[c] for c in required}


def _open_table(path, what: str):
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


def _strings(arr) -> np.ndarray:
    out = np.asarray(arr)
    if out.dtype.kind == "S":
        out = np.char.decode(out, "ascii", errors="replace")
    return np.char.strip(out.astype(str)).astype(object)


def _header_simulated(hdul) -> bool:
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
    with _open_table(path, "allStar") as hdul:
        data = hdul[1].data
        names = hdul[1].columns.names
        cols = _columns_ci(names, ALLSTAR_COLUMNS, f"{path} (allStar)")
        simulated = _header_simulated(hdul)
        out = {}
        for c in ("APOGEE_ID", "TELESCOPE", "FIELD") + (("VISITS",) if visits else ()):
            out[c] = _strings(data[cols[c]])
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
        out["ROW"] = np.arange(n)
    return pd.DataFrame(out), simulated


def read_allstar_visits(path, rows) -> np.ndarray:
    """VISITS strings of the given allStar rows (decoding only those rows of the wide column)."""
    with _open_table(path, "allStar") as hdul:
        col = _columns_ci(hdul[1].columns.names, ("VISITS",), f"{path} (allStar)")["VISITS"]
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.array([], dtype=object)
        return _strings(hdul[1].data[col][rows])


def read_occam_members(path) -> pd.DataFrame:
    """Read ``occam_member-DR16.fits`` (columns of :data:`OCCAM_MEMBER_COLUMNS`, upper case)."""
    with _open_table(path, "OCCAM member") as hdul:
        data = hdul[1].data
        cols = _columns_ci(hdul[1].columns.names, OCCAM_MEMBER_COLUMNS, f"{path} (OCCAM members)")
        out = {"APOGEE_ID": _strings(data[cols["APOGEE_ID"]]), "CLUSTER": _strings(data[cols["CLUSTER"]])}
        for c in ("CG_PROB", "RV_PROB", "FEH_PROB", "PM_PROB"):
            a = np.asarray(data[cols[c]])
            # keep float32 columns float32: the threshold is compared in the file's precision
            out[c] = a.astype(a.dtype.newbyteorder("=")) if a.dtype.kind == "f" else a.astype(float)
    return pd.DataFrame(out)


# ====================================================================== the paper's cuts
def select_stars(allstar: pd.DataFrame, members: pd.DataFrame):
    """Apply the paper's cuts (SPEC §4) to the tables of :func:`read_allstar` / :func:`read_occam_members`.

    Returns ``(selected, cutflow_rows)``: ``selected`` is the allStar subset that passes every star
    cut (in allStar order) with a ``CLUSTER`` column ("" for field stars) and ``CG_PROB``;
    clusters are still to be checked for size (after the spectra are read), see :func:`finalise_clusters`.
    Each cut-flow row is ``{"step", "field", "cluster_stars", "clusters"}``.
    """
    n = len(allstar)
    ids = allstar["APOGEE_ID"].to_numpy(dtype=object)
    rows = []

    # --- cluster membership (OCCAM, CG_PROB > 0.8); one membership per star (the most probable)
    mem = members[members["APOGEE_ID"].isin(set(ids))]
    n_not_found = int(len(members) - len(mem))
    any_member = pd.Series(ids).isin(set(mem["APOGEE_ID"])).to_numpy()
    cg_col = mem["CG_PROB"].to_numpy()
    threshold = cg_col.dtype.type(MIN_CG_PROB) if cg_col.dtype.kind == "f" else MIN_CG_PROB
    high = mem[cg_col > threshold].sort_values("CG_PROB", ascending=False, kind="stable")
    high = high[~high["APOGEE_ID"].duplicated(keep="first")]  # a star in two clusters: most probable
    id_series = pd.Series(ids)
    cluster_of = id_series.map(dict(zip(high["APOGEE_ID"], high["CLUSTER"]))).fillna("").to_numpy(dtype=object)
    cg = id_series.map(dict(zip(high["APOGEE_ID"], high["CG_PROB"]))).to_numpy(dtype=float)
    is_member = cluster_of != ""

    def record(step, keep):
        field = int((keep & ~is_member).sum())
        cl = keep & is_member
        rows.append(
            {"step": step, "field": field, "cluster_stars": int(cl.sum()), "clusters": int(len(set(cluster_of[cl])))}
        )

    # Step 0: input. Field = every allStar row; clusters = all OCCAM candidates found in allStar.
    rows.append(
        {
            "step": f"input: allStar rows / OCCAM candidates in allStar ({n_not_found} OCCAM rows not in allStar)",
            "field": n,
            "cluster_stars": int(any_member.sum()),
            "clusters": int(mem["CLUSTER"].nunique()),
        }
    )
    keep = np.ones(n, bool)
    record(f"CG_PROB > {MIN_CG_PROB:g} members, removed from the field", keep)

    teff = allstar["TEFF"].to_numpy(float)
    keep &= (teff > TEFF_RANGE[0]) & (teff < TEFF_RANGE[1])
    record(f"{TEFF_RANGE[0]:g} < TEFF < {TEFF_RANGE[1]:g}", keep)

    logg = allstar["LOGG"].to_numpy(float)
    keep &= (logg > LOGG_RANGE[0]) & (logg < LOGG_RANGE[1])
    record(f"{LOGG_RANGE[0]:.1f} < LOGG < {LOGG_RANGE[1]:.1f}", keep)

    measured = np.ones(n, bool)
    for el in SPECIES:
        for arr in ("X_H", "X_M"):
            v = allstar[f"{arr}_{el.upper()}"].to_numpy(float)
            measured &= np.isfinite(v) & (v > MISSING_VALUE + 999)  # −9999.99 (any sentinel ≤ −9000)
    keep &= measured
    record(f"all {len(SPECIES)} species measured (X_H, X_M != {MISSING_VALUE})", keep)

    flag = allstar["ASPCAPFLAG"].to_numpy(np.int64)
    keep &= (flag >> STAR_BAD_BIT) & 1 == 0
    record("STAR_BAD unset (ASPCAPFLAG bit 23)", keep)

    keep &= ids != ANOMALOUS_STAR
    record(f"drop {ANOMALOUS_STAR}", keep)

    # Duplicated APOGEE_IDs (a star observed in two fields): keep the highest-SNR row.
    sel = np.flatnonzero(keep)
    if not pd.Index(ids[sel]).is_unique:
        snr = allstar["SNR"].to_numpy(float)[sel]
        order = np.lexsort((sel, -np.nan_to_num(snr, nan=-np.inf)))
        first = pd.Index(ids[sel][order]).duplicated(keep="first")
        drop = sel[order][first]
        keep[drop] = False
        record("duplicate APOGEE_ID rows (highest SNR kept)", keep)

    selected = allstar[keep].copy()
    selected["CLUSTER"] = cluster_of[keep]
    selected["CG_PROB"] = cg[keep]
    selected["OCCAM_CANDIDATE"] = any_member[keep]
    return selected.reset_index(drop=True), rows


def finalise_clusters(selected: pd.DataFrame, ok: np.ndarray, rows: list, n_missing: int, n_corrupt: int):
    """Drop stars without a readable spectrum, then clusters left with one star; returns the kept mask."""
    is_member = selected["CLUSTER"].to_numpy(dtype=object) != ""
    cl = selected["CLUSTER"].to_numpy(dtype=object)

    def record(step, keep):
        m = keep & is_member
        rows.append(
            {
                "step": step,
                "field": int((keep & ~is_member).sum()),
                "cluster_stars": int(m.sum()),
                "clusters": int(len(set(cl[m]))),
            }
        )

    keep = np.asarray(ok, bool).copy()
    record(f"aspcapStar readable ({n_missing} missing, {n_corrupt} unreadable files skipped)", keep)
    counts = pd.Series(cl[keep & is_member]).value_counts()
    singles = set(counts.index[counts < 2])
    keep &= ~(is_member & np.isin(cl, list(singles)))
    record(f"drop clusters left with one star ({len(singles)} clusters)", keep)
    return keep


def format_cutflow(cutflow) -> str:
    """A plain-text table of a cut-flow (list of row dicts or DataFrame)."""
    df = pd.DataFrame(cutflow)
    w = max(len("step"), *(len(s) for s in df["step"])) if len(df) else 4
    lines = [f"{'step':<{w}}  {'field':>9}  {'cluster stars':>13}  {'clusters':>8}"]
    for r in df.itertuples(index=False):
        lines.append(f"{r.step:<{w}}  {r.field:>9d}  {r.cluster_stars:>13d}  {r.clusters:>8d}")
    return "\n".join(lines)


# ====================================================================== reading spectra
class SpectrumFileError(ValueError):
    """An aspcapStar file exists but is unreadable, corrupt or wrong-shaped; the message names it."""


def read_aspcapstar(path, n_pixels: int = N_PIXELS):
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


def _parse_fits_images(fh, path, n_pixels):
    """Flux (HDU 1), error (HDU 2) and HDU 1's CRVAL1/CDELT1 of an open FITS file (binary, unbuffered)."""
    hdus = []
    first = True
    while len(hdus) < 3:
        head = {}
        while True:
            block = _read_exactly(fh, 2880)
            if first:
                if block[:9] != b"SIMPLE  =":
                    raise SpectrumFileError(f"{path}: not a FITS file (no SIMPLE card)")
                first = False
            if len(block) < 2880:
                if len(hdus) == 0 or head:
                    raise SpectrumFileError(f"{path}: truncated FITS header in HDU {len(hdus)}")
                raise SpectrumFileError(f"{path}: {len(hdus)} HDUs, expected flux in HDU 1 and error in HDU 2")
            try:
                text = block.decode("ascii")
            except UnicodeDecodeError:
                raise SpectrumFileError(f"{path}: corrupt FITS header in HDU {len(hdus)}") from None
            end = False
            for i in range(0, 2880, 80):
                card = text[i : i + 80]
                key = card[:8].strip()
                if key == "END":
                    end = True
                    break
                if card[8:10] == "= " and key not in head:
                    head[key] = _card_value(card)
            if end:
                break
        try:
            bitpix = int(head["BITPIX"])
            naxis = int(head["NAXIS"])
            dims = [int(head[f"NAXIS{j}"]) for j in range(1, naxis + 1)]
        except (KeyError, TypeError, ValueError):
            raise SpectrumFileError(f"{path}: corrupt FITS header in HDU {len(hdus)} (BITPIX/NAXIS missing)") from None
        if bitpix not in _BITPIX:
            raise SpectrumFileError(f"{path}: invalid BITPIX {bitpix} in HDU {len(hdus)}")
        size = (
            (abs(bitpix) // 8)
            * int(head.get("GCOUNT", 1) or 1)
            * (int(head.get("PCOUNT", 0) or 0) + (int(np.prod(dims)) if naxis else 0))
        )
        if len(hdus) == 0:  # primary data (normally empty): skip
            fh.seek(size + (-size % 2880), 1)
            hdus.append((None, head))
            continue
        data = _read_exactly(fh, size)
        if len(data) < size:
            raise SpectrumFileError(f"{path}: truncated (HDU {len(hdus)} data has {len(data)} of {size} bytes)")
        if len(hdus) == 1:
            fh.seek(-size % 2880, 1)
        if len(hdus) in (1, 2):
            xt = str(head.get("XTENSION", "")).strip().upper()
            if xt != "IMAGE" or head.get("ZIMAGE"):
                raise _NeedAstropy()
            what = "flux (HDU 1)" if len(hdus) == 1 else "error (HDU 2)"
            if dims != [n_pixels]:
                raise SpectrumFileError(f"{path}: {what} has shape {tuple(dims[::-1])}, expected ({n_pixels},)")
            arr = np.frombuffer(data, dtype=_BITPIX[bitpix]).astype(np.float32)
            bscale, bzero = float(head.get("BSCALE", 1.0)), float(head.get("BZERO", 0.0))
            if bscale != 1.0 or bzero != 0.0:
                arr = (arr * np.float32(bscale) + np.float32(bzero)).astype(np.float32)
            hdus.append((arr, head))
        else:
            hdus.append((None, head))
    (flux, h1), (err, _) = hdus[1], hdus[2]
    return flux, err, h1.get("CRVAL1"), h1.get("CDELT1")


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


def _read_chunk(task):
    """Worker: read one chunk of aspcapStar files and save it atomically as ``chunk-XXXXX.npz``."""
    index, paths, workdir, n_pixels = task
    n = len(paths)
    flux = np.zeros((n, n_pixels), np.float32)
    err = np.zeros((n, n_pixels), np.float32)
    status = np.zeros(n, np.int8)
    problems = []
    for i, p in enumerate(paths):
        try:
            flux[i], err[i] = read_aspcapstar(p, n_pixels)
        except FileNotFoundError:
            status[i] = MISSING
        except SpectrumFileError as exc:
            status[i] = CORRUPT
            problems.append(str(exc))
    out = Path(workdir) / f"chunk-{index:05d}.npz"
    fd, tmp = tempfile.mkstemp(dir=workdir, prefix=f".chunk-{index:05d}-", suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, flux=flux, err=err, status=status, problems=np.array(problems, dtype=str))
    # no fsync: a chunk file damaged by a crash fails validation on resume and is simply read again
    os.replace(tmp, out)
    return index, status, problems


def _load_chunk(path: Path, n_expected: int, n_pixels: int):
    """(status, problems) of a saved chunk, or None if it is absent, damaged or of another shape.

    Only the small arrays and the headers of the big ones are read (resuming stays cheap).
    """
    import zipfile

    if not path.exists():
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            for name in ("flux.npy", "err.npy"):
                info = zf.getinfo(name)
                with zf.open(name) as fh:
                    version = np.lib.format.read_magic(fh)
                    shape, _, dtype = (
                        np.lib.format.read_array_header_1_0(fh)
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0(fh)
                    )
                    header = fh.tell() if hasattr(fh, "tell") else 128
                if shape != (n_expected, n_pixels) or info.file_size < header + n_expected * n_pixels * dtype.itemsize:
                    return None
        with np.load(path) as z:
            status = z["status"]
            if status.shape != (n_expected,):
                return None
            return status, list(z["problems"])
    except Exception:
        return None


def _plan_key(paths, n_pixels, chunk_size) -> str:
    h = hashlib.sha1()
    h.update(f"{n_pixels}:{chunk_size}:{len(paths)}\n".encode())
    for p in paths:
        h.update(p.encode())
        h.update(b"\n")
    return h.hexdigest()


def read_spectra(
    paths,
    workdir,
    *,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    n_pixels: int = N_PIXELS,
    executor: str = "process",
    progress: bool = True,
):
    """Read aspcapStar files into per-chunk results under ``workdir`` (resumable).

    A chunk already saved by an earlier (interrupted) run for the same list of paths is not read
    again (unless one of its missing files has appeared since). Returns ``(status, problems, stats)``; ``status[i]`` is OK / MISSING / CORRUPT,
    ``problems`` the messages (path + reason) of the unreadable files, ``stats`` counts and timing.
    """
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    key = _plan_key(paths, n_pixels, chunk_size)
    plan_file = workdir / "plan.json"
    if plan_file.exists():
        try:
            old = json.loads(plan_file.read_text()).get("key")
        except (OSError, json.JSONDecodeError):
            old = None
        if old != key:  # different inputs: the saved chunks are of no use
            for f in workdir.glob("chunk-*.npz"):
                f.unlink()
    tmp = workdir / "plan.json.tmp"
    tmp.write_text(json.dumps({"key": key, "n_files": len(paths), "chunk_size": chunk_size}))
    os.replace(tmp, plan_file)
    for f in workdir.glob(".chunk-*.tmp"):  # leftovers of a killed worker
        f.unlink()

    n = len(paths)
    n_chunks = (n + chunk_size - 1) // chunk_size
    status = np.zeros(n, np.int8)
    problems: dict[int, list] = {}
    todo = []
    resumed_files = 0
    for c in range(n_chunks):
        a, b = c * chunk_size, min(n, (c + 1) * chunk_size)
        got = _load_chunk(workdir / f"chunk-{c:05d}.npz", b - a, n_pixels)
        if got is not None and any(os.path.exists(paths[a + i]) for i in np.flatnonzero(got[0] == MISSING)):
            got = None  # a file missing last time has appeared since: read the chunk again
        if got is None:
            todo.append((c, paths[a:b], str(workdir), n_pixels))
        else:
            status[a:b], problems[c] = got
            resumed_files += b - a

    workers = max(1, int(workers if workers is not None else min(8, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    bar = tqdm(
        total=n,
        initial=resumed_files,
        desc="reading aspcapStar",
        unit="file",
        disable=not progress,
        file=sys.stderr,
        smoothing=0.05,
    )
    try:
        if workers == 1 or len(todo) <= 1:
            results = (_read_chunk(t) for t in todo)
            for c, st, pr in results:
                a = c * chunk_size
                status[a : a + len(st)] = st
                problems[c] = pr
                bar.update(len(st))
        else:
            pool_cls = ProcessPoolExecutor if executor == "process" else ThreadPoolExecutor
            with pool_cls(max_workers=workers) as pool:
                futures = [pool.submit(_read_chunk, t) for t in todo]
                try:
                    for fut in as_completed(futures):
                        c, st, pr = fut.result()
                        a = c * chunk_size
                        status[a : a + len(st)] = st
                        problems[c] = pr
                        bar.update(len(st))
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    n_read = n - resumed_files
    stats = {
        "n_files": n,
        "read_now": n_read,
        "resumed": resumed_files,
        "seconds": round(elapsed, 3),
        "files_per_second": round(n_read / elapsed, 1) if elapsed > 0 and n_read else None,
        "workers": workers,
        "executor": executor if workers > 1 else "serial",
        "n_missing": int((status == MISSING).sum()),
        "n_corrupt": int((status == CORRUPT).sum()),
    }
    all_problems = [p for c in sorted(problems) for p in problems[c]]
    return status, all_problems, stats


def _iter_chunk_arrays(workdir: Path, n: int, chunk_size: int):
    for c in range((n + chunk_size - 1) // chunk_size):
        with np.load(workdir / f"chunk-{c:05d}.npz") as z:
            yield c * chunk_size, z["flux"], z["err"]


def pixel_mask(flux, err, mask_ranges=PAPER_MASK_RANGES, max_pixel_error: float = MAX_PIXEL_ERROR):
    """Missing-pixel mask of spectra: error > ``max_pixel_error``, non-finite values, chip-gap zeros
    (flux exactly 0) and the ``mask_ranges`` pixel ranges (the paper's interstellar bands)."""
    flux = np.asarray(flux)
    err = np.asarray(err)
    m = ~np.isfinite(flux) | ~np.isfinite(err) | (err > max_pixel_error) | (flux == 0)
    return m | ranges_to_mask(mask_ranges, flux.shape[-1])


# ====================================================================== the loader
def _stars_table(sel: pd.DataFrame) -> pd.DataFrame:
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
    return out


def build_apogee(
    allstar,
    occam_members,
    out,
    spectra_root=None,
    workers: int | None = None,
    mask_ranges=PAPER_MASK_RANGES,
    progress: bool = True,
    *,
    overwrite: bool = False,
    max_pixel_error: float = MAX_PIXEL_ERROR,
    chunk_size: int = CHUNK_SIZE,
    executor: str = "process",
    with_errors: bool = True,
    name: str | None = None,
    keep_partial: bool = False,
    log=None,
):
    """Build a dataset bundle from APOGEE DR16 allStar + OCCAM members + aspcapStar files.

    Parameters
    ----------
    allstar, occam_members : path
        ``allStar-r12-l33.fits`` and ``occam_member-DR16.fits`` (column names case-insensitive).
    out : path
        Bundle directory to create (``overwrite=True`` to replace an existing one).
    spectra_root : path, optional
        Folder holding ``{TELESCOPE}/{FIELD}/aspcapStar-r12-{APOGEE_ID}.fits``; default: the
        allStar file's folder.
    workers : int, optional
        Parallel readers (default ``min(8, cpu_count)``); ``executor`` "process" or "thread".
    mask_ranges : sequence of (start, stop)
        Pixel ranges masked for every star (default: the paper's interstellar bands).
    progress : bool
        tqdm bar with ETA on stderr while reading the spectra.

    Returns ``(path, cutflow)``: ``cutflow`` is a DataFrame (step, field, cluster_stars, clusters);
    it is also stored in ``meta["provenance"]["cutflow"]`` together with read statistics and the
    paths of unreadable files. Work in progress lives in ``<out>.partial/`` (removed on success);
    rerunning after an interruption reuses the chunks read already.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    t_start = time.perf_counter()
    allstar = Path(allstar)
    occam_members = Path(occam_members)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    ranges = [tuple(int(v) for v in r) for r in (mask_ranges or ())]
    ranges_to_mask(ranges)  # validate early
    if executor not in ("process", "thread"):
        raise ValueError(f"executor must be 'process' or 'thread', not {executor!r}")
    root = Path(spectra_root) if spectra_root is not None else allstar.parent
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: spectra root folder not found")

    table, simulated = read_allstar(allstar, visits=False)
    members = read_occam_members(occam_members)
    selected, rows = select_stars(table, members)
    del table
    selected["VISITS"] = read_allstar_visits(allstar, selected["ROW"].to_numpy())
    paths = [
        str(root / aspcapstar_relpath(t, f, i))
        for t, f, i in zip(selected["TELESCOPE"], selected["FIELD"], selected["APOGEE_ID"])
    ]

    workdir = out.with_name(out.name + ".partial")
    with _exclusive(workdir, out):
        status, problems, stats = read_spectra(
            paths, workdir, workers=workers, chunk_size=chunk_size, executor=executor, progress=progress
        )
        for msg in problems[:20]:
            log(f"skipped: {msg}")
        if len(problems) > 20:
            log(f"... and {len(problems) - 20} more unreadable files (listed in meta.json provenance)")
        keep = finalise_clusters(selected, status == OK, rows, stats["n_missing"], stats["n_corrupt"])
        cutflow = pd.DataFrame(rows, columns=["step", "field", "cluster_stars", "clusters"])
        if not keep.any():
            raise ValueError(
                f"{allstar}: no star passes the cuts and has a readable spectrum\n" + format_cutflow(cutflow)
            )

        # Bundle order: field stars then cluster stars, each in allStar order.
        is_member = selected["CLUSTER"].to_numpy(dtype=object) != ""
        order = np.concatenate([np.flatnonzero(keep & ~is_member), np.flatnonzero(keep & is_member)])
        dest = np.full(len(selected), -1, np.int64)
        dest[order] = np.arange(len(order))
        stars = _stars_table(selected.iloc[order])

        range_mask = ranges_to_mask(ranges)
        with _bundle_writer(out, len(order), with_errors, overwrite) as w:
            for a, flux, err in _iter_chunk_arrays(workdir, len(selected), chunk_size):
                d = dest[a : a + len(flux)]
                take = d >= 0
                if not take.any():
                    continue
                f, e = flux[take], err[take]
                w.spectra[d[take]] = f
                w.mask[d[take]] = pixel_mask(f, e, (), max_pixel_error) | range_mask
                if w.errors is not None:
                    w.errors[d[take]] = e
            kind = "simulated" if simulated else "real"
            meta = {
                "kind": kind,
                "name": name or (f"APOGEE DR16 ({kind})" if not simulated else "simulated survey (DR16 files)"),
                "source": "apogee-dr16",
                "provenance": {
                    "loader": "rsca_core.apogee.build_apogee",
                    "allstar": str(allstar.resolve()),
                    "occam_members": str(occam_members.resolve()),
                    "spectra_root": str(root.resolve()),
                    "cutflow": cutflow.to_dict(orient="records"),
                    "mask_ranges": [list(r) for r in ranges],
                    "max_pixel_error": max_pixel_error,
                    "masked": "error > max_pixel_error, non-finite, chip-gap zeros, mask_ranges",
                    "read": stats,
                    "unreadable_files": problems[:1000],
                    "n_unreadable_files": len(problems),
                    "n_missing_files": stats["n_missing"],
                    "missing_files_example": [paths[i] for i in np.flatnonzero(status == MISSING)[:50]],
                },
            }
            w.finish(stars, apogee_wavelength(N_PIXELS), meta)
        if not keep_partial:
            shutil.rmtree(workdir, ignore_errors=True)
    log(
        f"built {out} ({kind}) in {time.perf_counter() - t_start:.1f} s: "
        f"{int((~is_member[order]).sum())} field stars, {int(is_member[order].sum())} cluster stars in "
        f"{cutflow['clusters'].iloc[-1]} clusters"
    )
    return out, cutflow


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


@contextmanager
def _exclusive(workdir: Path, out: Path):
    """Hold ``<out>.partial/lock`` while building ``out``; clears leftovers of killed bundle writes."""
    import glob

    workdir.mkdir(parents=True, exist_ok=True)
    lock = workdir / "lock"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if _pid_alive(pid):
                raise FileExistsError(
                    f"{out}: another build (process {pid}) is writing it; wait for it to "
                    f"finish, or delete {lock} if that process is not a build"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
    else:  # pragma: no cover - only under a tight race
        raise FileExistsError(f"{out}: could not take the lock {lock}")
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    for d in glob.glob(glob.escape(str(out)) + ".tmp-*"):  # a bundle write killed half way
        shutil.rmtree(d, ignore_errors=True)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _bundle_writer(out: Path, n: int, with_errors: bool, overwrite: bool):
    from .dataset import Dataset

    return Dataset.create(out, n, N_PIXELS, with_errors=with_errors, overwrite=overwrite)


# ====================================================================== the DR16 writer
def _as_fits_str(values) -> np.ndarray:
    vals = [str(v) for v in values]
    width = max([1] + [len(v) for v in vals])
    return np.array(vals, dtype=f"S{width}") if all(v.isascii() for v in vals) else np.array(vals)


def _write_fits_atomic(hdul, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        hdul.writeto(tmp, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _aspcapstar_templates(simulated: bool):
    """FITS header blocks (bytes) of an aspcapStar file: primary, HDU 1 (flux), HDU 2 (error)."""
    from astropy.io import fits

    prim = fits.PrimaryHDU()
    if simulated:
        prim.header[SIMULATED_KEYWORD] = (True, "written by the RSCA Lab simulator")
    heads = [prim.header.tostring().encode("ascii")]
    for name in ("FLUX", "ERROR"):
        h = fits.ImageHDU(np.zeros(N_PIXELS, np.float32), name=name)
        h.header["CRVAL1"] = LOGLAM0
        h.header["CDELT1"] = DLOGLAM
        h.header["CRPIX1"] = 1
        h.header["CTYPE1"] = "LOG-LINEAR"
        heads.append(h.header.tostring().encode("ascii"))
    return heads


def _fits_data_block(arr) -> bytes:
    b = np.ascontiguousarray(arr, dtype=">f4").tobytes()
    return b + b"\0" * (-len(b) % 2880)


def _aspcapstar_bytes(flux, err, templates) -> bytes:
    prim, h1, h2 = templates
    return b"".join((prim, h1, _fits_data_block(flux), h2, _fits_data_block(err)))


def _write_bytes_atomic(data: bytes, path: Path):
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
    os.replace(tmp, path)


def _dr16_frame(tab: pd.DataFrame) -> pd.DataFrame:
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


def _resolve_spectra(spectra, n):
    """Return a function rows -> (flux, err) from arrays, a (flux, err) pair or a callable."""
    if spectra is None:
        raise ValueError("spectra are needed: pass spectra=(flux, err) arrays or a callable rows -> (flux, err)")
    if callable(spectra):
        return spectra
    flux, err = spectra
    if len(flux) != n or len(err) != n:
        raise ValueError(f"spectra have {len(flux)}/{len(err)} rows for {n} stars")
    return lambda rows: (np.asarray(flux[rows]), np.asarray(err[rows]))


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
    progress: bool = True,
) -> Path:
    """Write a survey in the APOGEE DR16 file layout (SPEC §4) under folder ``out``.

    ``survey_or_tables`` is a simulator survey (an object with ``stars_all``, the pre-cut DR16-like
    table, and a way to produce its spectra, see below) or a DR16-style DataFrame with columns
    APOGEE_ID, TELESCOPE, FIELD, TEFF, LOGG, X_H/X_M (26-arrays) or x_h_<el>/x_m_<el> columns,
    ASPCAPFLAG, AK_TARG, VHELIO_AVG, SNR, VISITS (any case) and optionally CLUSTER / CG_PROB /
    RV_PROB / FEH_PROB / PM_PROB for the OCCAM member file.

    ``spectra``: ``(flux, err)`` arrays (one row per table row) or a callable ``rows -> (flux, err)``.
    For a simulator survey the default is its own ``spectra_for(rows)`` / ``spectra(rows)`` method.
    ``occam_members`` (DataFrame) overrides the members taken from the CLUSTER column;
    ``occam_clusters`` (DataFrame) the per-cluster table (default: one row per cluster with
    NAME and NMEMBERS). ``simulated`` writes ``SIMULATD = T`` into every file's primary header,
    so bundles built from these files stay labelled "simulated".

    Every file is written to a temporary name and renamed; allStar is written last.
    """
    from astropy.io import fits
    from tqdm.auto import tqdm

    out = Path(out)
    allstar_path = out / ALLSTAR_NAME
    if allstar_path.exists() and not overwrite:
        raise FileExistsError(f"{allstar_path}: already exists (pass overwrite=True to replace it)")
    if isinstance(survey_or_tables, pd.DataFrame):
        tab = survey_or_tables
        if spectra is None:
            raise ValueError("write_dr16 with a DataFrame needs spectra=(flux, err) or a callable")
    else:
        tab = getattr(survey_or_tables, "stars_all", None)
        if not isinstance(tab, pd.DataFrame):
            raise ValueError("write_dr16 needs a DR16-style DataFrame or a survey with a stars_all table")
        if spectra is None:
            for meth in ("spectra_for", "spectra_all", "spectra"):
                fn = getattr(survey_or_tables, meth, None)
                if callable(fn):
                    spectra = fn
                    break
    tab = tab.reset_index(drop=True)
    frame, x_h, x_m = _dr16_frame(tab)
    n = len(frame)
    get_spectra = _resolve_spectra(spectra, n)
    if frame["APOGEE_ID"].duplicated().any():
        dup = frame.loc[frame["APOGEE_ID"].duplicated(), "APOGEE_ID"].iloc[0]
        raise ValueError(f"star table: duplicate APOGEE_ID {dup!r}")
    out.mkdir(parents=True, exist_ok=True)

    def primary():
        h = fits.PrimaryHDU()
        if simulated:
            h.header[SIMULATED_KEYWORD] = (True, "written by the RSCA Lab simulator")
        return h

    # --- spectra, one file per star (raw FITS bytes from headers made once by astropy)
    templates = _aspcapstar_templates(simulated)
    tel, fld, sid = (frame[c].tolist() for c in ("TELESCOPE", "FIELD", "APOGEE_ID"))
    bar = tqdm(total=n, desc="writing aspcapStar", unit="file", disable=not progress, file=sys.stderr)
    try:
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
                p = out / aspcapstar_relpath(tel[i], fld[i], sid[i])
                _write_bytes_atomic(_aspcapstar_bytes(flux[k], err[k], templates), p)
            bar.update(len(rows))
    finally:
        bar.close()

    # --- OCCAM
    if occam_members is None:
        cols = {str(c).upper(): c for c in tab.columns}
        if "CLUSTER" in cols:
            cl = tab[cols["CLUSTER"]].fillna("").astype(str).str.strip()
            sel = cl != ""
            occam_members = pd.DataFrame({"APOGEE_ID": frame["APOGEE_ID"][sel], "CLUSTER": cl[sel]})
            for c in ("CG_PROB", "RV_PROB", "FEH_PROB", "PM_PROB"):
                occam_members[c] = tab[cols[c]][sel].to_numpy(float) if c in cols else 1.0
        else:
            occam_members = pd.DataFrame(columns=list(OCCAM_MEMBER_COLUMNS))
    mcols = {str(c).upper(): c for c in occam_members.columns}
    for c in OCCAM_MEMBER_COLUMNS:
        if c not in mcols:
            raise ValueError(f"OCCAM members table: missing column {c}")
    mem = fits.BinTableHDU.from_columns(
        [
            fits.Column(
                "APOGEE_ID",
                format=f"{max(1, _as_fits_str(occam_members[mcols['APOGEE_ID']]).itemsize)}A",
                array=_as_fits_str(occam_members[mcols["APOGEE_ID"]]),
            ),
            fits.Column(
                "CLUSTER",
                format=f"{max(1, _as_fits_str(occam_members[mcols['CLUSTER']]).itemsize)}A",
                array=_as_fits_str(occam_members[mcols["CLUSTER"]]),
            ),
            *[
                fits.Column(c, format="E", array=occam_members[mcols[c]].to_numpy(np.float32))
                for c in ("CG_PROB", "RV_PROB", "FEH_PROB", "PM_PROB")
            ],
        ]
    )
    _write_fits_atomic(fits.HDUList([primary(), mem]), out / OCCAM_MEMBER_NAME)
    if occam_clusters is None:
        counts = occam_members[mcols["CLUSTER"]].astype(str).value_counts().sort_index()
        occam_clusters = pd.DataFrame({"NAME": counts.index.astype(str), "NMEMBERS": counts.to_numpy(np.int32)})
    ccols = []
    for c in occam_clusters.columns:
        v = occam_clusters[c]
        if v.dtype.kind in "if":
            ccols.append(fits.Column(str(c).upper(), format="D" if v.dtype.kind == "f" else "K", array=v.to_numpy()))
        else:
            s = _as_fits_str(v)
            ccols.append(fits.Column(str(c).upper(), format=f"{max(1, s.itemsize)}A", array=s))
    _write_fits_atomic(fits.HDUList([primary(), fits.BinTableHDU.from_columns(ccols)]), out / OCCAM_CLUSTER_NAME)

    # --- allStar, last
    def scol(name):
        s = _as_fits_str(frame[name])
        return fits.Column(name, format=f"{max(1, s.itemsize)}A", array=s)

    ne = len(ALLSTAR_ELEMENTS)
    table = fits.BinTableHDU.from_columns(
        [
            scol("APOGEE_ID"),
            scol("TELESCOPE"),
            scol("FIELD"),
            fits.Column("TEFF", format="E", array=frame["TEFF"].to_numpy(np.float32)),
            fits.Column("LOGG", format="E", array=frame["LOGG"].to_numpy(np.float32)),
            fits.Column("X_H", format=f"{ne}E", array=x_h.astype(np.float32)),
            fits.Column("X_M", format=f"{ne}E", array=x_m.astype(np.float32)),
            fits.Column("ASPCAPFLAG", format="K", array=frame["ASPCAPFLAG"].to_numpy(np.int64)),
            fits.Column("AK_TARG", format="E", array=frame["AK_TARG"].to_numpy(np.float32)),
            fits.Column("VHELIO_AVG", format="E", array=frame["VHELIO_AVG"].to_numpy(np.float32)),
            fits.Column("SNR", format="E", array=frame["SNR"].to_numpy(np.float32)),
            scol("VISITS"),
        ]
    )
    _write_fits_atomic(fits.HDUList([primary(), table]), allstar_path)
    return out


# ====================================================================== CLI
def _parse_ranges(text: str):
    """``"720:910,2370:2470"`` → [(720, 910), (2370, 2470)]; ``"none"`` → []."""
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return []
    out = []
    for part in text.split(","):
        try:
            a, b = part.replace("-", ":").split(":")
            out.append((int(a), int(b)))
        except ValueError:
            raise ValueError(f"--mask-ranges: {part!r} is not START:STOP (pixel indices)") from None
    ranges_to_mask(out)
    return out


def _cmd_build(args) -> int:
    ranges = PAPER_MASK_RANGES if args.mask_ranges is None else _parse_ranges(args.mask_ranges)
    _, cutflow = build_apogee(
        args.allstar,
        args.occam_members,
        args.out,
        spectra_root=args.spectra_root,
        workers=args.workers,
        mask_ranges=ranges,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        executor=args.executor,
        with_errors=not args.no_errors,
    )
    print(format_cutflow(cutflow))
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "build-apogee",
        help="build a dataset bundle from APOGEE DR16 allStar + OCCAM + aspcapStar files",
        description="Apply the paper's cuts (4000<TEFF<5000, 1.5<LOGG<3, 21 species measured, STAR_BAD "
        "unset; OCCAM CG_PROB>0.8, clusters of >=2 stars, 2M19203303+3755558 dropped), read "
        "the aspcapStar spectra in parallel (resumable) and write a bundle. Prints the cut-flow.",
    )
    p.add_argument("--allstar", required=True, help="allStar-r12-l33.fits")
    p.add_argument("--occam-members", required=True, help="occam_member-DR16.fits")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument(
        "--spectra-root",
        default=None,
        help="folder with {TELESCOPE}/{FIELD}/aspcapStar-r12-{APOGEE_ID}.fits (default: the allStar file's folder)",
    )
    p.add_argument("--workers", type=int, default=None, help="parallel readers (default min(8, CPUs))")
    p.add_argument("--executor", choices=("process", "thread"), default="process")
    p.add_argument(
        "--mask-ranges",
        default=None,
        help="pixel ranges to mask as START:STOP,... or 'none' (default: the paper's "
        + ",".join(f"{a}:{b}" for a, b in PAPER_MASK_RANGES)
        + ")",
    )
    p.add_argument("--no-errors", action="store_true", help="do not store the per-pixel errors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_build)
