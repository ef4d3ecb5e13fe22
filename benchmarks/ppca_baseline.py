"""Probabilistic PCA with missing values by EM — the baseline the paper used (``pyppca``).

``pyppca`` (a Python port of J. J. Verbeek's MATLAB PPCA with a factorised posterior over hidden
states and hidden observations) is not on PyPI, so this is a re-implementation of the same
algorithm for the benchmark: isotropic noise ``ss``, loadings ``C`` (D × d), missing entries imputed
from the current projection each EM step, stop when the objective changes by less than 1e-4
(relative) after at least 5 steps. It holds the whole N × D matrix in memory (as pyppca does).
"""
import numpy as np


def ppca(Y, d, seed=0, threshold=1e-4, max_iter=500):
    """Return (components (d × D, orthonormal), mean (D,), scores (N × d), n_iter)."""
    rng = np.random.default_rng(seed)
    Y = np.asarray(Y, dtype=float)
    N, D = Y.shape
    hidden = np.isnan(Y)
    missing = int(hidden.sum())
    M = np.nanmean(Y, axis=0)
    Ye = Y - M
    Ye[hidden] = 0.0
    C = rng.standard_normal((D, d))
    CtC = C.T @ C
    X = Ye @ C @ np.linalg.inv(CtC)
    recon = X @ C.T
    recon[hidden] = 0.0
    ss = np.sum((recon - Ye) ** 2) / (N * D - missing)
    old = np.inf
    for it in range(1, max_iter + 1):
        Sx = np.linalg.inv(np.eye(d) + CtC / ss)           # E-step: posterior covariance
        ss_old = ss
        if missing:
            proj = X @ C.T
            Ye[hidden] = proj[hidden]                       # expected hidden observations
        X = Ye @ C @ (Sx / ss)                              # E-step: posterior means
        SumXtX = X.T @ X                                    # M-step
        A = SumXtX + N * Sx
        C = Ye.T @ X @ np.linalg.inv(A)
        CtC = C.T @ C
        ss = (np.sum((X @ C.T - Ye) ** 2) + N * np.sum(CtC * Sx) + missing * ss_old) / (N * D)
        sign, logdet = np.linalg.slogdet(Sx)
        objective = N * D + N * (D * np.log(ss) + np.trace(Sx) - logdet) + np.trace(SumXtX) \
            - missing * np.log(ss_old)
        rel = abs(1 - objective / old)
        old = objective
        if rel < threshold and it > 5:
            break
    Q, _ = np.linalg.qr(C)
    vals, vecs = np.linalg.eigh(np.cov((Ye @ Q).T))
    Q = Q @ vecs[:, ::-1]
    return Q.T, M, Ye @ Q, it
