"""What the app adds to its Flask server: the result cache, the local Bootstrap stylesheet, /healthz."""

from __future__ import annotations

from pathlib import Path

from .compute import init_cache
from .datasets import default_dataset_path, read_meta

BOOTSTRAP_CSS_URL = "/vendor/bootstrap/bootstrap.min.css"


def init_app(server) -> None:
    """Attach the result cache and the local Bootstrap stylesheet route to the Flask server."""
    import flask
    import flask_bootstrap

    init_cache(server)
    css_dir = Path(flask_bootstrap.__file__).parent / "static" / "bootstrap5" / "css"

    @server.route("/vendor/bootstrap/<path:name>")
    def _bootstrap_css(name):  # served from the installed Bootstrap-Flask package: no CDN
        if name not in ("bootstrap.min.css", "bootstrap.min.css.map"):
            flask.abort(404)
        return flask.send_from_directory(css_dir, name, max_age=86400)


def health() -> dict:
    out = {"status": "ok", "core": True}
    try:
        meta = read_meta(default_dataset_path())
        out["dataset"] = {"kind": meta.get("kind"), "uid": meta.get("uid"), "n_stars": meta.get("n_stars")}
    except Exception as exc:
        out["dataset"] = {"error": str(exc)}
    return out
