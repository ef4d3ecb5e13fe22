"""Issue 10, "safe to host": each finding against a live gunicorn on 127.0.0.1, run as the Dockerfile
runs it (its CMD, 3 workers), on a small simulated survey. Loops are bounded in count and time.

Servers: ``main`` (builds allowed with small caps, at most 2 background jobs), ``defaults`` (nothing
set but the dataset: builds off, state folder in $HOME, a corrupt job store left from before),
``no_data`` (no data folder), and two that must refuse to start (a bad environment variable).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("gunicorn")
psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("dash_http", ROOT / "benchmarks" / "dash_http.py")
dh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dh)

K_FIT = 8
MAX_JOBS = 2


# ------------------------------------------------------------------------------------------ set-up
@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A small survey with its compression, plus a data folder with two copies of it: ``victim``
    (compressed) and ``fresh`` (not compressed)."""
    from rsca_core import Dataset

    root = tmp_path_factory.mktemp("hosting")
    bundle = root / "survey"
    argv = [sys.executable, "-m", "rsca_core", "simulate", "--out", str(bundle), "--n-field", "300", "--seed", "4"]
    subprocess.run(argv + ["--no-progress"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    for k in (2, 6, K_FIT):  # what the app prepares (K = 2 and K_FIT), and the K the Systematics tests use
        Dataset.load(bundle).compress(k, seed=0)
    data = root / "data"
    data.mkdir()
    shutil.copytree(bundle, data / "victim")
    shutil.copytree(bundle, data / "fresh", ignore=shutil.ignore_patterns("cache"))
    return root


def base_env(place: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RSCA_", "XDG_"))}
    env |= {
        "HOME": str(place / "home"),
        "TMPDIR": str(place / "tmpdir"),
        "RSCA_DATASET": str(place / "survey"),
        "RSCA_K_FIT": str(K_FIT),
        "WEB_CONCURRENCY": "3",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    (place / "home").mkdir(exist_ok=True)
    (place / "tmpdir").mkdir(exist_ok=True)
    return env | {k: str(v) for k, v in extra.items() if v is not None}


class Server:
    def __init__(self, place, name, **env):
        self.port = dh.free_port()
        self.log = place / f"{name}.log"
        self.env = base_env(place, **env)
        self.proc = dh.start_server(dh.dockerfile_gunicorn(self.port), self.env, log_path=self.log)
        self.client = dh.Client(self.port, timeout=60)

    def get(self, path):
        return self.client.request("GET", path)

    def health(self):
        status, body = self.get("/healthz")
        return status, json.loads(body)

    def stop(self):
        dh.stop_server(self.proc)


@pytest.fixture(scope="module")
def main(place):
    srv = Server(
        place,
        "main",
        RSCA_DATA_DIR=place / "data",
        RSCA_STATE_DIR=place / "state",
        RSCA_CACHE_TYPE="filesystem",
        RSCA_MAX_JOBS=MAX_JOBS,
        RSCA_ALLOW_BUILD=1,
        RSCA_BUILD_MAX_STARS=2000,
        RSCA_BUILD_QUOTA_MB=150,
    )
    assert srv.health()[0] == 200, srv.log.read_text()[-2000:]
    srv.cbs = dh.DashCallbacks(srv.client)
    yield srv
    srv.stop()


class ProcessWatch:
    """Samples the number of job processes of a server every 50 ms while it is on."""

    def __init__(self, server):
        self.server, self.samples, self.stop = server, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.samples.append(dh.job_processes(self.server.proc.pid))
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def text_of(answer) -> str:
    return json.dumps(answer) if answer is not None else ""


def _build_values(name, n_field):
    return {"sim-run.n_clicks": 1, "sim-name.value": name, "sim-nfield.value": str(n_field), "sim-seed.value": "1"}


def build(srv, name, n_field):
    values = _build_values(name, n_field)
    return srv.cbs.call(dh.Client(srv.port), "sim-result.children", values, ["sim-run.n_clicks"], 180)


# ------------------------------------------------------------------------------------------ finding 1
def test_a_starting_worker_warms_its_datasets_and_health_says_so(main):
    """Each worker loads the datasets and their default views in the background (issue 14 part 3);
    /healthz says "warming" until that is done, then "ready", and is 200 all along (a warming worker
    answers every page). ``fresh`` has no compression: it is loaded, never compressed by the warm-up."""
    deadline = time.time() + 90
    while True:
        status, h = main.health()
        assert status == 200 and h["status"] == "ok", h
        assert h["warm"]["state"] in ("warming", "ready"), h
        if h["warm"]["state"] == "ready":
            break
        assert time.time() < deadline, h
        time.sleep(0.2)
    assert h["warm"]["datasets"] == {"default": "ready", "fresh": "loaded", "victim": "ready"}, h
    assert not list((main_data(main) / "fresh").glob("cache/pca-*"))


def main_data(srv) -> Path:
    return Path(srv.env["RSCA_DATA_DIR"])


def test_builds_are_capped_in_size_and_disk_one_at_a_time_and_leftovers_removed(main, place):
    data = place / "data"
    status, ans, _ = build(main, "huge", 200_000)
    assert status == 200 and "out of range" in text_of(ans) and "2000" in text_of(ans)
    status, ans, _ = build(main, "large", 2000)  # ~200 MB estimated, over the 150 MB quota
    assert status == 200 and "quota" in text_of(ans)
    assert not (data / "huge").exists() and not (data / "large").exists()

    c = dh.Client(main.port)
    status, handles = main.cbs.start(c, "sim-result.children", _build_values("big", 800), ["sim-run.n_clicks"])
    assert status == 200 and handles["cacheKey"]
    end = time.time() + 60
    while not list(data.glob("big.tmp-*")) and time.time() < end:
        time.sleep(0.2)
    assert list(data.glob("big.tmp-*")), "the build never started writing"
    status, ans, _ = build(main, "other", 100)  # a second build while the first runs
    assert "another survey is being built" in text_of(ans)
    assert main.cbs.cancel(c, "sim-cancel", handles) in (200, 204)
    status, ans, _ = build(main, "tiny", 100)
    assert status == 200 and "Built tiny" in text_of(ans), text_of(ans)[:500]
    assert not list(data.glob("big.tmp-*")), "the cancelled build's temporary folder is still there"
    assert not (data / "big").exists()
    assert (data / "tiny" / "meta.json").is_file()


# ------------------------------------------------------------------------------------------ finding 2
def test_background_jobs_stay_under_the_cap_and_identical_ones_are_joined(main):
    cbs = main.cbs
    with ProcessWatch(main) as watch:
        # "Prepare compression" pressed 4 times at once on a dataset without one: one job, four answers
        prep = {"dt-pca-run.n_clicks": 1, "dt-ds.value": "fresh"}
        with ThreadPoolExecutor(4) as ex:
            answers = list(
                ex.map(
                    lambda i: cbs.call(dh.Client(main.port), "dt-pca-result.children", prep, ["dt-pca-run.n_clicks"]),
                    range(4),
                )
            )
        joined_peak = max(watch.samples)
        # eight different jobs at once: at most MAX_JOBS processes, the others told to try again
        resid = [{"sy-ds.value": "default", "sy-ncomp.value": str(n)} for n in range(2, 10)]
        with ThreadPoolExecutor(8) as ex:
            many = list(
                ex.map(lambda v: cbs.call(dh.Client(main.port), "sy-resid.data", v, ["sy-ncomp.value"], 120), resid)
            )
    assert [a[0] for a in answers] == [200] * 4
    assert all("Compression ready" in text_of(a[1]) for a in answers), [text_of(a[1])[:200] for a in answers]
    assert joined_peak <= 1
    assert max(watch.samples) <= MAX_JOBS, max(watch.samples)
    assert all(a[0] == 200 for a in many), [a[0] for a in many]
    texts = [text_of(a[1]) for a in many]
    assert any("busy" in t for t in texts) and any("wavelength" in t for t in texts)


def test_each_job_kind_has_caps(main):
    c = dh.Client(main.port)
    for name, values, want in (
        ("top_n", {"cu-top_n-k.value": "6", "cu-top_n-n_seeds.value": "20"}, "seeds = 20 is out of range"),
        ("data_size", {"cu-data_size-ks.value": "4", "cu-data_size-n_trials.value": "500"}, "trials = 500"),
        ("k_sweep", {"cu-k_sweep-ks.value": ",".join(["3"] * 13)}, "at most 12 values"),
    ):
        values = values | {"cu-ds.value": "default", f"cu-{name}-run.n_clicks": 1}
        status, ans, _ = main.cbs.call(c, f"cu-{name}-fig.figure", values, [f"cu-{name}-run.n_clicks"], 120)
        assert status == 200
        if want:
            assert want in text_of(ans), text_of(ans)[:300]


def test_a_masked_rate_leaves_no_compression_behind(main, place):
    cache = place / "survey" / "cache"
    before = sorted(p.name for p in cache.iterdir())
    values = {"sy-rate-run.n_clicks": 1, "sy-ds.value": "default", "sy-k.value": "6", "sy-mask.value": "100-200"}
    values["sy-mask-unit.value"] = "px"  # pixel ranges (the page offers Å first)
    status, ans, _ = main.cbs.call(dh.Client(main.port), "sy-rate-result.children", values, ["sy-rate-run.n_clicks"])
    assert status == 200 and "sy-rate-with" in text_of(ans), text_of(ans)[:300]
    assert sorted(p.name for p in cache.iterdir()) == before


# ------------------------------------------------------------------------------------------ finding 3
def test_systematics_cost_is_linear_in_bands_and_urls_are_capped(main):
    c = dh.Client(main.port, timeout=30)  # the old code took 93 s for 263 ranges, 373 s for 400 bands
    ranges = ",".join(f"{10 * i}-{10 * i + 5}" for i in range(263))
    draw = {"sy-resid.data": None, "sy-mask.value": ranges, "sy-ds.value": "default", "sy-k.value": "6"}
    draw["sy-mask-unit.value"] = "px"
    status, ans, _ = main.cbs.call(c, "sy-ext.figure", draw, ["sy-mask.value"])
    assert status == 200 and "at most 40 pixel ranges" in text_of(ans)
    short = ",".join(f"{i}-{i + 1}" for i in range(100, 400, 3))  # 100 ranges in a shareable link
    route = {"_pages_location.pathname": "/systematics", "_pages_location.search": "?mask=" + short}
    status, ans, _ = main.cbs.call(c, "_pages_content.children", route, ["_pages_location.pathname"])
    assert status == 200 and "at most 40 pixel ranges" in text_of(ans)
    n = 8575
    panel = {
        "wavelength": [15100 + 0.2 * i for i in range(n)],
        "residual": [0.0] * n,
        "bands": [[20 * i, 20 * i + 10] for i in range(400)],
        "summary": {},
    }
    mask = ",".join(f"{20 * i + 11}-{20 * i + 15}" for i in range(40))
    draw = {"sy-resid.data": {"extinction": panel}, "sy-mask.value": mask, "sy-ds.value": "default", "sy-k.value": "6"}
    draw["sy-mask-unit.value"] = "px"
    status, ans, _ = main.cbs.call(c, "sy-ext.figure", draw, ["sy-resid.data"])
    assert status == 200
    assert len(ans["response"]["sy-ext"]["figure"]["layout"]["shapes"]) == 440


# ------------------------------------------------------------------------------------------ finding 4
def test_bad_request_bodies_get_4xx_never_500(main):
    c = dh.Client(main.port)
    url = main.cbs.url()
    assert c.request("POST", url, raw=b"x" * (10 * 2**20))[0] == 413
    assert c.request("POST", url, raw=b"[" * 2 * 2**20)[0] == 413
    valid = main.cbs.payload(main.cbs.find("ex-rate.children"), {}, ["ex-k.value"])
    for raw in (
        b"null",
        b"[]",
        b"{}",
        b"not json",
        json.dumps({k: v for k, v in valid.items() if k != "output"}).encode(),
        json.dumps(valid | {"output": "nope.children"}).encode(),
        json.dumps(valid | {"inputs": valid["inputs"][:2]}).encode(),
        json.dumps(valid | {"inputs": [1, 2, 3, 4, 5, 6, 7]}).encode(),
        b"[" * 5000 + b"]" * 5000,
        b'{"output": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ):
        status, body = c.request("POST", url, raw=raw)
        assert status == 400, (raw[:60], status, body[:200])
        assert b"Traceback" not in body


@pytest.mark.parametrize(
    "output,values",
    [
        ("ex-features.figure", {"ex-store.data": "forged"}),
        ("ex-features.figure", {"ex-store.data": {"settings": 5}}),
        ("ex-features.figure", {"ex-store.data": {"settings": {"ds": "../../etc", "k": "x"}}}),
        ("ex-hist.figure", {"ex-store.data": {"hists": 3, "per_cluster": "x"}}),
        ("ex-download.data", {"ex-store.data": {"settings": {"ds": 1}}, "ex-dl-map.n_clicks": 1}),
        ("cl-download.data", {"cl-store.data": {"settings": []}, "cl-dl-csv.n_clicks": 1}),
        ("cu-k_sweep-download.data", {"cu-k_sweep-store.data": {"csv": 1}, "cu-k_sweep-csv.n_clicks": 1}),
        ("sy-ext.figure", {"sy-resid.data": {"extinction": {"wavelength": "abc"}}, "sy-ds.value": "default"}),
        ("sy-ext.figure", {"sy-resid.data": [1, 2], "sy-mask.value": {"a": 1}, "sy-ds.value": ["x"]}),
        ("sy-mask.value", {"sy-mask-suggested.n_clicks": 1, "sy-resid.data": {"extinction": 7}}),
        ("ex-rate.children", {"ex-ds.value": {"x": 1}, "ex-k.value": [1], "ex-clusters.value": "zz"}),
    ],
)
def test_forged_values_in_stores_and_controls_give_no_500(main, output, values):
    dep = main.cbs.find(output)
    changed = [f"{i['id']}.{i['property']}" for i in dep["inputs"]][:1]
    status, ans, _ = main.cbs.call(dh.Client(main.port), output, values, changed)
    assert status in (200, 204), status
    assert "Traceback" not in text_of(ans)


# ------------------------------------------------------------------------------------------ finding 7
def test_a_bundle_file_truncated_under_the_workers_gives_a_message(main, place):
    from rsca_core import Dataset

    c = dh.Client(main.port)
    values = {
        "ex-ds.value": "victim",
        "ex-input.value": "spectra",
        "ex-k.value": "6",
        "ex-clusters.value": Dataset.load(place / "survey").cluster_names,
        "ex-cv.value": True,
        "ex-top.value": "",
        "ex-species.value": ["Fe"],
    }
    workers = dh.worker_pids(main.proc.pid)
    for _ in range(6):  # every worker loads the bundle
        status, ans, _ = main.cbs.call(c, "ex-rate.children", values, ["ex-k.value"])
        assert status == 200
    mask = place / "data" / "victim" / "mask.npy"
    with open(mask, "r+b") as f:
        f.truncate(mask.stat().st_size // 3)
    for _ in range(6):
        status, ans, _ = main.cbs.call(c, "ex-rate.children", values, ["ex-k.value"])
        assert status == 200 and "victim" in json.dumps(ans["response"]["ex-msg"]), text_of(ans)[:300]
    assert dh.worker_pids(main.proc.pid) == workers, "a worker died"
    assert "SIGBUS" not in main.log.read_text() and "was sent" not in main.log.read_text()


# ------------------------------------------------------------------------------------------ finding 8
def test_no_server_path_or_traceback_in_answers_and_security_headers(main, place):
    c = dh.Client(main.port)
    secret = str(place).encode()
    answers = [c.request("GET", p) for p in ("/", "/data", "/data?ds=victim", "/healthz", "/nope", "/?ds=zzz")]
    for output, values in (
        ("dt-info.children", {"dt-ds.value": "default"}),
        ("dt-info.children", {"dt-ds.value": "fresh"}),
        ("ex-rate.children", {"ex-ds.value": "nope", "ex-input.value": "spectra", "ex-k.value": "6"}),
    ):
        status, ans, _ = main.cbs.call(c, output, values, [next(iter(values))])
        answers.append((status, text_of(ans).encode()))
    for status, body in answers:
        assert status < 500 and secret not in body and b"Traceback" not in body, body[:300]
    c.request("GET", "/")
    headers = {k.lower(): v for k, v in c.last_headers.items()}
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    state = place / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


# ------------------------------------------------------------------------------------------ findings 5, 6, 8
def test_safe_defaults_private_state_and_a_corrupt_job_store(place):
    home_state = place / "home" / ".local" / "state" / "rsca-lab"
    (home_state / "jobs").mkdir(parents=True)
    (home_state / "jobs" / "cache.db").write_bytes(b"this is not a database" * 100)
    data = place / "data-defaults"
    data.mkdir()
    srv = Server(place, "defaults", RSCA_DATA_DIR=data)
    try:
        status, h = srv.health()
        log = srv.log.read_text()
        assert status == 200, (h, log[-2000:])
        assert "cache.db" in log and "moved aside" in log
        assert list(home_state.glob("jobs.corrupt-*"))
        assert stat.S_IMODE(home_state.stat().st_mode) == 0o700
        assert not (place / "tmpdir" / "rsca-lab").exists()
        # builds are off: the page says so and there is no build callback to call
        cbs = dh.DashCallbacks(srv.client)
        route = {"_pages_location.pathname": "/data", "_pages_location.search": ""}
        status, ans, _ = cbs.call(srv.client, "_pages_content.children", route, ["_pages_location.pathname"])
        assert status == 200 and "turned off" in text_of(ans)
        deps = json.loads(srv.get("/_dash-dependencies")[1])
        assert not any("sim-result" in d["output"] for d in deps)
        # the job store corrupted while the app runs: /healthz tells
        (home_state / "jobs" / "cache.db").write_bytes(b"garbage" * 1000)
        status, h = srv.health()
        assert status == 503 and "job store" in h["problems"], h
    finally:
        srv.stop()


def test_health_names_a_missing_data_folder_and_dataset(place):
    one = {"WEB_CONCURRENCY": 1}  # these servers only answer /healthz: one worker boots faster
    srv = Server(place, "no-data", RSCA_DATA_DIR=place / "nowhere", RSCA_DATASET="", RSCA_STATE_DIR=place / "s2", **one)
    try:
        status, h = srv.health()
        assert status == 503
        assert {"data folder", "default dataset"} <= set(h["problems"])
        assert str(place) not in json.dumps(h)
    finally:
        srv.stop()
    shutil.copytree(place / "survey", place / "no-pca", ignore=shutil.ignore_patterns("cache"))
    srv = Server(place, "no-pca", RSCA_DATASET=place / "no-pca", RSCA_STATE_DIR=place / "s3", **one)
    try:
        status, h = srv.health()
        assert status == 503 and "compression" in h["problems"], h
    finally:
        srv.stop()


@pytest.mark.parametrize("name,value", [("RSCA_K_FIT", "abc"), ("RSCA_CACHE_TIMEOUT", "abc"), ("RSCA_MAX_JOBS", "0")])
def test_a_bad_environment_variable_stops_the_start_with_one_line_naming_it(place, name, value):
    env = base_env(place, RSCA_STATE_DIR=place / "s4", WEB_CONCURRENCY=1, **{name: value})
    port = dh.free_port()
    res = subprocess.run(dh.dockerfile_gunicorn(port), cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if name in ln]
    assert lines and all(ln.startswith(f"error: {name}=") for ln in lines), lines
    # no traceback of the configuration error (a booting worker stopped by the master may print its own)
    assert "ConfigError" not in res.stderr
