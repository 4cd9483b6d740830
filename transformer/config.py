"""Gateway settings: command-line flags first, then the environment, then the defaults."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from common import limits
from common.env import env_float, env_int
from common.models import MODELS_ENV, parse_models

TASKS = ("colorize", "restore", "face-restore", "upscale")

# gRPC address of each task's predictor: `host:port`, a comma-separated list of them (its
# replicas), or `dns:///name:port` (every address the name resolves to; parse_target).
ADDRESS_ENV = {
    "colorize": "PREDICTOR_COLORIZE",
    "restore": "PREDICTOR_RESTORE",
    "face-restore": "PREDICTOR_FACE_RESTORE",
    "upscale": "PREDICTOR_UPSCALE",
}
# Variant each predictor serves (CONTRACT section 2); /health reports it.
VARIANT_ENV = {
    "colorize": "MODEL_COLORIZE",
    "restore": "MODEL_RESTORE",
    "face-restore": "MODEL_FACE",
    "upscale": "MODEL_UPSCALE",
}
# The models each task serves (CONTRACT section 7): MODELS_UPSCALE=x4plus,span-x4; the default
# (MODEL_<TASK>) is one of them, listed or not (common/models.py).

DEFAULT_VARIANT = {
    "colorize": "modelscope",
    "restore": "denoise",
    "face-restore": "v0.1",
    "upscale": "x4plus",
}

MIB = 1024 * 1024
DEFAULT_MAX_IMAGE_SIDE = 2048
DEFAULT_MAX_UPLOAD_MB = 32.0
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: beyond any camera sensor sold today
DEFAULT_PREDICTOR_TIMEOUT_S = 300.0
DEFAULT_GRPC_MAX_MESSAGE = 256 * MIB  # run-local starts the predictors with the same limit
DEFAULT_RETRY_AFTER_S = 10
DEFAULT_MAX_OUTPUT_PIXELS = limits.DEFAULT_MAX_OUTPUT_PIXELS  # shared with the predictors
# Requests waiting per task behind the ones at the predictor (then 429). With a few seconds per
# request on a GPU, 8 waiting is well inside the request timeout.
DEFAULT_MAX_QUEUE_PER_TASK = 8
# Calls at one predictor replica at once (each runs one inference at a time). A task's calls at
# once are this times its replicas that are up, at most MAX_INFLIGHT_PER_TASK when that is set.
DEFAULT_MAX_INFLIGHT_PER_REPLICA = 1
DNS_SCHEME = "dns:///"
# An upload that sends nothing for this long, or averages under the rate after it, gets 408.
DEFAULT_UPLOAD_IDLE_TIMEOUT_S = 15.0
DEFAULT_UPLOAD_MIN_BYTES_PER_S = 8 * 1024  # 64 kbit/s: slower than any mobile link in use


def flag_name(task: str) -> str:
    """`face-restore` -> `predictor_face_restore` (argparse dest and flag)."""
    return "predictor_" + task.replace("-", "_")


@dataclass(frozen=True)
class Target:
    """Where a task's replicas are: fixed `host:port` addresses, or a name to resolve."""

    addresses: tuple[str, ...] = ()
    dns: str | None = None  # "name:port" of a dns:/// target

    @property
    def port(self) -> int:
        return int(_split_host_port(self.dns or "")[1])


def _split_host_port(address: str) -> tuple[str, str]:
    host, sep, port = address.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, port


def parse_target(raw: str) -> Target:
    """`host:port`, `host:port,host:port,...` or `dns:///name:port` (ValueError otherwise)."""
    raw = raw.strip()
    if raw.startswith(DNS_SCHEME):
        name = raw[len(DNS_SCHEME) :]
        _split_host_port(name)
        return Target(dns=name)
    if "://" in raw or raw.startswith("dns:"):
        raise ValueError(f"{raw!r}: the only scheme is {DNS_SCHEME}name:port")
    addresses = tuple(part.strip() for part in raw.split(","))
    for address in addresses:
        _split_host_port(address)
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"{raw!r} names an address twice")
    return Target(addresses=addresses)


def model_address_env(task: str, model: str) -> str:
    """Where one model's predictor is, when not at the task's: PREDICTOR_UPSCALE_SPAN_X4."""
    return f"{ADDRESS_ENV[task]}_{re.sub('[^A-Z0-9]', '_', model.upper())}"


def oip_name(task: str, model: str, default: str) -> str:
    """A model's OIP v2 name at its predictor: the task for the default model, else
    `<task>-<model>` (the chart's InferenceService names, `python -m predictors --models`)."""
    return task if model == default else f"{task}-{model}"


