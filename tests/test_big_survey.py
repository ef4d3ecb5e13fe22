"""Issue 14 part 3: what keeps a survey of a million stars usable — the star table read from its
Parquet copy, the same table as from the CSV; the dashboard's rates with per-cluster histograms."""

import os

import numpy as np
import pandas as pd
import pytest

from rsca_core import Dataset, dataset
from tests.helpers import small_dataset


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, "STARS_CACHE_MIN_ROWS", 0)  # cache even a small table
    ds = small_dataset(n_field=300, n_pixels=40, seed=4)
    ds.stars.loc[3, "visits"] = "  7 "  # stripped on load, whichever file it comes from
    return ds.save(tmp_path / "survey")


def test_the_cached_star_table_is_the_csv_one_and_follows_a_rewritten_csv(bundle):
    first = Dataset.load(bundle)  # reads the CSV and writes the Parquet copy
    cached = list((bundle / "cache").glob("stars-*.parquet"))
    assert len(cached) == 1
    again = Dataset.load(bundle)  # from the copy
    pd.testing.assert_frame_equal(again.stars, first.stars)
    # the CSV as the only source, read without the cache machinery: same table
    csv = dataset._normalise_stars(
        pd.read_csv(
            bundle / "stars.csv",
            dtype={c: str for c in dataset.STRING_COLUMNS},
            keep_default_na=False,
            na_values={c: ["", "nan", "NaN"] for c in dataset._numeric_guess(bundle / "stars.csv")},
        )
    )
    pd.testing.assert_frame_equal(again.stars, csv)
    assert again.stars.loc[3, "visits"] == "7"
    # a rewritten stars.csv: the new one is read (and the stale copy replaced)
    stars = first.stars.copy()
    stars.loc[0, "teff"] = 1234.5
    stars.to_csv(bundle / "stars.csv", index=False)
    os.utime(bundle / "stars.csv", ns=(1, 10**18))
    assert Dataset.load(bundle).stars.loc[0, "teff"] == 1234.5
    assert Dataset.load(bundle).stars.loc[0, "teff"] == 1234.5
    assert len(list((bundle / "cache").glob("stars-*.parquet"))) == 1


def test_a_broken_cached_table_falls_back_to_the_csv(bundle):
    ref = Dataset.load(bundle)
    (cpath,) = (bundle / "cache").glob("stars-*.parquet")
    cpath.write_bytes(b"not parquet")
    pd.testing.assert_frame_equal(Dataset.load(bundle).stars, ref.stars)


def test_normalising_leaves_the_callers_frame_alone():
    df = pd.DataFrame({"apogee_id": [" a ", None], "cluster": ["nan", "X"], "teff": [1.0, 2.0]}, index=[5, 9])
    before = df.copy()
    out = dataset._normalise_stars(df)
    pd.testing.assert_frame_equal(df, before)
    assert out["apogee_id"].tolist() == ["a", ""] and out["cluster"].tolist() == ["", "X"]
    assert list(out.index) == [0, 1] and np.array_equal(out["teff"], [1.0, 2.0])


@pytest.mark.parametrize("with_filter", [True, False])
def test_rates_scored_in_field_chunks_equal_one_whole_field_pass(monkeypatch, with_filter):
    """A fold scores the field in chunks (bounded memory); tiny chunks give the rates, medians,
    pair counts and every kept distance of the one-block pass, and match distances computed pair by pair."""
    from rsca_core import RSCA, _folds, doppelganger_rates
    from tests.helpers import planted

    Z_pop, Z_clust, ids, meta = planted(seed=11, spread=0.9)
    kw = meta if with_filter else {}
    whole = doppelganger_rates(Z_pop, Z_clust, ids, **kw)
    monkeypatch.setattr(_folds, "FOLD_BLOCK", 7)  # a few field stars per chunk
    chunked = doppelganger_rates(Z_pop, Z_clust, ids, **kw)
    pd.testing.assert_frame_equal(chunked.per_cluster, whole.per_cluster)
    assert chunked.global_rate == whole.global_rate
    for c, d in whole.inter_distances.items():
        np.testing.assert_allclose(chunked.inter_distances[c], d, rtol=1e-12)
    # one cluster's distances, pair by pair, in member-major order
    c = sorted(set(ids))[1]
    members = np.flatnonzero(ids == c)
    est = RSCA().fit(Z_pop, Z_clust[ids != c], ids[ids != c])
    Ym, Yp = est.transform(Z_clust[members]), est.transform(Z_pop)
    want = [
        np.linalg.norm(Ym[a] - Yp[f])
        for a, i in enumerate(members)
        for f in np.argsort(meta["pop_vhelio"], kind="stable")
        if not with_filter
        or (
            abs(meta["pop_vhelio"][f] - meta["clust_vhelio"][i]) < 5.0
            and abs(meta["pop_ak"][f] - meta["clust_ak"][i]) < 0.05
        )
    ]
    np.testing.assert_allclose(np.sort(chunked.inter_distances[c]), np.sort(want), rtol=1e-9)
