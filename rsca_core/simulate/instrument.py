"""The instrument and its systematics: APOGEE's chips, throughput, telluric/sky residual templates,
the per-visit flat-field pattern basis and the diffuse interstellar bands."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..constants import DLOGLAM, N_PIXELS, apogee_wavelength

C_KMS = 299792.458
#: km/s per pixel of the APOGEE log-λ grid.
KMS_PER_PIXEL = C_KMS * np.log(10.0) * DLOGLAM
#: Pixels [start, stop) of the three detectors that hold data; everything else (the chip gaps and
#: the ends) is zero flux in aspcapStar files (DR14+ layout).
CHIP_RANGES = ((246, 3274), (3585, 6080), (6344, 8335))
#: Error given to bad pixels and chip gaps (anything > 0.05 is masked).
BAD_PIXEL_ERROR = 1.0
#: Diffuse interstellar bands: (rest wavelength Å, strength relative to 15273, Gaussian sigma Å).
DIBS = ((15273.0, 1.0, 1.9), (15653.0, 0.35, 1.6), (15610.0, 0.15, 1.2), (16232.0, 0.22, 1.7))
#: Seed of the fixed instrument templates (independent of the survey seed).
INSTRUMENT_SEED = 20221025


def data_wavelength_ranges() -> list:
    """Wavelength ranges (Å) of the three detectors' data pixels, 1 Å inside their edges."""
    wl = apogee_wavelength()
    return [(wl[a] + 1.0, wl[b - 1] - 1.0) for a, b in CHIP_RANGES]


def uniform_in_chips(rng, n: int) -> np.ndarray:
    """``n`` wavelengths (Å) drawn uniformly over the detectors' data ranges."""
    ranges = data_wavelength_ranges()
    widths = np.array([b - a for a, b in ranges])
    which = rng.choice(len(ranges), size=n, p=widths / widths.sum())
    lo = np.array([a for a, _ in ranges])[which]
    return lo + rng.random(n) * widths[which]


@lru_cache(maxsize=2)
def instrument_templates() -> dict:
    """Fixed templates: chip data mask, throughput shape, telluric and sky residual templates,
    the flat-field pattern basis (all on an extended pixel grid for RV shifts)."""
    rng = np.random.default_rng(INSTRUMENT_SEED)
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
    sky_w = uniform_in_chips(rng, n_sky)
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
