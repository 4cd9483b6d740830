"""hack/fetch-weights against a real HTTP server on 127.0.0.1 serving generated files.

The server plays both sources: a Hugging Face endpoint (HF_ENDPOINT) for DDColor and a plain
mirror (WEIGHTS_MIRROR) for the GitHub-hosted files. It honours Range requests, and can be told
to serve an HTML error page or stop half-way.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FETCH = ROOT / "hack" / "fetch-weights"
TINY = "/piddnad/DDColor-models/resolve/main/ddcolor_paper_tiny.pth"


class Files(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    html: set[str] = set()
    ranges: list[str] = []

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        if self.path in self.html:
            page = b"<!DOCTYPE html><html><body>Quota exceeded</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        start = 0
        if rng := self.headers.get("Range"):
            self.ranges.append(rng)
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Files.files, Files.html, Files.ranges = {}, set(), []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def fetch(tmp_path: Path, base: str, *args: str, mirror: bool = False):
    env = {**os.environ, "HF_ENDPOINT": base, "HF_HUB_OFFLINE": "0", "PYTHONWARNINGS": "ignore"}
    env.pop("ALLOW_UNVERIFIED_WEIGHTS", None)
    env.pop("WEIGHTS_MIRROR", None)
    if mirror:
        env["WEIGHTS_MIRROR"] = f"{base}/mirror"
    return subprocess.run(
        [sys.executable, str(FETCH), *args, "--weights-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def tiny_bytes(weights) -> bytes:
    return (weights.model_dir("colorize", "paper_tiny") / "ddcolor_paper_tiny.pth").read_bytes()


def test_hugging_face_file_is_fetched_and_its_hash_recorded(server, tmp_path, tiny_bytes):
    Files.files[TINY] = tiny_bytes
    run = fetch(tmp_path, server, "colorize", "--variant", "paper_tiny")
    assert run.returncode == 0, run.stderr
    dest = tmp_path / "colorize" / "paper_tiny" / "ddcolor_paper_tiny.pth"
    assert dest.read_bytes() == tiny_bytes
    recorded = (dest.parent / "ddcolor_paper_tiny.pth.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(tiny_bytes).hexdigest()
    assert not list(dest.parent.glob("*.part"))
    # A second run finds it in place; a changed file is then caught by the recorded hash.
    assert "is in place" in fetch(tmp_path, server, "colorize", "--variant", "paper_tiny").stdout
    dest.write_bytes(tiny_bytes[:-1] + b"x")
    run = fetch(tmp_path, server, "colorize", "--variant", "paper_tiny")
    assert run.returncode == 3 and "is in place but is not the official release" in run.stderr


def test_an_interrupted_download_resumes_from_the_part_file(server, tmp_path, tiny_bytes):
    Files.files[TINY] = tiny_bytes
    folder = tmp_path / "colorize" / "paper_tiny"
    folder.mkdir(parents=True)
    half = len(tiny_bytes) // 2
    (folder / "ddcolor_paper_tiny.pth.part").write_bytes(tiny_bytes[:half])
    run = fetch(tmp_path, server, "colorize", "--variant", "paper_tiny")
    assert run.returncode == 0, run.stderr
    assert Files.ranges == [f"bytes={half}-"]
    assert (folder / "ddcolor_paper_tiny.pth").read_bytes() == tiny_bytes


def test_an_html_error_page_is_not_taken_for_weights(server, tmp_path, tiny_bytes):
    Files.files[TINY] = tiny_bytes
    Files.html.add(TINY)
    run = fetch(tmp_path, server, "colorize", "--variant", "paper_tiny")
    assert run.returncode == 1 and "HTML page" in run.stderr
    assert not (tmp_path / "colorize" / "paper_tiny" / "ddcolor_paper_tiny.pth").exists()


def test_a_file_that_is_not_the_official_release_is_refused(server, tmp_path, weights):
    fake = (weights.model_dir("upscale", "x4plus") / "RealESRGAN_x4plus.pth").read_bytes()
    Files.files["/mirror/RealESRGAN_x4plus.pth"] = fake
    run = fetch(tmp_path, server, "upscale", "--variant", "x4plus", mirror=True)
    assert run.returncode == 1
    assert "is not the official file" in run.stderr and "expected 67,040,989" in run.stderr
    folder = tmp_path / "upscale" / "x4plus"
    assert not (folder / "RealESRGAN_x4plus.pth").exists()
    assert not (folder / "RealESRGAN_x4plus.pth.part").exists()


def test_a_file_in_place_that_is_not_official_is_named_so_with_how_to_serve_it(
    server, tmp_path, weights
):
    """Generated weights under the official name: not "missing" but what they are (exit 3),
    with ALLOW_UNVERIFIED_WEIGHTS to serve them anyway; --allow-unverified accepts them."""
    folder = tmp_path / "upscale" / "x4plus"
    folder.mkdir(parents=True)
    generated = weights.model_dir("upscale", "x4plus") / "RealESRGAN_x4plus.pth"
    (folder / "RealESRGAN_x4plus.pth").write_bytes(generated.read_bytes())
    run = fetch(tmp_path, server, "upscale", "--variant", "x4plus", mirror=True)
    assert run.returncode == 3, run.stderr
    assert "Not the official files:" in run.stderr and "Missing" not in run.stderr
    assert f"{folder / 'RealESRGAN_x4plus.pth'} is in place but is not the official release (" in (
        run.stderr
    )
    assert "expected 67,040,989" in run.stderr
    assert "ALLOW_UNVERIFIED_WEIGHTS=true make run" in run.stderr
    assert "delete it and run again" in run.stderr
    assert "is in place, not the official release" in run.stdout
    run = fetch(tmp_path, server, "upscale", "--variant", "x4plus", "--allow-unverified")
    assert run.returncode == 0 and "is in place (unverified)" in run.stdout
    # One missing beside it: both lists, exit 1.
    run = fetch(tmp_path, server, "upscale", "restore", mirror=True)
    assert run.returncode == 1
    assert "Not the official files:" in run.stderr and "Missing weights:" in run.stderr


def test_unreachable_files_are_listed_with_where_to_put_them(server, tmp_path):
    run = fetch(tmp_path, server, "face-restore", mirror=True)
    assert run.returncode == 1
    for name in ("codeformer.pth", "detection_Resnet50_Final.pth", "parsing_parsenet.pth"):
        assert f"put it at {tmp_path / 'face-restore' / 'v0.1' / name}" in run.stderr
    assert "HTTP 404" in run.stderr


def test_another_model_from_a_url_is_kept_only_with_its_pinned_sha256(server, tmp_path, weights):
    """--url/--sha256 (hack/kind-up's general-x4v3): downloaded, kept only with that hash, and
    the hash written beside it for the predictor; a file in place with another hash is named."""
    body = (weights.other_model_dir("upscale", "compact-x4") / "compact_x4.pth").read_bytes()
    Files.files["/m/realesr-general-x4v3.pth"] = body
    good = hashlib.sha256(body).hexdigest()
    args = ("upscale", "--variant", "general-x4v3", "--url", f"{server}/m/realesr-general-x4v3.pth")
    folder = tmp_path / "upscale" / "general-x4v3"
    run = fetch(tmp_path, server, *args, "--sha256", "0" * 64)
    assert run.returncode == 1 and f"sha256 {good}, expected {'0' * 64}" in run.stderr
    assert not list(folder.iterdir())
    run = fetch(tmp_path, server, *args, "--sha256", good.upper())
    assert run.returncode == 0, run.stderr
    assert (folder / "realesr-general-x4v3.pth").read_bytes() == body
    pin = (folder / "realesr-general-x4v3.pth.sha256").read_text()
    assert pin == f"{good}  realesr-general-x4v3.pth\n"
    assert "is in place" in fetch(tmp_path, server, *args, "--sha256", good).stdout
    run = fetch(tmp_path, server, *args, "--sha256", "1" * 64)
    assert run.returncode == 3 and "is in place but is not the pinned file" in run.stderr
    run = fetch(tmp_path, server, "upscale", "--variant", "x4plus", "--url", "https://h/x.pth")
    assert run.returncode == 2 and "--url needs --sha256" in run.stderr
