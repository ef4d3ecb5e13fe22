"""Browser tests of the Siblings page (headless Chromium through dash[testing]'s ``dash_duo``).

The page's tables are checked against ``rsca_core.siblings`` computed here on the same compression
(the exact K compression, as ``rsca siblings``); uploads are aspcapStar files written here from the
bundle's own spectra (a star's own file must land on that star) and a corrupt file (a message naming it).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dash.testing")

from test_app_browser import click, free_port, open_page, severe, wait_js  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
K_FIT = 12  # the largest K offered; the page's default K is min(30, K_FIT), prepared here


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from rsca_core import Dataset

    path = tmp_path_factory.mktemp("sibpage") / "small"
    cmd = [sys.executable, "-m", "rsca_core", "simulate", "--out", str(path), "--n-field", "300", "--seed", "3"]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    Dataset.load(path).compress(K_FIT, seed=0)
    return path


@pytest.fixture(scope="module")
def dash_app(bundle, tmp_path_factory):
    env = {
        "RSCA_DATASET": str(bundle),
        "RSCA_DATA_DIR": str(tmp_path_factory.mktemp("datadir")),
        "RSCA_K_FIT": str(K_FIT),
        "RSCA_STATE_DIR": str(tmp_path_factory.mktemp("state")),
        "RSCA_CACHE_TYPE": "simple",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import app as app_module
    from pages._service import config

    config.reload()  # the app may have been created by another test module with its own survey
    yield app_module.app
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    config.reload()


@pytest.fixture(scope="module")
def emb(bundle):
    """The page's embedding, computed straight from rsca_core."""
    from rsca_core import Dataset
    from rsca_core.siblings import embed

    ds = Dataset.load(bundle)
    return embed(ds, compression=ds.compress(K_FIT, seed=0))


def table_ids(dash_duo, n_expected, timeout=40):
    """APOGEE_IDs shown on the first page (12 rows) of the table, once it shows ``n_expected`` rows (or 12)."""
    end = time.time() + timeout
    ids = []
    while time.time() < end:
        ids = [c.text for c in dash_duo.find_elements("#sb-table td[data-dash-column='apogee_id']")]
        if len(ids) == min(n_expected, 12):
            return ids
        time.sleep(0.25)
    return ids


def test_find_a_star_shows_its_siblings_and_spectra(dash_duo, dash_app, emb):
    star = emb.apogee_id[np.flatnonzero(emb.cluster == "NGC_2682")[0]]
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, f"/siblings?star={quote(star)}&n=20")
    dash_duo.wait_for_text_to_equal("#sb-star-id", star, timeout=60)
    ref = emb.siblings(star, n=20)
    assert table_ids(dash_duo, 20) == ref["apogee_id"].tolist()[:12]
    assert "simulated" in dash_duo.find_element("#sb-badge").text
    # the features plot marks the 20 siblings and the star; the spectrum panel overlays two spectra
    n_sib = wait_js(
        dash_duo,
        "var g = document.getElementById('sb-features').getElementsByClassName('js-plotly-plot')[0];"
        "if (!g || !g.data) return 0; var t = g.data.filter(d => d.name === 'siblings'); return t.length ? t[0].x.length : 0",
        lambda v: v == 20,
    )
    assert n_sib == 20
    names = wait_js(
        dash_duo,
        "var g = document.getElementById('sb-spectrum').getElementsByClassName('js-plotly-plot')[0];"
        "return g && g.data ? g.data.map(d => d.name) : null",
        lambda v: v and len(v) >= 3,
    )
    assert names[:3] == [star, ref["apogee_id"].iloc[0], "difference"]
    assert "star=" in dash_duo.driver.current_url and "n=20" in dash_duo.driver.current_url
    assert not severe(dash_duo.get_logs())


def write_aspcapstar(path, flux, err):
    from astropy.io import fits

    from rsca_core.constants import DLOGLAM, LOGLAM0

    h1 = fits.ImageHDU(np.asarray(flux, np.float32))
    h1.header["CRVAL1"], h1.header["CDELT1"] = LOGLAM0, DLOGLAM
    fits.HDUList([fits.PrimaryHDU(), h1, fits.ImageHDU(np.asarray(err, np.float32))]).writeto(path)


