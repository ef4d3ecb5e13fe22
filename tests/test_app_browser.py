"""Browser tests of the dashboard (headless Chromium through dash[testing]'s ``dash_duo``).

Run with ``pytest --headless tests/test_app_browser.py``. They open every page on a small simulated
survey, drive the controls, and check the numbers shown against ``rsca_core`` computed here, plus
that bad input gives a message (never a traceback) and that the browser console stays clean.

The survey is built once per session with ``python -m rsca_core simulate`` (or taken from
RSCA_TEST_DATASET, a bundle directory, if set); the app sees it through RSCA_DATASET.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dash.testing")

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free port on 127.0.0.1, so that several checkouts can run the browser tests at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


K_FIT = 12  # the largest K offered (RSCA_K_FIT); the app prepares K = 2, 30 (here 12) and K_FIT
N_FIELD = 300


# ------------------------------------------------------------------------------------------ set-up
@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    """A small simulated survey with the compressions the app prepares (K = 2 and K_FIT) cached."""
    from rsca_core import Dataset

    given = os.environ.get("RSCA_TEST_DATASET")
    if given:
        path = Path(given)
    else:
        path = tmp_path_factory.mktemp("data") / "small"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "rsca_core",
                "simulate",
                "--out",
                str(path),
                "--n-field",
                str(N_FIELD),
                "--seed",
                "3",
            ],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    ds = Dataset.load(path)
    for k in (2, K_FIT):  # cached beside the bundle: the app and the checks below read these files
        ds.compress(k, seed=0)
    return path


@pytest.fixture(scope="session")
def dash_app(bundle, tmp_path_factory):
    """The app, pointed at the small survey (the environment is read once, when the app is created)."""
    state = tmp_path_factory.mktemp("state")
    env = {
        "RSCA_DATASET": str(bundle),
        "RSCA_DATA_DIR": str(tmp_path_factory.mktemp("datadir")),
        "RSCA_K_FIT": str(K_FIT),
        "RSCA_STATE_DIR": str(state),
        "RSCA_CACHE_TYPE": "simple",
        "RSCA_ALLOW_BUILD": "1",  # the Data page's build form (off unless the operator allows it)
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import app as app_module

    yield app_module.app
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def core(bundle):
    """Independent computations straight from rsca_core (no app code)."""
    from rsca_core import Dataset, doppelganger_rates

    ds = Dataset.load(bundle)
    st = ds.stars
    fi, ci = ds.field_index, ds.cluster_index
    ids = st["cluster"].to_numpy(dtype=object)[ci]
    vh, ak = st["vhelio_avg"].to_numpy(float), st["ak_targ"].to_numpy(float)

    def rate(k=K_FIT, cv=True, clusters=None, top_n=None, z=None, method="rsca"):
        z = ds.compress(k, seed=0).scores if z is None else z  # the exact K = k compression, as evaluate
        keep = np.ones(len(ci), bool) if clusters is None else np.isin(ids, clusters)
        c = ci[keep]
        return doppelganger_rates(
            z[fi],
            z[c],
            ids[keep],
            pop_vhelio=vh[fi],
            pop_ak=ak[fi],
            clust_vhelio=vh[c],
            clust_ak=ak[c],
            cv=cv,
            top_n=top_n,
            method=method,
            random_state=0,
        )

    return {"ds": ds, "rate": rate, "names": ds.cluster_names}


def severe(logs):
    return [e for e in logs if e.get("level") == "SEVERE"]


def shown_rate(dash_duo, selector="#ex-global-rate", previous=None, timeout=90):
    """Wait for the rate element and return its number (waiting until it differs from ``previous``);
    a labelled preview (``data-preview="1"``, while the exact compression is computed) does not count."""
    end = time.time() + timeout
    while True:
        try:
            el = dash_duo.find_element(selector)
            text = el.text.strip()
            if el.get_attribute("data-preview") == "1":
                text = ""
        except Exception:
            text = ""
        if text and text != previous:
            return text
        if time.time() > end:
            raise AssertionError(f"{selector} never showed a new value (last {text!r})")
        time.sleep(0.2)


def set_input(dash_duo, selector, value):
    el = dash_duo.find_element(selector)
    dash_duo.clear_input(el)
    el.send_keys(str(value) + "\n")


def wait_js(dash_duo, script, ok, timeout=30):
    """Evaluate ``script`` until ``ok(value)`` (figures are drawn asynchronously); returns the last value."""
    end = time.time() + timeout
    value = None
    while time.time() < end:
        try:
            value = dash_duo.driver.execute_script(script)
        except Exception:
            value = None
        if ok(value):
            return value
        time.sleep(0.25)
    return value


def click(dash_duo, selector):
    """Click through JavaScript (a loading overlay or a sticky element may cover the target)."""
    el = dash_duo.find_element(selector)
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", el)


def open_page(dash_duo, path):
    dash_duo.driver.get(dash_duo.server_url + path)


# ------------------------------------------------------------------------------------------ Explore
def test_explore_shows_the_core_rate_and_follows_every_control(dash_duo, dash_app, core):
    dash_duo.start_server(dash_app, port=free_port())
    dash_duo.wait_for_element("#ex-global-rate", timeout=60)
    k0 = min(30, K_FIT)
    want = core["rate"](k=k0, cv=True).global_rate
    first = shown_rate(dash_duo)
    assert first == f"{want:.4f}"
    assert "simulated" in dash_duo.find_element("#ex-badge").text

    # K: the shown rate is the core's for the new K, and the URL carries it
    set_input(dash_duo, "#ex-k", 8)
    want8 = core["rate"](k=8, cv=True).global_rate
    assert f"{want8:.4f}" != first, "test survey too easy: K=8 and K=30 give the same rate"
    assert shown_rate(dash_duo, previous=first) == f"{want8:.4f}"
    assert "k=8" in dash_duo.driver.current_url

    # CV off
    click(dash_duo, "#ex-cv")
    want_nocv = core["rate"](k=8, cv=False).global_rate
    wait_js(dash_duo, "return window.location.search", lambda q: q and "cv=0" in q)
    assert "cv=0" in dash_duo.driver.current_url
    if f"{want_nocv:.4f}" != f"{want8:.4f}":
        assert shown_rate(dash_duo, previous=f"{want8:.4f}") == f"{want_nocv:.4f}"
    else:
        dash_duo.wait_for_text_to_equal("#ex-global-rate", f"{want_nocv:.4f}", timeout=30)

    # per-cluster bars equal the core's per-cluster rates
    fig = dash_duo.driver.execute_script(
        "return document.getElementById('ex-bars').getElementsByClassName('js-plotly-plot')[0].data[0]"
    )
    per = core["rate"](k=8, cv=False).per_cluster
    got = dict(zip(fig["x"], fig["y"]))
    for row in per.itertuples():
        expected = 0.0 if np.isnan(row.rate) else row.rate
        assert abs(got[row.cluster] - expected) < 1e-12
    assert not severe(dash_duo.get_logs())


def test_explore_state_in_url_is_restored_and_shareable(dash_duo, dash_app, core):
    names = core["names"]
    chosen = names[:5]
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, f"/?k=12&cv=0&top=3&clusters={','.join(chosen)}")
    want = core["rate"](k=12, cv=False, clusters=chosen, top_n=3).global_rate
    assert shown_rate(dash_duo) == f"{want:.4f}"
    assert dash_duo.find_element("#ex-k").get_attribute("value") == "12"
    assert dash_duo.find_element("#ex-top").get_attribute("value") == "3"
    # the features were drawn for these settings: 3 panels x (field density + one trace per cluster)
    n_traces = wait_js(
        dash_duo,
        "var g = document.getElementById('ex-features')"
        ".getElementsByClassName('js-plotly-plot')[0]; return g && g.data ? g.data.length : 0",
        lambda n: n == 3 * (1 + len(chosen)),
    )
    assert n_traces == 3 * (1 + len(chosen))
    assert not severe(dash_duo.get_logs())


def test_explore_method_selector_shows_the_engines_rate_and_disables_top_n(dash_duo, dash_app, core):
    from selenium.webdriver.support.select import Select

    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/?k=8&top=3")
    want_rsca = core["rate"](k=8, top_n=3).global_rate
    assert shown_rate(dash_duo) == f"{want_rsca:.4f}"
    assert dash_duo.find_element("#ex-top").get_attribute("disabled") is None
    Select(dash_duo.find_element("#ex-method")).select_by_value("rca")
    want = core["rate"](k=8, method="rca").global_rate  # the engine's RCA rate, same inputs
    assert f"{want:.4f}" != f"{want_rsca:.4f}", "test survey too easy: RCA and RSCA give the same rate"
    assert shown_rate(dash_duo, previous=f"{want_rsca:.4f}") == f"{want:.4f}"
    dash_duo.wait_for_contains_text("#ex-rate-title", "RCA", timeout=30)
    wait_js(dash_duo, "return window.location.search", lambda q: q and "method=rca" in q)
    assert "method=rca" in dash_duo.driver.current_url
    assert dash_duo.find_element("#ex-top").get_attribute("disabled") is not None
    assert "RSCA only" in dash_duo.find_element("#ex-top-note").text
    # the paper's 0.020 is RSCA's: not set beside another method's rate as if comparable
    assert dash_duo.find_element("#ex-paper").text == "RSCA only: the paper ran no RCA"
    assert dash_duo.find_element("#ex-dl-map").get_attribute("disabled") is not None
    # the CSV download names the method, in its file name and its method column
    click(dash_duo, "#ex-dl-csv")
    csv_file = _wait_file(Path(dash_duo.download_path), ".csv")
    assert "_rca_" in csv_file.name
    assert set(pd.read_csv(csv_file)["method"]) == {"rca"}
    # a shared URL restores the method; a bad one is a message and the rest still applies
    open_page(dash_duo, "/?method=lda&k=8")
    want_lda = core["rate"](k=8, method="lda").global_rate
    dash_duo.wait_for_text_to_equal("#ex-global-rate", f"{want_lda:.4f}", timeout=30)
    assert dash_duo.find_element("#ex-method").get_attribute("value") == "lda"
    open_page(dash_duo, "/?method=pca&k=8")
    dash_duo.wait_for_contains_text("#ex-url-msg", "URL parameter method", timeout=30)
    dash_duo.wait_for_text_to_equal("#ex-global-rate", f"{core['rate'](k=8).global_rate:.4f}", timeout=30)
    assert not severe(dash_duo.get_logs())


def test_explore_flux_errors_switch_computes_the_weighted_pca_in_the_background(dash_duo, dash_app, core):
    ds = core["ds"]
    if ds.errors is None:
        pytest.skip("test survey has no flux errors")
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/?k=8")
    plain = f"{core['rate'](k=8).global_rate:.4f}"
    assert shown_rate(dash_duo) == plain
    assert dash_duo.find_element("#ex-weights").get_attribute("disabled") is None
    click(dash_duo, "#ex-weights")
    wait_js(dash_duo, "return window.location.search", lambda q: q and "weights=ivar" in q)
    # until the job has written the weighted compression, the page shows a preview from the plain
    # compression, labelled (on this small survey the job may finish before a poll sees that state)
    end = time.time() + 240
    while time.time() < end:
        pending, rate, card = dash_duo.driver.execute_script(
            "var p = document.getElementById('ex-pending'), r = document.getElementById('ex-global-rate'),"
            " c = document.getElementById('ex-rate');"
            " return [p ? p.innerText : null, r ? r.innerText : null, c ? c.innerText : '']"
        )
        if pending is not None:
            assert "PREVIEW — UNWEIGHTED PCA (K = 8)" in pending and rate in (plain, None)
        elif "flux-error-weighted PCA" in card:
            break
        time.sleep(0.2)
    comp = ds.compress(8, seed=0, weights="ivar")  # the app's job cached it beside the bundle
    want = f"{core['rate'](z=comp.scores).global_rate:.4f}"
    dash_duo.wait_for_text_to_equal("#ex-global-rate", want, timeout=30)
    assert "flux-error-weighted PCA" in dash_duo.find_element("#ex-rate").text
    assert not severe(dash_duo.get_logs())


def _shown_exact_rate(dash_duo, k, timeout=120):
    """The full-precision rate (``data-rate``) once the page shows the exact K = ``k`` result (not a
    preview); checks any preview seen on the way says what it is cut from."""
    end = time.time() + timeout
    script = (
        "var r = document.getElementById('ex-global-rate'), p = document.getElementById('ex-pending');"
        " return [r ? r.getAttribute('data-rate') : null, r ? r.getAttribute('data-preview') : null,"
        " p ? p.innerText : null, (document.getElementById('ex-k') || {}).value]"
    )
    seen_preview = False
    while time.time() < end:
        rate, preview, label, k_shown = dash_duo.driver.execute_script(script)
        if rate is not None and k_shown == str(k):
            if preview == "0" and label is None:
                return float(rate), seen_preview
            if preview == "1" and label:  # (the label may be drawn a moment after the number)
                assert label.startswith("PREVIEW — leading ") and f"the exact K = {k} compression" in label
                seen_preview = True
        time.sleep(0.1)
    raise AssertionError(f"the page never showed the exact K = {k} rate")


@pytest.mark.parametrize(
    "k,top,cv",
    [(5, None, True), (9, 2, False), (K_FIT, None, False), (7, 3, True)],
    ids=["k5-cv", "k9-top2-nocv", "kfit-nocv", "k7-top3-cv"],
)
def test_the_app_rate_equals_evaluate_to_1e12(dash_duo, dash_app, bundle, k, top, cv):
    """One truth (issue 11): for a K whose compression is not ready the page computes it in the
    background (a labelled preview meanwhile), then shows the rate ``rsca evaluate`` gives for the
    same setting, read here with full precision and compared to 1e-12."""
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, f"/?k={k}&cv={int(cv)}" + ("" if top is None else f"&top={top}"))
    got, _seen_preview = _shown_exact_rate(dash_duo, k)  # (the preview itself: the test below)
    cmd = [sys.executable, "-m", "rsca_core", "evaluate", "--dataset", str(bundle), "--k", str(k), "--json"]
    cmd += ([] if top is None else ["--top-n", str(top)]) + ([] if cv else ["--no-cv"])
    out = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True).stdout
    evaluated = json.loads(out)
    want = evaluated["global_rate"]
    assert abs(got - want) <= 1e-12, (got, want)
    assert f"{want:.4f}" == dash_duo.find_element("#ex-global-rate").text
    # the rate's spread over the clusters resampled: the same number on the page and from evaluate
    assert dash_duo.find_element("#ex-rate-spread").text.startswith(f"± {evaluated['rate_spread']:.4f} ")
    assert not severe(dash_duo.get_logs())


def test_a_k_not_ready_shows_a_labelled_preview_then_the_exact_rate(dash_duo, dash_app, bundle, core):
    """While the exact K = 11 fit is held up (the test holds the job's compression lock), the page
    shows the leading 11 axes of the K = 12 fit, labelled PREVIEW, with the job's phase in its bar;
    then the exact rate, equal to ``rsca evaluate``'s."""
    from pages._service.jobs import exclusive
    from rsca_core import Dataset

    ds = Dataset.load(bundle)
    assert not ds.has_compression(11, 0)
    dash_duo.start_server(dash_app, port=free_port())
    with exclusive(f"compress:{ds.path}:11:0"):
        open_page(dash_duo, "/?k=11")
        label = wait_js(
            dash_duo,
            "var p = document.getElementById('ex-pending'); return p ? p.innerText : null",
            lambda t: bool(t),
            timeout=60,
        )
        assert label.startswith("PREVIEW — leading 11 axes of the K = 12 fit")
        assert "the exact K = 11 compression is being computed" in label
        preview = float(dash_duo.find_element("#ex-global-rate").get_attribute("data-rate"))
        want = core["rate"](z=ds.compress(12, seed=0).scores[:, :11]).global_rate
        assert abs(preview - want) <= 1e-12
        # the phase is named in a line of its own above the bar (readable while the bar is still empty)
        bar = wait_js(
            dash_duo,
            "var b = document.getElementById('ex-ivar-progress-text');"
            "return b && b.offsetParent !== null ? b.innerText : null",
            lambda t: bool(t),
        )
        assert any(
            phase in bar for phase in ("Starting: the exact compression", "loading the spectra", "compressing K=11")
        )
    got, _ = _shown_exact_rate(dash_duo, 11)
    cmd = [sys.executable, "-m", "rsca_core", "evaluate", "--dataset", str(bundle), "--k", "11", "--json"]
    want = json.loads(subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True).stdout)["global_rate"]
    assert abs(got - want) <= 1e-12
    assert not severe(dash_duo.get_logs())


