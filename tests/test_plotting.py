"""Figures of rsca_core.plotting: they show the table's numbers and always say simulated/real."""

import subprocess
import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from rsca_core import plotting as P


def _title(fig):
    """The title as shown: its text and, for a long one, the second line (the data tag)."""
    return fig.layout.title.text + " " + (fig.layout.title.subtitle.text or "")


def k_table(label="simulated"):
    return pd.DataFrame(
        {
            "k": [10, 5, 10, 5],
            "cv": [True, True, False, False],
            "global_rate": [0.03, 0.05, 0.02, 0.045],
            "seed": 3,
            "label": label,
        }
    )


def test_k_sweep_figure_plots_each_cv_curve_sorted_by_k():
    fig = P.fig_k_sweep(k_table())
    assert "SIMULATED" in _title(fig) and "seed 3" in _title(fig)
    cv = [t for t in fig.data if t.name.startswith("with CV")][0]
    nocv = [t for t in fig.data if t.name == "without CV"][0]
    assert list(cv.x) == [5, 10] and list(cv.y) == [0.05, 0.03]
    assert list(nocv.y) == [0.045, 0.02]
    paper = [t for t in fig.data if t.name.startswith("paper")][0]
    assert list(paper.x) == [30] and list(paper.y) == [0.020]


def test_real_data_figures_say_real_and_unlabelled_tables_are_refused():
    assert "real data" in _title(P.fig_k_sweep(k_table("real")))
    assert "SIMULATED" not in _title(P.fig_k_sweep(k_table("real")))
    with pytest.raises(ValueError, match="simulated or real"):
        P.fig_k_sweep(k_table().drop(columns="label"))
    assert "SIMULATED" in _title(P.fig_k_sweep(k_table().drop(columns="label"), label="simulated"))
    with pytest.raises(ValueError, match="lacks column"):
        P.fig_k_sweep(k_table().drop(columns="cv"))


def test_top_n_figure_error_bars_and_paper_points():
    t = pd.DataFrame(
        {
            "n_axes": [1, 4, 30],
            "axes": ["top 1", "top 4", "all 30"],
            "mean": [0.1, 0.02, 0.03],
            "std": [0.01, 0.002, np.nan],
            "n_seeds": 10,
            "paper_mean": [0.0962, 0.0180, 0.0199],
            "paper_std": [np.nan, 0.0021, 0.0015],
            "k": 30,
            "seed": 0,
            "label": "simulated",
        }
    )
    fig = P.fig_top_n(t)
    ours, paper = fig.data
    assert list(ours.x) == ["top 1", "top 4", "all 30"] and list(ours.y) == [0.1, 0.02, 0.03]
    assert list(ours.error_y.array) == [0.01, 0.002, 0.0]
    assert list(paper.y) == [0.0962, 0.0180, 0.0199]
    assert "10 compression seeds" in ours.name and "SIMULATED" in _title(fig)


def test_ablation_figure_has_one_bar_series_per_variant():
    rows = [
        (r, v, 0.01 * (i + 1) + 0.1 * j)
        for j, r in enumerate(("spectra", "all abundances", "abundance subset"))
        for i, v in enumerate(("raw", "scaled", "transformed"))
    ]
    t = pd.DataFrame(rows, columns=["representation", "variant", "mean"])
    t["std"], t["label"], t["seed"] = 0.001, "simulated", 1
    t["paper"] = np.where((t["representation"] == "spectra") & (t["variant"] == "transformed"), 0.02, np.nan)
    fig = P.fig_ablation(t)
    bars = [d for d in fig.data if isinstance(d, go.Bar)]
    assert [b.name for b in bars] == ["on raw", "on scaled", "on transformed"]
    assert list(bars[2].y) == pytest.approx([0.03, 0.13, 0.23])
    assert bars[0].marker.color == P.VARIANT_COLOURS["raw"]
    paper = [d for d in fig.data if isinstance(d, go.Scatter)][0]
    assert list(paper.x) == ["spectra"] and list(paper.y) == [0.02]


def test_data_size_figure_omits_points_with_unfittable_draws():
    t = pd.DataFrame(
        {
            "k": [10, 10, 10, 30, 30],
            "n_train_clusters": [2, 5, 9, 5, 9],
            "mean_rate": [0.1, 0.05, 0.04, 0.2, 0.03],
            "sem": 0.001,
            "n_trials": 50,
            "fraction_unfit": [0, 0, 0, 0.3, 0],
            "seed": 0,
            "label": "simulated",
        }
    )
    fig = P.fig_data_size(t)
    assert [d.name for d in fig.data] == ["K = 10", "K = 30"]
    assert list(fig.data[0].x) == [2, 5, 9] and list(fig.data[1].x) == [9]


