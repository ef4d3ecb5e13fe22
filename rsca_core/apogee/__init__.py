"""APOGEE DR16/DR17 and SDSS-V DR19 + membership catalogues: the real-data loader and the
release file-layout writers (SPEC §4; the releases and their sources: ``docs/data-releases.md``).

``build_apogee`` (CLI ``python -m rsca_core build-apogee``) turns the public files of DR16

    allStar-r12-l33.fits                                    HDU 1 table (one row per star)
    {TELESCOPE}/{FIELD}/aspcapStar-r12-{APOGEE_ID}.fits    HDU 1 flux, HDU 2 error (8575 px)
    occam_member-DR16.fits                                  APOGEE_ID, CLUSTER, CG_PROB, …

(or DR17's ``allStar-dr17-synspec_rev1.fits`` + ``aspcapStar-dr17-*``, DR19's
``astraAllStarASPCAP-0.6.0.fits.gz`` + ``mwmStar-0.6.0-*``; OCCAM or a Gaia-based catalogue) into a
:class:`~rsca_core.dataset.Dataset` bundle, applying the cuts of the paper and printing a
cut-flow. ``write_dr16`` / ``write_dr17`` / ``write_dr19`` write the same layouts (used by the
simulator's ``--format`` and by the tests), so the loader is exercised end to end on files shaped
like the real ones.

Robustness of the loader:

* missing spectrum files are skipped and counted; unreadable, corrupt or wrong-shaped files are
  reported by path and skipped (never zero-filled);
* the files are read in chunks by a pool of worker processes (``workers``) with a tqdm bar (ETA);
* every finished chunk is saved atomically in ``<out>.partial/``; an interrupted run restarted
  with the same inputs reads only the unfinished chunks. The bundle itself is written by
  :class:`~rsca_core.dataset.BundleWriter` (temporary directory, ``meta.json`` last, rename), so
  an interrupted run never leaves a bundle that loads as if complete.

Modules: ``layout`` (DR16 file names and paths), ``releases`` (detecting a release, its star
table and spectrum paths), ``members`` (OCCAM, Hunt & Reffert 2023, Cantat-Gaudin 2020),
``fitsio`` (reading allStar, OCCAM, aspcapStar and mwmStar FITS files), ``reader`` (parallel
resumable reading of the spectra), ``build`` (:func:`build_apogee`), ``writers`` /
``writers_dr17`` / ``writers_dr19`` / ``export`` (the layouts), ``cli``. The cuts, the cut-flow,
the pixel mask and the star table are :mod:`rsca_core.selection`'s.
"""

from __future__ import annotations

from ..constants import ANOMALOUS_STAR, LOGG_RANGE, MIN_CG_PROB, TEFF_RANGE
from ..selection import finalise_clusters, format_cutflow, pixel_mask, select_stars, stars_table
from .build import build_apogee
from .cli import add_cli, parse_ranges
from .export import LAYOUT_WRITERS, write_layout
from .fitsio import (
    SpectrumFileError,
    read_allstar,
    read_allstar_visits,
    read_aspcapstar,
    read_mwmstar,
    read_occam_members,
)
from .layout import (
    ALLSTAR_COLUMNS,
    ALLSTAR_NAME,
    OCCAM_CLUSTER_NAME,
    OCCAM_MEMBER_COLUMNS,
    OCCAM_MEMBER_NAME,
    SIMULATED_KEYWORD,
    aspcapstar_relpath,
)
from .members import MEMBER_FORMATS, read_members
from .reader import CHUNK_SIZE, CORRUPT, MISSING, OK, read_spectra
from .releases import RELEASES, detect_release, mwmstar_relpath, read_star_table
from .writers import write_dr16
from .writers_dr17 import write_dr17
from .writers_dr19 import write_dr19

__all__ = [
    "add_cli",
    "ALLSTAR_COLUMNS",
    "ALLSTAR_NAME",
    "ANOMALOUS_STAR",
    "aspcapstar_relpath",
    "build_apogee",
    "CHUNK_SIZE",
    "CORRUPT",
    "detect_release",
    "finalise_clusters",
    "format_cutflow",
    "LAYOUT_WRITERS",
    "LOGG_RANGE",
    "MEMBER_FORMATS",
    "MIN_CG_PROB",
    "MISSING",
    "mwmstar_relpath",
    "OCCAM_CLUSTER_NAME",
    "OCCAM_MEMBER_COLUMNS",
    "OCCAM_MEMBER_NAME",
    "OK",
    "parse_ranges",
    "pixel_mask",
    "read_allstar",
    "read_allstar_visits",
    "read_aspcapstar",
    "read_members",
    "read_mwmstar",
    "read_occam_members",
    "read_spectra",
    "read_star_table",
    "RELEASES",
    "select_stars",
    "SIMULATED_KEYWORD",
    "SpectrumFileError",
    "stars_table",
    "TEFF_RANGE",
    "write_dr16",
    "write_dr17",
    "write_dr19",
    "write_layout",
]
