"""A simulated APOGEE-like survey: the embedded default data set of RSCA Lab (SPEC §5).

No APOGEE data can be downloaded here, so this module simulates a survey with the observables and
file layout of APOGEE DR16 + OCCAM (SPEC §4) and, above all, with the confounders the paper is
about. Everything made from it is labelled "simulated" (``meta["kind"] = "simulated"``).

Usage
-----
::

    python -m rsca_core simulate --out DIR [--n-field N] [--seed S] [--format bundle|dr16|dr17|dr19]
                                 [--no-dibs] [--no-plate-systematics] ... [--overwrite]

    from rsca_core.simulate import simulate, generate_survey, SimulationConfig
    path = simulate("data/mysurvey", n_field=20000, seed=0)              # a Dataset bundle
    survey = generate_survey(SimulationConfig(dibs=False), n_field=500, seed=1)
    survey.stars_all                 # every generated star, including those failing the cuts
    flux, err = survey.spectra([0, 5, 7])   # (3, 8575) float32 each, deterministic per star

``--format bundle`` (default) writes a :class:`~rsca_core.dataset.Dataset` bundle holding only the
stars that pass the paper's cuts (SPEC §4), in the order the DR16 loader uses (field stars, then
cluster stars, each in ``stars_all`` order), with the same mask rule (error > 0.05, non-finite,
chip-gap zeros, plus ``config.mask_ranges``, by default the paper's interstellar ranges). So
``build_apogee`` on the ``--format dr16`` files of a survey gives the bundle written directly
(same stars, labels, spectra, errors and mask; the direct bundle has extra ``true_*`` columns).

``--format dr16|dr17|dr19`` writes that release's files (allStar or astraAllStarASPCAP,
aspcapStar or mwmStar spectra, OCCAM, DR17 allVisit) through ``rsca_core.apogee.write_layout``;
``build-apogee`` on them gives the direct bundle again (DR19: within float32 rounding).

Modules
-------
``config`` (:class:`SimulationConfig`, :data:`SWITCH_TABLE`), ``chemistry`` (latent chemistry,
isochrones), ``labels`` (ASPCAP-like labels), ``linelist`` (lines and profiles), ``instrument``
(chips, telluric/sky/flat-field templates, interstellar bands), ``clusters`` (the clusters'
literature values), ``stars`` (drawing the populations and clusters), ``survey``
(:func:`generate_survey`: fields, plates, visits, the table and the cuts), ``spectra`` (:class:`SimulatedSurvey`), ``writers`` (:func:`simulate`,
:func:`ensure_default_dataset`), ``cli`` (the ``simulate`` command).

The generator API (used by ``apogee.write_dr16``)
-------------------------------------------------
``generate_survey(config, n_field, seed) -> SimulatedSurvey`` draws the star table only (fast);
spectra are made on demand, in any chunks, with identical values whatever the chunking:

* ``survey.stars_all``: DataFrame, one row per generated star (passing or failing the cuts), with
  DR16-like upper-case columns APOGEE_ID, TELESCOPE, FIELD, TEFF, LOGG, M_H, X_H_<EL> for the 26
  allStar elements (``X_H_TIII`` for Ti II, −9999.99 = not measured), ASPCAPFLAG, AK_TARG,
  VHELIO_AVG, SNR, VISITS, CLUSTER ("" unless an OCCAM candidate), CG_PROB, RV_PROB, FEH_PROB,
  PM_PROB (NaN unless a candidate), and lower-case extras: ``true_teff``, ``true_logg``,
  ``true_fe_h``, ``true_alpha_fe``, ``true_x_h_<sp>`` (the 21 species), ``population``
  (thin / thick / halo / dwarf / cluster), ``evol`` (rgb / rc / dwarf), ``age``, ``mass``,
  ``true_cluster`` (cluster whose chemistry the star has, "none" for field chemistry), ``plate``,
  ``plate_bc`` (barycentric correction of the plate, km/s), ``v_ism`` (velocity of the DIB carriers),
  ``passes_cuts`` (the per-star cuts of SPEC §4) and ``in_bundle``.
* ``survey.spectra(rows) -> (flux, err)``: float32 arrays (len(rows), 8575) of rows of
  ``stars_all`` (alias ``spectra_for``); ``survey.spectrum(i)`` for one star.
* ``survey.bundle_rows``: the ``stars_all`` rows of the direct bundle in bundle order;
  ``survey.bundle_stars()`` its star table; ``survey.cutflow`` the cut-flow (loader format).

Physics (each effect a :class:`SimulationConfig` switch; see the field comments there)
--------------------------------------------------------------------------------------
* Stars on red-giant isochrones: RGB and red clump; Teff follows logg (~430 K/dex), metallicity
  (cooler when metal-rich) and mass; clusters share one age and [Fe/H], so their members spread
  along one isochrone (Teff ~4200–4950 K, logg ~1.6–2.9). Stars outside the paper's window (cool
  tip giants, subgiants, dwarfs) are generated too: they exist in the DR16 files and are cut.
* Field chemistry is low-dimensional: [Fe/H], a two-sequence [α/Fe] (low-α thin disc, high-α
  thick disc, a little halo), age (→ giant mass → first-dredge-up [C/N]) and a small independent
  scatter per element. Clusters are the OCCAM clusters with their catalogue [Fe/H], age, mean RV,
  A_K and position (:data:`~.clusters.CLUSTER_FACTS`, the same at every seed), [α/Fe] on the low-α
  sequence and per-element offsets drawn from the field's model, homogeneous to ``cluster_spread``
  (0.01 dex).
* Spectra: pseudo-continuum-normalised flux on the APOGEE log-λ grid. Atomic lines of each
  species at the SPEC's wavelengths plus weak lines (Fe dominating), OH (O), CN (C, N, O) and CO
  (C) molecular lines and CO band heads; pseudo-Voigt profiles at R = 22,500 plus macro-
  turbulence. Line optical depth log τ = log τ_ref + Σ w·[X/H] + θ·(5040/Teff − 5040/4600) +
  γ·(logg − 2.5) − 0.2·[M/H]; depth = D·(1 − exp(−τ·φ)) (curve-of-growth saturation), lines
  combined multiplicatively. ASPCAP-like pseudo-continuum: the continuum is placed low where
  lines are dense, lifting the normalised flux above 1 there (a smooth, label-dependent term).
* Diffuse interstellar bands at 15273 Å (strongest), 15653, 15610 and 16232 Å, depth ∝ AK_TARG,
  at the interstellar medium's velocity, i.e. shifted by −(VHELIO_AVG − v_ISM) in the star's
  rest frame (so they wander over the paper's masked ranges).
* Residual RV/telluric systematics: imperfectly removed telluric absorption and sky-emission
  residuals sit at fixed *observed* wavelengths, i.e. at a VHELIO_AVG-dependent place in the
  rest-frame spectrum; plus a small rest-frame shift error (template mismatch) ∝ VHELIO_AVG times
  a per-star mismatch factor 1 + ``rv_mismatch_spread``·z, so cluster members that share a
  velocity do not share the error.
* Plate/visit systematics: each visit (plate + MJD) has its own telluric/sky residual amplitudes
  and a smooth flat-field pattern; a star's spectrum carries the mean over its visits. Cluster
  members are mostly observed on the same plate and visits. Switched off, the telluric/sky
  residual amplitudes are drawn per star and no visit pattern is added.
* Fibre line-spread variation: each star's line optical depths are scaled by 1 + δ,
  δ ~ N(0, 0.04), a nuisance that is neither chemistry nor shared by siblings.
* Noise: SNR lognormal like the paper (field median 157, IQR 102–272; clusters 191, 118–323);
  per-pixel error sqrt(F)/SNR × chip throughput shape (⊕ 0.1 % floor); Gaussian noise with that
  error. Chip gaps hold zero flux. Bad pixels (cosmic rays, bad columns) get error 1.0.
* ASPCAP-like labels = truth + smooth Teff/logg-dependent bias (:func:`label_bias`, the
  "synthetic gap") + noise (SPEC precisions, growing at low SNR) + occasional −9999.99 failures
  (more for weak-lined species, hot or metal-poor stars) and STAR_BAD flags (low SNR).
"""

