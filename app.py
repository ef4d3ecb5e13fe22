"""RSCA Lab dashboard: explore, teach and host RSCA in the browser.

Run it with ``python app.py`` (http://127.0.0.1:8050; ``--host``/``--port`` or the environment
variables RSCA_HOST / RSCA_PORT change that) or, on a server, ``gunicorn app:server``.

The environment (RSCA_DATASET, RSCA_DATA_DIR, RSCA_CACHE_TYPE, RSCA_K_FIT, …; the README's "Hosting"
section lists them all) is read once, at start, by :mod:`pages._service.config`: a bad value stops
the start with one line naming the variable.

Every page talks to ``rsca_core`` only through :mod:`pages._service`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# numpy asks the kernel for transparent huge pages for each large array; with the kernel's usual
# defrag=madvise, a fault on such a page may wait for memory compaction, and on a server whose memory
# is full of page cache (big bundles read) a fresh worker's first 240 MB arrays (a 1,000,000-star
# survey's scores) took 2–3 s each instead of 0.2–0.4 s: the cold first view of that survey 8.1 s
# with them, 3.9 s without (benchmarks/bench_first_view.py). Off unless the operator sets it; numpy
# reads it when it is first imported, which is below (dash, flask and gunicorn do not import it).
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
if "--prepare-only" in sys.argv[1:]:  # `python app.py` or the `rsca-lab` script (which imports this module)
    os.environ["RSCA_WARM"] = "0"  # this process only prepares: no warm-up thread loading datasets beside it

import dash  # noqa: E402
import dash_bootstrap_components as dbc  # noqa: E402
import flask  # noqa: E402
from dash import html  # noqa: E402

from pages import _service as service  # noqa: E402

HERE = Path(__file__).resolve().parent
# In a checkout the stylesheets are in assets/ beside app.py; an installed wheel carries them in pages/assets.
ASSETS = HERE / "assets" if (HERE / "assets").is_dir() else HERE / "pages" / "assets"

NAV = (
    ("Explore", "/"),
    ("Clusters", "/clusters"),
    ("Curves", "/curves"),
    ("Systematics", "/systematics"),
    ("Inside RSCA", "/inside"),
    ("Siblings", "/siblings"),
    ("Data", "/data"),
)


def _navbar():
    return dbc.Navbar(
        dbc.Container(
            [
                dbc.NavbarBrand("RSCA Lab", href="/", class_name="fw-bold"),
                dbc.Nav(
                    [
                        dbc.NavItem(
                            dbc.NavLink(
                                name,
                                href=href,
                                active="exact",
                                id=f"nav-{href.strip('/') or 'explore'}",
                                class_name="text-nowrap",
                            )
                        )
                        for name, href in NAV
                    ],
                    navbar=True,
                    class_name="me-auto",
                ),
                # the whole line from 1200 px; on a narrower screen (e.g. 1024 px) only the reference,
                # so that the bar stays on one line
                html.Span(
                    "chemical likeness of stars - de Mijolla & Ness (2022)",
                    className="navbar-text small text-light text-nowrap d-none d-xl-inline",
                ),
                html.Span(
                    "de Mijolla & Ness (2022)",
                    className="navbar-text small text-light text-nowrap d-none d-lg-inline d-xl-none",
                ),
            ],
            fluid=True,
        ),
        color="dark",
        dark=True,
        class_name="mb-3",
    )


def create_app() -> dash.Dash:
    """Build the Dash app (pages, caches, background-job manager, health route)."""
    service.config.reload()
    server = flask.Flask(__name__)
    service.init_app(server)
    service.cleanup_interrupted_builds()
    app = dash.Dash(
        __name__,
        server=server,
        use_pages=True,
        pages_folder=str(HERE / "pages"),
        assets_folder=str(ASSETS),
        serve_locally=True,
        external_stylesheets=[service.BOOTSTRAP_CSS_URL],
        external_scripts=[],
        background_callback_manager=service.background_manager(),
        on_error=service.on_callback_error,
        suppress_callback_exceptions=True,
        title="RSCA Lab",
        update_title=None,
    )
    app.layout = html.Div(
        [
            _navbar(),
            dbc.Container(dash.page_container, fluid=True, class_name="pb-5"),
        ]
    )

    service.install_request_checks(app)

    @server.route("/healthz")
    def healthz():
        body, status = service.health()
        return flask.jsonify(body), status

    service.warm.start(server, again=True)  # load the datasets and their default views in the background
    return app


try:
    app = create_app()
except service.ConfigError as exc:  # one line naming the variable, under gunicorn too
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(3)  # gunicorn's "worker failed to boot": the master stops instead of retrying
server = app.server


def main(argv=None) -> int:
    cfg = service.config.get()
    parser = argparse.ArgumentParser(description="Serve the RSCA Lab dashboard.")
    parser.add_argument("--host", default=cfg.host, help="interface to listen on (env RSCA_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=cfg.port, help="port (env RSCA_PORT; default 8050)")
    parser.add_argument("--debug", action="store_true", help="Dash debug mode (reloader, dev tools)")
    parser.add_argument(
        "--no-build", action="store_true", help="do not build the default simulated dataset if it is missing"
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="build the default dataset and its PCA compressions (K = 2, 30, RSCA_K_FIT) if missing, compute "
        "the first view of every dataset with a prepared compression (kept on disk for the workers), then exit "
        "(used at Docker build time)",
    )
    args = parser.parse_args(argv)
    if args.prepare_only:
        try:
            path = service.ensure_default_dataset(progress=True)
        except Exception as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"default dataset ready: {path}")
        service.warm.prepare(server)  # every dataset's first view, kept on disk for the workers
        return 0
    if not 0 < args.port < 65536:
        print(f"error: port {args.port} is outside 1..65535", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.no_build:
        try:
            service.ensure_default_dataset(progress=True)
        except Exception as exc:  # the app still starts; the pages explain what is missing
            print(f"warning: default dataset not available ({exc})", file=sys.stderr)
    app.run(host=args.host, port=args.port, debug=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