def test_explore_abundance_subset_input(dash_duo, dash_app, core):
    ds = core["ds"]
    z = ds.abundances(["Fe", "Mg", "Si"])
    if np.isnan(z).any():
        pytest.skip("test survey has missing abundances")
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/?input=subset&species=Fe,Mg,Si")
    want = core["rate"](z=z, cv=True).global_rate
    assert shown_rate(dash_duo) == f"{want:.4f}"
    assert "0.023" in dash_duo.find_element("#ex-paper").text
    assert not severe(dash_duo.get_logs())


def test_bad_input_gives_messages_not_tracebacks(dash_duo, dash_app, core):
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/?k=abc&cv=maybe&clusters=NoSuchCluster&top=-4&ds=../../etc&input=<script>")
    dash_duo.wait_for_contains_text("#ex-url-msg", "K must be a whole number", timeout=30)
    text = dash_duo.find_element("#ex-url-msg").text
    for part in ("cv must be 1 or 0", "unknown cluster", "unknown dataset", "input must be one of", "top-N"):
        assert part in text
    # the page still works with the defaults
    want = core["rate"](k=min(30, K_FIT)).global_rate
    assert shown_rate(dash_duo) == f"{want:.4f}"

    set_input(dash_duo, "#ex-k", "abc")
    dash_duo.wait_for_contains_text("#ex-msg", "K must be a whole number", timeout=20)
    set_input(dash_duo, "#ex-k", 999)
    dash_duo.wait_for_contains_text("#ex-msg", "out of range", timeout=20)
    set_input(dash_duo, "#ex-k", 6)
    dash_duo.wait_for_text_to_equal("#ex-global-rate", f"{core['rate'](k=6).global_rate:.4f}", timeout=30)
    click(dash_duo, "#ex-clusters-none")
    dash_duo.wait_for_contains_text("#ex-msg", "select at least two clusters", timeout=20)
    set_input(dash_duo, "#ex-top", "lots")
    dash_duo.wait_for_contains_text("#ex-msg", "whole number", timeout=20)
    page = dash_duo.driver.page_source
    assert "Traceback" not in page and "Callback error" not in page
    assert not severe(dash_duo.get_logs())


