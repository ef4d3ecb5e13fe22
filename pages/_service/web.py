"""What the app adds to its Flask server: the result cache, the local Bootstrap stylesheet, request
limits and checks, security headers, error pages without tracebacks, and a truthful /healthz."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from . import config, warm
from .compute import init_cache
from .datasets import compression_ready, default_dataset_path, load, prepared_ks, read_meta
from .errors import UserError, hide_paths
from .jobs import background_manager, ensure_state_dir, job_store_problem

log = logging.getLogger("rsca_lab")

BOOTSTRAP_CSS_URL = "/vendor/bootstrap/bootstrap.min.css"
MAX_JSON_DEPTH = 64
#: Dash needs inline scripts (its config and renderer start-up) and eval (Plotly); everything is
#: served from this origin, and no other site may frame the app.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def init_app(server) -> None:
    """Attach the result cache, the stylesheet route, the request checks and the headers."""
    import flask
    import flask_bootstrap

    ensure_state_dir()
    init_cache(server)
    server.config["MAX_CONTENT_LENGTH"] = config.get().max_body_kb * 1024
    css_dir = Path(flask_bootstrap.__file__).parent / "static" / "bootstrap5" / "css"

    @server.route("/vendor/bootstrap/<path:name>")
    def _bootstrap_css(name):  # served from the installed Bootstrap-Flask package: no CDN
        if name not in ("bootstrap.min.css", "bootstrap.min.css.map"):
            flask.abort(404)
        return flask.send_from_directory(css_dir, name, max_age=86400)

    server.after_request(_add_headers)
    server.register_error_handler(Exception, _error_page)

    @server.before_request
    def _warm_this_worker():  # a worker forked from a process that started the app warms itself too
        warm.start(server)


def _add_headers(resp):
    for k, v in SECURITY_HEADERS.items():
        resp.headers.setdefault(k, v)
    return resp


def _error_page(exc):
    """Any error as a short text answer: 4xx as they are, the rest logged and answered 500 (503 when
    the job store is unusable), never a traceback or a server path."""
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        return exc.description or exc.name, exc.code, {"Content-Type": "text/plain; charset=utf-8"}
    if isinstance(exc, sqlite3.DatabaseError):
        log.error("the job store is unusable: %s", exc)
        return "The job store is unusable; see /healthz.", 503, {"Content-Type": "text/plain; charset=utf-8"}
    log.exception("unexpected error answering a request")
    return "Internal error; the server log has the details.", 500, {"Content-Type": "text/plain; charset=utf-8"}


def json_depth(raw: bytes) -> int:
    """Deepest nesting of arrays/objects in a JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    in_str = esc = False
    for ch in raw.decode("utf-8", "replace"):
        if in_str:
            esc, in_str = (False, True) if esc else (ch == "\\", ch != '"')
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _is_prop(x) -> bool:
    return isinstance(x, dict) and isinstance(x.get("property"), str) and isinstance(x.get("id"), (str, dict))


def callback_request_problem(raw: bytes, callback_map: dict) -> str | None:
    """Why a body posted to /_dash-update-component cannot be a call of one of this app's callbacks
    (None if it can): Dash itself answers such bodies with a 500."""
    if json_depth(raw) > MAX_JSON_DEPTH:
        return f"JSON nested deeper than {MAX_JSON_DEPTH}"
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return "the body is not JSON"
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    cb = callback_map.get(body.get("output")) if isinstance(body.get("output"), str) else None
    if cb is None:
        return "unknown or missing output"
    for name in ("inputs", "state"):
        got, want = body.get(name, []), cb.get(name, [])
        if not isinstance(got, list) or len(got) != len(want):
            return f"{name}: expected a list of {len(want)}"
        if not all(_is_prop(x) or (isinstance(x, list) and all(map(_is_prop, x))) for x in got):
            return f"{name}: each entry needs an id and a property"
    outs = body.get("outputs", [])
    outs = outs if isinstance(outs, list) else [outs]
    if not all(_is_prop(x) or (isinstance(x, list) and all(map(_is_prop, x))) for x in outs):
        return "outputs: each entry needs an id and a property"
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        return "changedPropIds must be a list of strings"
    return None


def install_request_checks(app) -> None:
    """Answer 400 (not Dash's 500) to a callback request that is not a call of one of this app's callbacks."""
    import flask

    prefix = app.config.requests_pathname_prefix.rstrip("/")

    @app.server.before_request
    def _check_callback_body():
        req = flask.request
        if req.method == "POST" and req.path == f"{prefix}/_dash-update-component":
            problem = callback_request_problem(req.get_data(cache=True), app.callback_map)
            if problem:
                return f"Bad callback request: {problem}", 400, {"Content-Type": "text/plain; charset=utf-8"}
        return None


def on_callback_error(exc):
    """Dash's ``on_error`` for every callback: a callback that fails on a forged value leaves the
    page as it is (204) instead of answering 500; the error goes to the log."""
    log.warning(
        "a callback failed (%s: %s); the page is left as it was", type(exc).__name__, hide_paths(str(exc))[:300]
    )


def health() -> tuple[dict, int]:
    """(answer, HTTP status): 503 naming every part that is unusable, without server paths.

    ``"warm"`` says whether this worker is still loading its datasets and default views
    (:func:`.warm.status`: ``"warming"``, ``"ready"`` or ``"off"``); a warming worker answers every
    page correctly (a request for what is being loaded waits for it), so it is 200, not 503."""
    cfg = config.get()
    problems = {}
    if not cfg.data_dir.is_dir():
        problems["data folder"] = "missing or not a folder (RSCA_DATA_DIR)"
    out = {"status": "ok", "k_fit": cfg.k_fit, "warm": warm.status()}
    try:
        meta = read_meta(default_dataset_path())
        load("default")
        out["dataset"] = {"kind": meta.get("kind"), "uid": meta.get("uid"), "n_stars": meta.get("n_stars")}
        if not compression_ready("default"):
            ks = ", ".join(map(str, prepared_ks()))
            problems["compression"] = f"the default dataset's compressions (K = {ks}) are not prepared"
    except UserError as exc:
        problems["default dataset"] = hide_paths(str(exc))
    store = cfg.state_dir / "jobs"
    problem = job_store_problem(store)
    if problem:
        problems["job store"] = f"unusable ({hide_paths(problem)})"
    else:
        try:
            out["jobs"] = {"running": background_manager().n_running(), "limit": cfg.max_jobs}
        except Exception as exc:  # sqlite errors, a vanished folder
            problems["job store"] = f"unusable ({type(exc).__name__})"
    if problems:
        out["status"] = "unusable"
        out["problems"] = problems
    return out, 503 if problems else 200
