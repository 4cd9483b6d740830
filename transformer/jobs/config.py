"""Job settings, from the environment (CONTRACT section 6)."""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from common.env import env_float, env_int

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
MAX_PRESIGNED_S = 604_800.0  # SigV4 presigned URLs live at most 7 days
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
        raise ValueError(f"{name} must be {scheme}:///ABSOLUTE/PATH, got {url!r}")
    return Path(parsed.path)


@dataclass(frozen=True)
class S3Location:
    """RESULTS_STORE=s3://BUCKET[/PREFIX]: where uploads and results go in an S3-compatible
    bucket. The endpoint comes from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (MinIO, Ceph, R2,
    ...; unset: AWS itself); credentials and region from boto3's usual chain (AWS_ACCESS_KEY_ID
    and AWS_SECRET_ACCESS_KEY, a web identity token, an instance role; AWS_REGION)."""

    bucket: str
    prefix: str  # "" or "some/prefix/"
    endpoint_url: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


# S3 bucket names: 3 to 63 lowercase letters, digits, dots and hyphens.
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _results(url: str, env: dict[str, str]) -> tuple[Path | None, S3Location | None]:
    """RESULTS_STORE: file:///DIR (a directory) or s3://BUCKET[/PREFIX] (a bucket)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3":
        if parsed.scheme != "file":
            raise ValueError(
                f"RESULTS_STORE must be file:///ABSOLUTE/PATH or s3://BUCKET[/PREFIX], got {url!r}"
            )
        return _path_of(url, "file", "RESULTS_STORE"), None
    if not BUCKET.fullmatch(parsed.netloc) or parsed.query or parsed.fragment:
        raise ValueError(f"RESULTS_STORE must be s3://BUCKET[/PREFIX], got {url!r}")
    prefix = parsed.path.strip("/")
    endpoint = env.get("AWS_ENDPOINT_URL_S3", "").strip() or env.get("AWS_ENDPOINT_URL", "").strip()
    if endpoint and urlparse(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"AWS_ENDPOINT_URL_S3 must be http(s)://HOST[:PORT], got {endpoint!r}")
    return None, S3Location(parsed.netloc, f"{prefix}/" if prefix else "", endpoint or None)


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
    files_dir: Path | None  # RESULTS_STORE=file:///DIR: uploads/ and results/; None for s3://
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
    results_s3: S3Location | None = None  # RESULTS_STORE=s3://BUCKET[/PREFIX]
    # RESULTS_PRESIGNED_S: with an s3:// store, GET .../result answers 307 to a presigned URL
    # valid this long instead of streaming the object through the gateway; 0 (default): stream.
    results_presigned_s: float = 0.0

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
        files_dir, results_s3 = _results(files, env)
        presigned = env_float(env, "RESULTS_PRESIGNED_S", 0.0)
        if presigned and results_s3 is None:
            raise ValueError("RESULTS_PRESIGNED_S needs RESULTS_STORE=s3://BUCKET[/PREFIX]")
        if presigned > MAX_PRESIGNED_S:
            raise ValueError(f"RESULTS_PRESIGNED_S: 0 to {MAX_PRESIGNED_S:.0f} s (7 days)")
        return cls(
            store_path=store_path,
            store_url=store_url,
            files_dir=files_dir,
            results_s3=results_s3,
            results_presigned_s=presigned,
            ttl_s=env_float(env, "JOB_TTL_S", DEFAULT_TTL_S),
            timeout_s=env_float(env, "JOB_TIMEOUT_S", DEFAULT_TIMEOUT_S),
            max_queued=env_int(env, "MAX_JOBS_QUEUED", DEFAULT_MAX_QUEUED, minimum=1),
            concurrency=env_int(env, "JOBS_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1),
            lease_s=env_float(env, "JOB_LEASE_S", DEFAULT_LEASE_S),
            max_attempts=env_int(env, "JOB_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, minimum=1),
            webhook_secret=_secret(env),
            webhook_allowed_hosts=parse_allowed(env.get("WEBHOOK_ALLOWED_HOSTS", "")),
            webhook_backoff_s=_delays(env, "WEBHOOK_BACKOFF_S", DEFAULT_WEBHOOK_BACKOFF_S),
        )
