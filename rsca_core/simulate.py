"""A simulated APOGEE-like survey: the embedded default data set of RSCA Lab (SPEC §5).

No APOGEE data can be downloaded here, so this module simulates a survey with the observables and
file layout of APOGEE DR16 + OCCAM (SPEC §4) and, above all, with the confounders the paper is
about. Everything made from it is labelled "simulated" (``meta["kind"] = "simulated"``).

Usage
-----
::

    python -m rsca_core simulate --out DIR [--n-field N] [--seed S] [--format bundle|dr16]
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

``--format dr16`` writes allStar / aspcapStar / OCCAM FITS files through
``rsca_core.apogee.write_dr16(survey, out)``.

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
  scatter per element. Clusters are drawn from the same model and are homogeneous to
  ``cluster_spread`` (0.01 dex).
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
  rest-frame spectrum; plus a small rest-frame shift error ∝ VHELIO_AVG.
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

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .constants import (
    ALLSTAR_ELEMENTS,
    DLOGLAM,
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

C_KMS = 299792.458
#: km/s per pixel of the APOGEE log-λ grid.
KMS_PER_PIXEL = C_KMS * np.log(10.0) * DLOGLAM
#: Pixels [start, stop) of the three detectors that hold data; everything else (the chip gaps and
#: the ends) is zero flux in aspcapStar files (DR14+ layout).
CHIP_RANGES = ((246, 3274), (3585, 6080), (6344, 8335))
#: Error given to bad pixels and chip gaps (anything > 0.05 is masked).
BAD_PIXEL_ERROR = 1.0
#: Default number of field stars of the embedded default survey.
DEFAULT_N_FIELD = 20000
#: Cluster sizes (after the cuts) of the default: 22 clusters, 185 stars, like the paper.
PAPER_CLUSTER_SIZES = (25, 23, 19, 16, 13, 11, 10, 9, 8, 7, 6, 5, 5, 4, 4, 4, 3, 3, 3, 3, 2, 2)
CLUSTER_NAMES = (
    "NGC_6791",
    "NGC_6819",
    "NGC_2682",
    "NGC_188",
    "NGC_7789",
    "NGC_2158",
    "NGC_6705",
    "NGC_2420",
    "NGC_1245",
    "NGC_2243",
    "Berkeley_39",
    "NGC_752",
    "IC_166",
    "King_5",
    "Berkeley_53",
    "NGC_1798",
    "NGC_4337",
    "Trumpler_5",
    "Collinder_261",
    "NGC_2204",
    "NGC_7044",
    "Berkeley_17",
    "NGC_2324",
    "Berkeley_71",
    "NGC_1857",
    "Czernik_20",
    "NGC_1907",
    "Berkeley_66",
    "NGC_6811",
    "King_7",
)
TEFF_RANGE = (4000.0, 5000.0)
LOGG_RANGE = (1.5, 3.0)
MIN_CG_PROB = 0.8
ANOMALOUS_STAR = "2M19203303+3755558"
#: The species whose true abundances drive the spectra (the 21 of the paper).
LINE_SPECIES = SPECIES
_SP_INDEX = {s: i for i, s in enumerate(LINE_SPECIES)}
#: Typical DR16 label precision at SNR ≈ 150 (dex; SPEC §5).
#: (The upper end of the SPEC's ranges: DR16's intra-cluster scatter, e.g. ~0.02-0.03 dex in [Fe/H]
#: for open clusters, is larger than its formal errors; with the lower end the abundance-based
#: doppelganger rate of the default survey falls to ~0.008, with these it is ~0.02 like the paper's.)
LABEL_PRECISION = {
    "Fe": 0.02,
    "Mg": 0.028,
    "Si": 0.03,
    "Ni": 0.03,
    "C": 0.05,
    "CI": 0.08,
    "N": 0.05,
    "O": 0.05,
    "Al": 0.05,
    "Ca": 0.045,
    "Mn": 0.05,
    "Na": 0.15,
    "S": 0.10,
    "K": 0.09,
    "Ti": 0.09,
    "TiII": 0.15,
    "V": 0.14,
    "Cr": 0.10,
    "Co": 0.13,
    "Cu": 0.15,
    "Ce": 0.14,
    "P": 0.15,
}
TEFF_PRECISION, LOGG_PRECISION = 70.0, 0.07
#: Base probability that ASPCAP reports −9999.99 for a species (before Teff/[Fe/H] modulation).
FAILURE_RATE = {
    "C": 0.001,
    "CI": 0.004,
    "N": 0.002,
    "O": 0.001,
    "Na": 0.008,
    "Mg": 0.0005,
    "Al": 0.001,
    "Si": 0.0005,
    "S": 0.003,
    "K": 0.002,
    "Ca": 0.001,
    "Ti": 0.002,
    "TiII": 0.004,
    "V": 0.008,
    "Cr": 0.003,
    "Mn": 0.002,
    "Fe": 0.0003,
    "Co": 0.005,
    "Ni": 0.0005,
    "Cu": 0.008,
    "Ce": 0.006,
    "P": 0.2,
}
#: Elements of allStar that DR16 does not report for any star.
UNREPORTED = ("Ge", "Rb", "Nd", "Yb")
#: Diffuse interstellar bands: (rest wavelength Å, strength relative to 15273, Gaussian sigma Å).
DIBS = ((15273.0, 1.0, 1.9), (15653.0, 0.35, 1.6), (15610.0, 0.15, 1.2), (16232.0, 0.22, 1.7))


# ====================================================================== configuration
@dataclass
class SimulationConfig:
    """Every knob of the simulated survey. Booleans switch a physical effect on/off
    (CLI ``--no-<name>``); numbers set its size. Defaults give the paper's shape."""

    # --- survey shape
    cluster_sizes: tuple = PAPER_CLUSTER_SIZES  #: members per cluster that pass the cuts
    singleton_clusters: int = 2  #: extra OCCAM clusters left with one star (dropped by the cuts)
    failing_field_fraction: float = 0.25  #: failing field stars generated per passing one (DR16 files)
    low_prob_candidates: float = 0.15  #: OCCAM candidates with CG_PROB<0.8 per member (become field stars)
    # --- stars and chemistry
    isochrones: bool = True  #: Teff tied to logg/[Fe/H]/mass on giant isochrones (else independent)
    cluster_isochrone_spread: bool = True  #: cluster members spread along their isochrone (else near one point)
    two_alpha_sequences: bool = True  #: a high-α thick-disc sequence besides the low-α thin disc
    thick_fraction: float = 0.2  #: fraction of field giants on the high-α sequence
    dredge_up: bool = True  #: first dredge-up: [C/Fe] down, [N/Fe] up with giant mass
    element_scatter: float = 0.03  #: independent per-element scatter of field chemistry (dex, typical)
    cluster_spread: float = 0.01  #: intrinsic abundance spread inside a cluster (dex)
    # --- spectra
    atomic_lines: bool = True  #: atomic lines of the 21 species
    molecular_lines: bool = True  #: OH, CN and CO lines / band heads
    saturation: bool = True  #: curve-of-growth saturation (else depth ∝ optical depth)
    line_teff_logg: bool = True  #: line strengths depend on Teff and logg (else abundances only)
    resolution: float = 22500.0  #: spectral resolving power R
    fibre_lsf: bool = True  #: per-fibre line-spread variation: line optical depths × (1 + δ)
    fibre_lsf_sigma: float = 0.04  #: spread of δ between stars
    macroturbulence: float = 4.0  #: extra Gaussian broadening, km/s (sigma)
    pseudo_continuum: bool = True  #: ASPCAP-like pseudo-continuum placed low in line-dense regions
    pseudo_continuum_strength: float = 0.15
    dibs: bool = True  #: diffuse interstellar bands scaling with AK_TARG
    dib_depth_per_ak: float = 0.2  #: central depth of the 15273 Å band per magnitude of A_K
    rv_systematics: bool = True  #: telluric/sky residuals at observed wavelengths + RV shift error
    rv_strength: float = 1.0
    plate_systematics: bool = True  #: residuals shared by stars observed on the same visits
    plate_strength: float = 1.0
    noise: bool = True  #: per-pixel Gaussian noise from the SNR
    snr_field_median: float = 157.2
    snr_cluster_median: float = 191.4
    snr_sigma_ln: float = 0.73  #: lognormal width of the SNR (IQR 102–272 for the field)
    error_floor: float = 0.001
    bad_pixels: bool = True  #: cosmic rays and bad columns (error 1.0, masked)
    bad_pixel_fraction: float = 0.003
    # --- labels (allStar)
    label_noise: bool = True  #: observed labels carry ASPCAP-like noise
    label_biases: bool = True  #: smooth Teff/logg-dependent label biases (the "synthetic gap")
    label_failures: bool = True  #: occasional −9999.99 abundances and STAR_BAD flags
    # --- the bundle
    mask_ranges: tuple = PAPER_MASK_RANGES  #: pixel ranges masked in the direct bundle (as the loader)

    def __post_init__(self):
        sizes = tuple(int(s) for s in self.cluster_sizes)
        if any(s < 2 for s in sizes):
            raise ValueError("cluster_sizes: every cluster needs at least 2 members")
        if len(sizes) + int(self.singleton_clusters) > len(CLUSTER_NAMES):
            raise ValueError(f"at most {len(CLUSTER_NAMES)} clusters (incl. singleton_clusters)")
        self.cluster_sizes = sizes
        self.mask_ranges = tuple(tuple(int(v) for v in r) for r in (self.mask_ranges or ()))
        ranges_to_mask(self.mask_ranges)
        for name in (
            "failing_field_fraction",
            "low_prob_candidates",
            "thick_fraction",
            "element_scatter",
            "cluster_spread",
            "bad_pixel_fraction",
            "error_floor",
        ):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if not self.resolution > 1000:
            raise ValueError("resolution must be > 1000")
        if not (self.snr_field_median > 0 and self.snr_cluster_median > 0):
            raise ValueError("SNR medians must be positive")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cluster_sizes"] = list(self.cluster_sizes)
        d["mask_ranges"] = [list(r) for r in self.mask_ranges]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimulationConfig:
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown simulation setting(s): {', '.join(sorted(extra))}")
        d = dict(d)
        if "cluster_sizes" in d:
            d["cluster_sizes"] = tuple(d["cluster_sizes"])
        if "mask_ranges" in d:
            d["mask_ranges"] = tuple(tuple(r) for r in d["mask_ranges"])
        return cls(**d)


