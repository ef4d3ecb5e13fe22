"""The engine CLI: `compress` and `evaluate` on a small bundle, with clear one-line errors."""

import json
import subprocess
import sys

import pytest

from rsca_core import Dataset, doppelganger_rates
from tests.helpers import ROOT, small_dataset


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "rsca_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny"
    small_dataset(n_field=400, sizes=(3, 4, 5, 6, 4)).save(path)
    return path


def test_help_for_every_command():
    top = run("--help")
    assert top.returncode == 0
    for cmd in ("compress", "evaluate"):
        assert cmd in top.stdout
        r = run(cmd, "--help")
        assert r.returncode == 0 and "--dataset" in r.stdout


def test_evaluate_json_equals_library_call(bundle):
    r = run("evaluate", "--dataset", str(bundle), "--k", "4", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ds = Dataset.load(bundle)
    ri = ds.rate_inputs("spectra", k=4)
    ref = doppelganger_rates(ri.z_pop, ri.z_clust, ri.cluster_ids, **ri.as_kwargs())
    assert out["global_rate"] == pytest.approx(ref.global_rate, abs=1e-12)
    assert [c["name"] for c in out["clusters"]] == list(ref.per_cluster.cluster)
    assert [c["rate"] for c in out["clusters"]] == pytest.approx(list(ref.per_cluster.rate))
    assert out["kind"] == "simulated"
    # --no-cv and --top-n reach the computation
    r2 = json.loads(run("evaluate", "--dataset", str(bundle), "--k", "4", "--json", "--no-cv", "--top-n", "2").stdout)
    ref2 = doppelganger_rates(ri.z_pop, ri.z_clust, ri.cluster_ids, **ri.as_kwargs(), cv=False, top_n=2)
    assert r2["global_rate"] == pytest.approx(ref2.global_rate, abs=1e-12)


def test_evaluate_subset_text_output(bundle):
    r = run("evaluate", "--dataset", str(bundle), "--input", "subset", "--species", "Fe,Mg,Si")
    assert r.returncode == 0, r.stderr
    assert "global rate" in r.stdout and "[simulated]" in r.stdout


def test_compress_caches(bundle):
    r = run("compress", "--dataset", str(bundle), "--k", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert list((bundle / "cache").glob("pca-k3-seed0-*.npz"))


@pytest.mark.parametrize(
    "args,msg",
    [
        (("evaluate", "--dataset", "/nonexistent/x"), "no such dataset directory"),
        (("evaluate", "--dataset", "{b}", "--k", "0"), "positive integer"),
        (("evaluate", "--dataset", "{b}", "--k", "abc"), "positive integer"),
        (("evaluate", "--dataset", "{b}", "--input", "subset", "--species", "Fe,Xx"), "unknown species"),
        (("evaluate", "--dataset", "{b}", "--k", "4", "--top-n", "9"), "top_n=9 is out of range"),
        (("compress", "--dataset", "{b}", "--k", "100000"), "larger than the data allows"),
    ],
)
def test_bad_input_gives_one_line_error(bundle, args, msg):
    r = run(*[a.format(b=bundle) for a in args])
    assert r.returncode != 0
    assert msg in r.stderr
    assert "Traceback" not in r.stderr
