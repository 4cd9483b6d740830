"""Reading checkpoint files safely and checking them against the official release."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors
from spandrel import canonicalize_state_dict

from .catalogue import official_file

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


class WeightsError(Exception):
    """A weight file that cannot be served; the message tells the operator what to do."""


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256(path: Path) -> str | None:
    """The hash written beside a file whose official hash is unpublished (trust on first use)."""
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        return sidecar.read_text().split()[0].strip().lower()
    return None


def verify_official(path: Path, allow_unverified: bool) -> None:
    """Refuse a file that carries an official name but not the official size and sha256."""
    official = official_file(path.name)
    if official is None:
        return
    problems = []
    actual = None
    size = path.stat().st_size
    if official.size is not None and size != official.size:
        problems.append(f"it has {size:,} bytes, the official file has {official.size:,}")
    expected = official.sha256 or recorded_sha256(path)
    if expected and not problems:
        actual = sha256_of(path)
        if actual != expected:
            problems.append(f"its sha256 is {actual}, the official one is {expected}")
    elif not expected:
        actual = sha256_of(path)
        log.warning(
            "%s: no official sha256 is published; serving it unverified (sha256 %s)",
            path.name,
            actual,
        )
    if not problems:
        return
    message = f"{path.name} is not the official release: {'; '.join(problems)}"
    if allow_unverified:
        actual = actual or sha256_of(path)
        log.warning(
            "%s (served anyway: unverified weights are allowed; sha256 %s)", message, actual
        )
        return
    raise WeightsError(
        f"{message}. Replace it with the official file, or set ALLOW_UNVERIFIED_WEIGHTS=true "
        "to serve a fine-tune under this name."
    )


def check_archive(path: Path) -> None:
    """Refuse a PyTorch zip checkpoint whose members fail their CRC: torch.load does not check
    them, and a flipped byte in a tensor loads as a silently wrong weight."""
    if not zipfile.is_zipfile(path):
        return  # safetensors, or a legacy pickle: torch.load reports those itself
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise WeightsError(f"cannot read {path.name}: its zip archive is damaged ({exc})") from exc
    if bad is not None:
        raise WeightsError(
            f"{path.name} is corrupt: {bad} fails its CRC check. Fetch the file again."
        )


def read_state_dict(path: Path) -> StateDict:
    """Tensors only: `weights_only=True` for .pth, safetensors otherwise; `params_ema` unwrapped."""
    try:
        if path.suffix == ".safetensors":
            state = load_safetensors(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(
            f"cannot read {path.name}: it is truncated or not a PyTorch checkpoint ({exc})"
        ) from exc
    except Exception as exc:  # the unpickler's refusals have several types
        raise WeightsError(f"refusing {path.name}: it holds more than tensors ({exc})") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"cannot read {path.name}: it holds no state dict")
    return canonicalize_state_dict(state)