SWITCHES = tuple(f.name for f in fields(SimulationConfig) if f.type in ("bool", bool))


# ====================================================================== chemistry model
# [X/H] = [Fe/H] + a·[α/Fe] + b·[Fe/H] + c·(age − 5 Gyr)/5 + dredge-up + scatter
_CHEM = {  # species: (a_alpha, b_feh, c_age, scatter multiplier)
    "C": (0.25, 0.05, 0.03, 1.0),
    "CI": (0.25, 0.05, 0.03, 1.0),
    "N": (0.0, 0.15, 0.0, 1.3),
    "O": (0.9, 0.0, 0.0, 0.8),
    "Na": (0.3, 0.1, 0.0, 1.5),
    "Mg": (1.0, 0.0, 0.0, 0.6),
    "Al": (0.8, 0.05, 0.0, 1.2),
    "Si": (0.7, 0.0, 0.0, 0.6),
    "S": (0.8, 0.0, 0.0, 1.2),
    "K": (0.4, 0.0, 0.0, 1.2),
    "Ca": (0.5, 0.0, 0.0, 0.8),
    "Ti": (0.6, 0.0, 0.0, 1.0),
    "TiII": (0.6, 0.0, 0.0, 1.0),
    "V": (0.3, 0.05, 0.0, 1.3),
    "Cr": (0.0, 0.0, 0.0, 0.6),
    "Mn": (-0.5, 0.15, 0.0, 0.8),
    "Fe": (0.0, 0.0, 0.0, 0.0),
    "Co": (0.3, 0.05, 0.0, 1.2),
    "Ni": (0.15, 0.05, 0.0, 0.6),
    "Cu": (0.4, 0.2, 0.0, 1.5),
    "Ce": (-0.3, -0.1, -0.08, 1.5),
    "P": (0.3, 0.0, 0.0, 1.5),
    "Ge": (0.0, 0.0, 0.0, 1.0),
    "Rb": (0.0, 0.0, 0.0, 1.0),
    "Nd": (0.0, 0.0, -0.05, 1.0),
    "Yb": (0.0, 0.0, 0.0, 1.0),
}
_SAME_ELEMENT = {"CI": "C", "TiII": "Ti"}  # same element, same true abundance


def _elements_from_latent(feh, alpha, age, mass, scatter, dredge_up=True):
    """True [X/H] of the 26 allStar elements (dict of arrays) from the latent chemistry."""
    out = {}
    for el in ALLSTAR_ELEMENTS:
        if el in _SAME_ELEMENT:
            continue
        a, b, c, _ = _CHEM[el]
        v = feh + a * alpha + b * feh + c * (age - 5.0) / 5.0 + scatter[el]
        if dredge_up and el == "C":
            v = v - 0.12 - 0.10 * np.clip(mass - 1.0, 0, 2.5)
        if dredge_up and el == "N":
            v = v + 0.25 + 0.20 * np.clip(mass - 1.0, 0, 2.5)
        out[el] = v
    for el, src in _SAME_ELEMENT.items():
        out[el] = out[src].copy()
    return out


def _scatter(rng, n, sigma):
    return {el: rng.normal(0.0, sigma * _CHEM[el][3], n) for el in ALLSTAR_ELEMENTS}


def _mass_from_age(age, feh):
    """Giant-branch mass (M_sun) of a population of given age (Gyr): t ≈ 10 Gyr · M^-2.5."""
    return (10.0 / np.asarray(age)) ** 0.4 * (1.0 + 0.08 * np.asarray(feh))


def _isochrone_teff(logg, feh, mass, is_rc):
    """Teff (K) of a giant on its isochrone: RGB ~430 K/dex in logg; red clump ~4750 K."""
    rgb = 4600.0 + 430.0 * (logg - 2.5) - 280.0 * feh + 70.0 * (mass - 1.2)
    rc = 4760.0 - 230.0 * feh + 60.0 * (mass - 1.2)
    return np.where(is_rc, rc, rgb)


def _draw_giants(rng, n, feh, mass, logg_range, rc_fraction, spread=True, isochrones=True):
    """logg, Teff, is_rc of giants along isochrones (a luminosity-function-like logg density)."""
    lo, hi = logg_range
    # more stars at high logg (slower evolution lower on the RGB): density ∝ 10^(0.35 logg)
    u = rng.random(n)
    a = 0.35 * np.log(10)
    logg = np.log(np.exp(a * lo) + u * (np.exp(a * hi) - np.exp(a * lo))) / a
    is_rc = rng.random(n) < rc_fraction
    rc_logg = 2.45 + 0.12 * np.clip(mass - 1.8, 0, None) + rng.normal(0, 0.07, n)
    logg = np.where(is_rc, rc_logg, logg)
    if isochrones:
        teff = _isochrone_teff(logg, feh, mass, is_rc)
    else:
        teff = rng.uniform(3900, 5100, n)
    teff = teff + rng.normal(0, 45.0 if spread else 15.0, n)
    return logg, teff, is_rc


# ====================================================================== label model
_BIAS_COEF_CACHE = {}
#: Typical size (dex per 500 K) of the smooth label biases of the best-measured elements.
BIAS_SCALE = 0.04


def _bias_coefficients(species):
    """Fixed (seeded) coefficients of the smooth label bias of a species (dex)."""
    if species not in _BIAS_COEF_CACHE:
        h = sum((i + 1) * ord(c) for i, c in enumerate(species))
        r = np.random.default_rng(1000 + h)
        scale = min(1.0, LABEL_PRECISION.get(species, 0.05) / 0.03) * BIAS_SCALE
        _BIAS_COEF_CACHE[species] = (r.normal(0, scale), r.normal(0, scale * 0.7), r.normal(0, scale * 0.8))
    return _BIAS_COEF_CACHE[species]


def label_bias(species, teff, logg):
    """Smooth ASPCAP-like bias of an [X/H] label (dex) as a function of true Teff and logg.

    bias = b1·t + b2·(t² − 1/3) + b3·(logg − 2.3), t = (Teff − 4500)/500, with fixed per-species
    coefficients of a few hundredths of a dex (0.04 dex per unit for the best-measured elements).
    ``species="teff"`` (K) and ``"logg"`` (dex) give the stellar-parameter biases.
    """
    t = (np.asarray(teff, float) - 4500.0) / 500.0
    g = np.asarray(logg, float) - 2.3
    if species == "teff":
        return 30.0 * t - 20.0 * g
    if species == "logg":
        return -0.05 * t + 0.04 * g
    b1, b2, b3 = _bias_coefficients(species)
    return b1 * t + b2 * (t * t - 1.0 / 3.0) + b3 * g


def _snr_factor(snr):
    """Label noise relative to SNR ≈ 150."""
    return np.clip(np.sqrt(0.5 + 0.5 * (150.0 / np.asarray(snr, float)) ** 2), 0.7, 4.0)


# ====================================================================== line list
@dataclass
class LineList:
    wave: np.ndarray  # (L,) Å
    log_tau: np.ndarray  # (L,) log10 optical depth at the reference star (solar, 4600 K, logg 2.5)
    weights: np.ndarray  # (L, n_species) abundance weights (order LINE_SPECIES)
    theta: np.ndarray  # (L,) Teff sensitivity (per unit of 5040/Teff)
    gamma: np.ndarray  # (L,) logg sensitivity
    eta: np.ndarray  # (L,) Lorentzian fraction of the pseudo-Voigt profile
    kind: np.ndarray  # (L,) "atomic" | "OH" | "CN" | "CO"
    species: np.ndarray  # (L,) label of the absorber


_STRONG = {  # species: (wavelengths Å (SPEC §5), range of tau at the reference star)
    "K": ((15163, 15168), (0.5, 1.0)),
    "Mn": ((15159, 15218, 15263), (0.4, 0.9)),
    "Fe": ((15207, 15294, 15490, 15648, 15662, 15964, 16040, 16153, 16165, 16487), (0.9, 2.2)),
    "Mg": ((15740, 15749, 15765, 15886, 15954), (1.8, 4.5)),
    "Si": ((15377, 15888, 15960, 16060, 16095, 16380, 16681), (0.9, 2.2)),
    "Al": ((16719, 16751, 16763), (1.2, 3.0)),
    "Ca": ((16137, 16151, 16157, 16197), (0.4, 0.9)),
    "Ti": ((15544, 15603, 15716, 16635), (0.3, 0.7)),
    "Ni": ((15606, 16584, 16589, 16674), (0.3, 0.7)),
    "Na": ((16374, 16389), (0.2, 0.4)),
    "S": ((15470, 15476, 15479), (0.2, 0.35)),
    "Cr": ((15680, 15860), (0.2, 0.4)),
    "V": ((15925,), (0.1, 0.2)),
    "Co": ((16758,), (0.1, 0.18)),
    "Cu": ((16006,), (0.08, 0.14)),
    "Ce": ((15785,), (0.08, 0.14)),
    "CI": ((16005, 16022, 16890), (0.2, 0.4)),
    "TiII": ((15874,), (0.15, 0.3)),
}
_WEAK_COUNT = {
    "Fe": 110,
    "Si": 8,
    "Mg": 4,
    "Ni": 8,
    "Ti": 8,
    "Ca": 4,
    "Cr": 6,
    "V": 5,
    "Co": 5,
    "Mn": 4,
    "Al": 2,
    "Na": 2,
    "K": 2,
    "S": 4,
    "Cu": 3,
    "Ce": 5,
    "CI": 2,
    "TiII": 3,
}
CO_BANDHEADS = (15580.0, 15780.0, 16190.0, 16610.0)
LINE_LIST_SEED = 20221024


def _data_wavelength_ranges():
    wl = apogee_wavelength()
    return [(wl[a] + 1.0, wl[b - 1] - 1.0) for a, b in CHIP_RANGES]


def _uniform_in_chips(rng, n):
    ranges = _data_wavelength_ranges()
    widths = np.array([b - a for a, b in ranges])
    which = rng.choice(len(ranges), size=n, p=widths / widths.sum())
    lo = np.array([a for a, _ in ranges])[which]
    return lo + rng.random(n) * widths[which]


