"""Fixed facts of the APOGEE DR16 data model used throughout RSCA Lab (SPEC §4)."""

import numpy as np

#: Number of pixels of an APOGEE aspcapStar spectrum.
N_PIXELS = 8575
#: log10 wavelength of pixel 0 and step (CRVAL1 / CDELT1 of aspcapStar HDU 1).
LOGLAM0 = 4.179
DLOGLAM = 6e-6

#: Element order of the X_H / X_M arrays of allStar-r12-l33 (26 entries).
ALLSTAR_ELEMENTS = (
    "C",
    "CI",
    "N",
    "O",
    "Na",
    "Mg",
    "Al",
    "Si",
    "P",
    "S",
    "K",
    "Ca",
    "Ti",
    "TiII",
    "V",
    "Cr",
    "Mn",
    "Fe",
    "Co",
    "Ni",
    "Cu",
    "Ge",
    "Rb",
    "Ce",
    "Nd",
    "Yb",
)
#: The 21 species the paper requires to be measured and uses as "all abundances".
SPECIES = (
    "C",
    "CI",
    "N",
    "O",
    "Na",
    "Mg",
    "Al",
    "Si",
    "S",
    "K",
    "Ca",
    "Ti",
    "TiII",
    "V",
    "Cr",
    "Mn",
    "Fe",
    "Co",
    "Ni",
    "Cu",
    "Ce",
)
#: The abundance subset of the paper's Fig. 4.
PAPER_SUBSET = ("Fe", "Mg", "Ni", "Si", "Al", "C", "N")
#: Value APOGEE uses for "not measured".
MISSING_VALUE = -9999.99
#: ASPCAPFLAG bit of STAR_BAD.
STAR_BAD_BIT = 23
#: Interstellar-band pixel ranges [start, stop) masked in the paper's code.
PAPER_MASK_RANGES = ((720, 910), (2370, 2470), (2600, 2750), (4300, 4600))
#: Pixels whose error exceeds this are treated as missing.
MAX_PIXEL_ERROR = 0.05
#: Pair filter of the doppelganger rate.
MAX_DVHELIO = 5.0
MAX_DAK = 0.05

#: Headline numbers of the paper (SPEC §3), for side-by-side display.
PAPER_RESULTS = {
    "spectra_k30": 0.020,
    "spectra_k30_all_axes": (0.0199, 0.0015),
    "spectra_k30_top4": (0.0180, 0.0021),
    "spectra_k30_top1": 0.0962,
    "abundance_subset": 0.023,
    "best_k": 30,
    "n_field": 151145,
    "n_cluster_stars": 185,
    "n_clusters": 22,
}


def abundance_column(species: str) -> str:
    """Column name of a species' [X/H] in a bundle's star table, e.g. ``"TiII" -> "x_h_tiii"``."""
    canon = canonical_species(species)
    return "x_h_" + canon.lower()


def canonical_species(species: str) -> str:
    """Return the canonical spelling of one of the 21 species, case-insensitively; ValueError otherwise."""
    lookup = {s.lower(): s for s in SPECIES}
    key = str(species).strip().lower()
    if key.startswith("x_h_"):
        key = key[4:]
    if key not in lookup:
        raise ValueError(f"unknown species {species!r}; expected one of {', '.join(SPECIES)}")
    return lookup[key]


ABUNDANCE_COLUMNS = tuple(abundance_column(s) for s in SPECIES)


def apogee_wavelength(n_pixels: int = N_PIXELS) -> np.ndarray:
    """Vacuum wavelength grid (Å) of the APOGEE aspcapStar pixels."""
    return 10.0 ** (LOGLAM0 + DLOGLAM * np.arange(n_pixels))


def ranges_to_mask(ranges, n_pixels: int = N_PIXELS) -> np.ndarray:
    """Boolean pixel mask (True = masked) from [start, stop) pixel ranges; validates them."""
    out = np.zeros(n_pixels, dtype=bool)
    for r in ranges or ():
        try:
            a, b = (int(v) for v in r)
        except (TypeError, ValueError):
            raise ValueError(f"pixel range {r!r} is not a pair of integers") from None
        if not (0 <= a < b <= n_pixels):
            raise ValueError(f"pixel range [{a}, {b}) is outside 0..{n_pixels} or empty")
        out[a:b] = True
    return out


# ---------------------------------------------------------------- the paper's cuts (SPEC §4)
#: Effective-temperature window of the paper's sample (K, strict inequalities).
TEFF_RANGE = (4000.0, 5000.0)
#: Surface-gravity window of the paper's sample (dex, strict inequalities).
LOGG_RANGE = (1.5, 3.0)
#: Cluster membership threshold (OCCAM Cantat-Gaudin probability, strict).
MIN_CG_PROB = 0.8
#: The star the paper drops for its anomalous metallicity.
ANOMALOUS_STAR = "2M19203303+3755558"
