"""The app's configuration: the environment is read once, in :func:`from_env`, into a frozen
:class:`AppConfig`; every other module asks :func:`get` (the engine, ``rsca_core``, reads none).

Each variable is checked when it is read; a bad value is a :class:`ConfigError` whose one line names
the variable, so ``gunicorn`` or ``python app.py`` stops at start with that line, not later with a
traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def default_data_dir() -> Path:
    """``data/`` beside app.py in a source checkout; ``./data`` when the app is an installed package
    (site-packages is no place for surveys)."""
    return (ROOT / "data") if (ROOT / "pyproject.toml").is_file() else Path.cwd() / "data"


K_MIN, K_MAX = 2, 60
CACHE_KINDS = {
    "simple": "SimpleCache",
    "simplecache": "SimpleCache",
    "filesystem": "FileSystemCache",
    "filesystemcache": "FileSystemCache",
    "fs": "FileSystemCache",
    "redis": "RedisCache",
    "rediscache": "RedisCache",
    "null": "NullCache",
    "none": "NullCache",
    "off": "NullCache",
}


class ConfigError(RuntimeError):
    """A bad environment variable (the message names it)."""


@dataclass(frozen=True)
class AppConfig:
    """Everything the app takes from its environment (see the README's "Hosting" section)."""

    dataset: Path | None  # RSCA_DATASET: the default bundle (None: data_dir / "default")
    data_dir: Path  # RSCA_DATA_DIR: bundles offered in the menus
    cache_type: str  # RSCA_CACHE_TYPE, as a flask-caching class name
    cache_dir: Path | None  # RSCA_CACHE_DIR: compressions (None: beside each bundle)
    state_dir: Path  # RSCA_STATE_DIR: result cache (filesystem) and background-job store
    redis_url: str | None  # RSCA_REDIS_URL
    k_fit: int  # RSCA_K_FIT
    cache_timeout: int  # RSCA_CACHE_TIMEOUT (s)
    cache_threshold: int  # RSCA_CACHE_THRESHOLD (entries of the simple/filesystem cache)
    host: str  # RSCA_HOST
    port: int  # RSCA_PORT
    max_jobs: int  # RSCA_MAX_JOBS: background job processes at once, all workers together
    allow_build: bool  # RSCA_ALLOW_BUILD: may visitors build surveys from the Data page?
    build_max_stars: int  # RSCA_BUILD_MAX_STARS: field stars of one browser build
    build_quota_mb: int  # RSCA_BUILD_QUOTA_MB: disk of all browser-built bundles together
    max_body_kb: int  # RSCA_MAX_BODY_KB: largest request body (larger: 413)
    mmap_above_mb: int  # RSCA_MMAP_ABOVE_MB: bundles at least this big are memory-mapped, others read
    warm: bool = True  # RSCA_WARM: a starting worker loads the datasets and the default view in the background

    @property
    def k_max(self) -> int:
        """Largest K offered: 60 (the paper's range), or less when k_fit is smaller."""
        return min(K_MAX, self.k_fit)

    @property
    def default_dataset(self) -> Path:
        return self.dataset if self.dataset is not None else self.data_dir / "default"


def _int(env, name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw[:40]!r} is not a whole number (expected {lo}…{hi})") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range (expected {lo}…{hi})")
    return value


