"""Chemical siblings: the stars alike in RSCA space, star by star.

The doppelganger rate measures how well a representation separates clusters from the field; this
module uses the same representation to answer an astronomer's questions about single stars:

* :func:`embed` fits the RSCA map on the bundle's clusters (no cross-validation) on exactly the
  representation ``python -m rsca_core evaluate`` rates (``Dataset.rate_inputs``: the cached
  compression at K for spectra) and places every star of the bundle in RSCA space
  (an :class:`Embedding`);
* :meth:`Embedding.siblings` lists a star's nearest other stars (Euclidean, through
  scikit-learn `NearestNeighbors`) with a *sibling score* read off the known cluster pairs;
* :meth:`Embedding.candidates` lists field stars near a cluster, beside the number of chance
  doppelgangers expected among them from the cluster's leave-one-cluster-out rate;
* :func:`project` places spectra that are not in the bundle (aspcapStar files of new stars) in the
  same space, through the compression's masked least-squares transform and the map;
* :func:`write_catalogue` / :func:`read_catalogue` store RSCA coordinates as FITS, parquet or CSV
  with the settings that made them.

No web framework here; the CLI commands are registered by :func:`add_cli`.
"""

from __future__ import annotations

from .cli import add_cli
from .columns import CATALOGUE_KEYWORDS, COORD_PREFIX, LABEL_DIFFERENCES, SIBLING_COLUMNS
from .embedding import Candidates, Embedding, embed, project
from .files import (
    mask_rule,
    read_catalogue,
    read_spectra_files,
    read_spectrum_file,
    sidecar_path,
    star_id_from_path,
    write_catalogue,
)
from .neighbours import NeighbourIndex, exact_distances, pair_distances

__all__ = [
    "Embedding",
    "Candidates",
    "embed",
    "project",
    "mask_rule",
    "read_spectra_files",
    "write_catalogue",
    "read_catalogue",
    "SIBLING_COLUMNS",
    "COORD_PREFIX",
    "CATALOGUE_KEYWORDS",
    "LABEL_DIFFERENCES",
    "NeighbourIndex",
    "add_cli",
    "exact_distances",
    "pair_distances",
    "read_spectrum_file",
    "sidecar_path",
    "star_id_from_path",
]
