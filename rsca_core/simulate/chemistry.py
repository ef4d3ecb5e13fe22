"""Chemistry and stellar parameters of the simulated stars: latent chemistry → [X/H], giants on isochrones."""

from __future__ import annotations

import numpy as np

from ..constants import ALLSTAR_ELEMENTS

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


def elements_from_latent(feh, alpha, age, mass, scatter: dict, dredge_up: bool = True) -> dict:
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


def element_scatter(rng, n: int, sigma: float) -> dict:
    """Independent per-element scatter (dex) of ``n`` stars, ``sigma`` times each element's multiplier."""
    return {el: rng.normal(0.0, sigma * _CHEM[el][3], n) for el in ALLSTAR_ELEMENTS}


def mass_from_age(age, feh) -> np.ndarray:
    """Giant-branch mass (M_sun) of a population of given age (Gyr): t ≈ 10 Gyr · M^-2.5."""
    return (10.0 / np.asarray(age)) ** 0.4 * (1.0 + 0.08 * np.asarray(feh))


def isochrone_teff(logg, feh, mass, is_rc) -> np.ndarray:
    """Teff (K) of a giant on its isochrone: RGB ~430 K/dex in logg; red clump ~4750 K."""
    rgb = 4600.0 + 430.0 * (logg - 2.5) - 280.0 * feh + 70.0 * (mass - 1.2)
    rc = 4760.0 - 230.0 * feh + 60.0 * (mass - 1.2)
    return np.where(is_rc, rc, rgb)


def draw_giants(
    rng, n: int, feh, mass, logg_range: tuple, rc_fraction: float, spread: bool = True, isochrones: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        teff = isochrone_teff(logg, feh, mass, is_rc)
    else:
        teff = rng.uniform(3900, 5100, n)
    teff = teff + rng.normal(0, 45.0 if spread else 15.0, n)
    return logg, teff, is_rc
