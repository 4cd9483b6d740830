"""Several models per task (CONTRACT section 7): the names `MODELS_<TASK>` lists, read alike by
the gateway, make run (hack/run-local) and hack/fetch-weights."""

from __future__ import annotations

import re

TASKS = ("colorize", "restore", "face-restore", "upscale")
MODELS_ENV = {task: "MODELS_" + task.upper().replace("-", "_") for task in TASKS}
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def parse_models(raw: str, default: str, env_name: str) -> tuple[str, ...]:
    """The models a comma-separated list names, the default first (listed or not)."""
    names = [n.strip() for n in raw.split(",") if n.strip()]
    for name in names:
        if not MODEL_NAME.match(name):
            raise ValueError(
                f"{env_name}: {name!r} is not a model name (lower-case letters, digits, . _ -)"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"{env_name} names a model twice")
    return tuple(dict.fromkeys([default, *names]))


def models_of(env: dict[str, str], task: str, default: str) -> tuple[str, ...]:
    return parse_models(env.get(MODELS_ENV[task], ""), default, MODELS_ENV[task])
