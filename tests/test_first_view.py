"""Issue 14 part 3: the dashboard's first view of a big survey. A starting worker warms itself in the
background (the bundle, the default Explore view into the result cache) and says so on /healthz; a
visitor during the warm-up waits for the same load and computation instead of a second one; after
it, the first view is a cache hit. A panel that draws a sample of the stars says how many it shows,
and the rate it stands beside is computed on all of them.

In-process, on a small survey (no gunicorn, no browser): a plain Flask server with the app's
service attached, as ``app.create_app`` attaches it.
"""

from __future__ import annotations

import os
import pickle
import threading
import time

import flask
import numpy as np
import pytest

from pages import _service as service
from pages._service import compute, warm
from pages._service.flight import flight
from rsca_core import Dataset, doppelganger_rates
from tests.helpers import small_dataset

K = 6  # RSCA_K_FIT: the pages' default K is then min(30, K) = K


@pytest.fixture
def survey(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.startswith("RSCA_")]:  # e.g. left by the browser tests' app
        monkeypatch.delenv(name)
    path = small_dataset(n_field=300, sizes=(6, 7, 8, 9), n_pixels=40, seed=5).save(tmp_path / "survey")
    for k in (2, K):  # the compressions the app prepares (K = 2, the default K = K_FIT)
        Dataset.load(path).compress(k)
    (tmp_path / "data").mkdir()
    for name, value in {
        "RSCA_DATASET": path,
        "RSCA_DATA_DIR": tmp_path / "data",
        "RSCA_STATE_DIR": tmp_path / "state",
        "RSCA_K_FIT": K,
        "RSCA_CACHE_TYPE": "simple",
    }.items():
        monkeypatch.setenv(name, str(value))
    service.config.reload()
    server = flask.Flask("first-view-test")
    service.init_app(server)
    service.background_manager()  # the job store, as the app's creation makes it (/healthz checks it)
    yield path, server
    assert warm.wait(60)  # no warm-up thread left running into the next test
    monkeypatch.undo()
    service.config.reload()


def independent_rate(path):
    """The default view's rate straight from rsca_core: all field and cluster stars, K = K, CV, pair filter."""
    ds = Dataset.load(path)
    st = ds.stars
    cl = st["cluster"].to_numpy(dtype=object)
    m = cl != ""
    z = ds.compress(K).scores
    vh, ak = st["vhelio_avg"].to_numpy(float), st["ak_targ"].to_numpy(float)
    res = doppelganger_rates(
        z[~m], z[m], cl[m], pop_vhelio=vh[~m], pop_ak=ak[~m], clust_vhelio=vh[m], clust_ak=ak[m], random_state=0
    )
    return res.global_rate, int((~m).sum())