def test_missing_dataset_is_a_message(dash_duo, dash_app, tmp_path, monkeypatch):
    from pages import _service as service

    monkeypatch.setenv("RSCA_DATASET", str(tmp_path / "nowhere"))
    service.config.reload()  # the app reads its environment once, at start
    try:
        dash_duo.start_server(dash_app, port=free_port())
        dash_duo.wait_for_contains_text("#ex-msg", "missing", timeout=30)
        open_page(dash_duo, "/data")
        dash_duo.wait_for_contains_text("#dt-msg", "missing", timeout=30)
        assert "Traceback" not in dash_duo.driver.page_source
        assert not severe(dash_duo.get_logs())
    finally:
        monkeypatch.undo()
        service.config.reload()


def test_downloads_say_simulated_and_match(dash_duo, dash_app, core):
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/?k=10")
    want = core["rate"](k=10)
    assert shown_rate(dash_duo) == f"{want.global_rate:.4f}"
    click(dash_duo, "#ex-dl-csv")
    target = Path(dash_duo.download_path)
    csv_file = _wait_file(target, ".csv")
    text = csv_file.read_text()
    assert "_simulated_" in csv_file.name and not any(ln.startswith("#") for ln in text.splitlines())
    rows = list(csv.DictReader(io.StringIO(text)))
    got = {r["cluster"]: r["rate"] for r in rows}
    for row in want.per_cluster.itertuples():
        if not np.isnan(row.rate):
            assert abs(float(got[row.cluster]) - row.rate) < 1e-12
    assert all(r["data"] == "simulated" for r in rows)

    click(dash_duo, "#ex-dl-map")
    npz = _wait_file(target, ".npz")
    with np.load(npz) as z:
        assert str(z["data_kind"]) == "simulated"
        # the stored linear map reproduces the model on a complete spectrum: y = x W^T + b
        from rsca_core import RSCA

        ds = core["ds"]
        comp = ds.compress(10, seed=0)
        st = ds.stars
        fi, ci = ds.field_index, ds.cluster_index
        model = RSCA().fit(comp.scores[fi], comp.scores[ci], st["cluster"].to_numpy(dtype=object)[ci])
        x = np.asarray(ds.spectra[0], float)
        y_map = x @ z["W"].T + z["b"]
        y_ref = model.transform(((x - comp.mean) @ np.asarray(comp.components, float).T)[None, :])[0]
        assert np.allclose(y_map, y_ref, rtol=1e-6, atol=1e-6 * np.abs(y_ref).max())
    assert not severe(dash_duo.get_logs())


def _wait_file(folder: Path, suffix: str, timeout=20) -> Path:
    end = time.time() + timeout
    while time.time() < end:
        found = [p for p in folder.glob(f"*{suffix}")]
        if found and found[0].stat().st_size > 0:
            time.sleep(0.3)
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {suffix} file downloaded into {folder}")


# ------------------------------------------------------------------------------------------ other pages
def test_clusters_grid_has_one_panel_per_cluster_with_its_rate(dash_duo, dash_app, core):
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/clusters?k=10")
    want = core["rate"](k=10)
    assert shown_rate(dash_duo, "#cl-global-rate") == f"{want.global_rate:.4f}"
    titles = dash_duo.driver.execute_script(
        "return document.getElementById('cl-grid').getElementsByClassName('js-plotly-plot')[0]"
        ".layout.annotations.map(a => a.text)"
    )
    for row in want.per_cluster.itertuples():
        rate = "n/a" if np.isnan(row.rate) else f"{row.rate:.3f}"
        assert f"{row.cluster} (n={row.n_stars}) · rate {rate}" in titles
    # navigate to Explore with the same settings through the link
    click(dash_duo, "#cl-explore-link")
    assert shown_rate(dash_duo) == f"{want.global_rate:.4f}"
    assert not severe(dash_duo.get_logs())