def test_type_ahead_finds_a_star_and_a_row_choice_changes_the_spectrum(dash_duo, dash_app, emb):
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/siblings")
    dash_duo.wait_for_element("#sb-star-id", timeout=60)
    target = emb.apogee_id[np.flatnonzero(emb.cluster == "NGC_188")[2]]
    click(dash_duo, "#sb-star")  # Dash 4 dropdown: a button opening a popover with a search box
    dash_duo.find_element(".dash-dropdown-content input.dash-dropdown-search").send_keys(target[:12])
    option = f"//label[contains(@class, 'dash-dropdown-option')][starts-with(normalize-space(.), '{target}')]"
    end = time.time() + 30
    while not dash_duo.driver.find_elements("xpath", option) and time.time() < end:
        time.sleep(0.25)  # the options come from the server as one types
    dash_duo.driver.find_element("xpath", option).click()
    dash_duo.wait_for_text_to_equal("#sb-star-id", target, timeout=60)
    ref = emb.siblings(target, n=50)
    assert table_ids(dash_duo, 50) == ref["apogee_id"].tolist()[:12]
    assert "star=" + quote(target) in dash_duo.driver.current_url
    # choose the third sibling: the spectrum overlays it, the URL records it
    radios = dash_duo.find_elements("#sb-table input[type='radio']")
    dash_duo.driver.execute_script("arguments[0].click();", radios[2])
    third = ref["apogee_id"].iloc[2]
    names = wait_js(
        dash_duo,
        "var g = document.getElementById('sb-spectrum').getElementsByClassName('js-plotly-plot')[0];"
        "return g && g.data ? g.data.map(d => d.name) : null",
        lambda v: v and len(v) >= 2 and v[1] == third,
    )
    assert names[1] == third
    assert "sib=" + quote(third) in dash_duo.driver.current_url
    assert not severe(dash_duo.get_logs())


def test_cluster_mode_lists_candidates_with_the_expected_chance_count(dash_duo, dash_app, emb):
    res = emb.candidates("NGC_188")
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/siblings?mode=cluster&cluster=NGC_188")
    dash_duo.wait_for_text_to_equal("#sb-n-candidates", str(res.n_candidates), timeout=60)
    want = f"{res.expected_chance:.1f} ± {res.expected_chance_sd:.1f}"
    dash_duo.wait_for_text_to_equal("#sb-expected", want, timeout=30)
    assert table_ids(dash_duo, res.n_candidates) == res.table["apogee_id"].tolist()[:12]
    assert "mode=cluster" in dash_duo.driver.current_url
    assert not severe(dash_duo.get_logs())


def test_upload_places_good_files_and_names_bad_ones(dash_duo, dash_app, emb, tmp_path):
    ds = emb.dataset
    rows = [5, int(np.flatnonzero(ds.is_cluster)[3])]
    paths = []
    for r in rows:
        p = tmp_path / f"aspcapStar-r12-{ds.stars['apogee_id'][r]}.fits"
        write_aspcapstar(p, ds.spectra[r], ds.errors[r])
        paths.append(p)
    bad = tmp_path / "aspcapStar-r12-broken.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b"\0" * 200)
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/siblings?mode=upload")
    dash_duo.wait_for_element("#sb-upload input[type='file']", timeout=60)
    dash_duo.wait_for_contains_text("#sb-summary", "upload aspcapStar files", timeout=60)
    assert dash_duo.find_element("#sb-dl-csv").get_attribute("disabled") is not None  # no table yet
    upload = dash_duo.find_element("#sb-upload input[type='file']")
    upload.send_keys("\n".join(str(p) for p in [*paths, bad]))
    dash_duo.wait_for_element("#sb-upload-list", timeout=60)
    csv_on = "return !document.getElementById('sb-dl-csv').disabled"
    assert wait_js(dash_duo, csv_on, bool), "the CSV button stayed off with a table shown"
    listed = dash_duo.find_element("#sb-upload-list").text
    for p, r in zip(paths, rows):
        # a bundle star's own file lands on that star: its nearest neighbour, at a tiny distance
        m = re.search(re.escape(p.name) + r"\s*nearest (\S+) at ([0-9.]+)", listed)
        assert m, listed
        assert m.group(1) == ds.stars["apogee_id"][r]
        assert float(m.group(2)) < 0.01 * np.median(emb.intra_distances)
    msg = dash_duo.find_element("#sb-upload-msg").text
    assert bad.name in msg and "Traceback" not in dash_duo.driver.page_source
    assert "mode=upload" in dash_duo.driver.current_url
    assert not severe(dash_duo.get_logs())


def test_pair_filter_is_off_with_a_reason_in_upload_mode_and_back_in_the_others(dash_duo, dash_app, emb):
    """Uploads are placed without the pair filter (an uploaded spectrum has no VHELIO or AK): in upload mode
    the switch is disabled and says why; back in a star's or a cluster's mode it works again, as it was set."""
    star = emb.apogee_id[np.flatnonzero(emb.cluster == "NGC_2682")[0]]
    pf_off = "return document.getElementById('sb-pf').disabled"
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, f"/siblings?star={quote(star)}&n=20&pf=1")
    dash_duo.wait_for_contains_text("#sb-star-summary", "passing the pair filter", timeout=60)
    assert wait_js(dash_duo, pf_off, lambda v: v is False) is False
    assert dash_duo.find_element("#sb-pf-note").text == ""
    for mode, off in (("upload", True), ("cluster", False), ("upload", True), ("star", False)):
        click(dash_duo, f"#sb-mode input[value='{mode}']")
        assert wait_js(dash_duo, pf_off, lambda v, off=off: v is off) is off, mode
        note = dash_duo.find_element("#sb-pf-note").text
        if off:
            assert note == "not used for uploads: an uploaded spectrum has no VHELIO or AK to compare"
        else:
            assert note == "", mode
        assert dash_duo.find_element("#sb-pf").is_selected(), f"{mode}: the switch lost its setting"
    dash_duo.wait_for_contains_text("#sb-star-summary", "passing the pair filter", timeout=60)
    assert not severe(dash_duo.get_logs())


