"""The columns of sibling tables and RSCA catalogues, and the catalogue's stored settings."""

from __future__ import annotations

#: Columns of :meth:`Embedding.siblings`, in order.
SIBLING_COLUMNS = (
    "apogee_id",
    "distance",
    "sibling_score",
    "d_fe_h",
    "d_teff",
    "d_logg",
    "d_vhelio",
    "d_ak",
    "cluster",
)
#: (difference column, star-table column): differences are sibling minus star.
LABEL_DIFFERENCES = (
    ("d_fe_h", "fe_h"),
    ("d_teff", "teff"),
    ("d_logg", "logg"),
    ("d_vhelio", "vhelio_avg"),
    ("d_ak", "ak_targ"),
)
#: Catalogue columns of the RSCA coordinates are ``rsca_1 … rsca_N`` (axis 1 = most discriminative).
COORD_PREFIX = "rsca_"
#: Settings stored with a catalogue (FITS header keyword for each).
CATALOGUE_KEYWORDS = {
    "k": "K",
    "input": "INPUT",
    "seed": "SEED",
    "top_n": "TOPN",
    "simulated": "SIMULATD",
    "kind": "KIND",
    "dataset": "DATASET",
    "uid": "DATAUID",
    "species": "SPECIES",
    "clusters": "CLUSTERS",
}
