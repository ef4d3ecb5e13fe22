"""The simulator's fixed line list (atomic lines of the 21 species, OH, CN, CO) and line profiles."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..constants import DLOGLAM, N_PIXELS, SPECIES, apogee_wavelength
from .instrument import C_KMS, KMS_PER_PIXEL, uniform_in_chips

#: The species whose true abundances drive the spectra (the 21 of the paper).
LINE_SPECIES = SPECIES
_SP_INDEX = {s: i for i, s in enumerate(LINE_SPECIES)}


@dataclass
class LineList:
    """The simulator's lines: one entry per line (arrays of equal length), sorted by wavelength."""

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


def _atomic_rows(rng, rows: list) -> None:
    """Strong lines at the SPEC's wavelengths, then weak lines, of each species (appended to ``rows``)."""

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
        for w in uniform_in_chips(rng, n):
            th, ga = atomic_sens(sp)
            rows.append((float(w), rng.normal(np.log10(0.08), 0.35), {sp: 1.0}, th, ga, 0.05, "atomic", sp))


def _molecular_rows(rng, rows: list) -> None:
    """OH, CN and CO lines and the CO band heads (appended to ``rows``)."""
    for w in uniform_in_chips(rng, 110):
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
    for w in uniform_in_chips(rng, 240):
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
    for w in uniform_in_chips(rng, 60):  # weak CO lines elsewhere
        rows.append(
            (float(w), rng.normal(np.log10(0.05), 0.3), {"C": 1.0}, rng.uniform(1.5, 2.5), 0.2, 0.0, "CO", "CO")
        )


@lru_cache(maxsize=4)
def line_list() -> LineList:
    """The fixed line list of the simulator (independent of the survey seed).

    >>> ll = line_list()
    >>> ll.wave.shape == ll.log_tau.shape and bool((ll.wave[1:] >= ll.wave[:-1]).all())
    True
    """
    rng = np.random.default_rng(LINE_LIST_SEED)
    rows = []  # (wave, log_tau, {species: weight}, theta, gamma, eta, kind, label)
    _atomic_rows(rng, rows)
    _molecular_rows(rng, rows)
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
class ProfileGroup:
    """Sampled profiles of a group of lines (wide atomic or narrow molecular)."""

    lines: np.ndarray  # indices into the line list
    profile: np.ndarray  # (L_g, W) float32 pseudo-Voigt × taper, peak ≈ 1
    index: np.ndarray  # (L_g, W) pixel index of each profile sample
    valid: np.ndarray  # (L_g, W) bool, inside the grid


@lru_cache(maxsize=8)
def line_profiles(resolution: float, macroturbulence: float, kinds: tuple) -> list:
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
        groups.append(ProfileGroup(idx_l, prof.astype(np.float32), np.clip(index, 0, N_PIXELS - 1), valid))
    return groups


@lru_cache(maxsize=8)
def scatter_matrix(resolution: float, macroturbulence: float, kinds: tuple):  # -> scipy.sparse.csr_matrix | None
    """Sparse (P, Σ L_g·W) matrix summing per-line log-transmissions into pixels."""
    from scipy import sparse

    groups = line_profiles(resolution, macroturbulence, kinds)
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