from __future__ import annotations

from ..constants import LOGG_RANGE, MIN_CG_PROB, SPECIES, TEFF_RANGE
from .chemistry import draw_giants, elements_from_latent, isochrone_teff, mass_from_age
from .cli import add_cli
from .config import (
    CLUSTER_NAMES,
    DEFAULT_N_FIELD,
    PAPER_CLUSTER_SIZES,
    SIMULATOR_VERSION,
    SWITCH_TABLE,
    SWITCHES,
    SimulationConfig,
    Switch,
)
from .instrument import BAD_PIXEL_ERROR, C_KMS, CHIP_RANGES, DIBS, KMS_PER_PIXEL, instrument_templates
from .labels import (
    BIAS_SCALE,
    FAILURE_RATE,
    LABEL_PRECISION,
    LOGG_PRECISION,
    TEFF_PRECISION,
    UNREPORTED,
    label_bias,
    snr_factor,
)
from .linelist import CO_BANDHEADS, LINE_LIST_SEED, LINE_SPECIES, LineList, line_list
from .spectra import Observation, SimulatedSurvey
from .survey import generate_survey, occam_members
from .writers import FORMATS, bundle_mask, default_is_current, ensure_default_dataset, simulate

__all__ = [
    "add_cli",
    "BAD_PIXEL_ERROR",
    "BIAS_SCALE",
    "bundle_mask",
    "C_KMS",
    "CHIP_RANGES",
    "CLUSTER_NAMES",
    "CO_BANDHEADS",
    "DEFAULT_N_FIELD",
    "DIBS",
    "draw_giants",
    "elements_from_latent",
    "default_is_current",
    "ensure_default_dataset",
    "SIMULATOR_VERSION",
    "FAILURE_RATE",
    "FORMATS",
    "generate_survey",
    "instrument_templates",
    "isochrone_teff",
    "KMS_PER_PIXEL",
    "label_bias",
    "LABEL_PRECISION",
    "line_list",
    "LINE_LIST_SEED",
    "LINE_SPECIES",
    "LineList",
    "LOGG_PRECISION",
    "LOGG_RANGE",
    "mass_from_age",
    "MIN_CG_PROB",
    "Observation",
    "occam_members",
    "PAPER_CLUSTER_SIZES",
    "simulate",
    "SimulatedSurvey",
    "SimulationConfig",
    "snr_factor",
    "SPECIES",
    "Switch",
    "SWITCH_TABLE",
    "SWITCHES",
    "TEFF_PRECISION",
    "TEFF_RANGE",
    "UNREPORTED",
]
