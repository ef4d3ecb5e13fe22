"""The simulated survey's open clusters: literature [Fe/H], age, mean radial velocity, extinction
and position of the 30 OCCAM clusters the simulator can use (:data:`CLUSTER_FACTS`).

These values are fixed, so every seed simulates the same clusters; only each cluster's small
chemical offsets and its members are drawn per seed. Sources (read from the catalogue tables as
redistributed by the Unified Cluster Catalogue's ``ucc23/updt_UCC`` repository,
``data/databases/*.csv``; the full table with each value's source is in ``docs/simulator.md``):

* ``D20``: Donor et al. 2020, AJ 159, 199 (OCCAM IV, APOGEE DR16; VizieR J/AJ/159/199), columns
  ``Fe/H`` and ``HRV`` (mean heliocentric RV of the APOGEE members). This is the membership and
  abundance catalogue of the paper's clusters.
* ``D21``: Dias et al. 2021, MNRAS 504, 356, columns ``[Fe/H]`` and ``RV`` (Gaia), for the three
  clusters absent from the D20 table (Berkeley 39, Collinder 261, NGC 7044).
* ``CG20``: Cantat-Gaudin et al. 2020, A&A 640, A1, columns ``AgeNN`` (log10 age/yr), ``AVNN``
  (A_V, mag), ``RA_ICRS``, ``DE_ICRS``.

A_K = 0.302 · A_V / 3.1, i.e. A_Ks/E(B−V) = 0.302 at R_V = 3.1 (Schlafly & Finkbeiner 2011,
Table 6), the coefficient ``rsca_core.apogee`` already uses for DR19's E(B−V) (see
``docs/data-releases.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: A_K per magnitude of A_V: A_Ks/E(B−V) = 0.302 (Schlafly & Finkbeiner 2011) over R_V = 3.1.
AK_PER_AV = 0.302 / 3.1


@dataclass(frozen=True)
class ClusterFacts:
    """Literature values of one open cluster (see the module docstring for the sources).

    Examples
    --------
    >>> c = CLUSTER_FACTS["NGC_2682"]
    >>> round(c.age_gyr, 2), c.feh, c.vhelio, round(c.a_k, 4)
    (4.27, 0.01, 33.9, 0.0068)
    """

    feh: float  #: [Fe/H] (dex)
    vhelio: float  #: mean heliocentric radial velocity (km/s)
    log_age: float  #: log10(age / yr), Cantat-Gaudin et al. 2020 AgeNN
    a_v: float  #: A_V (mag), Cantat-Gaudin et al. 2020 AVNN
    ra: float  #: right ascension (deg, ICRS), Cantat-Gaudin et al. 2020
    dec: float  #: declination (deg, ICRS), Cantat-Gaudin et al. 2020
    chem_source: str  #: source of [Fe/H] and RV: "D20" (Donor et al. 2020) or "D21" (Dias et al. 2021)

    @property
    def age_gyr(self) -> float:
        """Age in Gyr."""
        return 10.0 ** (self.log_age - 9.0)

    @property
    def a_k(self) -> float:
        """Extinction in 2MASS Ks (mag), :data:`AK_PER_AV` × A_V."""
        return AK_PER_AV * self.a_v


#: Literature values of every cluster the simulator can use, in :data:`~.config.CLUSTER_NAMES` order.
CLUSTER_FACTS: dict[str, ClusterFacts] = {
    # name: ([Fe/H], RV km/s, log age, A_V, RA, Dec, source of [Fe/H] and RV)
    name: ClusterFacts(*row)
    for name, row in {
        "NGC_6791": (0.35, -46.9, 9.80, 0.70, 290.221, 37.778, "D20"),
        "NGC_6819": (0.05, 2.7, 9.35, 0.40, 295.327, 40.190, "D20"),
        "NGC_2682": (0.01, 33.9, 9.63, 0.07, 132.846, 11.814, "D20"),
        "NGC_188": (0.09, -41.4, 9.85, 0.21, 11.798, 85.244, "D20"),
        "NGC_7789": (-0.01, -54.6, 9.19, 0.83, 359.334, 56.726, "D20"),
        "NGC_2158": (-0.21, 27.7, 9.19, 1.44, 91.862, 24.099, "D20"),
        "NGC_6705": (0.12, 35.4, 8.49, 1.20, 282.766, -6.272, "D20"),
        "NGC_2420": (-0.19, 74.4, 9.24, 0.04, 114.602, 21.575, "D20"),
        "NGC_1245": (-0.08, -29.0, 9.08, 0.50, 48.691, 47.235, "D20"),
        "NGC_2243": (-0.46, 59.8, 9.64, 0.02, 97.395, -31.282, "D20"),
        "Berkeley_39": (-0.109, 60.117, 9.75, 0.29, 116.702, -4.665, "D21"),
        "NGC_752": (-0.04, 5.6, 9.07, 0.07, 29.223, 37.794, "D20"),
        "IC_166": (-0.10, -40.0, 9.12, 2.47, 28.094, 61.857, "D20"),
        "King_5": (-0.14, -44.1, 9.01, 1.97, 48.682, 52.695, "D20"),
        "Berkeley_53": (-0.08, -35.9, 8.99, 4.42, 313.975, 51.060, "D20"),
        "NGC_1798": (-0.27, 2.7, 9.22, 1.12, 77.914, 47.691, "D20"),
        "NGC_4337": (0.24, -18.2, 9.16, 1.06, 186.022, -58.125, "D20"),
        "Trumpler_5": (-0.44, 50.5, 9.63, 1.20, 99.126, 9.465, "D20"),
        "Collinder_261": (0.019, -24.654, 9.80, 0.81, 189.519, -68.377, "D21"),
        "NGC_2204": (-0.26, 91.9, 9.32, 0.01, 93.882, -18.670, "D20"),
        "NGC_7044": (-0.189, -48.753, 9.22, 1.78, 318.284, 42.494, "D21"),
        "Berkeley_17": (-0.16, -73.4, 9.86, 1.63, 80.130, 30.574, "D20"),
        "NGC_2324": (-0.19, 42.2, 8.73, 0.40, 106.033, 1.046, "D20"),
        "Berkeley_71": (-0.23, -9.4, 8.94, 2.53, 85.233, 32.272, "D20"),
        "NGC_1857": (-0.14, 1.3, 8.40, 1.38, 80.031, 39.336, "D20"),
        "Czernik_20": (-0.16, 31.4, 9.22, 1.49, 80.129, 39.545, "D20"),
        "NGC_1907": (-0.08, 2.8, 8.77, 1.28, 82.033, 35.330, "D20"),
        "Berkeley_66": (-0.19, -50.0, 9.49, 3.60, 46.030, 58.731, "D20"),
        "NGC_6811": (-0.05, 8.0, 9.03, 0.09, 294.340, 46.378, "D20"),
        "King_7": (-0.13, -9.7, 8.35, 3.18, 59.783, 51.785, "D20"),
    }.items()
}