def test_inside_rsca_steps_follow_the_slider(dash_duo, dash_app, core):
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/inside?step=1")
    dash_duo.wait_for_contains_text("#in-explain", "Compress", timeout=30)
    get = (
        "var p = document.getElementById('in-steps').getElementsByClassName('js-plotly-plot')[0];"
        " return p && p.data ? p.data[0] : null"
    )
    field0 = wait_js(dash_duo, get, lambda v: v is not None)  # Plotly draws after the text is set
    # step 2 on the slider: the field is sphered (unit covariance, zero mean)
    from selenium.webdriver.common.keys import Keys

    dash_duo.find_element("#in-step [role=slider]").send_keys(Keys.ARROW_RIGHT)
    dash_duo.wait_for_contains_text("#in-explain", "Sphere", timeout=30)
    end = time.time() + 20
    while time.time() < end:
        f1 = dash_duo.driver.execute_script(get)
        if f1 and f1["x"] != field0["x"]:
            break
        time.sleep(0.2)
    xy = np.c_[np.asarray(f1["x"], float), np.asarray(f1["y"], float)]
    n_field = len(core["ds"].field_index)
    if len(xy) == n_field:  # the whole field is shown: exactly whitened
        assert np.allclose(np.cov(xy.T), np.eye(2), atol=1e-6)
    else:
        assert np.allclose(np.cov(xy.T), np.eye(2), atol=0.15)
    assert "step=2" in dash_duo.driver.current_url
    # the page has no input choice (spectra is all it shows), so K's help does not say "spectra only"
    k_help = dash_duo.driver.execute_script("return document.getElementById('in-k').parentElement.innerText")
    assert "Enter" in k_help and "spectra only" not in k_help, k_help
    assert not severe(dash_duo.get_logs())


def _inside_clusters(dash_duo):
    """The cluster members' (x, y) drawn in the Inside RSCA step plot, and the axis titles."""
    got = dash_duo.driver.execute_script(
        "var p = document.getElementById('in-steps').getElementsByClassName('js-plotly-plot')[0];"
        " return [p.data.slice(1).map(t => [t.x, t.y]), p.layout.xaxis.title.text, p.layout.yaxis.title.text]"
    )
    xy = np.vstack([np.c_[np.asarray(x, float), np.asarray(y, float)] for x, y in got[0]])
    return xy, got[1], got[2]


def test_inside_rsca_numbers_follow_the_plots_axis_order(dash_duo, dash_app):
    import re

    from selenium.webdriver.common.keys import Keys

    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/inside?step=3")
    dash_duo.wait_for_contains_text("#in-explain", "Reparametrize", timeout=60)
    dash_duo.wait_for_contains_text("#in-numbers", "residual axis", timeout=30)
    wait_js(dash_duo, "return document.querySelector('#in-steps .js-plotly-plot').data.length", lambda n: n and n > 2)
    s3, x3, y3 = _inside_clusters(dash_duo)
    text3 = dash_duo.find_element("#in-numbers").text
    assert (x3, y3) == ("residual axis 1", "residual axis 2")
    dash_duo.find_element("#in-step [role=slider]").send_keys(Keys.ARROW_RIGHT)
    dash_duo.wait_for_contains_text("#in-explain", "Rescale", timeout=30)
    s4, x4, y4 = _inside_clusters(dash_duo)
    text4 = dash_duo.find_element("#in-numbers").text
    assert x4.startswith("RSCA axis 1") and y4.startswith("RSCA axis 2")
    assert text4.index("x: RSCA axis 1") < text4.index("y: RSCA axis 2")  # x first, as in the plot
    sigmas = []
    for i, name in enumerate("xy"):
        # from the plotted points alone: RSCA axis i is residual axis j divided by σ
        fits = []
        for j in range(2):
            a = float(s3[:, j] @ s4[:, i] / (s3[:, j] @ s3[:, j]))
            fits.append((np.linalg.norm(s4[:, i] - a * s3[:, j]) / np.linalg.norm(s4[:, i]), j, a))
        err, j, a = min(fits)
        assert err < 1e-6 and a > 0
        m = re.search(rf"{name}: RSCA axis {i + 1} = residual axis (\d+), σc = ([\d.]+), σ = ([\d.]+)", text4)
        assert m, text4
        assert int(m.group(1)) == j + 1
        sigma_c, sigma = float(m.group(2)), float(m.group(3))
        assert abs(sigma - 1 / a) < 1e-3
        assert abs(np.sqrt(sigma_c**2 / (1 - sigma_c**2)) - sigma) < 5e-3  # Eq. 4
        # step 3 named the same σc for that residual axis, under the plot axis that shows it
        assert f"{'xy'[j]}: residual axis {j + 1}, σc = {m.group(2)}" in text3
        sigmas.append(sigma)
    assert sigmas[0] <= sigmas[1]  # RSCA axis 1 is the tightest, as the text says
    assert not severe(dash_duo.get_logs())


def test_data_page_counts(dash_duo, dash_app, core):
    ds = core["ds"]
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/data")
    dash_duo.wait_for_element("#dt-facts", timeout=30)
    facts = dash_duo.find_element("#dt-facts").text
    assert f"field stars {len(ds.field_index):,}" in facts
    assert f"cluster stars {len(ds.cluster_index):,}" in facts
    assert f"clusters {len(ds.cluster_names)}" in facts
    assert "simulated" in facts
    assert "Ready" in dash_duo.find_element("#dt-pca-status").text
    assert not severe(dash_duo.get_logs())


def test_systematics_page_loads_and_rejects_bad_bands(dash_duo, dash_app, core):
    import math

    from selenium.webdriver.support.select import Select

    w = np.asarray(core["ds"].wavelength, float)
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/systematics?mask=720-910")
    dash_duo.wait_for_element("#sy-mask", timeout=30)
    # the URL's pixels are shown in Å: from pixel 720's wavelength to pixel 909's (the stop is excluded)
    shown = f"{math.floor(w[720] * 100) / 100:.2f}-{math.ceil(w[909] * 100) / 100:.2f}"
    assert dash_duo.find_element("#sy-mask").get_attribute("value") == shown
    set_input(dash_duo, "#sy-mask", "banana")
    # the message comes from the drawing callback, which waits for the App. A/B job the page started
    dash_duo.wait_for_contains_text("#sy-mask-msg", "START-STOP in Å", timeout=120)
    set_input(dash_duo, "#sy-mask", "9000-9100")
    dash_duo.wait_for_contains_text("#sy-mask-msg", "holds no pixel", timeout=30)
    Select(dash_duo.find_element("#sy-mask-unit")).select_by_value("px")  # the same numbers as pixels
    set_input(dash_duo, "#sy-mask", "9000-9100")
    dash_duo.wait_for_contains_text("#sy-mask-msg", "0 ≤ start < stop ≤ 8575", timeout=30)
    assert not severe(dash_duo.get_logs())


def _masked_rate(dash_duo, unit, text, timeout=300):
    """Open Systematics, type ``text`` in ``unit``, run "rate with these bands masked"; the shown rate."""
    from selenium.webdriver.support.select import Select

    open_page(dash_duo, "/systematics")
    dash_duo.wait_for_element("#sy-mask", timeout=30)
    # the page's own App. A/B job first (it holds a job slot until it is done)
    drawn = "var g = document.querySelector('#sy-ext .js-plotly-plot'); return g && g.data ? g.data.length : 0"
    wait_js(dash_duo, drawn, lambda n: n and n > 0, timeout=timeout)
    if unit != "A":
        Select(dash_duo.find_element("#sy-mask-unit")).select_by_value(unit)
    set_input(dash_duo, "#sy-mask", text)
    if unit == "A":  # the conversion is shown under the box
        dash_duo.wait_for_contains_text("#sy-mask-pixels", "= pixels", timeout=60)
    wait_js(dash_duo, "return window.location.search", lambda q: q and "mask=" in q)  # the URL keeps pixels
    pixels = dash_duo.find_element("#sy-mask-pixels").text
    click(dash_duo, "#sy-rate-run")
    answer = wait_js(dash_duo, "return document.getElementById('sy-rate-result').innerText", bool, timeout=timeout)
    assert dash_duo.find_elements("#sy-rate-with"), f"no masked rate; the page says {answer!r}"
    return dash_duo.find_element("#sy-rate-with").text.strip(), pixels, dash_duo.driver.current_url


