"""The one door between the dashboard pages and ``rsca_core``.

Every page asks this package for data; nothing else in ``pages/`` imports ``rsca_core``. One module
per job (Dash skips ``_``-prefixed folders of the pages folder, so none of this is a page):

* :mod:`.config` - the environment, read once into a frozen :class:`AppConfig`;
* :mod:`.errors` - :class:`UserError` and the one-line messages shown in a page;
* :mod:`.datasets` - bundles by a short key (never a path from a URL), loading, overview;
* :mod:`.settings` - the view settings and their parsers (URL query, controls);
* :mod:`.compute` - the cached computations (rates, features, Inside steps, axes);
* :mod:`.exports` - the CSV and ``.npz`` downloads;
* :mod:`.jobqueue` - the one bounded queue of background jobs (cap, joining, busy);
* :mod:`.jobs` - the job store and its manager, progress, the compression job;
* :mod:`.curves`, :mod:`.systematics`, :mod:`.simulator` - the background work of those pages;
* :mod:`.flight` - one computation per key at a time (loads, compressions, cached views);
* :mod:`.warm` - a starting worker loads its datasets and default views in the background;
* :mod:`.web` - the Flask side (cache, stylesheet, request checks, headers, errors, health).

The names below are the pages' whole vocabulary.
"""

from rsca_core.constants import PAPER_SUBSET, SPECIES
from rsca_core.labels import CLUSTER_PALETTE, cluster_colours, data_tag
from rsca_core.plotting import DISTANCE_TITLE, MODEBAR_ROOM, figure_title

from . import config, siblings, warm
from . import settings as settings_module
from .compute import (
    STEP_NAMES,
    CompressionNotReady,
    axis_vectors,
    cache,
    compression,
    compute_rates,
    distance_grid,
    features,
    fit_map,
    inside_steps,
    members_note,
    paper_value,
    preview_rates,
    rate_inputs,
    rates,
)
from .config import K_MAX, K_MIN, AppConfig, ConfigError, cache_config, data_dir, k_fit, k_max, state_dir
from .curves import CAPS, EXPERIMENTS, run_experiment
from .datasets import (
    SEED,
    cluster_names,
    compression_ready,
    dataset_choices,
    dataset_label,
    dataset_overview,
    dataset_path,
    default_dataset_path,
    ensure_default_dataset,
    has_errors,
    load,
    prepared_ks,
    ready_ks,
    uid,
)
from .errors import UserError, describe_error, hide_paths, short
from .exports import download_name, map_npz, name_part, rates_csv, settings_columns, settings_name, with_columns
from .jobqueue import Busy, admit
from .jobs import UnitProgress, background_manager, ensure_state_dir, prepare_compression, progress_reporter
from .settings import (
    ALL,
    DEFAULT_K,
    INPUT_LABELS,
    INPUTS,
    MAX_MASK_RANGES,
    MAX_PARAM_CHARS,
    METHOD_LABELS,
    METHODS,
    WEIGHTS,
    Settings,
    one,
    parse_clusters,
    parse_int,
    parse_int_list,
    parse_mask,
    parse_method,
    parse_species,
    parse_top,
    parse_weights,
    settings_from_controls,
    settings_from_dict,
    settings_from_query,
    settings_to_dict,
    settings_to_query,
    top_n_range,
    top_note,
)
from .simulator import BUILDS_OFF, build_policy, build_simulated, cleanup_interrupted_builds, simulate_options
from .systematics import (
    MASK_UNITS,
    check_residuals,
    mask_text,
    paper_mask_ranges,
    parse_mask_text,
    rate_with_mask,
    residual_diagnostics,
    visit_comparison,
)
from .web import BOOTSTRAP_CSS_URL, SECURITY_HEADERS, health, init_app, install_request_checks, on_callback_error

__all__ = [
    "parse_top",
    "top_n_range",
    "top_note",
    "download_name",
    "name_part",
    "settings_columns",
    "settings_name",
    "with_columns",
    "DISTANCE_TITLE",
    "MODEBAR_ROOM",
    "figure_title",
    "CLUSTER_PALETTE",
    "data_tag",
    "cluster_colours",
    "BUILDS_OFF",
    "Busy",
    "SECURITY_HEADERS",
    "admit",
    "build_policy",
    "cleanup_interrupted_builds",
    "ensure_state_dir",
    "install_request_checks",
    "on_callback_error",
    "ALL",
    "AppConfig",
    "CompressionNotReady",
    "BOOTSTRAP_CSS_URL",
    "CAPS",
    "ConfigError",
    "DEFAULT_K",
    "EXPERIMENTS",
    "INPUTS",
    "INPUT_LABELS",
    "K_MAX",
    "K_MIN",
    "MAX_MASK_RANGES",
    "MAX_PARAM_CHARS",
    "METHODS",
    "METHOD_LABELS",
    "WEIGHTS",
    "PAPER_SUBSET",
    "SEED",
    "SPECIES",
    "STEP_NAMES",
    "Settings",
    "UnitProgress",
    "UserError",
    "axis_vectors",
    "background_manager",
    "build_simulated",
    "cache",
    "cache_config",
    "check_residuals",
    "cluster_names",
    "compression",
    "compression_ready",
    "compute_rates",
    "config",
    "siblings",
    "warm",
    "data_dir",
    "dataset_choices",
    "distance_grid",
    "dataset_label",
    "dataset_overview",
    "dataset_path",
    "default_dataset_path",
    "describe_error",
    "ensure_default_dataset",
    "features",
    "fit_map",
    "has_errors",
    "health",
    "hide_paths",
    "init_app",
    "inside_steps",
    "members_note",
    "k_fit",
    "k_max",
    "load",
    "map_npz",
    "one",
    "paper_mask_ranges",
    "paper_value",
    "parse_clusters",
    "parse_int",
    "parse_int_list",
    "parse_mask",
    "parse_method",
    "parse_weights",
    "parse_species",
    "prepare_compression",
    "prepared_ks",
    "preview_rates",
    "ready_ks",
    "progress_reporter",
    "rate_inputs",
    "rate_with_mask",
    "rates",
    "rates_csv",
    "residual_diagnostics",
    "run_experiment",
    "settings_from_controls",
    "settings_from_dict",
    "settings_from_query",
    "settings_module",
    "settings_to_dict",
    "settings_to_query",
    "short",
    "simulate_options",
    "state_dir",
    "uid",
    "visit_comparison",
    "MASK_UNITS",
    "mask_text",
    "parse_mask_text",
]
