"""Writing a simulated survey: the Dataset bundle (:func:`simulate`), the file layouts of the
releases (through :mod:`rsca_core.apogee`) and the app's embedded default survey."""

from __future__ import annotations

import time
from pathlib import Path

from ..constants import N_PIXELS, apogee_wavelength
from ..progress import ProgressArg, reporter
from ..selection import pixel_mask
from .config import DEFAULT_N_FIELD, SIMULATOR_VERSION, SimulationConfig
from .survey import generate_survey

#: Output formats of :func:`simulate`: the bundle, or a release's file layout.
FORMATS = ("bundle", "dr16", "dr17", "dr19")

#: The bundle's mask rule is the loader's (one function): error > 0.05, non-finite, chip-gap
#: zeros and the mask ranges.
bundle_mask = pixel_mask


def simulate(
    out,
    n_field: int = DEFAULT_N_FIELD,
    seed: int = 0,
    format: str = "bundle",
    config: SimulationConfig | None = None,
    progress: ProgressArg = True,
    overwrite: bool = False,
    name: str | None = None,
    chunk_size: int = 1024,
) -> Path:
    """Simulate a survey and write it to ``out``; returns the path.

    Parameters
    ----------
    out : path
        Bundle directory (``format="bundle"``) or folder of the release's file layout.
    n_field, seed, config
        See :func:`generate_survey`.
    format : {"bundle", "dr16", "dr17", "dr19"}
        ``"bundle"`` writes a Dataset bundle (only stars passing the paper's cuts, spectra written
        in chunks into the bundle's memory maps); ``"dr16"``, ``"dr17"``, ``"dr19"`` that release's
        file layout through :func:`rsca_core.apogee.write_layout`.
    progress : bool or callable
        tqdm bars on stderr (True), silent (False), or ``progress(fraction, text)`` called with the
        phases ("drawing field stars", "spectra 1024/20000", "writing bundle"...).
    overwrite : bool
        Replace an existing output.
    name : str, optional
        Display name of the bundle.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from rsca_core import Dataset
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "tiny"
    >>> cfg = SimulationConfig(cluster_sizes=(3, 2), singleton_clusters=0)
    >>> ds = Dataset.load(simulate(out, n_field=10, seed=1, config=cfg, progress=False))
    >>> ds.n_stars, ds.kind
    (15, 'simulated')
    """
    cfg = config or SimulationConfig()
    out = Path(out)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    if format == "bundle" and out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    rep = reporter(progress)
    t0 = time.perf_counter()
    survey = generate_survey(cfg, n_field=n_field, seed=seed, progress=rep.span(0.0, 0.05))
    t_table = time.perf_counter() - t0
    if format != "bundle":
        from ..apogee import write_layout

        return Path(write_layout(format, survey, out, overwrite=overwrite, progress=rep.span(0.05, 1.0)))
    return _write_bundle(survey, out, rep, overwrite, name, chunk_size, t0, t_table)


def _write_bundle(survey, out: Path, rep, overwrite: bool, name, chunk_size: int, t0: float, t_table: float) -> Path:
    """Spectra of the bundle's stars, in chunks, into a Dataset bundle (meta.json last)."""
    from ..dataset import Dataset

    cfg, seed = survey.config, survey.seed
    rows = survey.bundle_rows
    n = len(rows)
    with Dataset.create(out, n, N_PIXELS, with_errors=True, overwrite=overwrite) as w:
        with rep.bar(n, "spectra", start=0.05, end=0.97, unit="star") as bar:
            for a in range(0, n, chunk_size):
                r = rows[a : a + chunk_size]
                flux, err = survey.spectra(r)
                w.spectra[a : a + len(r)] = flux
                w.errors[a : a + len(r)] = err
                w.mask[a : a + len(r)] = bundle_mask(flux, err, cfg.mask_ranges)
                bar.update(len(r))
        rep.say(0.97, "writing bundle")
        stars = survey.bundle_stars()
        n_cl = int((stars["cluster"] != "").sum())
        meta = {
            "kind": "simulated",
            "name": name or f"simulated survey ({len(stars) - n_cl} field, {n_cl} cluster stars, seed {seed})",
            "source": "rsca_core.simulate",
            "provenance": {
                "generator": "rsca_core.simulate.simulate",
                "simulator_version": SIMULATOR_VERSION,
                "seed": int(seed),
                "n_field": int(survey.n_field),
                "config": cfg.to_dict(),
                "cutflow": survey.cutflow,
                "n_generated": int(len(survey.stars_all)),
                "seconds": round(time.perf_counter() - t0, 2),
                "seconds_table": round(t_table, 2),
                "mask": "error > 0.05, non-finite, chip-gap zeros, config.mask_ranges",
            },
        }
        w.finish(stars, apogee_wavelength(N_PIXELS), meta)
    rep.say(1.0, "bundle written")
    return out


def default_is_current(path, n_field: int = DEFAULT_N_FIELD) -> bool:
    """Was the bundle at ``path`` built as today's default survey (this simulator version, the default
    config, seed 0, ``n_field``)? False for a missing or unreadable bundle.

    Examples
    --------
    >>> default_is_current("/nonexistent")
    False
    """
    import json

    try:
        prov = json.loads((Path(path) / "meta.json").read_text()).get("provenance") or {}
    except (OSError, ValueError):
        return False
    return (
        prov.get("simulator_version") == SIMULATOR_VERSION
        and prov.get("config") == SimulationConfig().to_dict()
        and prov.get("seed") == 0
        and prov.get("n_field") == int(n_field)
    )


def ensure_default_dataset(path, progress: ProgressArg = True, *, n_field: int = DEFAULT_N_FIELD) -> Path:
    """Return the app's embedded default bundle at ``path``, building it first if missing (~30-60 s),
    or rebuilding it if an older simulator or other defaults built it (:func:`default_is_current`),
    so the default survey always matches the code and its documentation.

    Safe against concurrent callers (a lock file next to the bundle): only one process builds,
    the others wait and then return the finished bundle. ``progress`` as in :func:`simulate`.

    Parameters
    ----------
    path : path
        Where the default bundle lives (e.g. the app's ``<data dir>/default``).
    progress : bool or callable
        See :mod:`rsca_core.progress`.
    n_field : int
        Field stars of the default survey (seed 0).
    """
    import sys

    path = Path(path)
    if default_is_current(path, n_field):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    rep = reporter(progress)
    rep.say(0.0, "waiting for the default survey (another process may be building it)")
    with open(lock_path, "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX
            pass
        if not default_is_current(path, n_field):
            if rep.mode == "tqdm":
                why = "rebuilding: an older simulator built it" if (path / "meta.json").exists() else "once"
                print(f"building the default simulated survey in {path} ({why})...", file=sys.stderr)
            simulate(
                path,
                n_field=n_field,
                seed=0,
                progress=rep,
                overwrite=path.exists(),
                name=f"simulated default survey ({n_field} field stars)",
            )
    rep.say(1.0, "default survey ready")
    return path
