"""Load test of a hosted RSCA Lab (issue 10): ordinary and background requests mixed, on 127.0.0.1.

    python benchmarks/bench_load.py                        # 20 clients x 60 s, 3,000-star survey
    python benchmarks/bench_load.py --clients 20 --seconds 60 --baseline-seconds 20 --json out.json

It starts gunicorn exactly as the Dockerfile's CMD runs it (3 workers, RSCA_MAX_JOBS = the cores),
on a 3,000-star simulated survey (built once into benchmarks/_work), with a fresh state folder (so
no job result is cached from an earlier run). Then, in the same process:

1. baseline (after six warm-up updates): the clients send ordinary requests only (Explore updates with random K / clusters,
   page loads) for ``--baseline-seconds``;
2. mixed: each client, in a closed loop for ``--seconds``, sends an ordinary request or (with
   probability ``--background``) starts a background job (App. A/B residuals with a random number
   of components, a K sweep over random K values, "Prepare compression") and polls it until it
   answers, like the browser;

while a monitor samples the number of job processes every 0.1 s. Printed: requests, 5xx, other
failures, "busy" answers, jobs finished, the peak number of job processes beside the cap, and p50 /
p95 / max of ordinary requests without and with background work. Every loop is bounded in count
(one request at a time per client) and in time (the phase's end, plus at most ``--drain`` seconds
for jobs still polled).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_app import AnswerError, explore_values, page_update
from dash_http import ROOT, Client, DashCallbacks, dockerfile_gunicorn, free_port, job_processes, pct, start_server
from dash_http import stop_server as stop

WORK = ROOT / "benchmarks" / "_work"


def ensure_survey(path: Path, n_field: int, k_fit: int) -> Path:
    """A simulated survey of ``n_field`` field stars with its K=k_fit compression (built once)."""
    from rsca_core import Dataset

    if not (path / "meta.json").exists():
        print(f"simulating a {n_field:,}-star survey into {path} (once)...", file=sys.stderr)
        cmd = [sys.executable, "-m", "rsca_core", "simulate", "--out", str(path), "--n-field", str(n_field)]
        subprocess.run(cmd + ["--seed", "7", "--no-progress"], check=True, cwd=ROOT)
    Dataset.load(path).compress(k_fit, seed=0)
    return path


class Monitor(threading.Thread):
    """Samples the job-process count of the server every 0.1 s."""

    def __init__(self, master_pid):
        super().__init__(daemon=True)
        self.master_pid, self.samples, self.halt = master_pid, [], threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.samples.append(job_processes(self.master_pid))
            time.sleep(0.1)


def background_request(rng, k_fit):
    """(output, values, changed) of one background job, chosen at random."""
    kind = rng.random()
    if kind < 0.5:
        values = {"sy-ds.value": "default", "sy-ncomp.value": str(rng.randint(2, 40))}
        return "sy-resid.data", values, ["sy-ncomp.value"]
    if kind < 0.9:
        ks = ",".join(str(k) for k in sorted(rng.sample(range(2, k_fit + 1), 3)))
        values = {"cu-ds.value": "default", "cu-k_sweep-ks.value": ks, "cu-k_sweep-run.n_clicks": 1}
        return "cu-k_sweep-fig.figure", values, ["cu-k_sweep-run.n_clicks"]
    return "dt-pca-result.children", {"dt-ds.value": "default", "dt-pca-run.n_clicks": 1}, ["dt-pca-run.n_clicks"]


def client_loop(i, port, cbs, names, k_max, k_fit, until, p_background, drain, out, lock):
    """One client's closed loop: one request at a time until ``until``."""
    rng = random.Random(1000 + i)
    c = Client(port, timeout=120)
    while time.time() < until:
        t0 = time.perf_counter()
        kind, status, note = "ordinary", None, ""
        try:
            if rng.random() < p_background:
                kind = "background"
                output, values, changed = background_request(rng, k_fit)
                status, ans, _ = cbs.call(c, output, values, changed, timeout=max(5.0, until - time.time() + drain))
                note = "busy" if "busy" in json.dumps(ans) else ("answer" if ans else "")
            elif rng.random() < 0.15:
                status, _ = c.request("GET", rng.choice(["/", "/clusters", "/inside", "/data", "/curves"]))
            else:
                k = rng.randint(2, min(20, k_max))
                subset = sorted(rng.sample(names, rng.randint(max(3, len(names) * 2 // 3), len(names))))
                status, _, _ = page_update(c, cbs, explore_values("default", k, subset), ["ex-k.value"])
        except AnswerError:
            status = "no rate in the answer"
        except Exception as exc:  # a dropped connection counts as a failure
            status = f"error: {type(exc).__name__}"
        with lock:
            out.append((kind, status, time.perf_counter() - t0, note))


def phase(port, cbs, names, k_max, k_fit, clients, seconds, p_background, drain):
    out, lock = [], threading.Lock()
    until = time.time() + seconds
    with ThreadPoolExecutor(clients) as ex:
        for i in range(clients):
            ex.submit(client_loop, i, port, cbs, names, k_max, k_fit, until, p_background, drain, out, lock)
    return out


def summary(rows) -> dict:
    ordinary = [dt for kind, s, dt, _ in rows if kind == "ordinary" and s == 200]
    bg = [r for r in rows if r[0] == "background"]
    return {
        "requests": len(rows),
        "5xx": sum(1 for _, s, _, _ in rows if isinstance(s, int) and s >= 500),
        "failures": sum(1 for _, s, _, _ in rows if not isinstance(s, int) or s == "timeout"),
        "ordinary": len(ordinary),
        "ordinary_p50": pct(ordinary, 50),
        "ordinary_p95": pct(ordinary, 95),
        "ordinary_max": max(ordinary) if ordinary else float("nan"),
        "background": len(bg),
        "background_busy": sum(1 for r in bg if r[3] == "busy"),
        "background_answered": sum(1 for r in bg if r[3] == "answer"),
        "background_p95": pct([r[2] for r in bg], 95),
    }


def server_env(args, dataset: Path, state: Path) -> dict:
    """The server's environment: this one without RSCA_*, then the benchmark's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSCA_")}
    return env | {
        "RSCA_DATASET": str(dataset.resolve()),
        "RSCA_DATA_DIR": str((WORK / "load-data").resolve()),
        "RSCA_STATE_DIR": str(state.resolve()),
        "RSCA_K_FIT": str(args.k_fit),
        "RSCA_MAX_JOBS": str(args.max_jobs),
        "RSCA_CACHE_TYPE": "filesystem",
        "WEB_CONCURRENCY": "3",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default=None, help="bundle to serve (default: a 3,000-star survey in _work)")
    ap.add_argument("--n-field", type=int, default=3000)
    ap.add_argument("--k-fit", type=int, default=30)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--baseline-seconds", type=float, default=20.0)
    ap.add_argument("--background", type=float, default=0.3, help="share of requests that start a job")
    ap.add_argument("--drain", type=float, default=120.0, help="seconds a job may still be polled after the end")
    ap.add_argument("--max-jobs", type=int, default=os.cpu_count() or 1, help="RSCA_MAX_JOBS of the server")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    dataset = Path(args.dataset) if args.dataset else WORK / f"survey-{args.n_field}"
    ensure_survey(dataset, args.n_field, args.k_fit)
    env = server_env(args, dataset, WORK / f"load-state-{os.getpid()}")
    (WORK / "load-data").mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = dockerfile_gunicorn(port)
    proc = start_server(cmd, env, log_path=WORK / "load-server.log")
    print(f"server: {' '.join(cmd[2:])}  (3 workers, RSCA_MAX_JOBS={args.max_jobs}, {args.n_field:,}-star survey)")
    mon = Monitor(proc.pid)
    mon.start()
    try:
        client = Client(port)
        cbs = DashCallbacks(client)
        from rsca_core import Dataset

        names = Dataset.load(dataset).cluster_names
        k_max = min(60, args.k_fit)
        with ThreadPoolExecutor(6) as ex:  # warm every worker (imports, the bundle, the compression)
            warm = explore_values("default", min(10, k_max), names)
            list(ex.map(lambda _: page_update(Client(port), cbs, warm, ["ex-k.value"]), range(6)))
        base = summary(phase(port, cbs, names, k_max, args.k_fit, args.clients, args.baseline_seconds, 0.0, 0))
        peak_before = max(mon.samples or [0])
        mixed_rows = phase(port, cbs, names, k_max, args.k_fit, args.clients, args.seconds, args.background, args.drain)
        mixed = summary(mixed_rows)
        health = client.request("GET", "/healthz")[0]
    finally:
        mon.halt.set()
        mon.join(2)
        stop(proc)
    numbers = {
        "clients": args.clients,
        "seconds": args.seconds,
        "max_jobs": args.max_jobs,
        "job_processes_peak": max(mon.samples or [0]),
        "job_processes_peak_baseline": peak_before,
        "baseline": base,
        "mixed": mixed,
        "healthz_at_end": health,
    }
    print(f"\nbaseline, ordinary requests only ({args.clients} clients x {args.baseline_seconds:.0f} s):")
    print(
        f"  {base['requests']} requests, 5xx {base['5xx']}, failures {base['failures']}; ordinary p50 "
        f"{base['ordinary_p50']:.3f} s, p95 {base['ordinary_p95']:.3f} s, max {base['ordinary_max']:.3f} s"
    )
    print(f"\nmixed, {100 * args.background:.0f} % background ({args.clients} clients x {args.seconds:.0f} s):")
    print(
        f"  {mixed['requests']} requests, 5xx {mixed['5xx']}, failures {mixed['failures']}; ordinary p50 "
        f"{mixed['ordinary_p50']:.3f} s, p95 {mixed['ordinary_p95']:.3f} s, max {mixed['ordinary_max']:.3f} s"
    )
    print(
        f"  background requests {mixed['background']}: answered {mixed['background_answered']}, "
        f"told busy {mixed['background_busy']}; p95 {mixed['background_p95']:.1f} s"
    )
    print(f"  job processes: peak {numbers['job_processes_peak']} (cap {args.max_jobs}); /healthz at the end {health}")
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=1))
    return 0 if mixed["5xx"] == 0 and numbers["job_processes_peak"] <= args.max_jobs else 1


if __name__ == "__main__":
    sys.exit(main())
