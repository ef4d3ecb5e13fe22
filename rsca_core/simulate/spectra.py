"""Spectra of the simulated stars, made on demand: :class:`SimulatedSurvey`.

Each star's spectrum depends only on the star (its own random stream is seeded with
``(seed, row)``) and every step below is element-wise or a per-star reduction, so the values never
depend on how the rows are chunked. The steps, in order: line absorption (atomic and molecular
lines with saturation and fibre line-spread variation), the ASPCAP-like pseudo-continuum, the
diffuse interstellar bands, RV-tied telluric/sky residuals, per-visit flat-field patterns, then the
per-pixel errors, noise and bad pixels (:mod:`.instrument` holds the templates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..constants import DLOGLAM, N_PIXELS, SPECIES, abundance_column, apogee_wavelength
from ..selection import stars_table
from .config import SimulationConfig
from .instrument import BAD_PIXEL_ERROR, C_KMS, CHIP_RANGES, DIBS, KMS_PER_PIXEL, instrument_templates
from .linelist import LINE_SPECIES, line_list, line_profiles, scatter_matrix

f32 = np.float32


@dataclass
class Observation:
    """How each star of ``stars_all`` was observed: plates, visits, barycentric corrections, the
    ISM velocity of its sight line and its systematics amplitudes (``star_sys``: ``tel``, ``sky``,
    ``pattern``, ``lsf``)."""

    visit_table: dict = field(default_factory=dict)
    star_visits: list = field(default_factory=list)
    plate_bc: np.ndarray | None = None
    star_plate: np.ndarray | None = None
    ism_v: np.ndarray | None = None
    star_sys: dict = field(default_factory=dict)


@dataclass
class SimulatedSurvey:
    """A generated survey: the pre-cut star table and an on-demand spectrum generator.

    ``stars_all`` has every generated star (passing or failing the cuts); ``bundle_rows`` the rows
    of the direct bundle in bundle order and ``bundle_table`` their allStar-like selection (with
    the members' ``CLUSTER`` and ``CG_PROB``); ``cutflow`` the loader's cut-flow.
    """

    config: SimulationConfig
    seed: int
    n_field: int
    stars_all: pd.DataFrame
    bundle_rows: np.ndarray
    cutflow: list
    bundle_table: pd.DataFrame | None = field(repr=False, default=None)
    observation: Observation = field(repr=False, default_factory=Observation)

    # ---------------------------------------------------------------- tables
    def bundle_stars(self) -> pd.DataFrame:
        """The star table of the direct bundle (loader columns + ``true_*`` and extras)."""
        sel = self.stars_all.iloc[self.bundle_rows]
        out = stars_table(self.bundle_table)
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
    def spectrum(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Flux and error (float32, 8575 each) of row ``i`` of ``stars_all``."""
        f, e = self.spectra([int(i)])
        return f[0], e[0]

    def spectra_for(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """Alias of :meth:`spectra` (the writers' interface)."""
        return self.spectra(rows)

    def spectra(self, rows, *, noiseless: bool = False) -> tuple[np.ndarray, np.ndarray]:
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
        """Spectra of a few rows, step by step (module docstring)."""
        cfg, st, obs = self.config, self._arrays, self.observation
        kinds = self._kinds
        if kinds:
            F = _line_flux(cfg, st, rows, kinds, obs.star_sys["lsf"])
        else:
            F = np.ones((len(rows), N_PIXELS), f32)
        if cfg.pseudo_continuum and kinds:
            _pseudo_continuum(F, cfg.pseudo_continuum_strength)
        if cfg.dibs:
            _interstellar_bands(F, cfg, st["ak"][rows], st["vhelio"][rows] - obs.ism_v[rows])
        if cfg.rv_systematics:
            _rv_systematics(F, cfg, st, rows, obs)
        if cfg.plate_systematics and cfg.plate_strength:
            _plate_patterns(F, (obs.star_sys["pattern"][rows] * cfg.plate_strength).astype(f32))
        return _errors_and_noise(F, cfg, st["snr"][rows], rows, self.seed, noiseless)

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


def _line_tau(ll, li, xh, feh, dT, dg, line_teff_logg: bool) -> np.ndarray:
    """Optical depths (L_g, B) float32 of lines ``li`` for a block of stars."""
    B = len(feh)
    lt = np.repeat(ll.log_tau[li][:, None], B, axis=1)
    for j in range(len(LINE_SPECIES)):
        w = ll.weights[li, j]
        if np.any(w):
            lt += w[:, None] * xh[None, :, j]
    lt -= 0.2 * feh[None, :]
    if line_teff_logg:
        lt += ll.theta[li][:, None] * dT[None, :] + ll.gamma[li][:, None] * dg[None, :]
    return (10.0**lt).astype(f32)


def _line_flux(cfg, st, rows, kinds, lsf) -> np.ndarray:
    """Flux (B, P) float32 after line absorption: log-transmissions of every line summed per pixel."""
    teff, logg, feh = st["teff"][rows], st["logg"][rows], st["feh"][rows]
    xh = st["xh"][rows]  # (B, n_species)
    B = len(rows)
    ll = line_list()
    groups = line_profiles(cfg.resolution, cfg.macroturbulence, kinds)
    S = scatter_matrix(cfg.resolution, cfg.macroturbulence, kinds)
    dT = 5040.0 / teff - 5040.0 / 4600.0
    dg = logg - 2.5
    depth_max = np.clip(0.70 - 0.15 * (teff - 4500.0) / 1000.0, 0.5, 0.85).astype(f32)
    pieces = []
    for g in groups:
        li = g.lines
        tau = _line_tau(ll, li, xh, feh, dT, dg, cfg.line_teff_logg)
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
        logF *= (1 + cfg.fibre_lsf_sigma * lsf[rows]).astype(f32)[:, None]
    return np.exp(logF)


def _pseudo_continuum(F: np.ndarray, strength: float) -> None:
    """ASPCAP-like continuum placed low where lines are dense: ±60 px boxcar mean absorption, per chip."""
    from scipy.ndimage import uniform_filter1d

    for a, b in CHIP_RANGES:
        mean = uniform_filter1d(1.0 - F[:, a:b], size=121, axis=1, mode="nearest")
        F[:, a:b] /= 1.0 - f32(strength) * mean


def _interstellar_bands(F: np.ndarray, cfg, ak, vrel) -> None:
    """Diffuse interstellar bands, depth ∝ A_K, shifted by −(VHELIO_AVG − v_ISM) in the rest frame."""
    ak = np.clip(ak, 0, None)
    lw0 = np.log10(apogee_wavelength()[0])
    for lam, rel, sig in DIBS:
        centre = (np.log10(lam * (1.0 - vrel / C_KMS)) - lw0) / DLOGLAM
        sig_px = sig / (lam * np.log(10) * DLOGLAM)
        c0 = int(round((np.log10(lam) - lw0) / DLOGLAM))
        lo, hi = max(0, c0 - 200), min(N_PIXELS, c0 + 201)
        x = np.arange(lo, hi)[None, :] - centre[:, None]
        tau = (cfg.dib_depth_per_ak * rel * ak)[:, None] * np.exp(-0.5 * (x / sig_px) ** 2)
        F[:, lo:hi] *= np.exp(-tau).astype(f32)


def _rv_systematics(F: np.ndarray, cfg, st, rows, obs: Observation) -> None:
    """Telluric/sky residuals at observed wavelengths (a VHELIO_AVG-dependent rest-frame place) and
    a rest-frame shift error ∝ VHELIO_AVG."""
    inst = instrument_templates()
    ss = obs.star_sys
    v = st["vhelio"][rows]
    bc = obs.plate_bc[obs.star_plate[rows]]
    # a feature at observed wavelength λ_t appears at λ_t/(1 + (v − bc)/c) in the rest frame
    shift = np.log10(1.0 + (v - bc) / C_KMS) / DLOGLAM
    fl = np.floor(shift)
    frac = (shift - fl).astype(f32)
    start = (fl.astype(np.int64) + inst["pad"]).clip(0, len(inst["telluric32"]) - N_PIXELS - 1)
    eps_t = (ss["tel"][rows] * cfg.rv_strength).astype(f32)
    eps_s = (ss["sky"][rows] * cfg.rv_strength / (st["snr"][rows] / 100.0)).astype(f32)
    T, Sk = inst["telluric32"], inst["sky32"]
    for k in range(len(rows)):
        o, fr = start[k], frac[k]
        tel = T[o : o + N_PIXELS] * (1 - fr) + T[o + 1 : o + 1 + N_PIXELS] * fr
        sky = Sk[o : o + N_PIXELS] * (1 - fr) + Sk[o + 1 : o + 1 + N_PIXELS] * fr
        F[k] *= 1 + eps_t[k] * tel
        F[k] += eps_s[k] * sky
    # rest-frame shift error ∝ VHELIO_AVG × the star's template-mismatch factor: F(λ) → F(λ(1 − δv/c))
    factor = 1.0 + cfg.rv_mismatch_spread * ss["mismatch"][rows]
    dpix = (cfg.rv_shift_fraction * cfg.rv_strength * v * factor / KMS_PER_PIXEL).astype(f32)[:, None]
    F -= dpix * np.gradient(F, axis=1)


def _plate_patterns(F: np.ndarray, coef: np.ndarray) -> None:
    """Per-visit flat-field patterns: one product per star (independent of the chunk)."""
    basis = instrument_templates()["basis32"]
    for k in range(len(F)):
        F[k] *= 1 + coef[k] @ basis


def _errors_and_noise(F: np.ndarray, cfg, snr, rows, seed: int, noiseless: bool):
    """Per-pixel errors from the SNR and throughput, then noise and bad pixels; chip gaps zeroed."""
    inst = instrument_templates()
    data = inst["data"]
    F[:, ~data] = 0
    snr = snr.astype(f32)[:, None]
    err = np.clip(F, f32(0.02), None)
    err *= (inst["shape32"][None, :] / snr) ** 2
    err += f32(cfg.error_floor) ** 2
    np.sqrt(err, out=err)
    if not noiseless and (cfg.noise or cfg.bad_pixels):
        n_data = int(data.sum())
        data_idx = np.flatnonzero(data)
        for k, r in enumerate(rows):
            rng = np.random.default_rng([seed, 7919, int(r)])
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
