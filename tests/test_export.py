"""rsca_core.export: the map file reproduces the fitted RSCA map on complete spectra."""

from __future__ import annotations

import io

import numpy as np
import pytest

from rsca_core import RSCA
from rsca_core.export import map_arrays, map_npz_bytes


class _Comp:
    def __init__(self, components, mean):
        self.components, self.mean = components, mean


def _setup(seed=0, n_pix=30, k=4):
    rng = np.random.default_rng(seed)
    P = np.linalg.qr(rng.normal(size=(n_pix, k)))[0].T
    comp = _Comp(P, rng.normal(size=n_pix))
    X = rng.normal(size=(200, n_pix))
    ids = np.repeat(["a", "b", "c", "d"], 5)
    Xc = X[:20] + np.repeat(rng.normal(size=(4, n_pix)), 5, axis=0)
    Z, Zc = (X - comp.mean) @ P.T, (Xc - comp.mean) @ P.T
    return comp, X, Z, Zc, ids


def test_spectra_map_file_maps_spectra_like_pca_then_rsca():
    comp, X, Z, Zc, ids = _setup()
    model = RSCA().fit(Z, Zc, ids)
    data = map_npz_bytes(map_arrays(model, ids, "simulated", {"k": 4}, compression=comp, wavelength=np.arange(30)))
    with np.load(io.BytesIO(data)) as f:
        y_file = X @ f["W"].T + f["b"]
        # independent: project with the PCA by hand, then centre and rotate with the model's own fields
        y_ref = ((X - comp.mean) @ comp.components.T - model.mean_) @ model.components_.T
        assert np.allclose(y_file, y_ref)
        assert str(f["data_kind"]) == "simulated"
        assert list(f["training_clusters"]) == ["a", "b", "c", "d"]
        assert '"k": 4' in str(f["settings"])


def test_abundance_map_names_its_species_and_one_kind_is_required():
    _comp, _X, Z, Zc, ids = _setup(k=3)
    model = RSCA().fit(Z, Zc, ids)
    a = map_arrays(model, ids, "real", species=["Fe", "Mg", "Si"])
    assert list(a["species"]) == ["Fe", "Mg", "Si"] and "W" not in a
    with pytest.raises(ValueError, match="exactly one"):
        map_arrays(model, ids, "real")