def test_systematics_mask_in_angstrom_is_the_same_as_the_pixel_mask(dash_duo, dash_app, core):
    ds = core["ds"]
    w = np.asarray(ds.wavelength, float)
    ranges = [(15300.0, 15320.0), (16100.5, 16110.25)]
    pixels = []
    for a, b in ranges:  # every pixel whose wavelength lies in the range, straight from the grid
        idx = np.flatnonzero((w >= a) & (w <= b))
        assert idx.size > 10 and np.all(np.diff(idx) == 1)
        pixels.append((int(idx[0]), int(idx[-1]) + 1))
    as_pixels = ", ".join(f"{a}-{b}" for a, b in pixels)
    dash_duo.start_server(dash_app, port=free_port())

    rate_px, _, url_px = _masked_rate(dash_duo, "px", as_pixels)
    rate_a, shown, url_a = _masked_rate(dash_duo, "A", "15300-15320, 16100.5-16110.25")
    assert shown.startswith(f"= pixels {as_pixels}")  # the conversion shown under the box
    in_url = "mask=" + ",".join(f"{a}-{b}" for a, b in pixels)
    assert in_url in url_a and in_url in url_px  # the URL keeps the pixels, whichever unit was typed
    # and both are the engine's rate with those pixels masked in the compression
    pca = ds.compress(K_FIT, seed=0, extra_mask_ranges=tuple(pixels), use_cache=False)
    want = core["rate"](z=pca.scores[:, : min(30, K_FIT)]).global_rate
    assert rate_a == rate_px == f"{want:.4f}"
    assert rate_a != f"{core['rate'](k=min(30, K_FIT)).global_rate:.4f}", "masking changed nothing: test too weak"
    # switching the unit rewrites the box in the other unit, the same pixels
    from selenium.webdriver.support.select import Select

    Select(dash_duo.find_element("#sy-mask-unit")).select_by_value("px")
    dash_duo.wait_for_text_to_equal("#sy-mask", as_pixels, timeout=30)
    assert not severe(dash_duo.get_logs())


def test_systematics_labels_say_which_part_each_number_of_components_sets(dash_duo, dash_app):
    """Two boxes of PCA components side by side: K (App. C and the masked rate) and the App. A/B PCA of
    the quiet stars. Each label names what it sets, and the App. A/B panels state the number typed in theirs."""
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/systematics")
    dash_duo.wait_for_element("#sy-ncomp", timeout=30)
    k_label = dash_duo.find_element("label[for='sy-k']").text
    n_label = dash_duo.find_element("label[for='sy-ncomp']").text
    assert k_label.startswith("K (PCA components, 2–") and "for App. C and the masked rate" in k_label
    assert n_label == "App. A/B: PCA components of the quiet stars (2–60)"
    assert "App. A/B" not in k_label
    set_input(dash_duo, "#sy-ncomp", 8)
    title = (
        "var g = document.querySelector('#sy-ext .js-plotly-plot');"
        " return g && g.layout && g.layout.title && g.layout.title.subtitle ? g.layout.title.subtitle.text : ''"
    )
    shown = wait_js(dash_duo, title, lambda t: t and "with 8 components" in t, timeout=240)
    assert "quiet-star PCA with 8 components" in shown, shown
    check_layout(dash_duo, ["sy-ext", "sy-rv"])  # the two-line titles clear of the modebar
    assert not severe(dash_duo.get_logs())


def test_curves_methods_experiment_runs_in_the_background_and_matches_the_engine(dash_duo, dash_app, core):
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/curves")
    dash_duo.wait_for_element("#cu-methods-run", timeout=30)
    assert wait_js(dash_duo, "return document.getElementById('cu-methods-csv').disabled", bool)  # before a run
    set_input(dash_duo, "#cu-methods-k", 8)
    click(dash_duo, "#cu-methods-run")
    dash_duo.wait_for_element("#cu-methods-tab", timeout=180)
    rows = [
        [td.text for td in tr.find_elements("css selector", "td")]
        for tr in dash_duo.find_elements("#cu-methods-tab tbody tr")
    ]
    shown = {(r[0], r[1]): r[2] for r in rows}
    assert len(rows) == 8  # 4 methods x (spectra, abundance subset)
    for m, name in (("rsca", "RSCA (paper)"), ("rca", "RCA"), ("lda", "LDA"), ("nca", "NCA")):
        assert shown[("spectra", name)] == f"{core['rate'](k=8, method=m).global_rate:.4f}", name
    n_bars = wait_js(
        dash_duo,
        "var g = document.getElementById('cu-methods-fig').getElementsByClassName('js-plotly-plot')[0];"
        " return g && g.data ? g.data.filter(t => t.type === 'bar').length : 0",
        lambda n: n == 4,
    )
    assert n_bars == 4
    check_layout(dash_duo, ["cu-methods-fig"])
    assert wait_js(dash_duo, "return !document.getElementById('cu-methods-csv').disabled", bool)
    assert dash_duo.find_element("#cu-methods-csv-note").text == ""
    click(dash_duo, "#cu-methods-csv")
    csv_file = _wait_file(Path(dash_duo.download_path), ".csv")
    assert csv_file.name == "rsca-curves-methods_simulated_default_k-8_species-Fe.Mg.Ni.Si.Al.C.N.csv"
    table = pd.read_csv(csv_file)  # no comment lines: it reads as it is
    assert set(table["label"]) == {"simulated"} and set(table["experiment"]) == {"methods"}
    spectra = table[table["representation"] == "spectra"].set_index("method")["global_rate"]
    assert spectra.map(lambda v: f"{v:.4f}").to_dict() == {
        m: shown[("spectra", n)] for m, n in (("rsca", "RSCA (paper)"), ("rca", "RCA"), ("lda", "LDA"), ("nca", "NCA"))
    }
    assert not severe(dash_duo.get_logs())


CU_FIG_TITLE = (
    "var g = document.querySelector('#{card}-fig .js-plotly-plot'); if (!g || !g.layout) return null;"
    " var t = g.layout.title || {}; return [t.text || '', (t.subtitle && t.subtitle.text) || '',"
    " (g.layout.annotations || []).map(a => a.text).join(' '),"
    " g._fullData.length ? Array.from(g._fullData[0].x) : []]"
)


def _cancel_held_run(dash_duo, card, field, value):
    """Type ``value``, press Run and, while the run waits for the K = 10 compression the test holds, Cancel."""
    set_input(dash_duo, f"#{card}-{field}", value)
    click(dash_duo, f"#{card}-run")
    assert wait_js(dash_duo, f"return !document.getElementById('{card}-cancel').disabled", bool), "never ran"
    click(dash_duo, f"#{card}-cancel")
    assert wait_js(dash_duo, f"return document.getElementById('{card}-run').disabled === false", bool)


def test_curves_a_cancelled_run_leaves_the_previous_figure_labelled_as_such(dash_duo, dash_app, bundle):
    """After Cancel the card keeps the previous run's figure, titled "previous run: <its settings>" (its own
    title under it) with a message saying so; a card with no finished run shows a blank "cancelled" panel.
    The cancelled runs wait for a K = 10 compression the test holds, so they are cancelled mid-run."""
    from pages._service.jobs import exclusive

    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/curves")
    dash_duo.wait_for_element("#cu-k_sweep-run", timeout=30)
    title = CU_FIG_TITLE.replace("{card}", "cu-k_sweep")
    set_input(dash_duo, "#cu-k_sweep-ks", f"2,{K_FIT}")  # both compressions on disk
    click(dash_duo, "#cu-k_sweep-run")
    first = wait_js(dash_duo, title, lambda v: v and "PCA dimensionality" in v[0], timeout=180)
    assert first[3] == [2, K_FIT]
    with exclusive(f"compress:{bundle}:10:0"):
        _cancel_held_run(dash_duo, "cu-k_sweep", "ks", "10")
        shown = wait_js(dash_duo, title, lambda v: v and "previous run" in v[0])
        assert shown[0] == f"<b>previous run</b>: K values 2,{K_FIT}"
        assert shown[1].startswith(first[0])  # the figure's own title, under the label
        assert shown[3] == [2, K_FIT]  # still the previous run's points
        assert dash_duo.find_element("#cu-k_sweep-msg").text == (
            f"Run cancelled. The figure below is the previous run's (K values 2,{K_FIT})."
        )
        # a card with nothing finished: a blank panel saying the run was cancelled
        _cancel_held_run(dash_duo, "cu-data_size", "ks", "10")
        blank = wait_js(dash_duo, CU_FIG_TITLE.replace("{card}", "cu-data_size"), lambda v: v and "cancelled" in v[2])
        assert "Run cancelled: nothing computed" in blank[2] and blank[3] == []
    # the next finished run replaces the label and the message
    set_input(dash_duo, "#cu-k_sweep-ks", f"2,{K_FIT}")
    click(dash_duo, "#cu-k_sweep-run")
    again = wait_js(dash_duo, title, lambda v: v and "previous run" not in v[0] and "PCA" in v[0], timeout=120)
    assert again[0] == first[0]
    assert wait_js(dash_duo, "return document.getElementById('cu-k_sweep-msg').innerText", lambda t: t == "") == ""
    assert not severe(dash_duo.get_logs())