@dataclass
class Settings:
    addresses: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(TASKS))
    variants: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_VARIANT))
    # every model of each task, its default first; a model's own address by OIP name
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)
    model_addresses: dict[str, str] = field(default_factory=dict)
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * MIB)
    max_pixels: int = DEFAULT_MAX_PIXELS
    predictor_timeout_s: float = DEFAULT_PREDICTOR_TIMEOUT_S
    grpc_max_message: int = DEFAULT_GRPC_MAX_MESSAGE
    retry_after_s: int = DEFAULT_RETRY_AFTER_S
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS
    max_render_factor: int = limits.DEFAULT_MAX_RENDER_FACTOR
    max_queue_per_task: int = DEFAULT_MAX_QUEUE_PER_TASK
    max_inflight_per_replica: int = DEFAULT_MAX_INFLIGHT_PER_REPLICA
    max_inflight_per_task: int | None = None  # a cap over all the task's replicas
    upload_idle_timeout_s: float = DEFAULT_UPLOAD_IDLE_TIMEOUT_S
    upload_min_bytes_per_s: int = DEFAULT_UPLOAD_MIN_BYTES_PER_S

    def models_of(self, task: str) -> tuple[str, ...]:
        return self.models.get(task) or (self.variants[task],)

    def oip_name(self, task: str, model: str | None = None) -> str:
        return oip_name(task, model or self.variants[task], self.variants[task])

    def address(self, task: str, model: str | None = None) -> str | None:
        """The model's predictor address: its own when set, else the task's."""
        return self.model_addresses.get(self.oip_name(task, model)) or self.addresses.get(task)

    def export(self, env: dict[str, str]) -> None:
        """Write these settings as environment variables (read back by spawned workers)."""
        for task in TASKS:
            if self.addresses[task]:
                env[ADDRESS_ENV[task]] = self.addresses[task]
            env[VARIANT_ENV[task]] = self.variants[task]
            # MODELS_<TASK> and PREDICTOR_<TASK>_<MODEL> come from the environment only (no
            # flags): the spawned workers read them there as this process did.
        env["MAX_IMAGE_SIDE"] = str(self.max_image_side)
        env["MAX_UPLOAD_MB"] = repr(self.max_upload_bytes / MIB)
        env["MAX_PIXELS"] = str(self.max_pixels)
        env["PREDICTOR_TIMEOUT_S"] = repr(self.predictor_timeout_s)
        env["GRPC_MAX_MESSAGE_BYTES"] = str(self.grpc_max_message)
        env["MAX_OUTPUT_PIXELS"] = str(self.max_output_pixels)
        env["MAX_RENDER_FACTOR"] = str(self.max_render_factor)
        env["MAX_QUEUE_PER_TASK"] = str(self.max_queue_per_task)
        env["MAX_INFLIGHT_PER_REPLICA"] = str(self.max_inflight_per_replica)
        if self.max_inflight_per_task is not None:
            env["MAX_INFLIGHT_PER_TASK"] = str(self.max_inflight_per_task)
        env["UPLOAD_IDLE_TIMEOUT_S"] = repr(self.upload_idle_timeout_s)
        env["UPLOAD_MIN_BYTES_PER_S"] = str(self.upload_min_bytes_per_s)

    @classmethod
    def from_env(
        cls, env: dict[str, str] | None = None, flags: dict[str, object] | None = None
    ) -> Settings:
        """Flags (non-None values) win over the environment, which wins over the defaults."""
        env = dict(os.environ if env is None else env)
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        addresses = {
            task: (flags.get(flag_name(task)) or env.get(ADDRESS_ENV[task], "").strip() or None)
            for task in TASKS
        }
        for task, address in addresses.items():
            if address:
                try:
                    parse_target(address)
                except ValueError as exc:
                    raise ValueError(f"{ADDRESS_ENV[task]}: {exc}") from None
        variants = {
            task: env.get(VARIANT_ENV[task], "").strip() or DEFAULT_VARIANT[task] for task in TASKS
        }
        models = {
            task: parse_models(env.get(MODELS_ENV[task], ""), variants[task], MODELS_ENV[task])
            for task in TASKS
        }
        model_addresses = {}
        for task in TASKS:
            for model in models[task]:
                address = env.get(model_address_env(task, model), "").strip()
                if not address:
                    continue
                try:
                    parse_target(address)
                except ValueError as exc:
                    raise ValueError(f"{model_address_env(task, model)}: {exc}") from None
                model_addresses[oip_name(task, model, variants[task])] = address
        upload_mb = flags.get("max_upload_mb") or env_float(
            env, "MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB
        )
        return cls(
            addresses=addresses,
            variants=variants,
            models=models,
            model_addresses=model_addresses,
            max_image_side=int(
                flags.get("max_image_side")
                or env_float(env, "MAX_IMAGE_SIDE", DEFAULT_MAX_IMAGE_SIDE)
            ),
            max_upload_bytes=int(float(upload_mb) * MIB),
            max_pixels=int(
                flags.get("max_pixels") or env_float(env, "MAX_PIXELS", DEFAULT_MAX_PIXELS)
            ),
            predictor_timeout_s=float(
                flags.get("predictor_timeout_s")
                or env_float(env, "PREDICTOR_TIMEOUT_S", DEFAULT_PREDICTOR_TIMEOUT_S)
            ),
            grpc_max_message=int(
                flags.get("grpc_max_message")
                or env_float(env, "GRPC_MAX_MESSAGE_BYTES", DEFAULT_GRPC_MAX_MESSAGE)
            ),
            max_output_pixels=limits.max_output_pixels(env),
            max_render_factor=limits.max_render_factor(env),
            max_queue_per_task=env_int(
                env, "MAX_QUEUE_PER_TASK", DEFAULT_MAX_QUEUE_PER_TASK, minimum=0
            ),
            max_inflight_per_replica=env_int(
                env, "MAX_INFLIGHT_PER_REPLICA", DEFAULT_MAX_INFLIGHT_PER_REPLICA, minimum=1
            ),
            max_inflight_per_task=env_int(env, "MAX_INFLIGHT_PER_TASK", None, minimum=1),
            upload_idle_timeout_s=env_float(
                env, "UPLOAD_IDLE_TIMEOUT_S", DEFAULT_UPLOAD_IDLE_TIMEOUT_S
            ),
            upload_min_bytes_per_s=env_int(
                env, "UPLOAD_MIN_BYTES_PER_S", DEFAULT_UPLOAD_MIN_BYTES_PER_S, minimum=0
            ),
        )


def settings_at_start() -> Settings:
    """Settings.from_env() as a gateway process starts (transformer.routes reads them when it is
    imported, before any flag): a malformed setting ends the process in one line."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise SystemExit(f"transformer: {exc}") from None
