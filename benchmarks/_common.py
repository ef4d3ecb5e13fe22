"""Shared set-up of the benchmark scripts (run them from the repository root)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout (rsca_core itself comes from `pip install -e .`)


def paper_shaped_representation(n_pop=151145, K=30, n_clusters=22, n_cluster_stars=185, seed=0):
    """A K-dim representation at the paper's scale, with planted clusters and DR16-like metadata."""
    import numpy as np

    rng = np.random.default_rng(seed)
    scale = np.geomspace(5, 0.5, K)
    Z_pop = rng.standard_normal((n_pop, K)) * scale
    sizes = np.full(n_clusters, n_cluster_stars // n_clusters)
    sizes[: n_cluster_stars - sizes.sum()] += 1
    codes = np.repeat(np.arange(n_clusters), sizes)
    centres = rng.standard_normal((n_clusters, K)) * scale
    Z_clust = centres[codes] + rng.standard_normal((len(codes), K)) * scale * np.linspace(0.5, 1.5, K)
    ids = np.array([f"OC{c:02d}" for c in codes], dtype=object)
    pop_v = rng.normal(-10, 60, n_pop)
    pop_ak = rng.gamma(1.2, 0.12, n_pop)
    cl_v = rng.normal(-10, 40, n_clusters)[codes] + rng.normal(0, 1, len(codes))
    cl_ak = rng.gamma(1.2, 0.12, n_clusters)[codes] + rng.normal(0, 0.02, len(codes))
    return Z_pop, Z_clust, ids, dict(pop_vhelio=pop_v, pop_ak=pop_ak, clust_vhelio=cl_v, clust_ak=cl_ak)