TITLE_TEXT_JS = (
    "var g = document.getElementById(arguments[0]); return g ? Array.from("
    "g.querySelectorAll('.gtitle, .gtitle-subtitle')).map(e => e.textContent).join(' ') : ''"
)
DATA_TAG = re.compile(r"[\[(][^\[\]()]*\bdata\b[^\[\]()]*[\])]", re.IGNORECASE)  # "(… data …)" or "[… data …]"


def test_every_page_spells_the_data_tag_the_same(dash_duo, dash_app):
    """The tag saying a figure is of simulated data reads the same on every page: the dashboard's own
    figures (Explore, Systematics, Siblings) and the experiment figures of Curves, as in the exports."""
    dash_duo.start_server(dash_app, port=free_port())
    titles = {}
    for page, graph in (("/", "ex-bars"), ("/systematics", "sy-visits"), ("/siblings", "sb-features")):
        open_page(dash_duo, page)
        titles[graph] = wait_js(dash_duo, TITLE_TEXT_JS.replace("arguments[0]", repr(graph)), bool, timeout=120)
    open_page(dash_duo, "/curves")
    dash_duo.wait_for_element("#cu-k_sweep-run", timeout=30)
    set_input(dash_duo, "#cu-k_sweep-ks", f"2,{K_FIT}")
    click(dash_duo, "#cu-k_sweep-run")
    titles["cu-k_sweep-fig"] = wait_js(
        dash_duo, TITLE_TEXT_JS.replace("arguments[0]", "'cu-k_sweep-fig'"), lambda t: t and "data" in t, timeout=180
    )
    for graph, text in titles.items():
        tags = DATA_TAG.findall(text)
        assert tags, f"{graph}: no data tag in its title {text!r}"
        for tag in tags:  # Curves adds the seed its numbers were computed with
            assert re.fullmatch(r"\(SIMULATED data(, seed \d+)?\)", tag), f"{graph}: {tag!r} in {text!r}"
    assert not severe(dash_duo.get_logs())


def test_every_page_opens_without_console_errors(dash_duo, dash_app):
    dash_duo.start_server(dash_app, port=free_port())
    for path, marker in (
        ("/", "#ex-global-rate"),
        ("/clusters", "#cl-global-rate"),
        ("/curves", "#cu-title"),
        ("/systematics", "#sy-mask"),
        ("/inside", "#in-explain"),
        ("/data", "#dt-facts"),
    ):
        open_page(dash_duo, path)
        dash_duo.wait_for_element(marker, timeout=60)
        time.sleep(1.0)
        assert "Traceback" not in dash_duo.driver.page_source, path
        assert not severe(dash_duo.get_logs()), path
    r = json.loads(
        dash_duo.driver.execute_script(
            "var x = new XMLHttpRequest(); x.open('GET', '/healthz', false); x.send(); return x.responseText;"
        )
    )
    assert r["status"] == "ok"


NAVBAR_JS = """
var bar = document.querySelector('.navbar').getBoundingClientRect();
var items = Array.from(document.querySelectorAll('.navbar .navbar-brand, .navbar .nav-link, .navbar .navbar-text'))
  .filter(e => e.offsetParent !== null).map(function (e) {
    var r = e.getBoundingClientRect(), text = document.createRange();
    text.selectNodeContents(e);  // one rectangle per line of the label's text
    return {text: e.innerText, top: r.top, bottom: r.bottom, right: r.right, lines: text.getClientRects().length};
  });
return {width: window.innerWidth, height: bar.height, right: bar.right, items: items};
"""
CLUSTER_BOX_JS = """
var box = document.getElementById(arguments[0]).getBoundingClientRect();
var inside = Array.from(document.querySelectorAll('#' + arguments[0] + ' .dash-dropdown-trigger > *'))
  .filter(e => e.offsetParent !== null).map(e => e.getBoundingClientRect().right <= box.right);
return {text: document.getElementById(arguments[0]).innerText.trim(), inside: inside};
"""


@pytest.mark.parametrize("width", [1024, 1400])
def test_navbar_is_one_line_and_the_cluster_box_readable_on_narrow_and_wide_screens(dash_duo, dash_app, core, width):
    dash_duo.start_server(dash_app, port=free_port())
    dash_duo.driver.set_window_size(width, 900)
    open_page(dash_duo, "/")
    shown_rate(dash_duo)
    bar = dash_duo.driver.execute_script(NAVBAR_JS)
    assert abs(bar["width"] - width) <= 20, bar["width"]
    names = [i["text"] for i in bar["items"]]
    assert names[:8] == ["RSCA Lab", "Explore", "Clusters", "Curves", "Systematics", "Inside RSCA", "Siblings", "Data"]
    assert bar["height"] < 64, f"the navbar wraps: {bar}"
    for item in bar["items"]:  # one row, every label on one line, nothing past the right edge
        assert item["lines"] == 1 and item["top"] < bar["height"] / 2 < item["bottom"], item
        assert item["right"] <= bar["right"], item
    assert "de Mijolla & Ness (2022)" in names[-1]  # the reference, whole (the longer line from 1200 px)
    assert ("chemical likeness" in names[-1]) == (width >= 1200)
    n = len(core["names"])
    for prefix, page in (("ex", "/"), ("cl", "/clusters")):
        open_page(dash_duo, page)
        shown_rate(dash_duo, f"#{prefix}-global-rate")
        box = dash_duo.driver.execute_script(CLUSTER_BOX_JS, f"{prefix}-clusters")
        assert box["text"] == f"{n} clusters selected", box
        assert box["inside"] and all(box["inside"]), f"{page}: part of the cluster box is cut off: {box}"
    assert not severe(dash_duo.get_logs())


