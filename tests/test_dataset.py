"""Dataset bundles: round trip, clear errors on broken bundles, cached compressions."""

import os

import numpy as np
import pytest

from rsca_core import BundleError, Dataset
from tests.helpers import small_dataset


@pytest.fixture()
def bundle(tmp_path):
    ds = small_dataset()
    path = tmp_path / "bundle"
    ds.save(path)
    return ds, path


def test_round_trip_and_memmap(bundle):
    ds, path = bundle
    back = Dataset.load(path)
    assert isinstance(back.spectra, np.memmap) and isinstance(back.mask, np.memmap)
    assert np.array_equal(back.spectra, ds.spectra) and np.array_equal(back.mask, ds.mask)
    assert back.stars["cluster"].tolist() == ds.stars["cluster"].tolist()
    assert np.allclose(back.stars["vhelio_avg"], ds.stars["vhelio_avg"], rtol=0, atol=0)
    assert back.cluster_names == ["OC0", "OC1", "OC2", "OC3"]
    assert len(back.field_index) == 300 and back.label == "simulated"
    assert not list(path.parent.glob("bundle.tmp-*")), "no temporary directory left behind"


def test_refuses_to_overwrite(bundle):
    ds, path = bundle
    with pytest.raises(FileExistsError, match="already exists"):
        ds.save(path)


@pytest.mark.parametrize(
    "damage,msg",
    [
        (lambda p: (p / "meta.json").unlink(), "meta.json: missing"),
        (lambda p: os.truncate(p / "spectra.npy", 1000), "spectra.npy: truncated"),
        (lambda p: (p / "mask.npy").unlink(), "mask.npy: file missing"),
        (
            lambda p: (p / "stars.csv").write_text((p / "stars.csv").read_text().rsplit("\n", 3)[0] + "\n"),
            "stars.csv: .* rows, expected",
        ),
        (lambda p: (p / "meta.json").write_text("{not json"), "meta.json: unreadable"),
        (lambda p: np.save(p / "wavelength.npy", np.arange(3.0)), "wavelength.npy: shape"),
    ],
)
def test_broken_bundle_errors_name_the_file(bundle, damage, msg):
    _, path = bundle
    damage(path)
    with pytest.raises(BundleError, match=msg):
        Dataset.load(path)


def test_missing_column_is_named(bundle):
    _, path = bundle
    import pandas as pd

    stars = pd.read_csv(path / "stars.csv").drop(columns=["ak_targ"])
    stars.to_csv(path / "stars.csv", index=False)
    with pytest.raises(BundleError, match="ak_targ"):
        Dataset.load(path)


def test_interrupted_writer_leaves_nothing_loadable(tmp_path):
    path = tmp_path / "b"
    with pytest.raises(RuntimeError), Dataset.create(path, 10, 50) as w:
        w.spectra[:5] = 1
        raise RuntimeError("killed")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_compression_is_cached_and_reused(bundle):
    _, path = bundle
    ds = Dataset.load(path)
    c1 = ds.compress(4, seed=0)
    assert c1.path is not None and c1.path.exists()
    stamp = c1.path.stat().st_mtime_ns
    c2 = Dataset.load(path).compress(4, seed=0)
    assert c2.path == c1.path and c2.path.stat().st_mtime_ns == stamp
    assert np.array_equal(c1.scores, c2.scores)
    c3 = ds.compress(4, seed=1)
    c4 = ds.compress(4, seed=0, extra_mask_ranges=[(10, 20)])
    assert len({c1.path, c3.path, c4.path}) == 3
    # the scores are the PCA of the masked spectra: the cluster structure survives compression
    inputs = ds.rate_inputs("spectra", k=4)
    assert inputs.z_pop.shape == (300, 4) and inputs.z_clust.shape == (18, 4)
    assert set(inputs.cluster_ids) == {"OC0", "OC1", "OC2", "OC3"}


def test_rate_inputs_abundances(bundle):
    ds, _ = bundle
    ri = ds.rate_inputs("subset", species=["Fe", "mg", "x_h_ni"])
    assert ri.z_pop.shape == (300, 3)
    assert np.array_equal(ri.z_clust[:, 1], ds.stars.loc[ds.is_cluster, "x_h_mg"].to_numpy())
    with pytest.raises(ValueError, match="unknown species"):
        ds.rate_inputs("subset", species=["Unobtainium"])
