"""Job settings, from the environment (CONTRACT section 6)."""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..config import _env_float, _env_int
from .webhooks import parse_allowed

DEFAULT_TTL_S = 86_400.0  # a finished job and its result are kept a day
DEFAULT_TIMEOUT_S = 3_600.0  # a job's own budget, independent of PREDICTOR_TIMEOUT_S
DEFAULT_MAX_QUEUED = 1_000
# Jobs running at once in one gateway: one per predictor. Their predictor calls yield to
# synchronous requests (admission.background), so more would only wait in memory.
DEFAULT_CONCURRENCY = 4
# A running job's lease: renewed every third of it; a job whose gateway stopped renewing it
# (killed, lost) is run again once it lapses.
DEFAULT_LEASE_S = 10.0
DEFAULT_MAX_ATTEMPTS = 3  # runs of one job cut short by a dying gateway before it fails
# Webhook retries: the delays after each failed attempt (five attempts over about a minute).
DEFAULT_WEBHOOK_BACKOFF_S = (2.0, 5.0, 15.0, 40.0)
MIN_SECRET_BYTES = 24  # Standard Webhooks: secrets of 24 to 64 random bytes


def default_data_dir(env: dict[str, str]) -> Path:
    """DATA_DIR, else $XDG_DATA_HOME/photo-enhance, else ~/.local/share/photo-enhance."""
    if env.get("DATA_DIR", "").strip():
        return Path(env["DATA_DIR"].strip()).expanduser().resolve()
    base = env.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return (Path(base).expanduser() / "photo-enhance").resolve()


def _path_of(url: str, scheme: str, name: str) -> Path:
    parsed = urlparse(url)
    if parsed.scheme != scheme or parsed.netloc or not parsed.path:
        if parsed.scheme == "s3":
            raise ValueError(
                f"{name}={url}: s3:// stores are not built yet; use {scheme}:///ABSOLUTE/PATH "
                "(for several gateway replicas: a directory on a volume they all mount)"
            )
        raise ValueError(f"{name} must be {scheme}:///ABSOLUTE/PATH, got {url!r}")
    return Path(parsed.path)


REDIS_SCHEMES = ("redis", "rediss", "unix")


def _store(url: str) -> tuple[str, Path | None]:
    """JOBS_STORE: (the URL, the SQLite file's path or None for Redis)."""
    scheme = urlparse(url).scheme
    if scheme in REDIS_SCHEMES:
        if not urlparse(url).netloc and scheme != "unix":
            raise ValueError(f"JOBS_STORE must be redis://HOST[:PORT][/DB], got {url!r}")
        return url, None
    if scheme != "sqlite":
        raise ValueError(
            f"JOBS_STORE must be sqlite:///ABSOLUTE/PATH (one gateway replica) or "
            f"redis://HOST[:PORT][/DB] (Redis or Valkey, several replicas), got {url!r}"
        )
    return url, _path_of(url, "sqlite", "JOBS_STORE")


def _secret(env: dict[str, str]) -> str | None:
    """WEBHOOK_SECRET: `whsec_` and the base64 of at least 24 random bytes; None when unset."""
    raw = env.get("WEBHOOK_SECRET", "").strip()
    if not raw:
        return None
    hint = "make one with: echo whsec_$(head -c 32 /dev/urandom | base64)"
    if not raw.startswith("whsec_"):
        raise ValueError(f"WEBHOOK_SECRET must be whsec_<base64> (Standard Webhooks); {hint}")
    try:
        key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"WEBHOOK_SECRET: what follows whsec_ is not base64; {hint}") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"WEBHOOK_SECRET: at least {MIN_SECRET_BYTES} bytes, got {len(key)}; {hint}"
        )
    return raw


def _delays(env: dict[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if not 1 <= len(delays) <= 20 or not all(0 < d <= 3600 for d in delays):
        raise ValueError(f"{name}: 1 to 20 delays, each > 0 and <= 3600 s, got {raw!r}")
    return delays


@dataclass
class JobSettings:
    store_path: Path | None  # JOBS_STORE=sqlite:///PATH; None for redis://
    files_dir: Path  # RESULTS_STORE=file:///DIR: uploads/ and results/
    ttl_s: float = DEFAULT_TTL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_queued: int = DEFAULT_MAX_QUEUED
    concurrency: int = DEFAULT_CONCURRENCY
    lease_s: float = DEFAULT_LEASE_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    store_url: str = ""  # JOBS_STORE as given
    webhook_secret: str | None = None  # WEBHOOK_SECRET; webhooks are refused without it
    webhook_allowed_hosts: frozenset = frozenset()  # WEBHOOK_ALLOWED_HOSTS: {(host, port|None)}
    webhook_backoff_s: tuple[float, ...] = DEFAULT_WEBHOOK_BACKOFF_S

    def __post_init__(self) -> None:
        if not self.store_url and self.store_path is not None:
            self.store_url = f"sqlite://{self.store_path}"

    @property
    def tick_s(self) -> float:
        """How often leases are renewed and expired jobs removed."""
        return min(self.lease_s / 3, 5.0)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> JobSettings:
        env = dict(os.environ if env is None else env)
        data = default_data_dir(env)
        store = env.get("JOBS_STORE", "").strip() or f"sqlite://{data / 'jobs.sqlite3'}"
        files = env.get("RESULTS_STORE", "").strip() or f"file://{data / 'files'}"
        store_url, store_path = _store(store)
        return cls(
            store_path=store_path,
            store_url=store_url,
            files_dir=_path_of(files, "file", "RESULTS_STORE"),
            ttl_s=_env_float(env, "JOB_TTL_S", DEFAULT_TTL_S),
            timeout_s=_env_float(env, "JOB_TIMEOUT_S", DEFAULT_TIMEOUT_S),
            max_queued=_env_int(env, "MAX_JOBS_QUEUED", DEFAULT_MAX_QUEUED, 1),
            concurrency=_env_int(env, "JOBS_CONCURRENCY", DEFAULT_CONCURRENCY, 1),
            lease_s=_env_float(env, "JOB_LEASE_S", DEFAULT_LEASE_S),
            max_attempts=_env_int(env, "JOB_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, 1),
            webhook_secret=_secret(env),
            webhook_allowed_hosts=parse_allowed(env.get("WEBHOOK_ALLOWED_HOSTS", "")),
            webhook_backoff_s=_delays(env, "WEBHOOK_BACKOFF_S", DEFAULT_WEBHOOK_BACKOFF_S),
        )