def _bool(env, name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    table = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    if raw not in table:
        raise ConfigError(f"{name}={raw[:40]!r} is not a yes/no value (expected 1/0, true/false, yes/no, on/off)")
    return table[raw]


def default_state_dir(env) -> Path:
    """$XDG_STATE_HOME/rsca-lab, else ~/.local/state/rsca-lab (private to the user, not /tmp)."""
    base = (env.get("XDG_STATE_HOME") or "").strip()
    return (Path(base) if base else Path(env.get("HOME") or Path.home()) / ".local" / "state") / "rsca-lab"


def _path(env, name: str) -> Path | None:
    raw = (env.get(name) or "").strip()
    return Path(raw).expanduser().resolve() if raw else None


def _cache_type(env) -> tuple[str, str | None]:
    kind = (env.get("RSCA_CACHE_TYPE") or "simple").strip().lower()
    if kind not in CACHE_KINDS:
        raise ConfigError(f"RSCA_CACHE_TYPE={kind[:40]!r}: expected simple, filesystem, redis or none")
    url = (env.get("RSCA_REDIS_URL") or "").strip() or None
    if CACHE_KINDS[kind] == "RedisCache" and not url:
        raise ConfigError("RSCA_CACHE_TYPE=redis needs RSCA_REDIS_URL (e.g. redis://localhost:6379/0)")
    return CACHE_KINDS[kind], url


def from_env(env=None) -> AppConfig:
    """Read and check every RSCA_* variable of ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    cache_type, redis_url = _cache_type(env)
    cache_dir = _path(env, "RSCA_CACHE_DIR")
    state = _path(env, "RSCA_STATE_DIR") or default_state_dir(env).resolve()
    return AppConfig(
        dataset=_path(env, "RSCA_DATASET"),
        data_dir=_path(env, "RSCA_DATA_DIR") or default_data_dir().resolve(),
        cache_type=cache_type,
        cache_dir=cache_dir,
        state_dir=state,
        redis_url=redis_url,
        k_fit=_int(env, "RSCA_K_FIT", K_MAX, K_MIN, 500),
        cache_timeout=_int(env, "RSCA_CACHE_TIMEOUT", 86400, 0, 10**9),
        cache_threshold=_int(env, "RSCA_CACHE_THRESHOLD", 300, 1, 10**7),
        host=(env.get("RSCA_HOST") or "127.0.0.1").strip(),
        port=_int(env, "RSCA_PORT", 8050, 1, 65535),
        max_jobs=_int(env, "RSCA_MAX_JOBS", os.cpu_count() or 1, 1, 256),
        allow_build=_bool(env, "RSCA_ALLOW_BUILD", False),
        build_max_stars=_int(env, "RSCA_BUILD_MAX_STARS", 5000, 100, 200_000),
        build_quota_mb=_int(env, "RSCA_BUILD_QUOTA_MB", 1000, 1, 10**7),
        max_body_kb=_int(env, "RSCA_MAX_BODY_KB", 1024, 16, 10**6),
        mmap_above_mb=_int(env, "RSCA_MMAP_ABOVE_MB", 512, 0, 10**7),
        warm=_bool(env, "RSCA_WARM", True),
    )


class _Holder:
    """The one configuration of this process (a single slot, set at start)."""

    value: AppConfig | None = None


def get() -> AppConfig:
    """The configuration read at start (read now if nothing has read it yet)."""
    if _Holder.value is None:
        _Holder.value = from_env()
    return _Holder.value


def reload(env=None) -> AppConfig:
    """Read the environment again (at app start, and in tests after changing it)."""
    _Holder.value = from_env(env)
    return _Holder.value


def k_fit() -> int:
    """The largest K offered; its compression is prepared with a dataset and is the source of the
    labelled previews shown while the exact compression of another K is computed."""
    return get().k_fit


def k_max() -> int:
    """Largest K offered (60, or RSCA_K_FIT if smaller)."""
    return get().k_max


def state_dir() -> Path:
    """The app's own state folder (result cache, background-job store)."""
    return get().state_dir


def data_dir() -> Path:
    """The folder whose bundles are offered in the dataset menus."""
    return get().data_dir


def cache_config(cfg: AppConfig | None = None) -> dict:
    """flask-caching settings of the result cache."""
    cfg = cfg or get()
    base = {
        "CACHE_TYPE": cfg.cache_type,
        "CACHE_DEFAULT_TIMEOUT": cfg.cache_timeout,
        "CACHE_IGNORE_ERRORS": True,
        "CACHE_THRESHOLD": cfg.cache_threshold,
        "CACHE_KEY_PREFIX": "rsca_",
    }
    if cfg.cache_type == "FileSystemCache":
        d = cfg.state_dir / "results"
        d.mkdir(parents=True, exist_ok=True)
        base["CACHE_DIR"] = str(d)
    elif cfg.cache_type == "RedisCache":
        base["CACHE_REDIS_URL"] = cfg.redis_url
    return base
