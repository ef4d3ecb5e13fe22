"""ASPCAP-like labels of the simulated stars: precisions, smooth biases, failures and STAR_BAD flags."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..constants import ALLSTAR_ELEMENTS, MISSING_VALUE, STAR_BAD_BIT

#: Typical DR16 label precision at SNR ≈ 150 (dex; SPEC §5).
#: (The upper end of the SPEC's ranges: DR16's intra-cluster scatter, e.g. ~0.02-0.03 dex in [Fe/H]
#: for open clusters, is larger than its formal errors; with the lower end the abundance-based
#: doppelganger rate of the default survey falls to ~0.008. Fe and Mg at 0.03 since session 5: with
#: the literature clusters, 0.02 / 0.028 left the abundance-subset rate at 0.013, below the paper's
#: band; docs/simulator.md.)
LABEL_PRECISION = {
    "Fe": 0.03,
    "Mg": 0.03,
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


# ====================================================================== label model
#: Typical size (dex per 500 K) of the smooth label biases of the best-measured elements.
BIAS_SCALE = 0.04


@lru_cache(maxsize=64)
def _bias_coefficients(species):
    """Fixed (seeded) coefficients of the smooth label bias of a species (dex)."""
    h = sum((i + 1) * ord(c) for i, c in enumerate(species))
    r = np.random.default_rng(1000 + h)
    scale = min(1.0, LABEL_PRECISION.get(species, 0.05) / 0.03) * BIAS_SCALE
    return (r.normal(0, scale), r.normal(0, scale * 0.7), r.normal(0, scale * 0.8))


def label_bias(species: str, teff, logg) -> np.ndarray:
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


def snr_factor(snr) -> np.ndarray:
    """Label noise relative to SNR ≈ 150."""
    return np.clip(np.sqrt(0.5 + 0.5 * (150.0 / np.asarray(snr, float)) ** 2), 0.7, 4.0)


def f32(x) -> np.ndarray:
    """Round to float32 precision (as stored in the FITS files), keep float64 dtype."""
    return np.asarray(x, np.float32).astype(np.float64)


def observe_labels(rng, cfg, s: dict, snr) -> dict:
    """ASPCAP-like observed labels and flags for a block of stars (dict of per-star arrays).

    ``rng`` is the survey's label stream, ``cfg`` the :class:`SimulationConfig`, ``s`` the true
    parameters and chemistry of the block, ``snr`` its SNR."""
    n = len(s["teff"])
    f = snr_factor(snr)
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
    return dict(teff=f32(obs_teff), logg=f32(obs_logg), xh={k: f32(v) for k, v in xh.items()}, m_h=f32(m_h), flag=flag)
