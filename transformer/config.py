"""Gateway settings: command-line flags first, then the environment, then the defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

TASKS = ("colorize", "restore", "face-restore", "upscale")

# gRPC address of each task's predictor (host:port).
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


def flag_name(task: str) -> str:
    """`face-restore` -> `predictor_face_restore` (argparse dest and flag)."""
    return "predictor_" + task.replace("-", "_")


def _env_float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {raw!r}")
    return value


@dataclass
class Settings:
    addresses: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(TASKS))
    variants: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_VARIANT))
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * MIB)
    max_pixels: int = DEFAULT_MAX_PIXELS
    predictor_timeout_s: float = DEFAULT_PREDICTOR_TIMEOUT_S
    grpc_max_message: int = DEFAULT_GRPC_MAX_MESSAGE
    retry_after_s: int = DEFAULT_RETRY_AFTER_S

    def export(self, env: dict[str, str]) -> None:
        """Write these settings as environment variables (read back by spawned workers)."""
        for task in TASKS:
            if self.addresses[task]:
                env[ADDRESS_ENV[task]] = self.addresses[task]
            env[VARIANT_ENV[task]] = self.variants[task]
        env["MAX_IMAGE_SIDE"] = str(self.max_image_side)
        env["MAX_UPLOAD_MB"] = repr(self.max_upload_bytes / MIB)
        env["MAX_PIXELS"] = str(self.max_pixels)
        env["PREDICTOR_TIMEOUT_S"] = repr(self.predictor_timeout_s)
        env["GRPC_MAX_MESSAGE_BYTES"] = str(self.grpc_max_message)

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
        variants = {
            task: env.get(VARIANT_ENV[task], "").strip() or DEFAULT_VARIANT[task] for task in TASKS
        }
        upload_mb = flags.get("max_upload_mb") or _env_float(
            env, "MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB
        )
        return cls(
            addresses=addresses,
            variants=variants,
            max_image_side=int(
                flags.get("max_image_side")
                or _env_float(env, "MAX_IMAGE_SIDE", DEFAULT_MAX_IMAGE_SIDE)
            ),
            max_upload_bytes=int(float(upload_mb) * MIB),
            max_pixels=int(
                flags.get("max_pixels") or _env_float(env, "MAX_PIXELS", DEFAULT_MAX_PIXELS)
            ),
            predictor_timeout_s=float(
                flags.get("predictor_timeout_s")
                or _env_float(env, "PREDICTOR_TIMEOUT_S", DEFAULT_PREDICTOR_TIMEOUT_S)
            ),
            grpc_max_message=int(
                flags.get("grpc_max_message")
                or _env_float(env, "GRPC_MAX_MESSAGE_BYTES", DEFAULT_GRPC_MAX_MESSAGE)
            ),
        )
