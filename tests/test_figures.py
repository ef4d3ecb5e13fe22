"""File figures of rsca_core.figures (matplotlib): they show the table's numbers, say simulated/real,
keep legends off the data and are written as PNG and PDF without a browser."""

import numpy as np
import pandas as pd
import pytest
from test_plotting import _feature_result, k_table

from rsca_core import figures as F
from rsca_core.constants import PAPER_RESULTS


def _title(fig):
    return fig._suptitle.get_text()


def _legend_clear_of_axes(fig):
    """No legend box overlaps any axes box (in display coordinates)."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "the figure has no legend"
    for leg in legends:
        lb = leg.get_window_extent(r)
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>":
                continue
            assert not lb.overlaps(ax.get_window_extent(r)), f"legend covers {ax.get_title() or 'an axes'}"


def test_k_sweep_lines_are_the_tables_numbers_and_the_paper_point():
    fig = F.fig_k_sweep(k_table())
    assert "SIMULATED data" in _title(fig) and "seed 3" in _title(fig)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    cv = lines["with CV (leave one cluster out)"]
    assert list(cv.get_xdata()) == [5, 10] and list(cv.get_ydata()) == [0.05, 0.03]
    assert list(lines["without CV"].get_ydata()) == [0.045, 0.02]
    paper = [v for k, v in lines.items() if k.startswith("paper")][0]
    assert list(paper.get_ydata()) == [PAPER_RESULTS["spectra_k30"]]
    assert fig.axes[0].get_xlabel() == "number of PCA components K"
    _legend_clear_of_axes(fig)
    real = F.fig_k_sweep(k_table("real"))
    assert "real data" in _title(real) and "SIMULATED" not in _title(real)
    with pytest.raises(ValueError, match="simulated or real"):
        F.fig_k_sweep(k_table().drop(columns="label"))


def test_ablation_bars_carry_the_means_and_the_variant_colours():
    rows = [
        (r, v, 0.01 * (i + 1) + 0.1 * j)
        for j, r in enumerate(("spectra", "all abundances", "abundance subset"))
        for i, v in enumerate(("raw", "scaled", "transformed"))
    ]
    t = pd.DataFrame(rows, columns=["representation", "variant", "mean"])
    t["std"], t["label"], t["seed"] = 0.001, "simulated", 1
    t["paper"] = np.where((t["representation"] == "spectra") & (t["variant"] == "transformed"), 0.02, np.nan)
    fig = F.fig_ablation(t)
    ax = fig.axes[0]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == pytest.approx([0.01, 0.11, 0.21, 0.02, 0.12, 0.22, 0.03, 0.13, 0.23])
    assert ax.patches[0].get_facecolor()[:3] == pytest.approx((0x1F / 255, 0x77 / 255, 0xB4 / 255))
    assert [tl.get_text() for tl in ax.get_xticklabels()] == ["spectra", "all abundances", "abundance subset"]
    _legend_clear_of_axes(fig)


def test_feature_figure_has_one_style_per_cluster_and_counts_the_field():
    res = _feature_result()
    st = res["stars"]
    st.loc[st.is_cluster, "cluster"] = [f"NGC {i % 22}" for i in range(int(st.is_cluster.sum()))]
    fig = F.fig_feature_relations(res)
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in axes][-1] == "Feature #4 vs VHELIO_AVG (km/s)"
    mesh = axes[0].collections[0]
    assert 0.9 * 500 <= np.nansum(mesh.get_array()) <= 500  # every field star inside the plotted range
    pts = axes[3].collections[1:]
    assert len(pts) == 20 and len({(tuple(p.get_facecolor()[0]), p.get_paths()[0].vertices.shape) for p in pts}) == 20
    got = np.concatenate([p.get_offsets()[:, 1] for p in pts])
    np.testing.assert_allclose(np.sort(got), np.sort(st.loc[st.is_cluster, "feature_4"]))
    _legend_clear_of_axes(fig)
    assert "SIMULATED" in _title(F.fig_feature_correlations(res))


def test_distance_grid_titles_give_each_clusters_rate(tmp_path):
    summ, hist = [], []
    for c, rate in (("NGC 1", 0.0125), ("NGC 2", np.nan)):
        summ.append(
            dict(
                input="spectra",
                cluster=c,
                rate=rate,
                median_intra=1.5,
                global_rate=0.0125,
                seed=2,
                label="simulated",
                n_stars=3,
            )
        )
        hist += [
            dict(input="spectra", cluster=c, bin=b, left=b, right=b + 1, intra_density=0.1 * b, inter_density=0.2)
            for b in range(5)
        ]
    res = {"summary": pd.DataFrame(summ), "histograms": pd.DataFrame(hist), "settings": {"label": "simulated"}}
    fig = F.fig_distance_histograms(res)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["NGC 1 · spectra · rate 0.013", "NGC 2 · spectra · rate n/a"]
    assert "SIMULATED" in _title(fig) and "spectra 0.0125" in _title(fig)
    _legend_clear_of_axes(fig)
    paths = F.save_figure(fig, tmp_path, "grid")
    assert [p.name for p in paths] == ["grid.png", "grid.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.pdf", "grid.png"]  # no temporary files left


def test_cluster_styles_are_distinct_for_the_papers_22_clusters():
    names = [f"NGC {i}" for i in range(22)]
    styles = F.cluster_styles(names)
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == 22
    assert F.cluster_styles(reversed(names)) == styles  # stable whatever the order


def test_figures_module_uses_no_pyplot_and_no_plotly():
    import subprocess
    import sys

    code = (
        "import sys; import rsca_core.figures, rsca_core.experiments_cli; "
        "bad = [m for m in sys.modules if m in ('matplotlib.pyplot', 'plotly', 'kaleido')]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_methods_and_weights_figures_show_every_rate():
    rows = [
        (rep, m, 0.01 * (i + 1) + 0.1 * j, 30.0 if rep == "spectra" else np.nan)
        for j, rep in enumerate(("spectra", "abundance subset"))
        for i, m in enumerate(("rsca", "rca", "lda", "nca"))
    ]
    t = pd.DataFrame(rows, columns=["representation", "method", "global_rate", "k"])
    t["method_name"] = t["method"].str.upper()
    t["label"], t["seed"] = "simulated", 0
    fig = F.fig_methods(t)
    ax = fig.axes[0]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == pytest.approx([0.01, 0.11, 0.02, 0.12, 0.03, 0.13, 0.04, 0.14])
    paper = [ln for ln in ax.get_lines() if ln.get_label().startswith("paper")][0]
    assert list(paper.get_ydata()) == [PAPER_RESULTS["spectra_k30"], PAPER_RESULTS["abundance_subset"]]
    assert "SIMULATED" in _title(fig)
    _legend_clear_of_axes(fig)
    w = pd.DataFrame(
        {
            "k": [10, 30, 10, 30],
            "compression_weights": ["none", "none", "ivar", "ivar"],
            "global_rate": [0.02, 0.01, 0.015, 0.008],
        }
    )
    wf = F.fig_weights(w, label="real")
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in wf.axes[0].get_lines()}
    assert lines == {
        "plain PCA (every observed pixel alike)": [0.02, 0.01],
        "PCA weighted by 1/σ² (capped)": [0.015, 0.008],
    }
    assert "real data" in _title(wf)
    _legend_clear_of_axes(wf)
