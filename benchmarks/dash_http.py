"""Talking to a running RSCA Lab over HTTP the way the browser does (shared by the benchmarks and
tests/test_hosting.py, which loads this file by path): keep-alive clients, /_dash-update-component
payloads built from /_dash-dependencies, background callbacks (start, poll, cancel) with the page's
signed ``endId``, gunicorn started as the Dockerfile runs it, and the job processes it has."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
UPDATE = "/_dash-update-component"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    i = min(len(v) - 1, max(0, int(round(q / 100 * (len(v) - 1)))))
    return v[i]


class Client:
    """One keep-alive HTTP connection (like one browser tab)."""

    def __init__(self, port, timeout=60):
        self.port, self.timeout = port, timeout
        self.conn = None

    def request(self, method, path, body=None, raw: bytes | None = None, headers=None):
        """(status, body bytes); ``body`` is sent as JSON, ``raw`` as it is."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs |= headers or {}
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                # the server may answer (e.g. 413) and close before reading the whole body
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.conn.request(method, path, body=data, headers=hdrs)
                resp = self.conn.getresponse()
                payload = resp.read()
                self.last_headers = dict(resp.getheaders())
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, payload
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class DashCallbacks:
    """Builds /_dash-update-component payloads from the app's dependency list."""

    def __init__(self, client):
        status, body = client.request("GET", "/_dash-dependencies")
        if status != 200:
            raise RuntimeError(f"/_dash-dependencies answered {status}")
        self.deps = json.loads(body)
        status, page = client.request("GET", "/")
        m = re.search(rb'"end_id":\s*"([^"]+)"', page)
        self.end_id = m.group(1).decode() if m else ""

    def find(self, output_fragment):
        for d in self.deps:
            if output_fragment in d["output"]:
                return d
        raise KeyError(output_fragment)

    @staticmethod
    def _entries(specs, values):
        out = []
        for i in specs:
            if i["id"].startswith("{"):  # a pattern-matching (ALL) entry: no such components
                out.append([])
            else:
                out.append(
                    {"id": i["id"], "property": i["property"], "value": values.get(f"{i['id']}.{i['property']}")}
                )
        return out

    @classmethod
    def payload(cls, dep, values: dict, changed: list[str]):
        out = dep["output"]
        parts = out.strip(".").split("...") if out.startswith("..") else [out]
        outputs = []
        for p in parts:
            cid, prop = p.rsplit(".", 1)
            outputs.append({"id": cid, "property": prop})
        return {
            "output": out,
            "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": cls._entries(dep["inputs"], values),
            "changedPropIds": changed,
            "state": cls._entries(dep.get("state", []), values),
        }

    def url(self, **args) -> str:
        q = {"endId": self.end_id} | args
        return UPDATE + "?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in q.items() if v is not None)

    def call(self, client, output_fragment, values, changed, timeout=120.0, poll=0.25):
        """Run one callback; a background one is started and polled until it answers (or ``timeout``).

        Returns (status, answer dict or None, handles): ``handles`` is {"cacheKey", "job"} of a
        background job (None for an ordinary callback)."""
        dep = self.find(output_fragment)
        body = self.payload(dep, values, changed)
        status, raw = client.request("POST", self.url(), body)
        if status != 200:
            return status, None, None
        first = json.loads(raw)
        if "cacheKey" not in first:
            return status, first, None
        handles = {"cacheKey": first["cacheKey"], "job": first["job"]}
        end = time.time() + timeout
        while time.time() < end:
            status, raw = client.request("POST", self.url(**handles), body)
            if status == 204:  # the job ended without an answer (cancelled or killed)
                return status, None, handles
            if status != 200:
                return status, None, handles
            ans = json.loads(raw)
            if "response" in ans:
                return status, ans, handles
            time.sleep(poll)
        return "timeout", None, handles

    def start(self, client, output_fragment, values, changed):
        """Start a background callback without waiting: (status, handles or None)."""
        body = self.payload(self.find(output_fragment), values, changed)
        status, raw = client.request("POST", self.url(), body)
        if status != 200:
            return status, None
        first = json.loads(raw)
        return status, {"cacheKey": first.get("cacheKey"), "job": first.get("job")}

    def cancel(self, client, cancel_id, handles):
        """Press a background callback's Cancel button (``cancel_id``: the button's id)."""
        dep = self.find(f"{cancel_id}.id")
        body = self.payload(dep, {f"{cancel_id}.n_clicks": 1}, [f"{cancel_id}.n_clicks"])
        return client.request("POST", self.url(cancelJob=handles["job"]), body)[0]


def dockerfile_gunicorn(port: int) -> list[str]:
    """The Dockerfile's CMD (gunicorn app:server …) bound to 127.0.0.1:port, run by this Python."""
    text = (ROOT / "Dockerfile").read_text()
    cmd_line = [ln for ln in text.splitlines() if ln.startswith("CMD ")][-1]
    cmd = json.loads(cmd_line[4:])
    cmd[cmd.index("--bind") + 1] = f"127.0.0.1:{port}"
    return [sys.executable, "-m"] + cmd


def start_server(cmd, env, cwd=ROOT, wait=90.0, log_path=None):
    """Start ``cmd`` in its own session; wait until /healthz answers (any status). Returns the Popen.

    stderr goes to ``log_path`` (read it for the server's log lines)."""
    port = int(cmd[cmd.index("--bind") + 1].rsplit(":", 1)[1])
    err = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - kept open by the child
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            Client(port, timeout=5).request("GET", "/healthz")
            return proc
        except OSError:
            pass
        if proc.poll() is not None:
            return proc
        time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"{shlex.join(cmd)} did not answer /healthz within {wait:.0f} s")


def warm_state(port: int) -> dict:
    """The ``warm`` part of /healthz ({"state": "warming" | "ready" | "off", "datasets": …})."""
    _status, body = Client(port, timeout=30).request("GET", "/healthz")
    return json.loads(body).get("warm") or {"state": "absent"}


def wait_warm(port: int, timeout: float = 600.0, poll: float = 0.2) -> tuple[float, dict]:
    """Poll /healthz until the worker has finished warming: (seconds waited, its last ``warm``)."""
    t0 = time.perf_counter()
    while True:
        warm = warm_state(port)
        if warm.get("state") != "warming" or time.perf_counter() - t0 > timeout:
            return time.perf_counter() - t0, warm
        time.sleep(poll)


def stop_server(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def worker_pids(master_pid: int) -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process(master_pid).children()}
    except psutil.Error:
        return set()


def job_processes(master_pid: int) -> int:
    """Background-job processes alive now: children of the gunicorn workers that are not zombies."""
    import psutil

    n = 0
    try:
        for w in psutil.Process(master_pid).children():
            for c in w.children():
                with contextlib.suppress(psutil.Error):
                    n += c.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        pass
    return n
