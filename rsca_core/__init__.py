"""RSCA Lab's science engine: relevant scaled component analysis and the doppelganger rate.

No web framework is imported here; everything is usable from scripts and the CLI
(``python -m rsca_core --help``).
"""

from .compress import MaskedPCA
from .constants import PAPER_MASK_RANGES, PAPER_RESULTS, PAPER_SUBSET, SPECIES
from .dataset import BundleError, Compression, Dataset, RateInputs
from .metrics import DoppelgangerResult, doppelganger_rates
from .rsca import RSCA
from .siblings import Embedding, embed, project

__all__ = [
    "MaskedPCA",
    "RSCA",
    "doppelganger_rates",
    "DoppelgangerResult",
    "Dataset",
    "BundleError",
    "Compression",
    "RateInputs",
    "SPECIES",
    "PAPER_SUBSET",
    "PAPER_MASK_RANGES",
    "PAPER_RESULTS",
    "Embedding",
    "embed",
    "project",
]
__version__ = "0.1.0"