@lru_cache(maxsize=4)
def line_list() -> LineList:
    """The fixed line list of the simulator (independent of the survey seed)."""
    rng = np.random.default_rng(LINE_LIST_SEED)
    rows = []  # (wave, log_tau, {species: weight}, theta, gamma, eta, kind, label)

    def atomic_sens(sp):
        if sp in ("TiII", "Ce"):
            return rng.uniform(-0.6, 0.2), -0.3
        if sp in ("K", "Na"):
            return rng.uniform(2.5, 3.5), rng.uniform(-0.1, 0.1)
        return rng.uniform(0.8, 2.5), rng.uniform(-0.15, 0.1)

    for sp, (waves, (tlo, thi)) in _STRONG.items():
        for w in waves:
            th, ga = atomic_sens(sp)
            rows.append((float(w), np.log10(rng.uniform(tlo, thi)), {sp: 1.0}, th, ga, 0.15, "atomic", sp))
    for sp, n in _WEAK_COUNT.items():
        for w in _uniform_in_chips(rng, n):
            th, ga = atomic_sens(sp)
            rows.append((float(w), rng.normal(np.log10(0.08), 0.35), {sp: 1.0}, th, ga, 0.05, "atomic", sp))
    # OH: O not locked in CO; strongly temperature sensitive
    for w in _uniform_in_chips(rng, 110):
        rows.append(
            (
                float(w),
                rng.normal(np.log10(0.15), 0.35),
                {"O": 1.25, "C": -0.25},
                rng.uniform(2.5, 4.0),
                0.15,
                0.0,
                "OH",
                "OH",
            )
        )
    # CN ∝ C·N/O (free carbon)
    for w in _uniform_in_chips(rng, 240):
        rows.append(
            (
                float(w),
                rng.normal(np.log10(0.06), 0.35),
                {"C": 1.0, "N": 1.0, "O": -0.5},
                rng.uniform(2.0, 3.0),
                -0.1,
                0.0,
                "CN",
                "CN",
            )
        )
    # CO second-overtone band heads: R-branch lines piling up at the head, fading redward
    for head in CO_BANDHEADS:
        base = np.log10(0.35)
        for k in range(1, 40):
            rows.append(
                (
                    head + 0.045 * k * k,
                    base - k / 40.0 + rng.normal(0, 0.05),
                    {"C": 1.0},
                    rng.uniform(1.5, 2.5),
                    0.2,
                    0.0,
                    "CO",
                    "CO",
                )
            )
    for w in _uniform_in_chips(rng, 60):  # weak CO lines elsewhere
        rows.append(
            (float(w), rng.normal(np.log10(0.05), 0.3), {"C": 1.0}, rng.uniform(1.5, 2.5), 0.2, 0.0, "CO", "CO")
        )
    rows.sort(key=lambda r: r[0])
    L = len(rows)
    weights = np.zeros((L, len(LINE_SPECIES)))
    for i, r in enumerate(rows):
        for sp, wgt in r[2].items():
            weights[i, _SP_INDEX[sp]] = wgt
    return LineList(
        wave=np.array([r[0] for r in rows]),
        log_tau=np.array([r[1] for r in rows]),
        weights=weights,
        theta=np.array([r[3] for r in rows]),
        gamma=np.array([r[4] for r in rows]),
        eta=np.array([r[5] for r in rows]),
        kind=np.array([r[6] for r in rows]),
        species=np.array([r[7] for r in rows]),
    )


@dataclass
class _ProfileGroup:
    lines: np.ndarray  # indices into the line list
    profile: np.ndarray  # (L_g, W) float32 pseudo-Voigt × taper, peak ≈ 1
    index: np.ndarray  # (L_g, W) pixel index of each profile sample
    valid: np.ndarray  # (L_g, W) bool, inside the grid


@lru_cache(maxsize=8)
def _profiles(resolution: float, macroturbulence: float, kinds: tuple):
    """Line profiles sampled on the pixel grid, per line, in two groups (wide atomic, narrow molecular)."""
    ll = line_list()
    sel_kind = np.isin(ll.kind, kinds)
    sigma_v = np.hypot(C_KMS / resolution / 2.3548, macroturbulence)
    sigma_px = sigma_v / KMS_PER_PIXEL
    pix = (np.log10(ll.wave) - np.log10(apogee_wavelength()[0])) / DLOGLAM
    groups = []
    strong = (ll.kind == "atomic") & (ll.eta > 0.1)
    for wide, half in ((True, 18), (False, 7)):
        idx_l = np.flatnonzero(sel_kind & (strong == wide))
        if not len(idx_l):
            continue
        centre = np.round(pix[idx_l]).astype(int)
        off = np.arange(-half, half + 1)
        index = centre[:, None] + off[None, :]
        x = index - pix[idx_l][:, None]
        g = np.exp(-0.5 * (x / sigma_px) ** 2)
        hw = 1.1774 * sigma_px
        lor = 1.0 / (1.0 + (x / hw) ** 2)
        eta = ll.eta[idx_l][:, None]
        prof = (1 - eta) * g + eta * lor
        # cosine taper over the outer 40 % of the window: no discontinuity at the window edge
        t = np.clip((np.abs(off) - 0.6 * half) / (0.4 * half + 1), 0, 1)
        prof = prof * (0.5 * (1 + np.cos(np.pi * t)))[None, :]
        valid = (index >= 0) & (index < N_PIXELS)
        groups.append(_ProfileGroup(idx_l, prof.astype(np.float32), np.clip(index, 0, N_PIXELS - 1), valid))
    return groups


@lru_cache(maxsize=8)
def _scatter_matrix(resolution: float, macroturbulence: float, kinds: tuple):
    """Sparse (P, Σ L_g·W) matrix summing per-line log-transmissions into pixels."""
    from scipy import sparse

    groups = _profiles(resolution, macroturbulence, kinds)
    cols, rows_, offset = [], [], 0
    for g in groups:
        n = g.index.size
        flat_valid = g.valid.ravel()
        rows_.append(g.index.ravel()[flat_valid])
        cols.append(offset + np.flatnonzero(flat_valid))
        offset += n
    if not rows_:
        return None
    r = np.concatenate(rows_)
    c = np.concatenate(cols)
    return sparse.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(N_PIXELS, offset))


