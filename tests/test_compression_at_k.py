"""The compression at K (issue 11): its stopping rule, its non-convergence warning and its progress.

On a small simulated survey (``rsca_core.simulate``, 300 field stars, the default pixel grid): the
rate at the default ``tol`` against the same fit run to full convergence; a fit stopped by
``max_iter`` warns once and says so in its cache file; progress reports every pass with its change
and target, on a log scale that ends full exactly when the stopping rule is met.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from rsca_core import Dataset, doppelganger_rates
from rsca_core.compress import MaskedPCA
from rsca_core.progress import convergence_fraction


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    from rsca_core.simulate import simulate

    path = tmp_path_factory.mktemp("atk") / "small"
    simulate(path, n_field=300, seed=3, progress=False)
    return Dataset.load(path)


def _rate(ds, comp):
    ri = ds.rate_inputs("spectra", k=comp.k, compression=comp)
    return doppelganger_rates(ri.z_pop, ri.z_clust, ri.cluster_ids, **ri.as_kwargs(), cv=True).global_rate


def test_the_default_tolerance_gives_the_converged_rate_within_1e3_at_k5(survey):
    """MaskedPCA's stopping rule: running the fit on to full convergence moves the leave-one-cluster-out
    rate by at most 1e-3 (docs/compression.md has the same check on the default survey)."""
    default = survey.compress(5, seed=0, use_cache=False)
    full = survey.compress(5, seed=0, use_cache=False, tol=1e-8, max_iter=500)
    assert default.converged and full.converged and full.n_iter > default.n_iter  # the long run ran on
    assert abs(_rate(survey, default) - _rate(survey, full)) <= 1e-3


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known (docs/compression.md): at K = 10 on this 485-star survey EM creeps for hundreds of passes "
    "after the relative change falls below 1e-4, and the rate moves from 0.0247 (19 passes) to 0.0188 "
    "(tol 1e-6, 268 passes) and 0.0215 (tol 1e-7, 994 passes); a per-pass change is not a distance to "
    "the fixed point, so a tighter tol alone does not bound it",
)
def test_the_default_tolerance_gives_the_converged_rate_within_1e3_at_k10(survey):
    default = survey.compress(10, seed=0, use_cache=False)
    further = survey.compress(10, seed=0, use_cache=False, tol=1e-6, max_iter=300)
    assert default.converged and further.n_iter > default.n_iter
    assert abs(_rate(survey, default) - _rate(survey, further)) <= 1e-3


def test_a_fit_stopped_before_tol_warns_once_and_its_cache_file_says_so(survey):
    with pytest.warns(ConvergenceWarning, match=r"K=6 compression stopped after 2 passes") as caught:
        comp = survey.compress(6, seed=0, max_iter=2)
    assert sum(issubclass(w.category, ConvergenceWarning) for w in caught) == 1
    assert comp.converged is False and comp.n_iter == 2 and "stopped after 2 passes" in comp.convergence_note()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read back from the cache: no second warning ...
        again = survey.compress(6, seed=0, max_iter=2)
    assert again.path == comp.path and again.converged is False  # ... but the file remembers
    assert again.convergence_note() == comp.convergence_note()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a converged fit is silent
        ok = survey.compress(6, seed=0)
    assert ok.converged is True and ok.convergence_note() is None


def test_a_weighted_fit_stopped_before_tol_warns_too(survey):
    if survey.errors is None:
        pytest.skip("the simulated survey has no flux errors")
    with pytest.warns(ConvergenceWarning, match="the ivar-weighted K=4 compression stopped after 2 passes"):
        comp = survey.compress(4, seed=0, max_iter=2, weights="ivar", use_cache=False)
    assert comp.converged is False


def test_progress_reports_each_pass_with_its_change_and_target(survey):
    calls = []
    comp = survey.compress(7, seed=0, use_cache=False, progress=lambda i, r, t: calls.append((i, r, t)))
    passes = [c[0] for c in calls]
    assert passes == list(range(comp.n_iter + 1))  # pass 0 when the fit starts, then every pass
    assert all(t == MaskedPCA(1).tol for _i, _r, t in calls)
    assert calls[-1][1] == comp.last_change < calls[-1][2]  # the last change met the target
    fr = [convergence_fraction(r, t) for _i, r, t in calls]
    assert fr[0] == 0.0 and fr[-1] == 1.0 and all(0.0 <= f < 1.0 for f in fr[:-1])


def test_exact_k_differs_from_the_leading_axes_of_a_larger_fit(survey):
    """Why the app no longer cuts K from one fit: with missing pixels the leading 8 axes of a K = 12
    fit are not the K = 8 fit, and the rates differ."""
    exact, cut = survey.compress(8, seed=0), survey.compress(12, seed=0).truncate(8)
    assert exact.k == cut.k == 8
    s = np.linalg.svd(exact.components.astype(float) @ cut.components.astype(float).T, compute_uv=False)
    assert s.min() < 0.999


def test_progress_into_a_log_file_is_one_plain_line_a_pass(capsys):
    """Run under nohup or in CI, a compression's progress must read as text: no carriage returns and no
    cursor-up codes (a bar nested under `reproduce`'s bar wrote "\\x1b[A" into logs)."""
    from rsca_core.progress import ConvergenceBar

    bar = ConvergenceBar(True, "compressing K=3")
    for i, change in enumerate([float("inf"), float("inf"), 1e-2, 3e-5]):
        bar(i, change, 1e-4)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert err.splitlines() == [
        "compressing K=3: reading the spectra",
        "compressing K=3: pass 1, change not measured yet → target 1e-04",
        "compressing K=3: pass 2, change 1.0e-02 → target 1e-04",
        "compressing K=3: pass 3, change 3.0e-05 → target 1e-04",
    ]
