"""Small planted-cluster data shared by the core tests."""

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent  # the checkout


def planted(seed=0, K=5, n_pop=600, sizes=(2, 3, 4, 5, 6, 7), spread=0.6, with_meta=True):
    """Field ~ anisotropic Gaussian; clusters = Gaussian blobs whose spread is `spread` × field."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(1.0, 3.0, K)
    mix = np.linalg.qr(rng.standard_normal((K, K)))[0]
    Z_pop = (rng.standard_normal((n_pop, K)) * scale) @ mix + 2.0
    ids, rows = [], []
    for j, n in enumerate(sizes):
        centre = (rng.standard_normal(K) * scale) @ mix + 2.0
        noise = (rng.standard_normal((n, K)) * scale * spread * np.linspace(0.2, 1.5, K)) @ mix
        rows.append(centre + noise)
        ids += [f"NGC {100 + j}"] * n
    Z_clust = np.vstack(rows)
    ids = np.array(ids, dtype=object)
    meta = None
    if with_meta:
        pv = rng.normal(0, 15, n_pop)
        pa = np.abs(rng.normal(0.05, 0.08, n_pop))
        cv0 = rng.normal(0, 15, len(sizes))
        ca0 = np.abs(rng.normal(0.05, 0.05, len(sizes)))
        codes = np.repeat(np.arange(len(sizes)), sizes)
        cvh = cv0[codes] + rng.normal(0, 1, len(ids))
        ca = ca0[codes] + np.abs(rng.normal(0, 0.01, len(ids)))
        meta = dict(pop_vhelio=pv, pop_ak=pa, clust_vhelio=cvh, clust_ak=ca)
    return Z_pop, Z_clust, ids, meta


def small_dataset(n_field=300, sizes=(3, 4, 5, 6), n_pixels=400, seed=0, kind="simulated"):
    """An in-memory Dataset with planted clusters in a few latent dimensions."""
    import pandas as pd

    from rsca_core import Dataset
    from rsca_core.constants import ABUNDANCE_COLUMNS

    rng = np.random.default_rng(seed)
    n = n_field + sum(sizes)
    latent = rng.standard_normal((n, 4)) * [3, 2, 1.5, 1]
    cluster = np.array([""] * n_field + sum(([f"OC{j}"] * s for j, s in enumerate(sizes)), []), dtype=object)
    start = n_field
    for s in sizes:
        latent[start : start + s] = rng.standard_normal(4) * [3, 2, 1.5, 1] + 0.3 * rng.standard_normal((s, 4))
        start += s
    basis = rng.standard_normal((4, n_pixels)) * 0.02
    spectra = (1 + latent @ basis + 0.003 * rng.standard_normal((n, n_pixels))).astype(np.float32)
    mask = rng.random((n, n_pixels)) < 0.03
    stars = pd.DataFrame(
        {
            "apogee_id": [f"2M{i:08d}" for i in range(n)],
            "cluster": cluster,
            "teff": rng.uniform(4000, 5000, n),
            "logg": rng.uniform(1.5, 3, n),
            "fe_h": latent[:, 0] * 0.1,
        }
    )
    for j, col in enumerate(ABUNDANCE_COLUMNS):
        stars[col] = latent[:, j % 4] * 0.1 + 0.01 * rng.standard_normal(n)
    vel = rng.normal(0, 20, n)
    ak = np.abs(rng.normal(0.05, 0.05, n))
    start = n_field
    for s in sizes:
        vel[start : start + s] = rng.normal(0, 20) + rng.normal(0, 1, s)
        ak[start : start + s] = abs(rng.normal(0.05, 0.03)) + np.abs(rng.normal(0, 0.01, s))
        start += s
    stars["ak_targ"], stars["vhelio_avg"] = ak, vel
    stars["snr"] = rng.uniform(80, 300, n)
    stars["visits"] = [f"apo25m-{i % 7}-5{i % 3}" for i in range(n)]
    return Dataset(stars, spectra, mask, np.linspace(15100, 16900, n_pixels), meta={"kind": kind, "name": "tiny"})
