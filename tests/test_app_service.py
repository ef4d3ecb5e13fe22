"""The dashboard's URL/controls validation (pages/_service), without a browser or a dataset.

A shared URL must restore exactly the view it was made from, and any tampered value must turn into a
message naming the parameter while the rest of the URL still applies.
"""

from __future__ import annotations

import itertools
import os
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from pages import _service as service  # noqa: E402


@pytest.fixture(autouse=True)
def no_datasets(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.startswith("RSCA_")]:  # e.g. left by the browser tests' app
        monkeypatch.delenv(name)
    monkeypatch.setenv("RSCA_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("RSCA_DATASET", raising=False)
    monkeypatch.delenv("RSCA_K_FIT", raising=False)
    monkeypatch.setenv("RSCA_STATE_DIR", str(tmp_path / "state"))
    service.config.reload()
    yield
    monkeypatch.undo()
    service.config.reload()


def _query(search):
    """What Dash pages hands to layout(**query): single values as str, repeated keys as lists."""
    q = parse_qs(urlparse(search).query, keep_blank_values=True)
    return {k: v[0] if len(v) == 1 else v for k, v in q.items()}


def test_query_roundtrip_restores_every_setting():
    combos = itertools.product(
        ("spectra", "abundances", "subset"),
        (2, 30, 60),
        (True, False),
        (None, 1, 7),
        ((), ((720, 910),), ((720, 910), (2370, 2470))),
    )
    for inp, k, cv, top, mask in combos:
        s = service.Settings(
            input=inp,
            k=k,
            cv=cv,
            top_n=top,
            species=("Fe", "Mg") if inp == "subset" else service.PAPER_SUBSET,
            mask=mask,
        )
        search = service.settings_to_query(s, keys=("ds", "input", "k", "species", "cv", "top", "mask"))
        back, problems = service.settings_from_query(_query(search))
        dims = {"spectra": k, "abundances": 21, "subset": 2}[inp]
        if top is not None and top > dims:  # more axes kept than the input has: refused, all axes kept
            assert back.top_n is None and problems == [
                f"URL parameter top: top-N = {top} is out of range: choose 1…{dims}; using all axes"
            ], search
            continue
        assert problems == []
        assert back == s, search


def test_tampered_values_fall_back_one_by_one_with_messages():
    q = {
        "k": "abc",
        "cv": "maybe",
        "top": "-4",
        "input": "<script>",
        "species": "Fe,Unobtainium",
        "mask": "720-910,9000-9999",
        "ds": "../../etc/passwd",
    }
    s, problems = service.settings_from_query(q)
    d = service.Settings()
    assert (s.k, s.cv, s.top_n, s.input, s.species, s.mask, s.ds) == (
        d.k,
        d.cv,
        d.top_n,
        d.input,
        d.species,
        d.mask,
        d.ds,
    )
    text = " | ".join(problems)
    for name in (
        "K must be a whole number",
        "cv must be 1 or 0",
        "top-N",
        "input must be one of",
        "unknown species",
        "0 ≤ start < stop ≤ 8575",
        "unknown dataset",
    ):
        assert name in text
    assert len(problems) == len(q)
    # good values next to bad ones still apply
    s, problems = service.settings_from_query({"k": "12", "cv": "nope", "top": "3"})
    assert (s.k, s.top_n, s.cv) == (12, 3, True) and len(problems) == 1


@pytest.mark.parametrize(
    "value,ok",
    [
        ("2", 2),
        ("60", 60),
        (" 17 ", 17),
        (17.0, 17),
        ("61", None),
        ("1", None),
        ("1e3", None),
        ("abc", None),
        ("", None),
        (True, None),
        (17.5, None),
        (float("nan"), None),
        ("9" * 400, None),
    ],
)
def test_k_parsing(value, ok):
    if ok is None:
        with pytest.raises(service.UserError):
            service.parse_int(value, "K", 2, 60)
    else:
        assert service.parse_int(value, "K", 2, 60) == ok


def test_repeated_or_huge_parameters_do_not_break_parsing():
    s, problems = service.settings_from_query({"k": ["5", "9"], "cv": "0" * 5000})
    assert s.k == 9  # the last one wins, like a form
    assert any("too long" in p for p in problems)


def test_k_fit_caps_the_k_range(monkeypatch):
    monkeypatch.setenv("RSCA_K_FIT", "12")
    service.config.reload()
    assert service.k_max() == 12
    assert service.Settings().k == 12
    s, problems = service.settings_from_query({"k": "30"})
    assert s.k == 12 and "out of range" in problems[0]


def test_missing_dataset_is_a_user_error_naming_it():
    with pytest.raises(service.UserError, match="missing"):
        service.load("default")
    with pytest.raises(service.UserError, match="unknown dataset"):
        service.load("nope")


@pytest.mark.parametrize("kind", ["simple", "filesystem", "redis", "none"])
def test_every_cache_type_serves_correct_results_even_when_the_backend_is_down(kind, tmp_path, monkeypatch):
    # Redis points at a closed port: cache errors must be ignored, never reach a page or a worker
    from flask import Flask

    monkeypatch.setenv("RSCA_CACHE_TYPE", kind)
    monkeypatch.setenv("RSCA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RSCA_REDIS_URL", "redis://127.0.0.1:1/0")
    service.config.reload()
    app = Flask("cache-test")
    service.init_app(app)
    calls = []

    @service.cache.memoize()
    def square(x):
        calls.append(x)
        return x * x

    with app.app_context():
        assert [square(3), square(3), square(4)] == [9, 9, 16]
    cached = kind in ("simple", "filesystem")
    assert calls == ([3, 4] if cached else [3, 3, 4])


def test_unknown_cache_type_and_redis_without_url_are_clear_errors(monkeypatch):
    monkeypatch.setenv("RSCA_CACHE_TYPE", "memcached")
    with pytest.raises(service.ConfigError, match="expected simple, filesystem, redis or none"):
        service.config.reload()
    monkeypatch.setenv("RSCA_CACHE_TYPE", "redis")
    monkeypatch.delenv("RSCA_REDIS_URL", raising=False)
    with pytest.raises(service.ConfigError, match="RSCA_REDIS_URL"):
        service.config.reload()


@pytest.mark.parametrize(
    "name,value",
    [
        ("RSCA_K_FIT", "abc"),
        ("RSCA_K_FIT", "1"),
        ("RSCA_CACHE_TIMEOUT", "abc"),
        ("RSCA_CACHE_THRESHOLD", "-3"),
        ("RSCA_PORT", "99999"),
    ],
)
def test_every_bad_environment_variable_is_one_line_naming_it(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(service.ConfigError) as err:
        service.config.reload()
    text = str(err.value)
    assert text.startswith(f"{name}=") and "\n" not in text


def test_the_config_is_read_once_and_frozen(monkeypatch):
    cfg = service.config.get()
    monkeypatch.setenv("RSCA_K_FIT", "12")
    assert service.k_fit() == cfg.k_fit == 60  # nothing re-reads the environment behind the app's back
    with pytest.raises(AttributeError):
        cfg.k_fit = 5


def test_cache_keys_name_k_fit(monkeypatch, tmp_path):
    # a result cached for one compression size must not be served for another (issue 10, finding 6)
    keys = []
    for kf in ("12", "20"):
        monkeypatch.setenv("RSCA_K_FIT", kf)
        service.config.reload()
        monkeypatch.setattr(service.settings_module, "uid", lambda key: "same-bundle")
        monkeypatch.setattr(service.settings_module, "compression_file_id", lambda *a: "pca-k10.npz:1:2:3")
        keys.append(service.Settings(k=10).key())
    assert keys[0] != keys[1] and '"k_fit": 12' in keys[0]


def test_cache_keys_name_the_compression_file(monkeypatch):
    """A result computed from one compression file is never answered for a refitted or upgraded one
    (another name, size, time or inode): the file's identity is part of the key of spectra settings."""
    monkeypatch.setattr(service.settings_module, "uid", lambda key: "same-bundle")
    ids = iter(["pca-k10-seed0-a4.npz:100:1:7", "pca-k10-seed0-a4.npz:100:2:8"])
    monkeypatch.setattr(service.settings_module, "compression_file_id", lambda *a: next(ids))
    before, after = service.Settings(k=10).key(), service.Settings(k=10).key()
    assert before != after and '"compression": "pca-k10-seed0-a4.npz:100:1:7"' in before
    # abundance inputs have no compression: their key does not look for one
    monkeypatch.setattr(service.settings_module, "compression_file_id", lambda *a: pytest.fail("looked up"))
    assert '"compression"' not in service.Settings(input="subset").key()


def test_pages_are_not_found_in_the_service_package():
    # Dash registers every module of pages/ as a page, except _-prefixed files and folders
    import dash

    import app  # noqa: F401

    modules = [p["module"] for p in dash.page_registry.values()]
    assert modules and not any("_service" in m or "_ui" in m for m in modules), modules


def test_messages_never_show_server_paths():
    msg = service.describe_error(ValueError("/srv/lab/data/victim/mask.npy: truncated, see /var/log/x.log"))
    assert "/srv" not in msg and "/var" not in msg and "…/mask.npy" in msg and "…/x.log" in msg
    assert service.hide_paths("K = 3/4 of 1/2") == "K = 3/4 of 1/2"  # fractions are not paths


def test_callback_bodies_are_checked_before_dash_sees_them():
    from pages._service.web import callback_request_problem, json_depth

    assert json_depth(b'{"a": [[1], "[[[["], "b": {}}') == 3  # brackets inside strings do not count
    cmap = {"x.children": {"inputs": [{"id": "a", "property": "value"}], "state": []}}
    ok = {"output": "x.children", "outputs": {"id": "x", "property": "children"}, "changedPropIds": ["a.value"]}
    ok["inputs"] = [{"id": "a", "property": "value", "value": 1}]
    import json

    assert callback_request_problem(json.dumps(ok).encode(), cmap) is None
    for bad in (b"null", b"[]", b"{", json.dumps(ok | {"output": "y.children"}).encode(), b"[" * 100 + b"]" * 100):
        assert callback_request_problem(bad, cmap)
    assert "inputs" in callback_request_problem(json.dumps(ok | {"inputs": []}).encode(), cmap)
    assert "changedPropIds" in callback_request_problem(json.dumps(ok | {"changedPropIds": 5}).encode(), cmap)


def test_forged_residuals_are_refused_and_good_ones_kept():
    good = {"wavelength": [1.0, 2.0, 3.0], "residual": [0.0, 0.1, 0.0], "bands": [[0, 2]], "summary": {}}
    assert service.check_residuals({"rv": good})["rv"]["bands"] == [(0, 2)]
    for bad in ([1], {"rv": 7}, {"rv": good | {"bands": [[2, 9]]}}, {"rv": good | {"residual": [1.0]}}):
        with pytest.raises(service.UserError):
            service.check_residuals(bad)


def test_state_folder_defaults_to_the_users_home_not_tmp(monkeypatch, tmp_path):
    monkeypatch.delenv("RSCA_STATE_DIR")
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = service.config.reload()
    assert cfg.state_dir == (tmp_path / "home" / ".local" / "state" / "rsca-lab").resolve()
    assert not cfg.allow_build  # builds are off unless the operator turns them on
    monkeypatch.setenv("RSCA_ALLOW_BUILD", "maybe")
    with pytest.raises(service.ConfigError, match="RSCA_ALLOW_BUILD"):
        service.config.reload()


# ------------------------------------------------------------------------------------------ methods (issue 15)
def test_method_is_a_url_setting_validated_by_the_parser(monkeypatch):
    for m in service.METHODS:
        s = service.Settings(method=m, k=12, cv=False)
        back, problems = service.settings_from_query(_query(service.settings_to_query(s)))
        assert problems == [] and back == s
    assert "method" not in service.settings_to_query(service.Settings())  # the default is not spelled out
    # a bad method is a message naming the parameter; the rest of the URL still applies
    s, problems = service.settings_from_query({"method": "pca", "k": "12", "cv": "0"})
    assert (s.method, s.k, s.cv) == ("rsca", 12, False)
    assert (
        len(problems) == 1 and problems[0].startswith("URL parameter method:") and "rsca, rca, lda, nca" in problems[0]
    )
    # top-N is RSCA's: with another method it is dropped, with a message
    s, problems = service.settings_from_query({"method": "RCA", "top": "3"})
    assert (s.method, s.top_n) == ("rca", None) and "RSCA only" in problems[0]
    # every cache key names the method
    monkeypatch.setattr(service.settings_module, "uid", lambda key: "same-bundle")
    monkeypatch.setattr(service.settings_module, "compression_file_id", lambda *a: "pca-k30.npz:1:2:3")
    keys = {service.Settings(method=m).key() for m in service.METHODS}
    assert len(keys) == len(service.METHODS) and all('"method": ' in k for k in keys)


@pytest.fixture
def tiny_default(tmp_path, monkeypatch):
    """A small bundle as the default dataset, with its K_FIT = 12 compression cached."""
    from tests.helpers import small_dataset

    monkeypatch.setenv("RSCA_K_FIT", "12")
    service.config.reload()
    small_dataset(n_field=300, sizes=(3, 4, 5, 6, 4, 5)).save(tmp_path / "default")
    ds = service.load("default")
    ds.compress(12, seed=service.SEED)
    return ds


def _engine_rate(ds, k, method, top_n=None):
    """The rate of ``method`` straight from rsca_core: the exact K = k compression, the pair filter, every cluster."""
    from rsca_core import doppelganger_rates

    z = ds.compress(k, seed=0).scores
    fi, ci = ds.field_index, ds.cluster_index
    st = ds.stars
    vh, ak = st["vhelio_avg"].to_numpy(float), st["ak_targ"].to_numpy(float)
    ids = st["cluster"].to_numpy(dtype=object)[ci]
    kw = dict(pop_vhelio=vh[fi], pop_ak=ak[fi], clust_vhelio=vh[ci], clust_ak=ak[ci])
    return doppelganger_rates(z[fi], z[ci], ids, **kw, cv=True, top_n=top_n, method=method, random_state=0)


@pytest.mark.parametrize("method", ["rsca", "rca", "lda", "nca"])
def test_the_app_rate_of_each_method_is_the_engines(tiny_default, method):
    ds = tiny_default
    s = service.settings_from_controls("default", "spectra", 8, None, service.ALL, True, "3", method=method)
    assert s.method == method and s.top_n == (3 if method == "rsca" else None)  # top-N is RSCA's
    service.prepare_compression("default", k=8)  # what Explore's background job runs for a K not ready
    got = service.compute_rates(s)
    want = _engine_rate(ds, 8, method, s.top_n)
    assert got["global_rate"] == pytest.approx(want.global_rate, abs=1e-12)
    assert np.allclose(got["per_cluster"]["rate"], want.per_cluster["rate"], equal_nan=True, atol=1e-12)
    assert got["description"]["method"] == method
    if method != "rsca":  # the RSCA map download refuses another method's settings
        with pytest.raises(service.UserError, match="RSCA"):
            service.fit_map(s)


def test_the_methods_experiment_of_the_curves_page(tiny_default):
    table, fig = service.run_experiment("methods", "default", {"k": "8", "species": "Fe,Mg,Si"})
    spectra = table[table["input"] == "spectra"].set_index("method")
    assert list(spectra.index) == ["rsca", "rca", "lda", "nca"]
    for m in spectra.index:  # the spectra rows are the engine's rates on the exact K = 8 compression
        assert spectra.loc[m, "global_rate"] == pytest.approx(_engine_rate(tiny_default, 8, m).global_rate, abs=1e-12)
    assert set(table["representation"]) == {"spectra", "abundance subset"}
    assert [t.name for t in fig.data][:4] == ["RSCA (paper)", "RCA", "LDA", "NCA"]
    assert "SIMULATED" in fig.layout.title.text + str(fig.layout.title.subtitle.text)  # a long title's 2nd line
    with pytest.raises(service.UserError, match="K = 99 is out of range"):
        service.run_experiment("methods", "default", {"k": "99"})


@pytest.fixture
def tiny_with_errors(tmp_path, monkeypatch):
    """The small default bundle with flux errors (errors.npy), its plain K_FIT = 12 compression cached."""
    from tests.helpers import small_dataset

    monkeypatch.setenv("RSCA_K_FIT", "12")
    service.config.reload()
    ds = small_dataset(n_field=300, sizes=(3, 4, 5, 6, 4, 5))
    rng = np.random.default_rng(1)
    ds.errors = (0.002 + 0.02 * rng.random(ds.spectra.shape) ** 3).astype(np.float32)  # heteroscedastic
    ds.save(tmp_path / "default")
    small_dataset(n_field=120, sizes=(3, 4, 5)).save(tmp_path / "noerr")
    ds = service.load("default")
    ds.compress(12, seed=service.SEED)
    return ds


def test_use_flux_errors_is_a_setting_computed_once_then_used(tiny_with_errors):
    from rsca_core import doppelganger_rates

    s, problems = service.settings_from_query({"weights": "ivar", "k": "8"})
    assert problems == [] and (s.weights, s.k) == ("ivar", 8)
    assert "weights=ivar" in service.settings_to_query(s)
    s2, problems = service.settings_from_query({"weights": "ivar", "ds": "noerr", "k": "8"})
    assert (s2.weights, s2.ds, s2.k) == ("none", "noerr", 8) and "no flux errors" in problems[0]
    s3, problems = service.settings_from_query({"weights": "heavy"})
    assert s3.weights == "none" and problems[0].startswith("URL parameter weights:")
    assert s.key() != service.Settings(k=8).key()
    # abundance inputs have no compression: the switch does not split their results
    ab = service.settings_from_controls("default", "abundances", 8, None, service.ALL, True, None, weights="ivar")
    assert ab.weights == "none"
    # until the weighted compression exists, asking for it is a message, never the plain number
    assert not service.compression_ready("default", (), "ivar")
    with pytest.raises(service.CompressionNotReady, match="not computed yet"):
        service.compute_rates(s)
    service.prepare_compression("default", weights="ivar", k=8)  # what the page's background job runs
    assert service.compression_ready("default", (), "ivar", k=8) and service.compression_ready("default", k=12)
    got = service.compute_rates(s)
    ds = tiny_with_errors
    z = ds.compress(8, seed=0, weights="ivar").scores
    plain = ds.compress(8, seed=0).scores
    assert not np.allclose(np.abs(z), np.abs(plain))  # the weights changed the compression
    fi, ci = ds.field_index, ds.cluster_index
    st = ds.stars
    vh, ak = st["vhelio_avg"].to_numpy(float), st["ak_targ"].to_numpy(float)
    ids = st["cluster"].to_numpy(dtype=object)[ci]
    kw = dict(pop_vhelio=vh[fi], pop_ak=ak[fi], clust_vhelio=vh[ci], clust_ak=ak[ci])
    want = doppelganger_rates(z[fi], z[ci], ids, **kw, cv=True)
    assert got["global_rate"] == pytest.approx(want.global_rate, abs=1e-12)
    assert "ivar-weighted" in got["description"]["pca"]


def test_a_k_not_ready_is_a_labelled_preview_until_its_exact_compression_is_computed(tiny_default):
    """One number per setting: before the K = 8 fit exists the page gets the leading 8 axes of the
    K = 12 fit, labelled PREVIEW; after the job, the exact rate, equal to the engine's to 1e-12."""
    from flask import Flask

    app = Flask("preview-test")
    service.init_app(app)  # rates and previews are memoised in the app's cache
    with app.app_context():
        _preview_then_exact(tiny_default)


def _preview_then_exact(ds):
    from rsca_core import doppelganger_rates

    s = service.settings_from_controls("default", "spectra", 8, None, service.ALL, True, None)
    assert not service.compression_ready("default", k=8)
    with pytest.raises(service.CompressionNotReady, match="K = 8"):
        service.rates(s)
    prev = service.preview_rates(s)
    assert prev["preview"]["k_from"] == 12 and "PREVIEW — leading 8 axes of the K = 12 fit" in prev["preview"]["text"]
    z = ds.compress(12, seed=0).scores[:, :8]  # the truncation, computed here
    fi, ci = ds.field_index, ds.cluster_index
    st = ds.stars
    vh, ak = st["vhelio_avg"].to_numpy(float), st["ak_targ"].to_numpy(float)
    ids = st["cluster"].to_numpy(dtype=object)[ci]
    kw = dict(pop_vhelio=vh[fi], pop_ak=ak[fi], clust_vhelio=vh[ci], clust_ak=ak[ci])
    assert prev["global_rate"] == pytest.approx(doppelganger_rates(z[fi], z[ci], ids, **kw).global_rate, abs=1e-12)
    seen = []
    service.prepare_compression("default", k=8, report=lambda f, t: seen.append((f, t)))
    # the job names its phase from the start and shows the EM passes with their change and target
    assert seen[0] == (0.0, "loading the spectra of default")
    assert any(t.startswith("compressing K=8: pass ") and "→ target 1e-04" in t for _f, t in seen)
    assert [f for f, _t in seen] == sorted(f for f, _t in seen) and seen[-1] == (1.0, "compressing K=8: done")
    got = service.rates(s)
    assert "preview" not in got
    assert got["global_rate"] == pytest.approx(_engine_rate(ds, 8, "rsca").global_rate, abs=1e-12)


def test_the_web_process_computes_with_one_blas_thread_and_jobs_get_theirs_back():
    """Forking a job while another request thread is inside a multi-threaded BLAS call deadlocked
    the worker (seen in the browser tests: the fork's OpenBLAS handler waited for the busy pool)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from pages._service import jobqueue, jobs

    def blas():
        return max([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] or [1])

    jobs.reset_background_manager()
    manager = service.background_manager()
    assert blas() == 1
    assert manager.job_blas_threads == jobqueue._blas_threads() >= 1
    assert jobqueue._with_blas_threads(blas, 2)() == 2  # what a job process runs with
    threadpool_limits(limits=1, user_api="blas")
    jobs.reset_background_manager()


def test_a_jobs_progress_never_moves_back_within_a_phase_and_keeps_its_whole_text():
    """An EM pass whose change grows again must not move the bar back (a user reads that as a restart);
    a new phase (the sweep's own count after a compression) starts from its own value."""
    from pages._service.jobs import progress_reporter

    got = []
    report = progress_reporter(got.append)
    long_target = "compressing K=50: pass 23, change 1.2e-03 → target 1e-04 (the exact fit for this K, then the rates)"
    report(0.0, "compressing K=50: reading the spectra")
    report(0.55, "compressing K=50: pass 5, change 1.0e-03 → target 1e-04")
    report(0.47, long_target)
    report(0.25, "K sweep: 2/8")
    report(0.20, "K sweep: 2/8")
    assert [v for v, _ in got] == [0, 55, 55, 25, 25]
    assert got[2][1] == long_target  # not cut at the target


def test_a_counted_phase_is_named_as_it_starts_not_after_its_first_unit():
    """A sweep's rates follow its compressions: without a report at its start the bar kept the last
    compression's text for the seconds the first rate took."""
    from pages._service.jobs import UnitProgress

    got = []
    bar = UnitProgress(4, lambda f, t: got.append((f, t)), "K sweep")
    assert got == [(0.0, "K sweep: 0/4")]
    bar.update()
    assert got[-1] == (0.25, "K sweep: 1/4")