def wait_until(cond, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_fresh_app_warms_and_its_first_view_is_then_a_cache_hit(survey, monkeypatch):
    path, server = survey
    loads, computed = [], []
    real_load, real_rates = Dataset.load.__func__, compute.compute_rates
    go_on = threading.Event()  # the rates computation, once started, waits for this (step 2)

    def counting_load(cls, p, *a, **kw):
        loads.append(str(p))
        return real_load(cls, p, *a, **kw)

    def counting_rates(*a, **kw):
        computed.append(1)
        assert go_on.wait(60)
        return real_rates(*a, **kw)

    monkeypatch.setattr(Dataset, "load", classmethod(counting_load))
    monkeypatch.setattr(compute, "compute_rates", counting_rates)
    got = {}

    def visit(name, fn):
        with server.app_context():
            got[name] = fn()

    # 1. a load of the bundle is under way (held here): the warm-up and a visitor both wait for it
    with flight.hold(("load", str(path))):
        assert warm.start(server, again=True)
        wait_until(lambda: warm.status()["datasets"].get("default") == "loading")
        visitor = threading.Thread(target=visit, args=("ds", lambda: service.load("default")))
        visitor.start()
        wait_until(lambda: flight.busy(("load", str(path))) and visitor.is_alive())
        time.sleep(0.1)
        assert warm.status()["state"] == "warming" and not loads  # nobody loads while the other load runs
    # 2. the warm-up computes the view's rates (held in that computation): /healthz answers, and says
    # "warming"; a visitor asking for the same view waits for it instead of computing it again
    wait_until(lambda: computed)
    with server.app_context():
        s, problems = service.settings_from_query({"ds": "default"})
        assert not problems and s.k == K and s.clusters is None
        body, status = service.health()
    assert status == 200 and body["status"] == "ok", body
    assert body["warm"]["state"] == "warming" and body["warm"]["datasets"] == {"default": "view"}
    second = threading.Thread(target=visit, args=("rates", lambda: service.rates(s)))
    second.start()
    time.sleep(0.2)
    assert len(computed) == 1 and second.is_alive()  # the visitor waits, it does not compute beside the warm-up
    go_on.set()
    visitor.join(60)
    second.join(60)
    assert warm.wait(60)
    with server.app_context():
        body, status = service.health()
    assert status == 200 and body["warm"]["state"] == "ready" and body["warm"]["datasets"] == {"default": "ready"}
    # one load and one computation of the rates for the warm-up and both visitors together
    assert loads == [str(path)] and len(computed) == 1
    assert got["ds"] is service.load("default")
    # 3. the first view after the warm-up: from the cache (computing anything now would fail)
    monkeypatch.setattr(compute, "compute_rates", lambda *a, **kw: pytest.fail("rates computed again"))
    with server.app_context():
        monkeypatch.setattr(compute, "fit_map", lambda *a, **kw: pytest.fail("features computed again"))
        r = service.rates(s)
        f = service.features(s)
    rate, n_field = independent_rate(path)
    assert r["global_rate"] == pytest.approx(rate, rel=1e-12) and got["rates"]["global_rate"] == r["global_rate"]
    assert r["n_field"] == n_field and f["features"][0]["field"]["n"] == n_field


def test_a_sampled_member_panel_says_how_many_it_shows_and_the_rate_is_of_all_stars(survey):
    path, server = survey
    with server.app_context():
        s, _ = service.settings_from_query({"ds": "default"})
        sampled = service.features(s, max_members=8)
        whole = service.features(s)
        r = service.rates(s)
    ds = Dataset.load(path)
    st = ds.stars
    cl = st["cluster"].to_numpy(dtype=object)
    members = cl != ""
    assert sampled["members"] == {"shown": 8, "of": 30} and whole["members"] == {"shown": 30, "of": 30}
    assert service.members_note(sampled) == "8 of 30 cluster members shown (random sample), coloured"
    assert service.members_note(whole) == "members coloured"
    # the drawn members are real rows of the table: their [Fe/H], VHELIO and cluster are theirs
    fe = dict(zip(st["apogee_id"], st["fe_h"]))
    vh = dict(zip(st["apogee_id"], st["vhelio_avg"]))
    name = dict(zip(st["apogee_id"], cl))
    for panel, truth in ((sampled["features"][0]["clusters"], fe), (sampled["vhelio"]["clusters"], vh)):
        assert len(panel["x"]) == 8 and len(set(panel["id"])) == 8
        assert [truth[i] for i in panel["id"]] == list(panel["x"])
        assert [name[i] for i in panel["id"]] == list(panel["name"])
    # the sample's y values are those of the same members in the whole panel
    full = whole["features"][0]["clusters"]
    y_of = dict(zip(full["id"], full["y"]))
    np.testing.assert_array_equal(
        [y_of[i] for i in sampled["features"][0]["clusters"]["id"]], sampled["features"][0]["clusters"]["y"]
    )
    # the field is drawn as counts of all its stars, and the rate beside it is computed on all stars
    d = sampled["features"][0]["field"]
    assert d["n"] == int((~members).sum()) and d["counts"].sum() == d["n_binned"] <= d["n"]
    rate, n_field = independent_rate(path)
    assert r["n_field"] == n_field and r["n_cluster_stars"] == 30
    assert r["global_rate"] == pytest.approx(rate, rel=1e-12)


def test_a_worker_started_later_reads_the_first_view_kept_on_disk(survey, monkeypatch):
    """The default view's rates and panels are kept in the state folder: a fresh worker (empty result
    cache) answers them without computing; a refitted compression or other settings are computed."""
    path, server = survey
    store = path.parent / "state" / "first-views"
    with server.app_context():
        s, _ = service.settings_from_query({"ds": "default"})
        r0, f0 = service.rates(s), service.features(s)
        other = service.rates(service.settings_from_query({"ds": "default", "k": "2"})[0])
    entries = sorted(store.iterdir())
    assert len(entries) == 2 and all(p.stat().st_mode & 0o077 == 0 for p in entries)  # rates + panels, private
    assert other["global_rate"] != r0["global_rate"]  # K = 2 was computed, and not kept

    def fresh_worker():
        compute.cache.clear()
        compute._compression.cache_clear()

    fresh_worker()
    computed = []
    monkeypatch.setattr(compute, "compute_rates", lambda *a, **kw: computed.append("rates"))
    monkeypatch.setattr(compute, "compute_features", lambda *a, **kw: computed.append("features"))
    with server.app_context():
        r, f = service.rates(s), service.features(s)
    assert computed == []
    rate, n_field = independent_rate(path)
    assert r["global_rate"] == pytest.approx(rate, rel=1e-12) and r["n_field"] == n_field
    assert r["per_cluster"].equals(r0["per_cluster"])
    np.testing.assert_array_equal(f["features"][0]["field"]["counts"], f0["features"][0]["field"]["counts"])
    # the compression refitted (new file time): the kept view is of the old one, so it is computed again
    comp = Dataset.load(path).compression_path(K)
    st = comp.stat()
    os.utime(comp, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh_worker()
    with server.app_context():
        service.rates(s)
    assert computed == ["rates"]


def test_prepare_keeps_every_first_view_and_an_unsafe_folder_is_not_used(survey, monkeypatch, caplog):
    path, server = survey
    from pages._service import first_views

    said = []
    assert warm.prepare(server, say=said.append) == {"default": "kept"}
    assert said and said[0].startswith("dataset default: first view on disk")
    with server.app_context():
        s, _ = service.settings_from_query({"ds": "default"})
        assert first_views.stored("rates", s.key())
        assert first_views.stored("features", s.key(), compute.N_FEATURES, compute.MAX_MEMBERS_DRAWN)
    # a store others may write in is not read (its pickles could be anyone's): views are computed
    store = path.parent / "state" / "first-views"
    store.chmod(0o777)
    first_views._warned.clear()
    compute.cache.clear()
    computed = []
    real = compute.compute_rates
    monkeypatch.setattr(compute, "compute_rates", lambda *a, **kw: computed.append(1) or real(*a, **kw))
    with server.app_context():
        r = service.rates(s)
    assert computed == [1] and r["global_rate"] == pytest.approx(independent_rate(path)[0], rel=1e-12)
    assert "first views are not kept on disk" in caplog.text
    assert warm.prepare(server, say=said.append) == {"default": "not kept"}


def test_a_first_view_kept_by_other_code_or_unreadable_is_computed_again(survey, monkeypatch):
    """An entry written by other code (another version of the app) or one that cannot be read back
    (kept by another pandas, a damaged file) is a miss: the view is computed and the entry replaced."""
    path, server = survey
    from pages._service import first_views

    with server.app_context():
        s, _ = service.settings_from_query({"ds": "default"})
        r0 = service.rates(s)
        service.features(s)
    entries = sorted((path.parent / "state" / "first-views").glob("*.pkl"))
    assert len(entries) == 2
    computed = []
    real = compute.compute_rates
    monkeypatch.setattr(compute, "compute_rates", lambda *a, **kw: computed.append(1) or real(*a, **kw))
    # 1. another version of the code wrote them
    monkeypatch.setattr(first_views, "code_fingerprint", lambda: "another-version")
    compute.cache.clear()
    with server.app_context():
        r1 = service.rates(s)
    assert computed == [1] and r1["global_rate"] == r0["global_rate"]
    # 2. damaged files (a pickle naming a module this Python does not have, or bytes cut short)
    for p in entries:
        p.write_bytes(pickle.dumps(0)[:2] + b"cnot_a_module\nThing\n.")
    compute.cache.clear()
    with server.app_context():
        r2 = service.rates(s)
        assert first_views.stored("rates", s.key())  # computed, then kept again over the damaged file
    assert computed == [1, 1] and r2["global_rate"] == pytest.approx(independent_rate(path)[0], rel=1e-12)