def test_csv_download_matches_the_table(dash_duo, dash_app, emb):
    star = emb.apogee_id[np.flatnonzero(emb.cluster == "NGC_6791")[0]]
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, f"/siblings?star={quote(star)}&n=30&pf=1")
    dash_duo.wait_for_text_to_equal("#sb-star-id", star, timeout=60)
    ref = emb.siblings(star, n=30, pair_filter=True)
    click(dash_duo, "#sb-dl-csv")
    folder = Path(dash_duo.download_path)
    end = time.time() + 20
    files = []
    while time.time() < end and not files:
        files = [p for p in folder.glob("*.csv") if p.stat().st_size > 0]
        time.sleep(0.3)
    assert files, "no CSV downloaded"
    text = files[0].read_text()
    assert not any(line.startswith("#") for line in text.splitlines())  # reads as it is
    # named by the query and its settings, which are also columns
    assert files[0].name == f"rsca-siblings-star-{star}_simulated_default_spectra_K{K_FIT}_n30_pf.csv"
    body = pd.read_csv(io.StringIO(text), dtype={"apogee_id": str})
    assert body["apogee_id"].tolist() == ref["apogee_id"].tolist()
    assert np.allclose(body["distance"], ref["distance"])
    assert set(body["data"]) == {"simulated"} and set(body["query"]) == {f"star {star}"}
    assert set(body["pair_filter"]) == {1} and set(body["k"]) == {K_FIT}


def test_bad_url_values_give_messages(dash_duo, dash_app):
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/siblings?star=NOT_A_STAR&n=abc&mode=nope")
    dash_duo.wait_for_contains_text("#sb-msg", "NOT_A_STAR", timeout=60)
    page = dash_duo.driver.page_source
    assert "URL parameter n" in page and "URL parameter mode" in page and "Traceback" not in page
    assert not severe(dash_duo.get_logs())


def test_clicking_a_marked_star_shows_its_siblings(dash_duo, dash_app, emb):
    star = emb.apogee_id[np.flatnonzero(emb.cluster == "NGC_2682")[1]]
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, f"/siblings?star={quote(star)}&n=20")
    dash_duo.wait_for_text_to_equal("#sb-star-id", star, timeout=60)
    target = emb.siblings(star, n=20)["apogee_id"].iloc[3]
    graph = "document.getElementById('sb-features').getElementsByClassName('js-plotly-plot')[0]"
    wait_js(dash_duo, f"var g = {graph}; return g && g.data ? g.data.length : 0", lambda v: v and v > 1)
    # the event plotly emits when a marker is clicked (what dcc.Graph turns into clickData)
    dash_duo.driver.execute_script(
        f"var gd = {graph}; var i = gd.data.findIndex(t => t.name === 'siblings');"
        "gd.emit('plotly_click', {points: [{curveNumber: i, pointNumber: 3, x: gd.data[i].x[3],"
        " y: gd.data[i].y[3], text: gd.data[i].text[3], data: gd.data[i], fullData: gd._fullData[i]}]});"
    )
    dash_duo.wait_for_text_to_equal("#sb-star-id", target, timeout=60)
    assert "star=" + quote(target) in dash_duo.driver.current_url
    assert table_ids(dash_duo, 20) == emb.siblings(target, n=20)["apogee_id"].tolist()[:12]
    assert not severe(dash_duo.get_logs())


def test_clicking_a_cluster_star_in_explore_opens_its_siblings(dash_duo, dash_app, emb):
    """Explore's feature plots -> the Siblings page of the clicked cluster member."""
    dash_duo.start_server(dash_app, port=free_port())
    open_page(dash_duo, "/")
    graph = "document.getElementById('ex-features').getElementsByClassName('js-plotly-plot')[0]"
    wait_js(
        dash_duo,
        f"var g = {graph}; return g && g.data ? g.data.filter(t => t.customdata).length : 0",
        lambda v: v and v > 1,
        timeout=90,
    )
    star = dash_duo.driver.execute_script(
        f"var gd = {graph}; var i = gd.data.findIndex(t => t.customdata && t.name === 'NGC_2682');"
        "gd.emit('plotly_click', {points: [{curveNumber: i, pointNumber: 1, x: gd.data[i].x[1],"
        " y: gd.data[i].y[1], customdata: gd.data[i].customdata[1], data: gd.data[i],"
        " fullData: gd._fullData[i]}]}); return gd.data[i].customdata[1];"
    )
    assert star in set(emb.apogee_id[emb.cluster == "NGC_2682"])
    dash_duo.wait_for_text_to_equal("#sb-star-id", star, timeout=60)
    assert "/siblings" in dash_duo.driver.current_url and "star=" + quote(star) in dash_duo.driver.current_url
    assert table_ids(dash_duo, 50) == emb.siblings(star, n=50)["apogee_id"].tolist()[:12]
    assert not severe(dash_duo.get_logs())
