"""File names and paths of the releases' layouts, and the columns the loader reads."""

from __future__ import annotations

#: File names of the DR16 layout.
ALLSTAR_NAME = "allStar-r12-l33.fits"
OCCAM_MEMBER_NAME = "occam_member-DR16.fits"
OCCAM_CLUSTER_NAME = "occam_cluster-DR16.fits"
#: Header keyword (primary HDU of allStar) marking files written from the simulator.
SIMULATED_KEYWORD = "SIMULATD"

ALLSTAR_COLUMNS = (
    "APOGEE_ID",
    "TELESCOPE",
    "FIELD",
    "TEFF",
    "LOGG",
    "X_H",
    "X_M",
    "ASPCAPFLAG",
    "AK_TARG",
    "VHELIO_AVG",
    "SNR",
    "VISITS",
)
OCCAM_MEMBER_COLUMNS = ("APOGEE_ID", "CLUSTER", "CG_PROB", "RV_PROB", "FEH_PROB", "PM_PROB")


def aspcapstar_relpath(telescope: str, field: str, apogee_id: str) -> str:
    """Path of a star's aspcapStar file relative to the spectra root (SPEC §4)."""
    return f"{str(telescope).strip()}/{str(field).strip()}/aspcapStar-r12-{str(apogee_id).strip()}.fits"
