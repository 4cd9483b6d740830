"""Numbers from the environment, one parser for every setting of the gateway and the predictors:
unset or empty is the default; anything else must parse and lie within the setting's bounds, or a
ValueError names the variable (the servers turn it into a one-line exit at start)."""

from __future__ import annotations

from collections.abc import Mapping


def env_int(
    env: Mapping[str, str],
    name: str,
    default: int | None,
    *,
    minimum: int,
    maximum: int | None = None,
) -> int | None:
    """A whole number within minimum..maximum, else `default`."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"{name} must be within {minimum}..{maximum}, got {raw!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {raw!r}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """A number > 0, else `default`."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:  # NaN too
        raise ValueError(f"{name} must be > 0, got {raw!r}")
    return value