def test_data_page_builds_a_simulated_survey_in_the_background(dash_duo, dash_app):
    from rsca_core import Dataset, doppelganger_rates

    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/data")
    dash_duo.wait_for_element("#sim-run", timeout=30)
    set_input(dash_duo, "#sim-name", "bad name!")
    click(dash_duo, "#sim-run")
    dash_duo.wait_for_contains_text("#sim-result", "name:", timeout=60)
    set_input(dash_duo, "#sim-name", "tiny")
    set_input(dash_duo, "#sim-nfield", "120")
    click(dash_duo, "#sim-run")
    dash_duo.wait_for_contains_text("#sim-result", "Built", timeout=180)
    built = Path(os.environ["RSCA_DATA_DIR"]) / "tiny"
    ds = Dataset.load(built)
    assert ds.label == "simulated" and len(ds.field_index) == 120
    # the page now shows it, and offers to prepare the compression Explore needs
    dash_duo.wait_for_contains_text("#dt-facts", "field stars 120", timeout=30)
    dash_duo.wait_for_contains_text("#dt-pca-status", "Not computed yet", timeout=30)
    assert not ds.has_compression(K_FIT, 0)
    click(dash_duo, "#sim-prepare")  # queues prepare_compression in the job queue
    dash_duo.wait_for_contains_text("#dt-pca-result", "Compression ready for tiny", timeout=240)
    assert ds.has_compression(K_FIT, 0)
    dash_duo.wait_for_contains_text("#dt-pca-status", "Ready", timeout=30)
    click(dash_duo, "#dt-explore-ready")
    comp = ds.compress(K_FIT, seed=0)  # the job's compression, read back from its cache
    fi, ci = ds.field_index, ds.cluster_index
    st = ds.stars
    z = comp.scores[:, : min(30, K_FIT)]
    vh, ak = st["vhelio_avg"].to_numpy(float), st["ak_targ"].to_numpy(float)
    want = doppelganger_rates(
        z[fi],
        z[ci],
        st["cluster"].to_numpy(dtype=object)[ci],
        pop_vhelio=vh[fi],
        pop_ak=ak[fi],
        clust_vhelio=vh[ci],
        clust_ak=ak[ci],
        cv=True,
        random_state=0,
    ).global_rate
    assert shown_rate(dash_duo, timeout=60) == f"{want:.4f}"
    assert "ds=tiny" in dash_duo.driver.current_url
    # it is offered in the dataset menus from now on
    open_page(dash_duo, "/data?ds=tiny")
    dash_duo.wait_for_contains_text("#dt-facts", "field stars 120", timeout=30)
    # deleted outside the app and built again with the same name and settings: really built again
    # (the job store once answered with the first build's "Built" and wrote nothing)
    shutil.rmtree(built)
    open_page(dash_duo, "/data")
    dash_duo.wait_for_element("#sim-run", timeout=30)
    set_input(dash_duo, "#sim-name", "tiny")
    set_input(dash_duo, "#sim-nfield", "120")
    click(dash_duo, "#sim-run")
    dash_duo.wait_for_contains_text("#sim-result", "Built", timeout=180)
    assert (built / "meta.json").is_file() and len(Dataset.load(built).field_index) == 120
    assert not severe(dash_duo.get_logs())


# ------------------------------------------------------------------------------------------ what a newcomer tripped on
# (issue 11 part 3 on Explore, Clusters, Curves and Siblings: downloads, disabled buttons, top-N 0,
# axis titles, legends and the modebar)

#: Geometry of every drawn figure in the given graph containers, measured in the page.
LAYOUT_JS = """
var out = [];
for (var id of arguments[0]) {
  var root = document.getElementById(id);
  var gd = root && root.getElementsByClassName('js-plotly-plot')[0];
  if (!gd || !gd._fullLayout || !gd.data || !gd.data.length) { out.push({id: id, missing: true}); continue; }
  var box = function (e) { var b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  var all = function (sel) {
    return Array.from(gd.querySelectorAll(sel)).map(box).filter(function (b) { return b[2] > b[0] && b[3] > b[1]; });
  };
  var fl = gd._fullLayout, axes = [];
  Object.keys(fl).forEach(function (key) {
    var ax = fl[key];
    if (/^[xy]axis[0-9]*$/.test(key) && ax && ax.visible !== false) {
      axes.push({name: key, id: ax._id, title: (ax.title && ax.title.text) || '', matches: ax.matches || null});
    }
  });
  out.push({
    id: id, graph: box(gd), modebar: all('.modebar'), titles: all('.gtitle'), legends: all('g.legend'),
    annotations: Array.from(gd.querySelectorAll('g.annotation')).map(function (e) {
      return {text: e.textContent, box: box(e)}; }),
    ticks: all('.xtick text, .ytick text'), axes: axes,
    legend_items: gd.querySelectorAll('g.legend .traces').length,
    legend_scrolls: Array.from(gd.querySelectorAll('g.legend .scrollbar')).some(function (e) {
      return e.getBoundingClientRect().height > 0; })
  });
}
return out;
"""


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(inner, outer, slack=1.0):
    return (
        inner[0] >= outer[0] - slack
        and inner[1] >= outer[1] - slack
        and inner[2] <= outer[2] + slack
        and (inner[3] <= outer[3] + slack)
    )


def check_layout(dash_duo, ids, shared_titles=None, timeout=60):
    """Every figure in ``ids``: each axis titled (or matching a titled axis; a grid may use
    ``shared_titles`` instead), no title, subplot title or legend under the modebar, every legend
    whole inside its figure without a scroll bar. Returns the measured figures by id.

    Measured again until it holds or ``timeout`` passes: Plotly draws a figure, then redraws it once
    its legend has pushed the margins."""
    end = time.time() + timeout
    while True:
        try:
            return _check_layout_once(dash_duo, ids, shared_titles, timeout=max(1.0, end - time.time()))
        except AssertionError:
            if time.time() > end:
                raise
            time.sleep(1.0)


def _check_layout_once(dash_duo, ids, shared_titles, timeout):
    figs = wait_js(
        dash_duo,
        LAYOUT_JS.replace("arguments[0]", json.dumps(list(ids))),
        lambda v: v and not any(f.get("missing") for f in v),
        timeout=timeout,
    )
    assert figs and not any(f.get("missing") for f in figs), f"figures not drawn: {figs}"
    out = {}
    for f in figs:
        name = f["id"]
        texts = [a["text"] for a in f["annotations"]]
        if name in (shared_titles or {}):
            for title in shared_titles[name]:
                assert any(title in t for t in texts), (name, title, texts)
        else:
            titled = {a["id"] for a in f["axes"] if a["title"].strip()}
            untitled = [a["name"] for a in f["axes"] if not a["title"].strip() and a["matches"] not in titled]
            assert not untitled, f"{name}: axes without a title: {untitled}"
        assert f["modebar"], f"{name}: no modebar measured"
        covered = f["titles"] + f["legends"] + [a["box"] for a in f["annotations"]]
        for bar in f["modebar"]:
            for b in covered:
                assert not _overlap(bar, b), f"{name}: the modebar {bar} covers {b}"
        for leg in f["legends"]:
            assert _inside(leg, f["graph"]), f"{name}: legend {leg} outside the figure {f['graph']}"
        assert not f["legend_scrolls"], f"{name}: the legend scrolls (part of it is hidden)"
        out[name] = f
    return out


def _wait_new_file(folder: Path, suffix: str, known=(), timeout=20) -> Path:
    end = time.time() + timeout
    while time.time() < end:
        found = [p for p in folder.glob(f"*{suffix}") if p.name not in known and p.stat().st_size > 0]
        if found:
            time.sleep(0.3)
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no new {suffix} file downloaded into {folder}")


