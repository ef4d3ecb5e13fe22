"""Browser tests of the Siblings page (headless Chromium through dash[testing]'s ``dash_duo``).

The page's tables are checked against ``rsca_core.siblings`` computed here on the same compression
(the app cuts every K from one K_FIT compression); uploads are aspcapStar files written here from the
bundle's own spectra (a star's own file must land on that star) and a corrupt file (a message naming it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

pytest.importorskip("dash.testing")

from test_app_browser import free_port, open_page, severe, wait_js  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
K_FIT = 12  # the app's one compression; the page's default K is min(30, K_FIT)


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

    yield app_module.app
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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
