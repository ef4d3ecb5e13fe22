"""Downloads and the top-N range of the dashboard (pages/_service), without a browser.

A newcomer saved the Explore CSV, then the Clusters CSV of another view, and lost the first: the
two had one name. Every download's name now says the page and every setting that changes it; a CSV
has no comment lines (its settings are columns) and reads back to the numbers the page computed.
"""

from __future__ import annotations

import io
import itertools
import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pages import _service as service


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small simulated bundle as the default dataset, its exact K = 8 and K_FIT = 12 compressions cached."""
    from flask import Flask

    from tests.helpers import small_dataset

    tmp_path = tmp_path_factory.mktemp("downloads")
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith("RSCA_")]:
            mp.delenv(name)
        mp.setenv("RSCA_DATA_DIR", str(tmp_path))
        mp.setenv("RSCA_STATE_DIR", str(tmp_path / "state"))
        mp.setenv("RSCA_K_FIT", "12")
        mp.setenv("RSCA_CACHE_TYPE", "simple")
        service.config.reload()
        small_dataset(n_field=300, sizes=(3, 4, 5, 6, 4, 5)).save(tmp_path / "default")
        ds = service.load("default")
        for k in (8, 12):  # the K of the CSV test, and K_FIT
            ds.compress(k, seed=service.SEED)
        app = Flask("downloads-test")  # the result cache the downloads read through
        service.init_app(app)
        with app.app_context():
            yield ds
    service.config.reload()


def _views():
    """A base view and, for each setting a download name must say, a view differing only in it."""
    base = service.Settings(k=8, top_n=None, cv=True)
    return base, {
        "input": replace(base, input="abundances"),
        "k": replace(base, k=6),
        "method": replace(base, method="lda"),
        "top": replace(base, top_n=3),
        "cv": replace(base, cv=False),
        "mask": replace(base, mask=((720, 910),)),
        "weights": replace(base, weights="ivar"),
        "clusters": replace(base, clusters=("OC0", "OC1")),
    }


def test_download_names_say_the_page_and_every_setting(tiny):
    base, changed = _views()
    names = {"base": service.download_name("explore", "rates", "default", service.settings_name(base), "csv")}
    for what, s in changed.items():
        names[what] = service.download_name("explore", "rates", "default", service.settings_name(s), "csv")
    assert len(set(names.values())) == len(names), names  # one setting changed: another file name
    assert names["base"] == "rsca-explore-rates_simulated_default_spectra_K8_rsca_top-all_cv_mask-none_weights-none.csv"
    assert "_K6_" in names["k"] and "_lda_" in names["method"] and "_top-3_" in names["top"]
    assert "_nocv_" in names["cv"] and "_mask-720-910_" in names["mask"] and "weights-ivar" in names["weights"]
    assert names["input"].startswith("rsca-explore-rates_simulated_default_abundances_")
    # the same view on another page is another file
    other = service.download_name("clusters", "rates", "default", service.settings_name(base), "csv")
    assert other != names["base"] and other.startswith("rsca-clusters-rates_")


def test_file_name_parts_hold_no_path_or_shell_characters():
    for raw in ("../../etc/passwd", "a b;rm -rf", "NGC 2682/<x>", "é", ""):
        part = service.name_part(raw)
        assert part and all(c.isascii() and (c.isalnum() or c in "._+-") for c in part), part
        assert part not in (".", "..")
    assert len(service.name_part("x" * 500, 40)) == 40


def test_rates_csv_has_no_comment_lines_and_reads_back_to_the_rates(tiny):
    s = service.settings_from_controls("default", "spectra", 8, None, service.ALL, False, "3")
    text = service.rates_csv(s)
    assert not any(line.startswith("#") for line in text.splitlines())
    table = pd.read_csv(io.StringIO(text))
    want = service.compute_rates(s)
    per = want["per_cluster"].set_index("cluster")
    got = table.set_index("cluster")
    assert set(got.index) == set(per.index)
    assert np.allclose(got["rate"], per.loc[got.index, "rate"], atol=1e-12, equal_nan=True)
    # the settings are columns, one value each
    one = {c: table[c].unique().tolist() for c in ("data", "dataset", "input", "k", "method", "top_n", "cv")}
    assert one == {
        "data": ["simulated"],
        "dataset": ["default"],
        "input": ["spectra"],
        "k": [8],
        "method": ["rsca"],
        "top_n": [3],
        "cv": [0],
    }
    assert np.allclose(table["global_rate"], want["global_rate"], atol=1e-12)


def test_top_n_zero_is_refused_as_minus_one_is_with_one_range(tiny):
    """ "0" once meant "all axes" in the box and "out of range 1…60" in the URL; now both say 1…K."""
    for k in (5, 8):
        msgs = {}
        for top in ("0", "-1", str(k + 1)):
            s, problems = service.settings_from_query({"k": str(k), "top": top})
            assert s.top_n is None and len(problems) == 1
            msgs[top] = problems[0].replace(f"= {top} ", "= N ")
            with pytest.raises(service.UserError) as exc:
                service.settings_from_controls("default", "spectra", k, None, service.ALL, True, top)
            assert str(exc.value) == f"top-N = {top} is out of range: choose 1…{k}"
            assert f"URL parameter top: {exc.value}" in problems[0]
        assert len(set(msgs.values())) == 1, msgs
        assert service.top_note("spectra", k) == f"1–{k}; blank = all axes"
    # the range is the input's axes: 21 abundances, the subset's species
    assert service.top_n_range("abundances", 8) == (1, 21)
    assert service.top_n_range("subset", 8, ("Fe", "Mg", "Si")) == (1, 3)
    for blank in ("", "all", None):
        assert service.parse_top(blank, "spectra", 8) is None


@pytest.mark.parametrize("inp, k", itertools.product(("spectra", "abundances"), (4, 8)))
def test_every_top_n_in_the_shown_range_is_accepted(tiny, inp, k):
    lo, hi = service.top_n_range(inp, k)
    for top in (lo, hi):
        s, problems = service.settings_from_query({"input": inp, "k": str(k), "top": str(top)})
        assert problems == [] and s.top_n == top