def _feature_result(label="simulated"):
    rng = np.random.default_rng(0)
    n_f, n_c = 500, 20
    feh = rng.normal(0, 0.3, n_f + n_c)
    st = pd.DataFrame(
        {
            "apogee_id": [f"s{i}" for i in range(n_f + n_c)],
            "cluster": [""] * n_f + ["OC1"] * n_c,
            "is_cluster": [False] * n_f + [True] * n_c,
            "fe_h": feh,
            "vhelio_avg": rng.normal(0, 40, n_f + n_c),
        }
    )
    for i in range(1, 5):
        st[f"feature_{i}"] = feh * (5 - i) + rng.normal(0, 1, n_f + n_c)
    st["label"] = label
    corr = pd.DataFrame(
        {
            "feature": [f"feature_{i}" for i in range(1, 5)],
            "axis": [1, 2, 3, 4],
            "scale": [0.1, 0.2, 0.3, 0.4],
            "fe_h": [0.9, 0.5, 0.2, 0.1],
            "x_h_mg": 0.3,
            "x_h_tiii": -0.2,
            "vhelio_avg": [0, 0, 0, 0.5],
            "r2_all_labels": 0.9,
            "seed": 0,
            "label": label,
        }
    )
    return {
        "stars": st,
        "correlations": corr,
        "settings": {"k": 30, "seed": 0, "n_features": 3, "vhelio_feature": 4, "label": label},
    }


def test_feature_figure_overlays_clusters_on_field_density():
    res = _feature_result()
    fig = P.fig_feature_relations(res)
    heat = [d for d in fig.data if isinstance(d, go.Heatmap)]
    pts = [d for d in fig.data if d.name == "open-cluster stars"]
    assert len(heat) == 4 and len(pts) == 4
    st = res["stars"]
    np.testing.assert_allclose(pts[0].x, st.loc[st.is_cluster, "fe_h"])
    np.testing.assert_allclose(pts[3].x, st.loc[st.is_cluster, "vhelio_avg"])
    np.testing.assert_allclose(pts[3].y, st.loc[st.is_cluster, "feature_4"])
    # the density counts every field star inside the plotted range (log10 of the 2-D histogram)
    z = np.asarray(heat[0].z, float)
    assert 0.9 * 500 <= np.nansum(10**z) <= 500
    titles = [a.text for a in fig.layout.annotations]
    assert titles[-1] == "Feature #4 vs VHELIO_AVG (km/s)" and "SIMULATED" in _title(fig)
    cfig = P.fig_feature_correlations(res)
    assert list(cfig.data[0].x) == ["[Fe/H]", "[Mg/H]", "[TiII/H]", "VHELIO_AVG"]
    assert "SIMULATED" in _title(cfig)


def test_distance_grid_titles_give_each_clusters_rate_and_median_lines():
    rng = np.random.default_rng(1)
    summ, hist = [], []
    for inp in ("spectra", "subset"):
        for c, rate in (("NGC 1", 0.0125), ("NGC 2", np.nan)):
            summ.append(
                {
                    "input": inp,
                    "cluster": c,
                    "rate": rate,
                    "median_intra": 1.5,
                    "global_rate": 0.0125,
                    "seed": 2,
                    "label": "simulated",
                    "n_stars": 3,
                }
            )
            for b in range(5):
                hist.append(
                    {
                        "input": inp,
                        "cluster": c,
                        "bin": b,
                        "left": b,
                        "right": b + 1,
                        "intra_density": rng.random(),
                        "inter_density": rng.random(),
                    }
                )
    res = {"summary": pd.DataFrame(summ), "histograms": pd.DataFrame(hist), "settings": {"label": "simulated"}}
    fig = P.fig_distance_histograms(res)
    titles = [a.text for a in fig.layout.annotations if a.text and "rate" in a.text]
    assert titles == [
        "NGC 1 (n=3) · spectra · rate 0.013",
        "NGC 1 (n=3) · abund. subset · rate 0.013",
        "NGC 2 (n=3) · spectra · rate n/a",
        "NGC 2 (n=3) · abund. subset · rate n/a",
    ]
    assert len(fig.layout.shapes) == 4  # one dashed median line per panel
    assert all(s.x0 == 1.5 for s in fig.layout.shapes)
    assert "SIMULATED" in _title(fig) and "spectra 0.0125" in _title(fig)


def test_engine_modules_do_not_import_dash():
    code = (
        "import sys, rsca_core.plotting, rsca_core.experiments, rsca_core.experiments_cli; "
        "bad = [m for m in sys.modules if m == 'dash' or m.startswith('dash.') or m == 'flask']; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=P.__file__.rsplit("/", 2)[0])
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_long_title_keeps_its_data_tag_on_a_second_line():
    t = pd.DataFrame(
        {"representation": ["spectra"], "method": ["rsca"], "global_rate": [0.02], "k": [30], "label": "simulated"}
    )
    title = P.fig_methods(t).layout.title
    assert "SIMULATED" not in title.text and "SIMULATED data" in title.subtitle.text
    assert "<br>" not in title.text  # a line break would lift the title under the modebar
