"""Which files to send and where each result goes.

INPUT is files, folders (searched recursively for images) or globs (expanded here too, so a quoted
pattern works). OUT is a file for one input when it has an image extension (.png, .jpg, .jpeg,
.webp), else a folder; in a folder the result keeps the
input's place below the folder it was found in and is named `<stem>_<task>[_x<scale>].<ext>`.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
DEFAULT_OUT = Path("enhanced")
RESULT_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class UsageError(Exception):
    """A mistake in the command line: exit status 2."""


@dataclass(frozen=True)
class Job:
    source: Path
    relative: Path  # where the result goes below OUT (the input's own name for files)
    target: Path | None = None


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def find_inputs(patterns: list[str]) -> list[Job]:
    jobs: list[Job] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = [Job(p, p.relative_to(path)) for p in _images_in(path)]
            if not found:
                raise UsageError(
                    f"{pattern}: the folder holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            jobs += found
        elif path.is_file():
            jobs.append(Job(path, Path(path.name)))
        elif glob.has_magic(pattern):
            matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]
            files = [m for m in matches if m.is_file()]
            if not files:
                raise UsageError(f"{pattern}: matches no file")
            jobs += [Job(m, Path(m.name)) for m in files]
        else:
            raise UsageError(f"{pattern}: no such file or folder")
    return jobs


def result_name(relative: Path, tag: str, ext: str) -> Path:
    return relative.with_name(f"{relative.stem}_{tag}.{ext}")


def plan(jobs: list[Job], out: str | None, tag: str, ext: str) -> list[Job]:
    """Each job with its target path; one input and an OUT that is not a folder: OUT itself."""
    if not jobs:
        raise UsageError("no input")
    out_path = Path(out) if out else DEFAULT_OUT
    single_file = (
        len(jobs) == 1
        and out is not None
        and out_path.suffix.lower() in RESULT_SUFFIXES
        and not out_path.is_dir()
    )
    if single_file:
        return [Job(jobs[0].source, jobs[0].relative, out_path)]
    if out_path.is_file() or (out_path.suffix.lower() in RESULT_SUFFIXES and not out_path.is_dir()):
        raise UsageError(f"-o {out}: a file name, but {len(jobs)} inputs need a folder")
    planned = [
        Job(j.source, j.relative, out_path / result_name(j.relative, tag, ext)) for j in jobs
    ]
    seen: dict[Path, Path] = {}
    for job in planned:
        if job.target in seen:
            raise UsageError(
                f"{seen[job.target]} and {job.source} would both be written to {job.target}; "
                "run them separately or give their folder instead"
            )
        seen[job.target] = job.source
    return planned
