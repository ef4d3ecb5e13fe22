"""Dashboard: the first view of a big survey (issue 14, part 3: under 3 s on 1,000,000 field stars).

    python benchmarks/bench_first_view.py --dataset DIR [--baseline DIR] [--k 30]

``DIR`` is a bundle whose K compression is already prepared (e.g. the one ``bench_scale.py --n
1000000`` leaves, spectra in Zarr); the script loads it once first, as ``compress`` does, which
keeps a big star table as Parquet in the bundle's cache. The script starts the Dockerfile's gunicorn
command on 127.0.0.1 with ``DIR`` in the data folder beside the default survey (``--baseline``,
default ``data/default``) and, as a browser does when one opens Explore on that survey
(``/?ds=<name>&k=<k>``), GETs the page (the layout reads the query), then posts the callbacks the
page fires on load: the cluster list and the weights switch of the dataset, then the main one (rates,
bars), then the feature and histogram panels (in parallel, from the main one's store). Five fresh
servers (one worker each, as the Dockerfile):

1. warm-up off (``RSCA_WARM=0``): the cold path itself — the worker reads the bundle and computes
   the view for its first visitor;
2. warm-up on, the visitor arriving as soon as the server answers (``/healthz`` says "warming"): the
   requests wait for the warm-up's own loads and computations, never a second copy of them;
3. warm-up on, the visitor arriving once ``/healthz`` says "ready";
4. and 5. the state folder prepared first by ``python app.py --prepare-only`` (which keeps every
   dataset's first view on disk, ``pages/_service/first_views.py``): a cold worker with the warm-up
   off, and a fresh worker with the visitor arriving at once;

each followed by a second visitor (cached answers); on the last server, the default survey's first
view (the baseline). Then, in this process: ``Dataset.load`` + the cached compression +
``doppelganger_rates`` on the same inputs (the floor of the main callback).

Prints each step's seconds and the first view's total, beside the target (< 3 s), the warm-up's
duration, the machine's load average, and the peak RSS of the gunicorn worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from bench_app import explore_values
from dash_http import (
    ROOT,
    Client,
    DashCallbacks,
    dockerfile_gunicorn,
    free_port,
    start_server,
    stop_server,
    wait_warm,
    warm_state,
)

WORK = ROOT / "benchmarks" / "_work" / "first-view"


def values_for(ds, k, clusters, weights=False):
    """Explore's control values (``bench_app.explore_values``) plus the inputs the page's other load-time
    callbacks read."""
    return {
        **explore_values(ds, k, clusters),
        "ex-method.value": "rsca",
        "ex-weights.value": weights,
        "ex-clusters-all.n_clicks": None,
        "ex-clusters-none.n_clicks": None,
        "ex-clusters.options": None,
    }


def post(client, cbs, fragment, values, changed):
    t = time.perf_counter()
    status, body = client.request("POST", "/_dash-update-component", cbs.payload(cbs.find(fragment), values, changed))
    if status != 200:
        raise RuntimeError(f"{fragment}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)["response"], time.perf_counter() - t


def first_view(port, cbs, ds, k):
    """Seconds of each request of the first view of Explore on ``ds`` (sequential as the browser's
    dependency chain, the two panels in parallel); raises if the page shows a message instead of a rate."""
    client = Client(port, timeout=120)
    steps = {}
    t0 = time.perf_counter()
    status, _ = client.request("GET", f"/?ds={ds}&k={k}")
    if status != 200:
        raise RuntimeError(f"GET /?ds={ds}: HTTP {status}")
    status, _ = client.request("GET", "/_dash-layout")
    loc = {"_pages_location.pathname": "/", "_pages_location.search": f"?ds={ds}&k={k}"}
    post(client, cbs, "_pages_content.children", loc, ["_pages_location.pathname"])  # the page's layout(**query)
    steps["page"] = time.perf_counter() - t0
    v = values_for(ds, k, [])
    resp, steps["cluster list"] = post(client, cbs, "ex-clusters.options", v, ["ex-ds.value"])
    clusters = resp["ex-clusters"]["value"]
    v = values_for(ds, k, clusters)
    _, steps["weights switch"] = post(client, cbs, "ex-weights.disabled", v, ["ex-ds.value"])
    resp, steps["rates + bars"] = post(client, cbs, "ex-rate.children", v, ["ex-ds.value"])
    store = resp.get("ex-store", {}).get("data")
    if not store or "ex-global-rate" not in json.dumps(resp.get("ex-rate", {})):
        raise RuntimeError("no rate shown: " + json.dumps(resp.get("ex-msg", {}))[:300])
    v2 = v | {"ex-store.data": store, "ex-bars.clickData": None}
    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        futs = [
            pool.submit(post, Client(port, timeout=120), cbs, frag, v2, ["ex-store.data"])
            for frag in ("ex-features.figure", "ex-hist.figure")
        ]
        sizes = [len(json.dumps(f.result()[0])) for f in futs]
    steps["features + histograms"] = time.perf_counter() - t
    steps["total"] = time.perf_counter() - t0
    return steps, sizes, store


def in_process_floor(path, k):
    import numpy as np

    from rsca_core import Dataset, doppelganger_rates

    t = time.perf_counter()
    ds = Dataset.load(path)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    comp = ds.compress(k)  # cached: read from the bundle's cache
    t_comp = time.perf_counter() - t
    if comp.path is None:
        raise RuntimeError(f"{path}: the K = {k} compression was not prepared")
    t = time.perf_counter()
    ri = ds.rate_inputs("spectra", k=k, compression=comp)
    doppelganger_rates(ri.z_pop, ri.z_clust, ri.cluster_ids, **ri.as_kwargs(), keep_distances="histogram")
    t_rates = time.perf_counter() - t
    return {"load bundle": t_load, "read compression": t_comp, "rates": t_rates}, int(np.size(ri.z_pop, 0))


#: (label, extra environment, wait for /healthz "ready", state folder prepared by --prepare-only)
SCENARIOS = (
    ("cold worker, warm-up off", {"RSCA_WARM": "0"}, False, False),
    ("fresh worker, visitor at once (warming)", {}, False, False),
    ("fresh worker, after /healthz ready", {}, True, False),
    ("prepared, cold worker, warm-up off", {"RSCA_WARM": "0"}, False, True),
    ("prepared, fresh worker, visitor at once", {}, False, True),
)


def prepare(env):
    """``python app.py --prepare-only`` with ``env`` (its state folder): the first views kept on disk."""
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "app.py", "--prepare-only"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("dataset ")]
    return time.perf_counter() - t, lines


def serve(env, data_dir, k, wait_ready, baseline):
    """One fresh server: the first and a second view of the big survey (and of the baseline)."""
    port = free_port()
    proc = start_server(dockerfile_gunicorn(port), env, log_path=WORK / "server.log")
    rows, notes = [], {}
    try:
        t0 = time.perf_counter()
        if wait_ready:
            notes["warm-up"], warm = wait_warm(port)
            notes["warm"] = warm.get("datasets")
        notes["warm state as the visitor arrives"] = warm_state(port).get("state")
        steps, sizes, store = first_view(port, DashCallbacks(Client(port)), "survey", k)
        notes["start to first view end"] = time.perf_counter() - t0
        rows.append(("first view", steps))
        steps, _, _ = first_view(port, DashCallbacks(Client(port)), "survey", k)
        rows.append(("second view (cached)", steps))
        if baseline:
            steps, _, _ = first_view(port, DashCallbacks(Client(port)), "default", k)
            rows.append(("default survey, first view (baseline)", steps))
        notes["sizes"] = sizes
        notes["rss"] = max(w.memory_info().rss for w in psutil.Process(proc.pid).children()) / 2**30
        notes["store"] = store
    finally:
        stop_server(proc)
    return rows, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="the big bundle (its K compression prepared)")
    ap.add_argument("--baseline", default=str(ROOT / "data" / "default"), help="the default survey bundle")
    ap.add_argument("--k", type=int, default=30)
    args = ap.parse_args(argv)
    big, base = Path(args.dataset).resolve(), Path(args.baseline).resolve()
    from rsca_core import Dataset

    t = time.perf_counter()
    Dataset.load(big)  # as `compress` does when it prepares the bundle: the star table's Parquet copy, once
    print(f"preparing: Dataset.load of {big.name} {time.perf_counter() - t:.1f} s (keeps the star table as Parquet)")
    data_dir = WORK / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    link = data_dir / "survey"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(big, target_is_directory=True)
    env = dict(os.environ)
    env.update(
        RSCA_DATASET=str(base),
        RSCA_DATA_DIR=str(data_dir),
        RSCA_CACHE_TYPE="simple",
        RSCA_K_FIT=str(max(args.k, 30)),
    )
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    print(f"server: {' '.join(dockerfile_gunicorn(0)[2:])}; survey {big}; load average {os.getloadavg()}")
    results = []
    for i, (label, extra, wait_ready, prepared) in enumerate(SCENARIOS):
        state = WORK / f"state-{os.getpid()}-{i}"
        if prepared:
            seconds, lines = prepare(env | {"RSCA_STATE_DIR": str(state)})
            print(f"   {label}: --prepare-only {seconds:.1f} s: {'; '.join(lines)}", flush=True)
        rows, notes = serve(env | extra | {"RSCA_STATE_DIR": str(state)}, data_dir, args.k, wait_ready, i == 2)
        results.append((label, rows, notes))
        print(
            f"   {label}: warm state as the visitor arrived {notes['warm state as the visitor arrives']!r}"
            + (f", warm-up {notes['warm-up']:.1f} s ({notes['warm']})" if "warm-up" in notes else "")
            + f"; server start to the first view's end {notes['start to first view end']:.1f} s;"
            f" worker RSS {notes['rss']:.2f} GiB; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    floor, n_field = in_process_floor(big, args.k)
    sizes = results[2][2]["sizes"]
    print(f"   feature / histogram answers: {sizes[0] / 1e3:.0f} kB / {sizes[1] / 1e3:.0f} kB")
    print(f"\nExplore's first view over HTTP (gunicorn, 127.0.0.1), K = {args.k}, seconds; target total < 3 s")
    names = list(results[0][1][0][1])
    print(f"   {'':62s}" + "".join(f"{n:>23s}" for n in names))
    for label, rows, _ in results:
        for what, steps in rows:
            print(f"   {label + ': ' + what:62s}" + "".join(f"{steps[n]:23.3f}" for n in names))
    print(
        f"   in-process floor ({n_field:,} field stars): "
        + ", ".join(f"{k} {v:.3f} s" for k, v in floor.items())
        + f" = {sum(floor.values()):.3f} s"
    )
    for label, _rows, notes in results:
        print(f"   rate shown ({label}): {json.dumps(notes['store']['per_cluster'][:1])[:100]} …")
    print(f"   load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
