"""The fitted RSCA map as a portable ``.npz`` file (what the dashboard's "map" download writes).

For a spectra map the file carries ``W`` and ``b`` so that a complete spectrum ``x`` goes straight to
RSCA space as ``y = x @ W.T + b`` (:meth:`RSCA.pixel_map`), plus the PCA it was fitted on; for an
abundance map, the species in input order. Everything else a user needs to apply or audit the map
is stored beside: the RSCA mean, components, scales, weights, order, training clusters, the data kind
("simulated" / "real") and a JSON ``settings`` string.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import numpy as np

from .fileio import jsonable
from .rsca import RSCA


def map_arrays(
    model: RSCA,
    training_clusters: Sequence[str],
    data_kind: str,
    settings: dict | None = None,
    *,
    compression=None,
    wavelength=None,
    species: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of a map file: give ``compression`` (a :class:`~rsca_core.Compression` with as many
    components as the model's inputs) for a spectra map, or ``species`` for an abundance map.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> P = np.linalg.qr(rng.normal(size=(6, 3)))[0].T          # 3 PCA axes over 6 pixels
    >>> class Comp: components, mean = P, rng.normal(size=6)
    >>> X = rng.normal(size=(40, 6)); Z = (X - Comp.mean) @ P.T
    >>> model = RSCA().fit(Z, Z[:6], list("aabbcc"))
    >>> a = map_arrays(model, ["a", "b", "c"], "simulated", compression=Comp)
    >>> bool(np.allclose(X @ a["W"].T + a["b"], model.transform(Z)))
    True
    """
    if (compression is None) == (species is None):
        raise ValueError("map_arrays: give exactly one of compression= (spectra) or species= (abundances)")
    arrays = {
        "rsca_mean": np.asarray(model.mean_, float),
        "rsca_components": np.asarray(model.components_, float),
        "scales": np.asarray(model.scales_, float),
        "weights": np.asarray(model.weights_, float),
        "order": np.asarray(model.order_),
        "training_clusters": np.asarray(sorted(set(map(str, training_clusters))), dtype=str),
        "settings": np.asarray(json.dumps(jsonable(settings or {}), sort_keys=True)),
        "data_kind": np.asarray(str(data_kind)),
    }
    if compression is not None:
        pcs = np.asarray(compression.components, float)
        mean = np.asarray(compression.mean, float)
        W, b = model.pixel_map(pcs, mean)
        arrays |= {"pca_components": pcs, "pca_mean": mean, "W": W, "b": b}
        if wavelength is not None:
            arrays["wavelength"] = np.asarray(wavelength, float)
    else:
        arrays["species"] = np.asarray(list(species), dtype=str)
    return arrays


def map_npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The ``.npz`` file of :func:`map_arrays` as bytes (for a download or :func:`rsca_core.fileio.atomic_write_bytes`)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
