"""How well do the data themselves fix the K = 30 doppelganger rate of the default survey? (issue 11's
stopping rule asks the fit to fix it to 1e-3.)

(a) The 22 clusters resampled with replacement (2,000 times), the compression fixed: the rate's
    sampling error from the cluster sample.
(b) MaskedPCA refitted at the default tolerance on bootstrap resamples of the stars (rows drawn with
    replacement), each rate computed on the original stars' scores (``transform``): the compression's
    own sampling error in the rate. Compared with the full fit's rate from its ``transform`` scores.

    python benchmarks/rate_sampling_error.py [N_FITS]      (default 8; ~20 s a fit on 2 cores)
"""

import json
import sys
import time

import _common  # noqa: F401
import numpy as np
from _common import ROOT

from rsca_core import Dataset, MaskedPCA, doppelganger_rates
from rsca_core.dataset import Compression
from rsca_core.metrics import global_rate

ds = Dataset.load(ROOT / "data" / "default")
K = 30
base = ds.compress(K)


def rate_of(comp):
    ri = ds.rate_inputs("spectra", k=K, compression=comp)
    return doppelganger_rates(ri.z_pop, ri.z_clust, ri.cluster_ids, **ri.as_kwargs(), random_state=0)


res = rate_of(base)
pc = res.per_cluster
print("default rate", res.global_rate, "n-weighted check", global_rate(pc.rate, pc.n_stars), flush=True)
rng = np.random.default_rng(1)
boots = []
for _ in range(2000):
    i = rng.integers(0, len(pc), len(pc))
    boots.append(global_rate(pc.rate.to_numpy()[i], pc.n_stars.to_numpy()[i]))
lo, hi = np.percentile(boots, [16, 84])
print(f"cluster bootstrap: sd {np.std(boots):.5f}, 16-84% {lo:.5f}-{hi:.5f}", flush=True)
X = np.asarray(ds.spectra, dtype=np.float32)
M = np.asarray(ds.effective_mask(), dtype=bool)
N = len(X)
# the default fit's own transform scores (what a refit's rate is compared with)
pca0 = MaskedPCA.from_components(base.components, base.mean)
c0 = Compression(K, 0, base.components, base.mean, base.explained_variance, pca0.transform(X, M))
r0 = rate_of(c0).global_rate
print("default fit, transform scores:", r0, flush=True)
out = []
for b in range(int(sys.argv[1]) if len(sys.argv) > 1 else 8):
    t = time.time()
    idx = np.sort(np.random.default_rng(100 + b).integers(0, N, N))
    p = MaskedPCA(K, random_state=0).fit(X[idx], M[idx])
    comp = Compression(K, 0, p.components_.astype(np.float32), p.mean_, p.explained_variance_, p.transform(X, M))
    r = rate_of(comp).global_rate
    out.append(r)
    print(f"bootstrap fit {b}: rate {r:.5f} ({p.n_iter_} passes, {time.time() - t:.0f} s)", flush=True)
print(json.dumps({"default": r0, "boot": out, "sd": float(np.std(out, ddof=1))}))