def test_explore_and_clusters_downloads_are_named_by_page_and_settings_and_read_back(dash_duo, dash_app, core):
    want = core["rate"](k=10, cv=False, top_n=3)
    dash_duo.start_server(dash_app, port=free_port())
    folder = Path(dash_duo.download_path)
    open_page(dash_duo, "/?k=10&cv=0&top=3")
    shown = shown_rate(dash_duo)
    assert shown == f"{want.global_rate:.4f}"
    bars = wait_js(
        dash_duo,
        "var g = document.getElementById('ex-bars').getElementsByClassName('js-plotly-plot')[0];"
        " return g && g.data && g.data.length ? g.data[0] : null",
        lambda v: v is not None,
    )
    click(dash_duo, "#ex-dl-csv")
    explore = _wait_new_file(folder, ".csv")
    assert explore.name == "rsca-explore-rates_simulated_default_spectra_K10_rsca_top-3_nocv_mask-none_weights-none.csv"
    text = explore.read_text()
    assert not any(line.startswith("#") for line in text.splitlines())
    table = pd.read_csv(io.StringIO(text)).set_index("cluster")
    # the file holds the numbers the page shows: each bar, the global rate, the settings
    for name, y in zip(bars["x"], bars["y"]):
        rate = table.loc[name, "rate"]
        assert y == 0.0 if np.isnan(rate) else abs(rate - y) < 1e-12, name
    for row in want.per_cluster.itertuples():
        assert np.isnan(row.rate) == np.isnan(table.loc[row.cluster, "rate"])
        if not np.isnan(row.rate):
            assert abs(table.loc[row.cluster, "rate"] - row.rate) < 1e-12
    assert {f"{v:.4f}" for v in table["global_rate"]} == {shown}
    assert (set(table["k"]), set(table["top_n"]), set(table["cv"]), set(table["data"])) == (
        {10},
        {3},
        {0},
        {"simulated"},
    )

    # the same view on the Clusters page: another file, the first one kept
    open_page(dash_duo, "/clusters?k=10&cv=0&top=3")
    assert shown_rate(dash_duo, "#cl-global-rate") == shown
    click(dash_duo, "#cl-dl-csv")
    clusters = _wait_new_file(folder, ".csv", known={explore.name})
    assert clusters.name == explore.name.replace("rsca-explore-", "rsca-clusters-")
    assert explore.read_text() == text
    other = pd.read_csv(clusters).set_index("cluster")
    assert np.allclose(other["rate"], table.loc[other.index, "rate"], atol=1e-12, equal_nan=True)

    # another setting, another name
    open_page(dash_duo, "/?k=8")
    dash_duo.wait_for_text_to_equal("#ex-global-rate", f"{core['rate'](k=8).global_rate:.4f}", timeout=30)
    click(dash_duo, "#ex-dl-csv")
    k8 = _wait_new_file(folder, ".csv", known={explore.name, clusters.name})
    assert "_K8_rsca_top-all_cv_" in k8.name
    assert not severe(dash_duo.get_logs())


def test_download_buttons_are_off_while_there_is_nothing_to_download(dash_duo, dash_app, core):
    dash_duo.start_server(dash_app, port=free_port())
    for page, prefix, buttons in (("/", "ex", ("ex-dl-csv", "ex-dl-map")), ("/clusters", "cl", ("cl-dl-csv",))):
        open_page(dash_duo, page)
        shown_rate(dash_duo, f"#{prefix}-global-rate")
        assert wait_js(dash_duo, f"return !document.getElementById('{buttons[0]}').disabled", bool), page
        click(dash_duo, f"#{prefix}-clusters-none")  # no training clusters: no result
        dash_duo.wait_for_contains_text(f"#{prefix}-msg", "select at least two clusters", timeout=30)
        for b in buttons:
            assert wait_js(dash_duo, f"return document.getElementById('{b}').disabled", bool), b
        click(dash_duo, f"#{prefix}-clusters-all")
        for b in buttons:
            assert wait_js(dash_duo, f"return !document.getElementById('{b}').disabled", bool), b
    # Curves: nothing to download before a run, and the page says so (also to a click that gets through)
    open_page(dash_duo, "/curves")
    dash_duo.wait_for_element("#cu-k_sweep-csv", timeout=30)
    assert wait_js(dash_duo, "return document.getElementById('cu-k_sweep-csv').disabled", bool)
    for tip in ("#cu-k_sweep-csv", "#cu-k_sweep-csv-tip"):  # hovering the button says why
        assert "Nothing to download yet: press Run first" in dash_duo.find_element(tip).get_attribute("title")
    assert dash_duo.find_element("#cu-k_sweep-csv-note").text == "(after a run)"
    click(dash_duo, "#cu-k_sweep-csv")  # a click on the off button downloads nothing
    time.sleep(1.0)
    assert not list(Path(dash_duo.download_path).glob("*.csv"))
    assert not severe(dash_duo.get_logs())


def test_top_n_zero_is_answered_like_minus_one_with_one_range(dash_duo, dash_app, core):
    dash_duo.start_server(dash_app, port=free_port())
    messages = {}
    for top in ("0", "-1"):
        open_page(dash_duo, f"/?k=8&top={top}")
        dash_duo.wait_for_contains_text("#ex-url-msg", "URL parameter top", timeout=30)
        messages[top] = dash_duo.find_element("#ex-url-msg").text
        # the view falls back to all axes, and the help text gives the same range as the message
        assert shown_rate(dash_duo) == f"{core['rate'](k=8).global_rate:.4f}"
        dash_duo.wait_for_text_to_equal("#ex-top-note", "1–8; blank = all axes", timeout=30)
    assert messages["0"] == "URL parameter top: top-N = 0 is out of range: choose 1…8; using all axes"
    assert messages["-1"] == messages["0"].replace("= 0 ", "= -1 ")
    for typed in ("0", "-1"):  # typed in the box: the same words
        set_input(dash_duo, "#ex-top", typed)
        dash_duo.wait_for_contains_text("#ex-msg", f"top-N = {typed} is out of range: choose 1…8", timeout=30)
        assert "using all axes" in dash_duo.find_element("#ex-msg").text
        # ... and answered the same way: the view stays on all axes instead of going blank
        assert shown_rate(dash_duo) == f"{core['rate'](k=8).global_rate:.4f}"
    set_input(dash_duo, "#ex-k", 5)  # the range follows K
    dash_duo.wait_for_text_to_equal("#ex-top-note", "1–5; blank = all axes", timeout=30)
    assert not severe(dash_duo.get_logs())


def test_every_panel_has_axis_titles_and_nothing_hides_under_the_modebar(dash_duo, dash_app, core):
    names = core["names"]
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/?k=8")
    shown_rate(dash_duo)
    wait_js(  # the features figure: 3 panels x (field density + one trace per cluster)
        dash_duo,
        "var g = document.getElementById('ex-features').getElementsByClassName('js-plotly-plot')[0];"
        " return g && g.data ? g.data.length : 0",
        lambda n: n == 3 * (1 + len(names)),
    )
    figs = check_layout(dash_duo, ["ex-bars", "ex-hist", "ex-features", "ex-vhelio"])
    # every cluster has its own colour and its legend entry, all shown at once
    assert figs["ex-features"]["legend_items"] == len(names)
    colours = dash_duo.driver.execute_script(
        "return document.getElementById('ex-features').getElementsByClassName('js-plotly-plot')[0]"
        ".data.filter(t => t.type === 'scatter' && t.showlegend).map(t => t.marker.color)"
    )
    assert len(colours) == len(names) and len(set(colours)) == min(len(names), 22)
    # the global-rate label is clear of the tick labels
    bars = figs["ex-bars"]
    label = [a["box"] for a in bars["annotations"] if a["text"].startswith("global")]
    assert label, bars["annotations"]
    assert not any(_overlap(label[0], t) for t in bars["ticks"]), "the global-rate label covers a tick label"

    open_page(dash_duo, "/clusters?k=8")
    shown_rate(dash_duo, "#cl-global-rate")
    check_layout(dash_duo, ["cl-grid"], shared_titles={"cl-grid": ("distance in RSCA space", "density")})

    open_page(dash_duo, "/siblings")
    dash_duo.wait_for_element("#sb-star-id", timeout=60)
    check_layout(dash_duo, ["sb-features", "sb-spectrum"])

    # Inside RSCA: every cluster's legend entry shown at once under the step plot, and one colour per
    # species on the axis-vector plot
    open_page(dash_duo, "/inside?step=1")
    wait_js(
        dash_duo,
        "return document.querySelector('#in-steps .js-plotly-plot').data.length",
        lambda n: n == 1 + len(names),
    )
    figs = check_layout(dash_duo, ["in-steps", "in-vectors"])
    assert figs["in-steps"]["legend_items"] == 1 + len(names)
    species = dash_duo.driver.execute_script(
        "return document.querySelector('#in-vectors .js-plotly-plot').data.slice(1).map(t => t.marker.color)"
    )
    assert len(species) > 10 and len(set(species)) == len(species)
    assert not severe(dash_duo.get_logs())
