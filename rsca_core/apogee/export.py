"""The layout writers by release name: what ``simulate --format`` calls."""

from __future__ import annotations

from pathlib import Path

from ..progress import ProgressArg
from .writers import write_dr16
from .writers_dr17 import write_dr17
from .writers_dr19 import write_dr19

#: Writers of each release's layout, by ``simulate --format`` name.
LAYOUT_WRITERS = {"dr16": write_dr16, "dr17": write_dr17, "dr19": write_dr19}


def write_layout(release: str, survey, out, *, overwrite: bool = False, progress: ProgressArg = True) -> Path:
    """Write a simulated survey in ``release``'s file layout (``simulate --format``); returns ``out``."""
    if release not in LAYOUT_WRITERS:
        raise ValueError(f"unknown layout {release!r}; choose from {', '.join(LAYOUT_WRITERS)}")
    return Path(LAYOUT_WRITERS[release](survey, out, overwrite=overwrite, progress=progress, simulated=True))
