"""KServe's storage initializer run locally, and the stores it reads from.

`python tests/storage_initializer.py SRC_URI DEST ...` is what KServe's storage-initializer
container runs (kserve/python/storage-initializer/scripts/initializer-entrypoint: pairs of source
URI and destination folder, handed to `kserve_storage.Storage.download_files`); KServe injects it
with the pod's `storageUris` as those pairs. The stores: an HTTPS server with a throw-away CA
(trustme) that serves files under the official URLs' paths and redirects like GitHub's and Hugging
Face's download links do, and moto's S3 server.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    """The initializer's entry point (argument pairs, exit status 1 on a failed download)."""
    from kserve_storage import Storage
    from kserve_storage.logging import configure_logging, logger

    configure_logging()
    if len(argv) < 2 or len(argv) % 2:
        print("usage: storage_initializer.py SRC_URI DEST [SRC_URI DEST ...]", file=sys.stderr)
        return 1
    sources, dests = argv[0::2], argv[1::2]
    for dest in dests:
        os.makedirs(dest, exist_ok=True)
    try:
        Storage.download_files(sources, dests)
    except Exception as exc:
        logger.error("Storage initialization failed: %s", exc)
        return 1
    return 0


def run(
    pairs: list[tuple[str, Path]], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess:
    """The initializer as its own process, as the init container runs it."""
    args = [str(a) for pair in pairs for a in pair]
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(cwd),
        **env,
    }
    return subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@dataclass
class FileServer:
    """HTTPS (or HTTP) server of local files: GET <path> answers 302 to /blobs/<n>, which
    answers the file with `content_type` (what release and model hubs' CDNs do)."""

    files: dict[str, Path]  # URL path -> file
    content_type: str = "application/octet-stream"
    base: str = ""
    ca_file: Path | None = None
    hits: list[str] = field(default_factory=list)


@contextlib.contextmanager
def file_server(files: dict[str, Path], tmp: Path, tls: bool = True) -> Iterator[FileServer]:
    server_state = FileServer(files)
    blobs = list(files)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            server_state.hits.append(self.path)
            blob = re.fullmatch(r"/blobs/(\d+)", self.path)
            if blob is None:
                if self.path not in server_state.files:
                    self.send_error(404)
                    return
                self.send_response(302)
                self.send_header("Location", f"/blobs/{blobs.index(self.path)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = server_state.files[blobs[int(blob.group(1))]]
            self.send_response(200)
            self.send_header("Content-Type", server_state.content_type)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    self.wfile.write(chunk)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    scheme = "http"
    if tls:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        server_state.ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(server_state.ca_file))
        scheme = "https"
    server_state.base = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()


def on_host(uri: str, base: str) -> str:
    """`uri` with only its scheme and host replaced by `base` (the path stays)."""
    parts = urlsplit(uri)
    return base + parts.path + (f"?{parts.query}" if parts.query else "")


@dataclass
class S3:
    endpoint: str

    def env(self) -> dict[str, str]:
        """What KServe's credential builder puts in the initializer's environment for an S3
        secret with annotations serving.kserve.io/s3-endpoint (host:port) and s3-usehttps "0"."""
        return {
            "AWS_ACCESS_KEY_ID": "photo-enhance-test",
            "AWS_SECRET_ACCESS_KEY": "photo-enhance-test-secret",
            "S3_ENDPOINT": self.endpoint.removeprefix("http://"),
            "AWS_ENDPOINT_URL": self.endpoint,
            "S3_USE_HTTPS": "0",
            "S3_VERIFY_SSL": "0",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )


@contextlib.contextmanager
def s3_server() -> Iterator[S3]:
    """moto's S3 in server mode on 127.0.0.1 (a real HTTP endpoint, in this process)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3(f"http://{host}:{port}")
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
