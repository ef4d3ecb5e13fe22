"""Configuration of the simulated survey: :class:`SimulationConfig`, its switch table and the survey shape."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from ..constants import PAPER_MASK_RANGES, ranges_to_mask

#: Version of the simulator's physics, recorded in every simulated bundle. Raise it whenever a change
#: makes the same seed and config give other stars or spectra (the app then rebuilds its default
#: survey instead of showing numbers from an older model). 2: clusters carry catalogue values.
#: 3: per-star template-mismatch factor of the rest-frame shift error; calibrated defaults of
#: session 5 (docs/simulator.md).
SIMULATOR_VERSION = 3
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


@dataclass
class SimulationConfig:
    """Every knob of the simulated survey. Booleans switch a physical effect on/off
    (CLI ``--no-<name>``, see :data:`SWITCH_TABLE`); numbers set its size. Defaults give the
    paper's shape (SPEC §5).

    Examples
    --------
    >>> cfg = SimulationConfig(dibs=False, cluster_sizes=(3, 2))
    >>> cfg.dibs, cfg.cluster_sizes, SimulationConfig.from_dict(cfg.to_dict()) == cfg
    (False, (3, 2), True)
    """

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
    element_scatter: float = 0.02  #: independent per-element scatter of field chemistry (dex, typical)
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
    rv_strength: float = 1.0  #: amplitude of the telluric/sky residuals (× the star's own draw)
    rv_shift_fraction: float = 0.004  #: rest-frame velocity error (template mismatch) as a fraction of VHELIO_AVG
    rv_mismatch_spread: float = 0.5  #: star-to-star spread of that error: × (1 + spread · z), z ~ N(0, 1) per star
    plate_systematics: bool = True  #: residuals shared by stars observed on the same visits
    plate_strength: float = 0.5  #: per-visit flat-field pattern left after continuum normalisation (× 0.25 % per term)
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
            "rv_mismatch_spread",
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
        """Plain-JSON dictionary of every setting (inverse of :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["cluster_sizes"] = list(self.cluster_sizes)
        d["mask_ranges"] = [list(r) for r in self.mask_ranges]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimulationConfig:
        """Config from a dictionary of settings; unknown names raise ValueError naming them."""
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


@dataclass(frozen=True)
class Switch:
    """One physical effect of the simulator that can be switched on or off.

    ``name`` is a boolean field of :class:`SimulationConfig`, ``default`` its default value and
    ``help`` one human-readable line saying what the effect is.
    """

    name: str
    default: bool
    help: str


_SWITCH_HELP = {
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
}

#: The simulator's physics switches, in :class:`SimulationConfig` order (the CLI's ``--no-X``
#: flags and the app's form are built from this table).
SWITCH_TABLE: tuple[Switch, ...] = tuple(
    Switch(f.name, bool(f.default), _SWITCH_HELP.get(f.name, f.name.replace("_", " ")))
    for f in fields(SimulationConfig)
    if f.type in ("bool", bool)
)
#: Names of the switches (the boolean fields of :class:`SimulationConfig`).
SWITCHES = tuple(s.name for s in SWITCH_TABLE)