# ====================================================================== instrument templates
@lru_cache(maxsize=2)
def _instrument():
    """Fixed templates: chip data mask, throughput shape, telluric and sky residual templates,
    the flat-field pattern basis (all on an extended pixel grid for RV shifts)."""
    rng = np.random.default_rng(LINE_LIST_SEED + 1)
    data = np.zeros(N_PIXELS, bool)
    for a, b in CHIP_RANGES:
        data[a:b] = True
    pix = np.arange(N_PIXELS)
    shape = np.ones(N_PIXELS)
    for a, b in CHIP_RANGES:
        x = (pix[a:b] - a) / (b - a)
        shape[a:b] = 1.0 + 0.9 * (np.exp(-x / 0.04) + np.exp(-(1 - x) / 0.04)) + 0.15 * (2 * x - 1) ** 2
    # telluric absorption (H2O/CO2; more at the band edges) and sky-emission (OH airglow) lines,
    # defined at observed wavelengths on an extended grid (pixels −PAD … P+PAD)
    pad = 400
    ext = np.arange(-pad, N_PIXELS + pad)
    wl_ext = 10.0 ** (np.log10(apogee_wavelength()[0]) + DLOGLAM * ext)
    n_tel = 90
    tel_w = np.concatenate(
        [
            rng.uniform(15100, 15400, n_tel // 3),
            rng.uniform(16600, 17000, n_tel // 3),
            rng.uniform(15400, 16600, n_tel - 2 * (n_tel // 3)),
        ]
    )
    tel_d = rng.lognormal(np.log(0.08), 0.8, n_tel).clip(0.01, 0.5)
    n_sky = 70
    sky_w = _uniform_in_chips(rng, n_sky)
    sky_a = rng.lognormal(np.log(1.0), 0.7, n_sky)
    sig = 1.6 * 0.22
    tel = np.zeros(len(ext))
    for w, d in zip(tel_w, tel_d):
        tel += d * np.exp(-0.5 * ((wl_ext - w) / sig) ** 2)
    sky = np.zeros(len(ext))
    for w, a in zip(sky_w, sky_a):
        sky += a * np.exp(-0.5 * ((wl_ext - w) / (1.2 * 0.22)) ** 2)
    # flat-field / fibre pattern basis per visit: Legendre P1..P3 per chip + 6 ripples
    basis = []
    for a, b in CHIP_RANGES:
        x = np.zeros(N_PIXELS)
        x[a:b] = np.linspace(-1, 1, b - a)
        for deg in (1, 2, 3):
            v = np.zeros(N_PIXELS)
            v[a:b] = np.polynomial.legendre.Legendre.basis(deg)(x[a:b])
            basis.append(v)
    for period in (37.0, 61.0, 97.0, 151.0, 233.0, 377.0):
        phase = rng.uniform(0, 2 * np.pi)
        basis.append(np.sin(2 * np.pi * pix / period + phase))
    basis = np.array(basis) * data[None, :]
    return {
        "data": data,
        "shape": shape,
        "pad": pad,
        "telluric": tel,
        "sky": sky,
        "basis": basis.astype(np.float64),
        "shape32": shape.astype(np.float32),
        "telluric32": tel.astype(np.float32),
        "sky32": sky.astype(np.float32),
        "basis32": basis.astype(np.float32),
    }


# ====================================================================== the survey
@dataclass
class SimulatedSurvey:
    """A generated survey: the pre-cut star table and an on-demand spectrum generator."""

    config: SimulationConfig
    seed: int
    n_field: int
    stars_all: pd.DataFrame
    bundle_rows: np.ndarray
    cutflow: list
    _visit_table: dict = field(repr=False, default_factory=dict)
    _star_visits: list = field(repr=False, default_factory=list)
    _plate_bc: np.ndarray = field(repr=False, default=None)
    _star_plate: np.ndarray = field(repr=False, default=None)
    _ism_v: np.ndarray = field(repr=False, default=None)
    _star_sys: dict = field(repr=False, default_factory=dict)

    # ---------------------------------------------------------------- tables
    def bundle_stars(self) -> pd.DataFrame:
        """The star table of the direct bundle (loader columns + ``true_*`` and extras)."""
        sel = self.stars_all.iloc[self.bundle_rows]
        cl = sel["CLUSTER"].to_numpy(dtype=object)
        cg = sel["CG_PROB"].to_numpy(float)
        member = (cl != "") & (cg > np.float32(MIN_CG_PROB))
        out = pd.DataFrame(
            {
                "apogee_id": sel["APOGEE_ID"].astype(str).to_numpy(),
                "cluster": np.where(member, cl, "").astype(object),
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
        out["cg_prob"] = np.where(member, cg, np.nan)
        for c in ("true_teff", "true_logg", "true_fe_h", "true_alpha_fe"):
            out[c] = sel[c].to_numpy(float)
        for el in SPECIES:
            out["true_" + abundance_column(el)] = sel["true_" + abundance_column(el)].to_numpy(float)
        for c in ("population", "evol", "true_cluster"):
            out[c] = sel[c].astype(str).to_numpy()
        out["age"] = sel["age"].to_numpy(float)
        out["mass"] = sel["mass"].to_numpy(float)
        out["plate"] = sel["plate"].to_numpy(np.int64)
        return out

    # ---------------------------------------------------------------- spectra
    def spectrum(self, i: int):
        """Flux and error (float32, 8575 each) of row ``i`` of ``stars_all``."""
        f, e = self.spectra([int(i)])
        return f[0], e[0]

    def spectra_for(self, rows):
        return self.spectra(rows)

    def spectra(self, rows, *, noiseless: bool = False):
        """Flux and error arrays (float32, (len(rows), 8575)) of rows of ``stars_all``.

        Each star's spectrum depends only on the star (its own random stream is seeded with
        ``(seed, row)``), so any chunking gives identical values. ``noiseless=True`` returns the
        spectrum before noise and bad pixels (for tests and teaching).
        """
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.stars_all)):
            raise ValueError(f"rows must be in 0..{len(self.stars_all) - 1}")
        out_f = np.empty((len(rows), N_PIXELS), np.float32)
        out_e = np.empty((len(rows), N_PIXELS), np.float32)
        step = 64
        for a in range(0, len(rows), step):
            f, e = self._spectra_chunk(rows[a : a + step], noiseless)
            out_f[a : a + step] = f
            out_e[a : a + step] = e
        return out_f, out_e

    def _spectra_chunk(self, rows, noiseless):
        """Spectra of a few rows. Only element-wise operations and per-star reductions whose order
        does not depend on the other rows of the chunk, so that values never depend on chunking."""
        from scipy.ndimage import uniform_filter1d

        cfg = self.config
        st = self._arrays
        B = len(rows)
        f32 = np.float32
        inst = _instrument()
        data = inst["data"]
        teff, logg, feh = st["teff"][rows], st["logg"][rows], st["feh"][rows]
        xh = st["xh"][rows]  # (B, n_species)

        kinds = self._kinds
        if kinds:
            ll = line_list()
            groups = _profiles(cfg.resolution, cfg.macroturbulence, kinds)
            S = _scatter_matrix(cfg.resolution, cfg.macroturbulence, kinds)
            dT = 5040.0 / teff - 5040.0 / 4600.0
            dg = logg - 2.5
            depth_max = np.clip(0.70 - 0.15 * (teff - 4500.0) / 1000.0, 0.5, 0.85).astype(f32)
            pieces = []
            for g in groups:
                li = g.lines
                # log10 optical depth (L_g, B)
                lt = np.repeat(ll.log_tau[li][:, None], B, axis=1)
                for j in range(len(LINE_SPECIES)):
                    w = ll.weights[li, j]
                    if np.any(w):
                        lt += w[:, None] * xh[None, :, j]
                lt -= 0.2 * feh[None, :]
                if cfg.line_teff_logg:
                    lt += ll.theta[li][:, None] * dT[None, :] + ll.gamma[li][:, None] * dg[None, :]
                tau = (10.0**lt).astype(f32)
                x = g.profile[:, :, None] * tau[:, None, :]  # (L_g, W, B)
                if cfg.saturation:
                    np.negative(x, out=x)
                    r = np.exp(x, out=x)
                    r -= 1
                    r *= -depth_max[None, None, :]
                else:
                    # depth proportional to optical depth, matched to the saturated depth of the
                    # reference star at line centre
                    t0 = 10.0 ** ll.log_tau[li]
                    scale = (-np.expm1(-t0) / t0).astype(f32)[:, None, None]
                    r = np.minimum(x * scale * depth_max[None, None, :], f32(0.97), out=x)
                np.negative(r, out=r)
                r += 1
                pieces.append(np.log(r, out=r).reshape(-1, B))
            M = np.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]
            logF = np.ascontiguousarray((S @ M).T)  # (B, P) float32
            if cfg.fibre_lsf:
                logF *= (1 + cfg.fibre_lsf_sigma * self._star_sys["lsf"][rows]).astype(f32)[:, None]
            F = np.exp(logF)
        else:
            F = np.ones((B, N_PIXELS), f32)

        if cfg.pseudo_continuum and kinds:
            # continuum placed low where lines are dense: ±60 px boxcar mean absorption, per chip
            for a, b in CHIP_RANGES:
                mean = uniform_filter1d(1.0 - F[:, a:b], size=121, axis=1, mode="nearest")
                F[:, a:b] /= 1.0 - f32(cfg.pseudo_continuum_strength) * mean

        if cfg.dibs:
            ak = np.clip(st["ak"][rows], 0, None)
            vrel = st["vhelio"][rows] - self._ism_v[rows]
            lw0 = np.log10(apogee_wavelength()[0])
            for lam, rel, sig in DIBS:
                centre = (np.log10(lam * (1.0 - vrel / C_KMS)) - lw0) / DLOGLAM
                sig_px = sig / (lam * np.log(10) * DLOGLAM)
                c0 = int(round((np.log10(lam) - lw0) / DLOGLAM))
                lo, hi = max(0, c0 - 200), min(N_PIXELS, c0 + 201)
                x = np.arange(lo, hi)[None, :] - centre[:, None]
                tau = (cfg.dib_depth_per_ak * rel * ak)[:, None] * np.exp(-0.5 * (x / sig_px) ** 2)
                F[:, lo:hi] *= np.exp(-tau).astype(f32)

        if cfg.rv_systematics:
            ss = self._star_sys
            v = st["vhelio"][rows]
            bc = self._plate_bc[self._star_plate[rows]]
            # a feature at observed wavelength λ_t appears at λ_t/(1 + (v − bc)/c) in the rest frame
            shift = np.log10(1.0 + (v - bc) / C_KMS) / DLOGLAM
            fl = np.floor(shift)
            frac = (shift - fl).astype(f32)
            start = (fl.astype(np.int64) + inst["pad"]).clip(0, len(inst["telluric32"]) - N_PIXELS - 1)
            eps_t = (ss["tel"][rows] * cfg.rv_strength).astype(f32)
            eps_s = (ss["sky"][rows] * cfg.rv_strength / (st["snr"][rows] / 100.0)).astype(f32)
            T, Sk = inst["telluric32"], inst["sky32"]
            for k in range(B):
                o, fr = start[k], frac[k]
                tel = T[o : o + N_PIXELS] * (1 - fr) + T[o + 1 : o + 1 + N_PIXELS] * fr
                sky = Sk[o : o + N_PIXELS] * (1 - fr) + Sk[o + 1 : o + 1 + N_PIXELS] * fr
                F[k] *= 1 + eps_t[k] * tel
                F[k] += eps_s[k] * sky
            # rest-frame shift error ∝ VHELIO_AVG (template mismatch): F(λ) → F(λ(1 − δv/c))
            dpix = (0.004 * cfg.rv_strength * v / KMS_PER_PIXEL).astype(f32)[:, None]
            F -= dpix * np.gradient(F, axis=1)

        if cfg.plate_systematics and cfg.plate_strength:
            coef = (self._star_sys["pattern"][rows] * cfg.plate_strength).astype(f32)
            basis = inst["basis32"]
            for k in range(B):  # one product per star: independent of the chunk
                F[k] *= 1 + coef[k] @ basis

        F[:, ~data] = 0
        snr = st["snr"][rows].astype(f32)[:, None]
        err = np.clip(F, f32(0.02), None)
        err *= (inst["shape32"][None, :] / snr) ** 2
        err += f32(cfg.error_floor) ** 2
        np.sqrt(err, out=err)
        if not noiseless and (cfg.noise or cfg.bad_pixels):
            n_data = int(data.sum())
            data_idx = np.flatnonzero(data)
            for k, r in enumerate(rows):
                rng = np.random.default_rng([self.seed, 7919, int(r)])
                z = rng.standard_normal(N_PIXELS, dtype=f32)
                if cfg.noise:
                    F[k] += err[k] * z
                if cfg.bad_pixels:
                    bad = data_idx[rng.integers(0, n_data, rng.binomial(n_data, cfg.bad_pixel_fraction))]
                    for _ in range(rng.poisson(1.0)):  # bad columns / persistence streaks
                        s0 = int(rng.integers(0, N_PIXELS - 20))
                        bad = np.concatenate([bad, np.arange(s0, s0 + int(rng.integers(3, 20)))])
                    bad = bad[data[bad]]
                    F[k, bad] += rng.uniform(-0.3, 0.8, len(bad)).astype(f32)
                    err[k, bad] = BAD_PIXEL_ERROR
            F[:, ~data] = 0
        err[:, ~data] = BAD_PIXEL_ERROR
        return F, err

    @property
    def _kinds(self):
        cfg = self.config
        return tuple(
            k
            for k, on in (
                ("atomic", cfg.atomic_lines),
                ("OH", cfg.molecular_lines),
                ("CN", cfg.molecular_lines),
                ("CO", cfg.molecular_lines),
            )
            if on
        )

    @property
    def _arrays(self):
        if not hasattr(self, "_arr_cache"):
            t = self.stars_all
            self._arr_cache = {
                "teff": t["true_teff"].to_numpy(float),
                "logg": t["true_logg"].to_numpy(float),
                "feh": t["true_fe_h"].to_numpy(float),
                "xh": np.stack([t["true_" + abundance_column(s)].to_numpy(float) for s in LINE_SPECIES], 1),
                "ak": t["AK_TARG"].to_numpy(float),
                "vhelio": t["VHELIO_AVG"].to_numpy(float),
                "snr": t["SNR"].to_numpy(float),
            }
        return self._arr_cache


# ====================================================================== generation
def _f32(x):
    """Round to float32 precision (as stored in the FITS files), keep float64 dtype."""
    return np.asarray(x, np.float32).astype(np.float64)


def _apogee_ids(rng, ra, dec):
    """2MASS-style identifiers 2MHHMMSSss±DDMMSSs from positions; unique (colliding ones moved)."""
    ra = np.asarray(ra, float).copy()
    dec = np.asarray(dec, float)
    ids = np.empty(len(ra), dtype=object)
    todo = np.arange(len(ra))
    taken = set()
    while len(todo):
        h = ra[todo] / 15.0
        hs = np.floor(h * 360000 + 1e-6).astype(np.int64)  # hundredths of a second of time
        ad = np.abs(dec[todo])
        ds = np.floor(ad * 36000 + 1e-6).astype(np.int64)  # tenths of an arcsecond
        sign = np.where(dec[todo] >= 0, "+", "-")
        cand = [
            f"2M{a // 360000:02d}{a // 6000 % 60:02d}{a % 6000:04d}{s}{d // 36000:02d}{d // 600 % 60:02d}{d % 600:03d}"
            for a, d, s in zip(hs.tolist(), ds.tolist(), sign)
        ]
        again = []
        for k, s in zip(todo, cand):
            if s in taken or s == ANOMALOUS_STAR:
                again.append(k)
            else:
                taken.add(s)
                ids[k] = s
        todo = np.array(again, dtype=np.int64)
        if len(todo):
            ra[todo] = (ra[todo] + rng.uniform(1e-4, 1e-3, len(todo))) % 360.0
    return list(ids)


def _passes(tab_teff, tab_logg, xh_obs, flag):
    """The per-star cuts of the paper (SPEC §4) on observed labels."""
    ok = (tab_teff > TEFF_RANGE[0]) & (tab_teff < TEFF_RANGE[1])
    ok &= (tab_logg > LOGG_RANGE[0]) & (tab_logg < LOGG_RANGE[1])
    for sp in SPECIES:
        v = xh_obs[sp]
        ok &= np.isfinite(v) & ~np.isclose(v, MISSING_VALUE, atol=1e-3)
    ok &= ((flag >> STAR_BAD_BIT) & 1) == 0
    return ok


class _Builder:
    """Draws the star table of a survey (all stars, passing or failing the cuts)."""

    def __init__(self, config: SimulationConfig, n_field: int, seed: int):
        self.cfg = config
        self.n_field = int(n_field)
        self.seed = int(seed)
        ss = np.random.SeedSequence([self.seed, 314159])
        names = ("field", "cluster", "labels", "obs", "ids", "sys")
        self.rng = {n: np.random.default_rng(s) for n, s in zip(names, ss.spawn(len(names)))}
        self.blocks = []

    # -------------------------------------------------------------- populations
    def field_candidates(self, n):
        """Field giants (thin, thick, halo) and dwarfs, with true parameters and chemistry."""
        rng, cfg = self.rng["field"], self.cfg
        thick = cfg.thick_fraction if cfg.two_alpha_sequences else 0.0
        thick = min(thick, 0.9)
        p = np.array([0.91 - thick, thick, 0.02, 0.07])  # thin, thick, halo, dwarfs
        pop = rng.choice(np.array(["thin", "thick", "halo", "dwarf"]), size=n, p=p)
        feh = np.empty(n)
        age = np.empty(n)
        m = {k: pop == k for k in ("thin", "thick", "halo", "dwarf")}
        for k, (mu, sd, lo, hi) in {
            "thin": (-0.05, 0.22, -1.0, 0.5),
            "thick": (-0.45, 0.22, -1.3, 0.3),
            "halo": (-1.3, 0.4, -2.3, -0.6),
            "dwarf": (-0.05, 0.22, -1.0, 0.5),
        }.items():
            feh[m[k]] = np.clip(rng.normal(mu, sd, m[k].sum()), lo, hi)
        age[m["thin"]] = np.clip(rng.gamma(3.0, 1.6, m["thin"].sum()), 0.4, 11.0)
        age[m["dwarf"]] = rng.uniform(1, 11, m["dwarf"].sum())
        age[m["thick"]] = np.clip(rng.normal(10.5, 1.2, m["thick"].sum()), 7.5, 13.0)
        age[m["halo"]] = rng.uniform(11, 13, m["halo"].sum())
        alpha = self.alpha_of(
            rng, feh, age, np.where(m["thin"] | m["dwarf"], "low", np.where(m["thick"], "high", "halo"))
        )
        mass = _mass_from_age(age, feh)
        logg, teff, is_rc = _draw_giants(rng, n, feh, mass, (0.9, 3.7), 0.28, spread=True, isochrones=cfg.isochrones)
        nd = m["dwarf"].sum()
        logg[m["dwarf"]] = rng.uniform(3.9, 4.7, nd)
        teff[m["dwarf"]] = rng.uniform(4000, 5600, nd)
        is_rc[m["dwarf"]] = False
        chem = _elements_from_latent(feh, alpha, age, mass, _scatter(rng, n, cfg.element_scatter), cfg.dredge_up)
        evol = np.where(m["dwarf"], "dwarf", np.where(is_rc, "rc", "rgb"))
        return dict(
            population=pop,
            feh=feh,
            alpha=alpha,
            age=age,
            mass=mass,
            logg=logg,
            teff=teff,
            evol=evol,
            chem=chem,
            true_cluster=np.full(n, "none", dtype=object),
        )

    def alpha_of(self, rng, feh, age, seq):
        """Two-sequence [α/Fe]: low-α thin disc, high-α thick disc (merging at [Fe/H] ≈ +0.1)."""
        low = 0.02 - 0.08 * feh + 0.010 * (age - 5.0)
        high = np.maximum(0.22 - 0.15 * (feh + 0.5), low + 0.02)
        halo = np.full_like(feh, 0.30)
        if not self.cfg.two_alpha_sequences:
            high = low
        base = np.where(seq == "low", low, np.where(seq == "high", high, halo))
        return base + rng.normal(0, 0.025, len(feh))

    def cluster_members(self, rng, cl, n):
        """n candidate members of cluster ``cl`` (dict with age, feh, alpha, offsets)."""
        cfg = self.cfg
        feh = np.full(n, cl["feh"])
        mass = np.full(n, cl["mass"])
        if cfg.cluster_isochrone_spread:
            logg, teff, is_rc = _draw_giants(
                rng, n, feh, mass, (1.2, 3.5), 0.35, spread=False, isochrones=cfg.isochrones
            )
        else:
            logg = np.full(n, cl["logg0"]) + rng.normal(0, 0.03, n)
            teff = _isochrone_teff(logg, feh, mass, np.zeros(n, bool)) + rng.normal(0, 10, n)
            is_rc = np.zeros(n, bool)
        scat = {el: np.full(n, cl["offset"][el]) + rng.normal(0, cfg.cluster_spread, n) for el in ALLSTAR_ELEMENTS}
        chem = _elements_from_latent(feh, np.full(n, cl["alpha"]), np.full(n, cl["age"]), mass, scat, cfg.dredge_up)
        return dict(
            population=np.full(n, "cluster", dtype=object),
            feh=feh,
            alpha=np.full(n, cl["alpha"]),
            age=np.full(n, cl["age"]),
            mass=mass,
            logg=logg,
            teff=teff,
            evol=np.where(is_rc, "rc", "rgb"),
            chem=chem,
            true_cluster=np.full(n, cl["name"], dtype=object),
        )

    # -------------------------------------------------------------- observed labels
    def observe(self, s, snr):
        """ASPCAP-like observed labels and flags for a block of stars (dict)."""
        rng, cfg = self.rng["labels"], self.cfg
        n = len(s["teff"])
        f = _snr_factor(snr)
        teff, logg = s["teff"], s["logg"]
        obs_teff = teff.copy()
        obs_logg = logg.copy()
        if cfg.label_biases:
            obs_teff += label_bias("teff", teff, logg)
            obs_logg += label_bias("logg", teff, logg)
        if cfg.label_noise:
            obs_teff += rng.normal(0, TEFF_PRECISION, n) * f
            obs_logg += rng.normal(0, LOGG_PRECISION, n) * f
        xh = {}
        for el in ALLSTAR_ELEMENTS:
            if el in UNREPORTED:
                xh[el] = np.full(n, MISSING_VALUE)
                continue
            v = s["chem"][el].copy()
            if cfg.label_biases:
                v += label_bias(el, teff, logg)
            z = rng.normal(0, 1, n)
            if cfg.label_noise:
                v += z * LABEL_PRECISION[el] * f
            if cfg.label_failures:
                p = FAILURE_RATE[el] * np.exp((teff - 4600.0) / 500.0) * np.exp(-1.5 * np.clip(s["feh"], -2, 0.5))
                if el == "P":
                    p = np.full(n, FAILURE_RATE["P"])
                v = np.where(rng.random(n) < np.clip(p, 0, 0.9), MISSING_VALUE, v)
            xh[el] = v
        m_h = s["feh"] + (label_bias("Fe", teff, logg) if cfg.label_biases else 0.0)
        if cfg.label_noise:
            m_h = m_h + rng.normal(0, 0.01, n) * f
        flag = np.zeros(n, np.int64)
        for bit, p in ((0, 0.02), (1, 0.01), (3, 0.03), (4, 0.01), (8, 0.02), (16, 0.01), (17, 0.02)):
            flag |= (rng.random(n) < p).astype(np.int64) << bit  # harmless warning bits
        if cfg.label_failures:
            p_bad = 0.008 + 0.35 * (snr < 40) + 0.3 * (s["logg"] > 3.8) * (s["teff"] > 5300)
            flag |= (rng.random(n) < p_bad).astype(np.int64) << STAR_BAD_BIT
        return dict(
            teff=_f32(obs_teff), logg=_f32(obs_logg), xh={k: _f32(v) for k, v in xh.items()}, m_h=_f32(m_h), flag=flag
        )

    def snr(self, n, cluster=False):
        med = self.cfg.snr_cluster_median if cluster else self.cfg.snr_field_median
        sig = self.cfg.snr_sigma_ln + (0.02 if cluster else 0.0)
        return _f32(np.clip(self.rng["obs"].lognormal(np.log(med), sig, n), 8.0, 2000.0))


def generate_survey(
    config: SimulationConfig | None = None, n_field: int = DEFAULT_N_FIELD, seed: int = 0, progress: bool = False
) -> SimulatedSurvey:
    """Draw a survey's star table (all stars, passing or failing the paper's cuts).

    ``n_field`` is the number of *field* stars of the final bundle (after the cuts); the clusters
    follow ``config.cluster_sizes``. Spectra are produced on demand by ``survey.spectra(rows)``.
    """
    cfg = config or SimulationConfig()
    if isinstance(n_field, bool) or int(n_field) != n_field or int(n_field) < 1:
        raise ValueError(f"n_field must be a positive integer, got {n_field!r}")
    n_field = int(n_field)
    seed = int(seed)
    b = _Builder(cfg, n_field, seed)
    rng_c, rng_o, rng_s = b.rng["cluster"], b.rng["obs"], b.rng["sys"]

    # ------------------------------------------------------------ clusters
    names = list(CLUSTER_NAMES[: len(cfg.cluster_sizes) + cfg.singleton_clusters])
    targets = list(cfg.cluster_sizes) + [1] * cfg.singleton_clusters
    clusters = []
    for name in names:
        age = float(np.clip(rng_c.lognormal(np.log(2.0), 0.7), 0.4, 8.0))
        feh = float(np.clip(rng_c.normal(-0.05, 0.2), -0.6, 0.4))
        seq = np.array(["low"])
        alpha = float(b.alpha_of(rng_c, np.array([feh]), np.array([age]), seq)[0])
        cl = dict(
            name=name,
            age=age,
            feh=feh,
            alpha=alpha,
            mass=float(_mass_from_age(age, feh)),
            offset={el: float(v[0]) for el, v in _scatter(rng_c, 1, cfg.element_scatter).items()},
            logg0=float(rng_c.uniform(2.0, 2.7)),
            vhelio=float(rng_c.normal(0, 35)),
            ak=float(np.clip(rng_c.lognormal(np.log(0.12), 0.8), 0.005, 0.9)),
            telescope="lco25m" if rng_c.random() < 0.2 else "apo25m",
        )
        clusters.append(cl)

    blocks = []  # each: dict of per-star arrays for the table

    def add_block(s, obs, snr, extra):
        d = dict(s)
        d.update(obs=obs, snr=snr)
        d.update(extra)
        blocks.append(d)

    # members: draw until exactly `target` pass the cuts; failing draws are kept (natural share)
    for j, cl in enumerate(clusters):
        target = targets[j]
        got = 0
        while got < target:
            n = max(4, int(1.6 * (target - got)) + 1)
            s = b.cluster_members(rng_c, cl, n)
            snr = b.snr(n, cluster=True)
            obs = b.observe(s, snr)
            ok = _passes(obs["teff"], obs["logg"], obs["xh"], obs["flag"])
            cum = np.cumsum(ok)
            # keep draws up to the one that completes the target
            if cum[-1] >= target - got:
                last = int(np.searchsorted(cum, target - got)) + 1
            else:
                last = n
            keep = np.arange(last)
            s = _take(s, keep)
            obs = _take_obs(obs, keep)
            got += int(ok[:last].sum())
            cg = _f32(rng_c.uniform(0.81, 1.0, last))
            add_block(s, obs, snr[keep], dict(kind="member", cluster_idx=np.full(last, j), cg_prob=cg, ok=ok[:last]))
        # OCCAM candidates with low membership probability (half true siblings, half field stars)
        n_low = rng_c.poisson(cfg.low_prob_candidates * max(target, 2))
        if n_low:
            true_sib = rng_c.random(n_low) < 0.5
            s_sib = b.cluster_members(rng_c, cl, n_low)
            s_fld = b.field_candidates(n_low)
            s = {
                k: np.where(true_sib if np.ndim(v) == 1 else true_sib[:, None], s_sib[k], s_fld[k])
                if k != "chem"
                else {el: np.where(true_sib, s_sib["chem"][el], s_fld["chem"][el]) for el in ALLSTAR_ELEMENTS}
                for k, v in s_sib.items()
            }
            snr = b.snr(n_low)
            obs = b.observe(s, snr)
            ok = _passes(obs["teff"], obs["logg"], obs["xh"], obs["flag"])
            cg = _f32(rng_c.uniform(0.05, 0.78, n_low))
            add_block(s, obs, snr, dict(kind="lowprob", cluster_idx=np.full(n_low, j), cg_prob=cg, ok=ok))

    n_lowprob_pass = sum(int(bl["ok"].sum()) for bl in blocks if bl["kind"] == "lowprob")
    quota = n_field - n_lowprob_pass
    if quota < 0:
        raise ValueError(
            f"n_field={n_field} is smaller than the {n_lowprob_pass} low-probability OCCAM "
            "candidates that end up in the field; ask for more field stars"
        )
    # ------------------------------------------------------------ field
    n_fail_target = int(round(cfg.failing_field_fraction * quota))
    got_pass, got_fail = 0, 0
    while got_pass < quota or got_fail < n_fail_target:
        need = max(quota - got_pass, 1)
        n = int(need * 1.5) + 64
        s = b.field_candidates(n)
        snr = b.snr(n)
        obs = b.observe(s, snr)
        ok = _passes(obs["teff"], obs["logg"], obs["xh"], obs["flag"])
        take_pass = np.flatnonzero(ok)[: max(0, quota - got_pass)]
        take_fail = np.flatnonzero(~ok)[: max(0, n_fail_target - got_fail)]
        keep = np.sort(np.concatenate([take_pass, take_fail]))
        if not len(keep):
            continue
        got_pass += len(take_pass)
        got_fail += len(take_fail)
        add_block(
            _take(s, keep),
            _take_obs(obs, keep),
            snr[keep],
            dict(kind="field", cluster_idx=np.full(len(keep), -1), cg_prob=np.full(len(keep), np.nan), ok=ok[keep]),
        )

    # ------------------------------------------------------------ assemble
    cat = _concat_blocks(blocks)
    n = len(cat["teff"])
    kind = cat["kind"]
    cidx = cat["cluster_idx"]

    # ------------------------------------------------------------ fields, plates, visits, AK, RV
    is_field = kind == "field"
    n_sky_fields = max(1, int(np.ceil(is_field.sum() / 260)))
    fld_l = rng_o.uniform(0, 360, n_sky_fields)
    fld_b = np.where(
        rng_o.random(n_sky_fields) < 0.35, rng_o.uniform(-60, 60, n_sky_fields), rng_o.normal(0, 4, n_sky_fields)
    )
    fld_names = []
    used = set()
    for gl, bb in zip(fld_l, fld_b):
        nm = f"{int(gl):03d}{int(round(bb)):+03d}"
        k = 1
        base = nm
        while nm in used:
            nm = f"{base}-{k}"
            k += 1
        used.add(nm)
        fld_names.append(nm)
    high_lat = np.abs(fld_b) > 12
    fld_ak = np.where(
        high_lat,
        rng_o.uniform(0.0, 0.03, n_sky_fields),
        np.clip(rng_o.lognormal(np.log(0.15), 0.9, n_sky_fields), 0.005, 3.0),
    )
    fld_v = rng_o.normal(0, 40, n_sky_fields)
    fld_vism = rng_o.normal(0, 12, n_sky_fields)
    fld_tel = np.where(rng_o.random(n_sky_fields) < 0.2, "lco25m", "apo25m")
    fld_ra = rng_o.uniform(0, 360, n_sky_fields)
    fld_dec = np.where(fld_tel == "lco25m", rng_o.uniform(-80, -5, n_sky_fields), rng_o.uniform(-10, 80, n_sky_fields))

    # plates: each sky field 1-2 plates; each cluster field 1-3 plates; visits per plate 1-6 MJDs
    plates = []  # dict(id, telescope, mjds, bc, vis (global visit indices), visits (string))
    next_plate = [4000 + int(rng_o.integers(0, 2000))]
    n_visits = [0]

    def new_plate(tel):
        pid = next_plate[0]
        next_plate[0] += int(rng_o.integers(1, 40))
        n_vis = 1 + min(5, rng_o.poisson(2.0))
        mjd0 = int(rng_o.integers(55800, 58700))
        mjds = [int(m) for m in sorted(set(mjd0 + np.cumsum(rng_o.integers(1, 30, n_vis)) - 1))]
        vis = list(range(n_visits[0], n_visits[0] + len(mjds)))
        n_visits[0] += len(mjds)
        plates.append(
            dict(
                id=pid,
                telescope=tel,
                mjds=mjds,
                bc=float(rng_o.uniform(-28, 28)),
                vis=vis,
                visits=",".join(f"{tel}-{pid}-{m}" for m in mjds),
            )
        )
        return len(plates) - 1

    fld_plates = np.full((n_sky_fields, 2), -1)
    fld_nplates = np.empty(n_sky_fields, np.int64)
    for f in range(n_sky_fields):
        k = 1 + int(rng_o.random() < 0.4)
        fld_nplates[f] = k
        fld_plates[f, :k] = [new_plate(fld_tel[f]) for _ in range(k)]
    cl_field = np.array(
        [("N" + c["name"][4:] if c["name"].startswith("NGC_") else c["name"].replace("_", "")) for c in clusters],
        dtype=object,
    )
    cl_plates = np.full((len(clusters), 3), -1)
    cl_nplates = np.empty(len(clusters), np.int64)
    for j, c in enumerate(clusters):
        k = 1 + min(2, int(rng_o.poisson(0.8)))
        cl_nplates[j] = k
        cl_plates[j, :k] = [new_plate(c["telescope"]) for _ in range(k)]
    cl_tel = np.array([c["telescope"] for c in clusters], dtype=object)
    cl_ak = np.array([c["ak"] for c in clusters])
    cl_v = np.array([c["vhelio"] for c in clusters])
    cl_ra = (37.0 * np.arange(len(clusters))) % 360
    cl_dec = ((23.0 * np.arange(len(clusters))) % 120) - 40

    star_field = np.empty(n, dtype=object)
    star_tel = np.empty(n, dtype=object)
    star_plate = np.empty(n, np.int64)
    star_ak = np.empty(n)
    star_v = np.empty(n)
    star_vism = np.zeros(n)
    ra = np.empty(n)
    dec = np.empty(n)
    # field stars: most in sky fields, some on the plates of cluster fields
    fi = np.flatnonzero(is_field)
    nf = len(fi)
    in_cl = rng_o.random(nf) < min(0.3, 60.0 * len(clusters) / max(1, nf))
    sky_f = rng_o.integers(0, n_sky_fields, nf)
    cj = rng_o.integers(0, len(clusters), nf)
    u_pl = rng_o.random(nf)
    g = rng_o.standard_normal((5, nf))
    vs = (
        pd.Series(cat["population"][fi])
        .map({"thin": 30.0, "thick": 55.0, "halo": 120.0, "dwarf": 25.0})
        .fillna(30.0)
        .to_numpy()
    )
    star_field[fi] = np.where(in_cl, cl_field[cj], np.asarray(fld_names, dtype=object)[sky_f])
    star_tel[fi] = np.where(in_cl, cl_tel[cj], fld_tel[sky_f].astype(object))
    pl_cl = cl_plates[cj, (u_pl * cl_nplates[cj]).astype(int)]
    pl_sky = fld_plates[sky_f, (u_pl * fld_nplates[sky_f]).astype(int)]
    star_plate[fi] = np.where(in_cl, pl_cl, pl_sky)
    star_ak[fi] = np.where(in_cl, cl_ak[cj] * np.exp(0.5 * g[0]), fld_ak[sky_f] * np.exp(0.35 * g[0]) + 0.008 * g[1])
    star_v[fi] = np.where(in_cl, cl_v[cj] * 0.3, fld_v[sky_f]) + vs * g[2]
    star_vism[fi] = np.where(in_cl, 0.0, fld_vism[sky_f])
    ra[fi] = np.where(in_cl, cl_ra[cj] + 0.5 * g[3], fld_ra[sky_f] + 0.6 * g[3])
    dec[fi] = np.where(in_cl, cl_dec[cj] + 0.5 * g[4], fld_dec[sky_f] + 0.6 * g[4])
    for i in np.flatnonzero(~is_field):
        j = int(cidx[i])
        c = clusters[j]
        star_field[i] = cl_field[j]
        star_tel[i] = c["telescope"]
        # members mostly on the cluster's main plate
        k = cl_nplates[j]
        star_plate[i] = cl_plates[j, 0] if (rng_o.random() < 0.7 or k == 1) else cl_plates[j, int(rng_o.integers(1, k))]
        if kind[i] == "member" or cat["true_cluster"][i] != "none":
            star_ak[i] = c["ak"] + rng_o.normal(0, 0.025)
            star_v[i] = c["vhelio"] + rng_o.normal(0, 0.8)
        else:
            star_ak[i] = c["ak"] * np.exp(rng_o.normal(0, 0.6))
            star_v[i] = rng_o.normal(c["vhelio"], 25.0)
        ra[i], dec[i] = cl_ra[j] + rng_o.normal(0, 0.15), cl_dec[j] + rng_o.normal(0, 0.15)
    star_ak = np.clip(star_ak, 0.0, None)
    ra %= 360.0
    dec = np.clip(dec, -89.9, 89.9)

    # visits of each star: all MJDs of its plate (85 %) or a random non-empty subset
    n_mjd = np.array([len(plates[p]["mjds"]) for p in star_plate])
    partial = (n_mjd > 1) & (rng_o.random(n) < 0.15)
    star_visits = [plates[p]["vis"] for p in star_plate]
    visit_strings = np.array([plates[p]["visits"] for p in star_plate], dtype=object)
    for i in np.flatnonzero(partial):
        p = plates[star_plate[i]]
        k = int(rng_o.integers(1, len(p["mjds"])))
        pick = np.sort(rng_o.choice(len(p["mjds"]), size=k, replace=False))
        star_visits[i] = [p["vis"][q] for q in pick]
        visit_strings[i] = ",".join(f"{p['telescope']}-{p['id']}-{p['mjds'][q]}" for q in pick)

    # systematics amplitudes: per visit (shared; a star carries the mean over its visits) or per star
    from scipy import sparse

    n_vis = n_visits[0]
    nv = np.array([len(v) for v in star_visits])
    W = sparse.csr_matrix(
        (
            np.repeat(1.0 / nv, nv),
            (np.repeat(np.arange(n), nv), np.fromiter((q for v in star_visits for q in v), np.int64, int(nv.sum()))),
        ),
        shape=(n, n_vis),
    )
    n_basis = _instrument()["basis"].shape[0]
    v_tel = rng_s.normal(0.0, 0.10, n_vis)
    v_sky = rng_s.normal(0.0, 0.004, n_vis)
    v_pat = rng_s.normal(0.0, 0.0025, (n_vis, n_basis)) * np.r_[np.ones(9), np.full(n_basis - 9, 0.4)]
    lsf = rng_s.standard_normal(n)  # fibre line-spread variation (standard units)
    if cfg.plate_systematics:
        s_tel, s_sky, s_pat = W @ v_tel, W @ v_sky, W @ v_pat
    else:
        # same marginal size, independent per star (mean of as many independent draws)
        s_tel = rng_s.normal(0.0, 0.10, n) / np.sqrt(nv)
        s_sky = rng_s.normal(0.0, 0.004, n) / np.sqrt(nv)
        s_pat = np.zeros((n, n_basis))
    visit_table = {(int(p_i), m): v for p_i, p in enumerate(plates) for m, v in zip(p["mjds"], p["vis"])}

    ids = _apogee_ids(b.rng["ids"], ra, dec)

    # ------------------------------------------------------------ the DR16-like table
    obs = cat["obs"]
    cl_name = np.array([clusters[j]["name"] if j >= 0 else "" for j in cidx], dtype=object)
    cand = cidx >= 0
    tab = {
        "APOGEE_ID": np.array(ids, dtype=object),
        "TELESCOPE": star_tel,
        "FIELD": star_field,
        "TEFF": obs["teff"],
        "LOGG": obs["logg"],
        "M_H": obs["m_h"],
    }
    for el in ALLSTAR_ELEMENTS:
        tab[f"X_H_{el.upper()}"] = obs["xh"][el]
    tab.update(
        {
            "ASPCAPFLAG": obs["flag"],
            "AK_TARG": _f32(star_ak),
            "VHELIO_AVG": _f32(star_v),
            "SNR": cat["snr"],
            "VISITS": visit_strings,
            "CLUSTER": cl_name,
            "CG_PROB": np.where(cand, cat["cg_prob"], np.nan),
        }
    )
    for c in ("RV_PROB", "FEH_PROB", "PM_PROB"):
        tab[c] = np.where(cand, _f32(rng_o.uniform(0.5, 1.0, n)), np.nan)
    tab.update(
        {"true_teff": cat["teff"], "true_logg": cat["logg"], "true_fe_h": cat["feh"], "true_alpha_fe": cat["alpha"]}
    )
    for el in SPECIES:
        tab["true_" + abundance_column(el)] = cat["chem"][el]
    tab.update(
        {
            "population": cat["population"],
            "evol": cat["evol"],
            "age": cat["age"],
            "mass": cat["mass"],
            "true_cluster": cat["true_cluster"],
            "plate": np.array([plates[p]["id"] for p in star_plate], np.int64),
            "plate_bc": np.array([plates[p]["bc"] for p in star_plate]),
            "v_ism": star_vism,
            "passes_cuts": cat["ok"],
        }
    )
    stars_all = pd.DataFrame(tab)

    # ------------------------------------------------------------ the cuts (as the DR16 loader)
    bundle_rows, cutflow = _apply_cuts(stars_all)
    in_bundle = np.zeros(n, bool)
    in_bundle[bundle_rows] = True
    stars_all["in_bundle"] = in_bundle
    n_field_bundle = int(
        (
            stars_all["CLUSTER"].iloc[bundle_rows].eq("")
            | ~(stars_all["CG_PROB"].iloc[bundle_rows] > np.float32(MIN_CG_PROB))
        ).sum()
    )
    if n_field_bundle != n_field:  # pragma: no cover - internal consistency
        raise RuntimeError(f"simulator bug: {n_field_bundle} field stars pass the cuts, expected {n_field}")

    survey = SimulatedSurvey(
        config=cfg, seed=seed, n_field=n_field, stars_all=stars_all, bundle_rows=bundle_rows, cutflow=cutflow
    )
    survey._visit_table = visit_table
    survey._star_visits = star_visits
    survey._plate_bc = np.array([p["bc"] for p in plates])
    survey._star_plate = star_plate
    survey._ism_v = star_vism
    survey._star_sys = {"tel": s_tel, "sky": s_sky, "pattern": s_pat, "lsf": lsf}
    return survey


def _take(s, keep):
    out = {}
    for k, v in s.items():
        out[k] = {el: a[keep] for el, a in v.items()} if k == "chem" else np.asarray(v)[keep]
    return out


def _take_obs(obs, keep):
    return {k: ({el: a[keep] for el, a in v.items()} if k == "xh" else v[keep]) for k, v in obs.items()}


def _concat_blocks(blocks):
    out = {}
    for key in blocks[0]:
        if key == "chem":
            out[key] = {el: np.concatenate([bl[key][el] for bl in blocks]) for el in ALLSTAR_ELEMENTS}
        elif key == "obs":
            ob = {}
            for k in blocks[0]["obs"]:
                if k == "xh":
                    ob[k] = {el: np.concatenate([bl["obs"]["xh"][el] for bl in blocks]) for el in ALLSTAR_ELEMENTS}
                else:
                    ob[k] = np.concatenate([bl["obs"][k] for bl in blocks])
            out[key] = ob
        elif key == "kind":
            out[key] = np.concatenate([np.full(len(bl["teff"]), bl["kind"], dtype=object) for bl in blocks])
        else:
            out[key] = np.concatenate([np.asarray(bl[key]) for bl in blocks])
    return out


def _apply_cuts(stars_all: pd.DataFrame):
    """The paper's cuts (SPEC §4) as the DR16 loader applies them: returns (bundle rows, cut-flow).

    Bundle order: field stars, then cluster stars, each in ``stars_all`` order.
    """
    t = stars_all
    n = len(t)
    cl = t["CLUSTER"].to_numpy(dtype=object)
    cg = t["CG_PROB"].to_numpy(float)
    cand = cl != ""
    member = cand & (np.asarray(cg, np.float32) > np.float32(MIN_CG_PROB))
    cluster_of = np.where(member, cl, "")
    rows = []

    def record(step, keep):
        m = keep & member
        rows.append(
            {
                "step": step,
                "field": int((keep & ~member).sum()),
                "cluster_stars": int(m.sum()),
                "clusters": int(len(set(cluster_of[m]))),
            }
        )

    rows.append(
        {
            "step": "input: allStar rows / OCCAM candidates in allStar (0 OCCAM rows not in allStar)",
            "field": n,
            "cluster_stars": int(cand.sum()),
            "clusters": int(len(set(cl[cand]))),
        }
    )
    keep = np.ones(n, bool)
    record(f"CG_PROB > {MIN_CG_PROB:g} members, removed from the field", keep)
    teff = t["TEFF"].to_numpy(float)
    keep &= (teff > TEFF_RANGE[0]) & (teff < TEFF_RANGE[1])
    record(f"{TEFF_RANGE[0]:g} < TEFF < {TEFF_RANGE[1]:g}", keep)
    logg = t["LOGG"].to_numpy(float)
    keep &= (logg > LOGG_RANGE[0]) & (logg < LOGG_RANGE[1])
    record(f"{LOGG_RANGE[0]:.1f} < LOGG < {LOGG_RANGE[1]:.1f}", keep)
    measured = np.ones(n, bool)
    for el in SPECIES:
        v = t[f"X_H_{el.upper()}"].to_numpy(float)
        measured &= np.isfinite(v) & ~np.isclose(v, MISSING_VALUE, atol=1e-3)
    keep &= measured
    record(f"all {len(SPECIES)} species measured (X_H, X_M != {MISSING_VALUE})", keep)
    flag = t["ASPCAPFLAG"].to_numpy(np.int64)
    keep &= ((flag >> STAR_BAD_BIT) & 1) == 0
    record("STAR_BAD unset (ASPCAPFLAG bit 23)", keep)
    keep &= t["APOGEE_ID"].to_numpy(dtype=object) != ANOMALOUS_STAR
    record(f"drop {ANOMALOUS_STAR}", keep)
    record("aspcapStar readable (0 missing, 0 unreadable files skipped)", keep)
    counts = pd.Series(cluster_of[keep & member]).value_counts()
    singles = set(counts.index[counts < 2])
    keep &= ~(member & np.isin(cluster_of, list(singles)))
    record(f"drop clusters left with one star ({len(singles)} clusters)", keep)
    order = np.concatenate([np.flatnonzero(keep & ~member), np.flatnonzero(keep & member)])
    return order, rows


# ====================================================================== writing
def bundle_mask(flux, err, mask_ranges=PAPER_MASK_RANGES, max_pixel_error: float = MAX_PIXEL_ERROR):
    """The missing-pixel mask of the bundle (same rule as the DR16 loader): error > 0.05,
    non-finite values, chip-gap zeros and the ``mask_ranges`` pixel ranges."""
    m = ~np.isfinite(flux) | ~np.isfinite(err) | (err > max_pixel_error) | (flux == 0)
    return m | ranges_to_mask(mask_ranges, flux.shape[-1])[None, :]


def simulate(
    out,
    n_field: int = DEFAULT_N_FIELD,
    seed: int = 0,
    format: str = "bundle",
    config: SimulationConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
    name: str | None = None,
    chunk_size: int = 1024,
) -> Path:
    """Simulate a survey and write it to ``out``; returns the path.

    ``format="bundle"`` writes a Dataset bundle (only stars passing the paper's cuts, spectra
    written in chunks into the bundle's memory maps); ``format="dr16"`` writes the DR16 file
    layout through ``rsca_core.apogee.write_dr16``.
    """
    from tqdm.auto import tqdm

    cfg = config or SimulationConfig()
    out = Path(out)
    if format not in ("bundle", "dr16"):
        raise ValueError(f"format must be 'bundle' or 'dr16', not {format!r}")
    if format == "bundle" and out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    t0 = time.perf_counter()
    survey = generate_survey(cfg, n_field=n_field, seed=seed)
    t_table = time.perf_counter() - t0
    if format == "dr16":
        try:
            from .apogee import write_dr16
        except ImportError:
            raise ValueError(
                "--format dr16 needs rsca_core.apogee.write_dr16, which is not available in this build"
            ) from None
        return Path(write_dr16(survey, out, overwrite=overwrite, progress=progress, simulated=True))

    from .dataset import Dataset

    rows = survey.bundle_rows
    n = len(rows)
    with Dataset.create(out, n, N_PIXELS, with_errors=True, overwrite=overwrite) as w:
        bar = tqdm(total=n, desc="simulating spectra", unit="star", disable=not progress, file=sys.stderr)
        try:
            for a in range(0, n, chunk_size):
                r = rows[a : a + chunk_size]
                flux, err = survey.spectra(r)
                w.spectra[a : a + len(r)] = flux
                w.errors[a : a + len(r)] = err
                w.mask[a : a + len(r)] = bundle_mask(flux, err, cfg.mask_ranges)
                bar.update(len(r))
        finally:
            bar.close()
        stars = survey.bundle_stars()
        n_cl = int((stars["cluster"] != "").sum())
        meta = {
            "kind": "simulated",
            "name": name or f"simulated survey ({len(stars) - n_cl} field, {n_cl} cluster stars, seed {seed})",
            "source": "rsca_core.simulate",
            "provenance": {
                "generator": "rsca_core.simulate.simulate",
                "seed": int(seed),
                "n_field": int(n_field),
                "config": cfg.to_dict(),
                "cutflow": survey.cutflow,
                "n_generated": int(len(survey.stars_all)),
                "seconds": round(time.perf_counter() - t0, 2),
                "seconds_table": round(t_table, 2),
                "mask": "error > 0.05, non-finite, chip-gap zeros, config.mask_ranges",
            },
        }
        w.finish(stars, apogee_wavelength(N_PIXELS), meta)
    return out


# ====================================================================== the app's default
def default_dataset_path() -> Path:
    """``$RSCA_DATA_DIR/default`` if set, else ``data/default`` under the repository root."""
    env = os.environ.get("RSCA_DATA_DIR")
    root = Path(env) if env else Path(__file__).resolve().parents[1] / "data"
    return root / "default"


def ensure_default_dataset(path=None, progress: bool = True) -> Path:
    """Return the app's embedded default bundle, building it first if missing (~30-60 s).

    Safe against concurrent callers (a lock file next to the bundle): only one process builds,
    the others wait and then return the finished bundle.
    """
    path = Path(path) if path is not None else default_dataset_path()
    if (path / "meta.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    with open(lock_path, "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX
            pass
        if not (path / "meta.json").exists():
            if progress:
                print(f"building the default simulated survey in {path} (once)...", file=sys.stderr)
            simulate(
                path,
                n_field=DEFAULT_N_FIELD,
                seed=0,
                progress=progress,
                overwrite=path.exists(),
                name=f"simulated default survey ({DEFAULT_N_FIELD} field stars)",
            )
    return path


# ====================================================================== CLI
def _switch_help(name: str) -> str:
    return {
        "isochrones": "Teff tied to logg/[Fe/H]/mass on giant isochrones",
        "cluster_isochrone_spread": "cluster members spread along their isochrone in Teff/logg",
        "two_alpha_sequences": "two [alpha/Fe] sequences (thin + thick disc)",
        "dredge_up": "first dredge-up changes [C/Fe], [N/Fe] with giant mass",
        "atomic_lines": "atomic lines of the 21 species",
        "molecular_lines": "OH, CN and CO molecular lines",
        "saturation": "curve-of-growth saturation of line depths",
        "line_teff_logg": "line strengths depend on Teff and logg",
        "pseudo_continuum": "ASPCAP-like pseudo-continuum normalisation error",
        "fibre_lsf": "line depths vary with each fibre's line-spread function",
        "dibs": "diffuse interstellar bands scaling with AK_TARG",
        "rv_systematics": "telluric/sky residuals and RV-shift errors tied to VHELIO_AVG",
        "plate_systematics": "systematics shared by stars observed on the same visits",
        "noise": "per-pixel noise from the SNR",
        "bad_pixels": "bad pixels (cosmic rays, bad columns)",
        "label_noise": "noise on the ASPCAP-like labels",
        "label_biases": "smooth Teff/logg-dependent label biases",
        "label_failures": "occasional -9999.99 abundances and STAR_BAD flags",
    }.get(name, name.replace("_", " "))


def _cmd_simulate(args) -> int:
    overrides = {s: getattr(args, s) for s in SWITCHES}
    cfg = SimulationConfig(**overrides)
    t0 = time.perf_counter()
    path = simulate(
        args.out,
        n_field=args.n_field,
        seed=args.seed,
        format=args.format,
        config=cfg,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    dt = time.perf_counter() - t0
    if args.format == "bundle":
        meta = json.loads((Path(path) / "meta.json").read_text())
        cf = meta["provenance"]["cutflow"][-1]
        print(
            f"[simulated] wrote {path} in {dt:.1f} s: {cf['field']} field stars, {cf['cluster_stars']} "
            f"cluster stars in {cf['clusters']} clusters"
        )
    else:
        print(f"[simulated] wrote DR16-layout files under {path} in {dt:.1f} s")
    return 0


def _nonneg_int(text):
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


def _pos_int(text):
    import argparse

    v = _nonneg_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="write a simulated APOGEE-like survey (bundle or DR16 file layout)",
        description="Simulate an APOGEE-like survey with the paper's confounders (SPEC §5): red giants on "
        "isochrones, two-sequence chemistry, homogeneous open clusters, atomic and molecular "
        "lines, interstellar bands, RV/telluric and plate systematics, noise, bad pixels and "
        "ASPCAP-like labels. Default shape: 22 clusters with 185 stars and "
        f"{DEFAULT_N_FIELD} field stars (after the paper's cuts). Output is labelled simulated.",
    )
    p.add_argument("--out", required=True, help="output folder (bundle, or DR16 layout with --format dr16)")
    p.add_argument(
        "--n-field",
        type=_pos_int,
        default=DEFAULT_N_FIELD,
        help=f"field stars after the cuts (default {DEFAULT_N_FIELD}; 151145 = the paper's scale)",
    )
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--format",
        choices=("bundle", "dr16"),
        default="bundle",
        help="bundle (default) or the DR16 allStar/aspcapStar/OCCAM file layout",
    )
    for s in SWITCHES:
        p.add_argument(
            "--no-" + s.replace("_", "-"), dest=s, action="store_false", help=f"{_switch_help(s)}; switch it off"
        )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_cmd_simulate)
