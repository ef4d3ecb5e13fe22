"""Inside RSCA: how long a change of step takes in the browser, this checkout against a baseline.

    python benchmarks/bench_inside.py                        # baseline: the commit before the change
    python benchmarks/bench_inside.py --baseline-rev main --dataset data/default --changes 12

Both apps (this checkout, and the ``--baseline-rev`` commit exported with ``git archive`` into a
temporary folder) are started with ``python app.py`` on free ports of 127.0.0.1, on the same dataset
and compression cache (RSCA_CACHE_DIR, so the baseline's run writes nothing beside the bundle), with
their own empty state folders. One headless Chromium then moves the step slider of each page in
turn, alternating between the two apps so that both see the same machine load, and measures, in the
page, the time from the key press to the step plot's redraw (Plotly's ``plotly_afterplot`` after
its data changed). The first visit of each page (which computes and caches the settings' data) is
not counted: this measures a step change, which is what a reader does most.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dash_http import ROOT, Client, free_port

HOOK = """
var g = document.getElementById('in-steps');
var p = g ? g.getElementsByClassName('js-plotly-plot')[0] : null;
if (!p || !p.data || !p.data[0]) { return null; }
if (!p.__benchHooked) { p.on('plotly_afterplot', function () { window.__afterplot = performance.now(); });
                        p.__benchHooked = true; }
window.__t0 = performance.now();
return [p.data[0].x[0], document.getElementById('in-explain').innerText.slice(0, 12)];
"""
STATE = """
var p = document.getElementById('in-steps').getElementsByClassName('js-plotly-plot')[0];
return [p.data[0].x[0], document.getElementById('in-explain').innerText.slice(0, 12),
        (window.__afterplot || 0) - window.__t0];
"""


def start_app(src: Path, port: int, env: dict, log: Path) -> subprocess.Popen:
    err = open(log, "wb")  # noqa: SIM115 - kept open by the child
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=src,
        env=env | {"PYTHONPATH": str(src)},
        stdout=subprocess.DEVNULL,
        stderr=err,
        start_new_session=True,
    )
    end = time.time() + 120
    while time.time() < end:
        try:
            Client(port, timeout=5).request("GET", "/healthz")
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the app in {src} did not answer within 120 s (see {log})")


def open_inside(driver, port: int, timeout=180.0):
    driver.get(f"http://127.0.0.1:{port}/inside?step=1")
    end = time.time() + timeout
    while time.time() < end:
        if driver.execute_script(HOOK) is not None:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the Inside RSCA page on port {port} never drew its step plot")


def one_change(driver, key, timeout=30.0) -> float:
    """Press ``key`` on the step slider; seconds until the step plot was redrawn with new data."""
    before = driver.execute_script(HOOK)
    driver.find_element("css selector", "#in-step [role=slider]").send_keys(key)
    end = time.time() + timeout
    while time.time() < end:
        x0, text, ms = driver.execute_script(STATE)
        if x0 != before[0] and text != before[1] and ms > 0:
            time.sleep(0.05)
            return driver.execute_script(STATE)[2] / 1000.0
        time.sleep(0.01)
    raise RuntimeError("the step plot did not change within the timeout")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-rev", default="HEAD~1", help="git revision of the baseline app (default HEAD~1)")
    ap.add_argument("--dataset", default=str(ROOT / "data" / "default"), help="bundle folder (default data/default)")
    ap.add_argument("--cache-dir", default=None, help="RSCA_CACHE_DIR for both apps (default: a temporary copy)")
    ap.add_argument("--changes", type=int, default=12, help="step changes measured per app (default 12)")
    args = ap.parse_args(argv)

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.common.keys import Keys

    work = Path(tempfile.mkdtemp(prefix="bench-inside-"))
    base_src = work / "baseline"
    base_src.mkdir()
    archive = subprocess.run(["git", "archive", args.baseline_rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(base_src)], input=archive, check=True)
    env = dict(os.environ) | {"RSCA_DATASET": str(Path(args.dataset).resolve()), "RSCA_ALLOW_BUILD": "0"}
    if args.cache_dir:
        env["RSCA_CACHE_DIR"] = str(Path(args.cache_dir).resolve())
    apps, procs = {}, []
    try:
        for name, src in (("ours", ROOT), ("baseline", base_src)):
            port = free_port()
            e = env | {"RSCA_STATE_DIR": str(work / f"state-{name}"), "RSCA_DATA_DIR": str(work / f"data-{name}")}
            procs.append(start_app(src, port, e, work / f"{name}.log"))
            apps[name] = port
        opts = Options()
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1400"):
            opts.add_argument(a)
        drivers = {name: webdriver.Chrome(options=opts) for name in apps}
        try:
            for name, port in apps.items():
                open_inside(drivers[name], port)
            keys = ([Keys.ARROW_RIGHT] * 3 + [Keys.ARROW_LEFT] * 3) * (args.changes // 6 + 1)
            times = {name: [] for name in apps}
            for key in keys[: args.changes]:
                for name in apps:  # alternate: both apps see the same machine load
                    times[name].append(one_change(drivers[name], key))
                    time.sleep(0.3)
        finally:
            for d in drivers.values():
                d.quit()
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
    load = os.getloadavg()[0]
    print(f"Inside RSCA step change, {args.changes} changes each, dataset {Path(args.dataset).name}, load {load:.1f}")
    for name in ("ours", "baseline"):
        t = sorted(times[name])
        label = "ours" if name == "ours" else f"baseline ({args.baseline_rev})"
        print(
            f"  {label:<24} median {statistics.median(t):.3f} s  max {t[-1]:.3f} s  "
            f"(all: {' '.join(f'{x:.2f}' for x in times[name])})"
        )


if __name__ == "__main__":
    main()
