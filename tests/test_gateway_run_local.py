"""`make run` (hack/run-local): offline with missing weights, a full start (with a quiet log),
serve and stop, predictors on 127.0.0.1 only, and a killed predictor restarted while the others
serve."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import pytest

from tests.gateway_process import decoded, encoded
from tests.servers import ROOT, free_port
from tests.sockets import answers, listening_hosts, own_addresses

RUN_LOCAL = ROOT / "hack" / "run-local"


def environment(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREDICTOR_", "MODEL_", "MAX_", "WEIGHTS_"))
    }
    # The gateway's job store and files: the test's own, never the user's ~/.local/share.
    env.update(FORCE_CPU="true", PYTHONUNBUFFERED="1", DATA_DIR=tempfile.mkdtemp("-jobs"))
    env.update(extra)
    return env


def is_listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


# A line a health probe makes at INFO: an access line, a KServe timing line, a gRPC method line.
PROBE_AT_INFO = re.compile(
    r" INFO .*("
    r'"(GET|HEAD) ((/v1)?/health|/v2/health/\w+|/v2/models/[^/ ]+/ready)[ ?]'
    r"|kserve\.io\.(\S+\.)?(live|ready|server_ready|model_ready|health): "
    r"|GRPCInferenceService/(ServerLive|ServerReady|ModelReady)$)"
)
# The one warning a clean start with the generated (not the official) weights has, per file.
UNVERIFIED = re.compile(r" archs\.checkpoint WARNING .*(not the official release|unverified)")


def unclean_lines(output: str) -> list[str]:
    """The lines that have no place in a clean start's log: warnings (Python's included),
    tracebacks, errors, and health probes logged at INFO."""
    return [
        line
        for line in output.splitlines()
        if PROBE_AT_INFO.search(line)
        or (
            re.search(r"Warning\b|warnings\.warn| WARNING | ERROR |Traceback", line)
            and not UNVERIFIED.search(line)
        )
    ]


def predictor_ports(output: str, task: str, grpc_address: str) -> list[int]:
    """The task's predictor's HTTP port (from its log) and gRPC port (the gateway's address)."""
    http = re.findall(rf"\[{task}\] .*Uvicorn running on http://[^:]+:(\d+)", output)
    assert http, output[-3000:]
    return [int(http[-1]), int(grpc_address.rsplit(":", 1)[1])]


def test_missing_weights_offline_name_the_files_and_exit_1(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"  # a mirror nobody answers on: offline
    result = subprocess.run(
        [sys.executable, str(RUN_LOCAL)],
        cwd=ROOT,
        env=environment(WEIGHTS_DIR=str(tmp_path), WEIGHTS_MIRROR=closed, PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for task, name in [
        ("upscale/x4plus", "RealESRGAN_x4plus.pth"),
        ("face-restore/v0.1", "detection_Resnet50_Final.pth"),
        ("colorize/modelscope", "ddcolor_modelscope.pth"),
        ("restore/denoise", "NAFNet-SIDD-width64.pth"),
    ]:
        assert f"put it at {tmp_path / task / name}" in output
    assert "WEIGHTS_DIR" in output
    assert "Started server process" not in output  # nothing was started


def test_a_file_that_is_not_the_official_release_is_named_so_not_missing(weights, tmp_path):
    """The generated test weights under the official name, without ALLOW_UNVERIFIED_WEIGHTS:
    run-local says what the file is and how to serve it anyway, and starts nothing."""
    (tmp_path / "upscale").mkdir()
    (tmp_path / "upscale" / "x4plus").symlink_to(weights.model_dir("upscale", "x4plus"))
    result = subprocess.run(
        [sys.executable, str(RUN_LOCAL)],
        cwd=ROOT,
        env=environment(
            TASKS="upscale",
            WEIGHTS_DIR=str(tmp_path),
            PORT=str(free_port()),
            WEIGHTS_MIRROR=f"http://127.0.0.1:{free_port()}",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    path = tmp_path / "upscale" / "x4plus" / "RealESRGAN_x4plus.pth"
    assert f"{path} is in place but is not the official release (" in output
    assert "expected 67,040,989" in output  # what differs
    assert "ALLOW_UNVERIFIED_WEIGHTS=true make run" in output
    assert "ESRGAN checkpoint" in output  # what the predictor still checks
    assert "missing" not in output.lower()
    assert "Started server process" not in output


class Running:
    """hack/run-local in the background, its output collected line by line."""

    def __init__(self, env: dict[str, str]):
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(RUN_LOCAL)], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        pytest.fail(f"run-local never said {text!r}:\n{self.output()[-4000:]}")


def stop(run: Running) -> None:
    """After a failure: let run-local stop its children."""
    if run.process.poll() is None:
        run.process.terminate()
        try:
            run.process.wait(40)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()


def test_make_run_serves_all_routes_and_stops_cleanly_on_ctrl_c(weights, astronaut):
    port = free_port()
    env = environment(
        WEIGHTS_DIR=str(weights.all_weights()),
        MODEL_COLORIZE="paper_tiny",
        ALLOW_UNVERIFIED_WEIGHTS="true",
        PORT=str(port),
    )
    run = Running(env)
    try:
        run.wait_for("all four models are ready", timeout=400)
        url = f"http://127.0.0.1:{port}"
        assert f"curl -s {url}/health" in run.output()
        health = httpx.get(f"{url}/health", timeout=30).json()
        assert health["status"] == "ok"
        assert health["models"]["colorize"]["variant"] == "paper_tiny"
        addresses = [entry["predictor"] for entry in health["models"].values()]
        assert all(a.startswith("127.0.0.1:") for a in addresses)
        reply = httpx.post(
            f"{url}/upscale", params={"scale": 2, "tile_size": 0},
            files={"file": ("a.png", encoded(astronaut[::16, ::16]))}, timeout=300,
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        assert decoded(reply.content).size == (64, 64)
        for probe in ("/v2/health/live", "/v2/health/ready", "/health"):
            assert httpx.get(f"{url}{probe}", timeout=30).status_code == 200

        run.process.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        assert run.process.wait(60) == 0, run.output()[-3000:]
        assert "all stopped" in run.output()
        for address in [*addresses, f"127.0.0.1:{port}"]:
            assert not is_listening(address), f"{address} still served after Ctrl-C"
        # A clean start, a request, probes and a stop: no warning, traceback or probe line.
        assert unclean_lines(run.output()) == []
        assert UNVERIFIED.search(run.output())  # the check above reads these lines
    finally:
        stop(run)


def test_tasks_subset_fetches_and_starts_only_those(weights, astronaut, tmp_path):
    """TASKS=upscale: only its weights are needed (the others are missing and the mirror is
    offline), only its predictor starts, and /health says the others are not configured."""
    (tmp_path / "upscale").mkdir()
    (tmp_path / "upscale" / "x4plus").symlink_to(weights.model_dir("upscale", "x4plus"))
    port = free_port()
    env = environment(
        TASKS="upscale",
        WEIGHTS_DIR=str(tmp_path),
        WEIGHTS_MIRROR=f"http://127.0.0.1:{free_port()}",
        ALLOW_UNVERIFIED_WEIGHTS="true",
        PORT=str(port),
    )
    run = Running(env)
    try:
        run.wait_for("ready: upscale", timeout=300)
        url = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{url}/health", timeout=30).json()
        assert health["status"] == "ok"
        for task in ("colorize", "restore", "face-restore"):
            entry = health["models"][task]
            assert not entry["ready"] and "not configured" in entry["detail"]
            assert entry["predictor"] is None
        reply = httpx.post(
            f"{url}/upscale", params={"scale": 2, "tile_size": 0},
            files={"file": ("a.png", encoded(astronaut[::16, ::16]))}, timeout=120,
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        assert run.output().count("Started server process") == 2  # upscale and the gateway

        # The banner: the page to open, the CLI's variable, the predictor's OIP v2 addresses.
        output = run.output()
        assert f"open {url}/ in a browser" in output
        assert f"\n  export PHOTO_ENHANCE_URL={url}\n" in output
        grpc_address = health["models"]["upscale"]["predictor"]
        oip = re.search(
            rf"\n  upscale +gRPC {re.escape(grpc_address)} +HTTP (http://127\.0\.0\.1:\d+)"
            r"/v2/models/upscale\n",
            output,
        )
        assert oip, output[-3000:]
        ready = httpx.get(f"{oip.group(1)}/v2/models/upscale/ready", timeout=30)
        assert ready.status_code == 200  # an OIP v2 client can use it as printed
        for task in ("colorize", "restore", "face-restore"):  # not started: not listed
            assert not re.search(rf"\n  {task} +gRPC", output)

        # The predictor listens on 127.0.0.1 only: HTTP and gRPC.
        ports = predictor_ports(run.output(), "upscale", health["models"]["upscale"]["predictor"])
        others = own_addresses()  # this machine's non-loopback addresses, if it has any
        for predictor_port in ports:
            assert listening_hosts(predictor_port) == {"127.0.0.1"}
            assert answers("127.0.0.1", predictor_port)
            for address in others:
                assert not answers(address, predictor_port), f"{address}:{predictor_port}"
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(60) == 0, run.output()[-3000:]
    finally:
        stop(run)


def test_a_killed_predictor_is_restarted_while_the_others_serve(weights, astronaut):
    """SIGKILL the upscale predictor: restore keeps answering, upscale answers 503 and /health
    says it is not reachable (restarting); run-local says it restarts it, on the same port, and
    it serves again by itself. SIGTERM then stops everything, and no restart follows."""
    port = free_port()
    env = environment(
        TASKS="restore,upscale",
        WEIGHTS_DIR=str(weights.all_weights()),
        ALLOW_UNVERIFIED_WEIGHTS="true",
        PORT=str(port),
    )
    photo = {"file": ("a.png", encoded(astronaut[::16, ::16]))}
    upscale = {"scale": 2, "tile_size": 0}
    run = Running(env)
    try:
        run.wait_for("ready: restore, upscale", timeout=300)
        url = f"http://127.0.0.1:{port}"
        address = httpx.get(f"{url}/health", timeout=30).json()["models"]["upscale"]["predictor"]
        started = r"\[upscale\] .*Started server process \[(\d+)\]"
        (pid,) = re.findall(started, run.output())
        os.kill(int(pid), signal.SIGKILL)

        down = httpx.post(f"{url}/upscale", params=upscale, files=photo, timeout=60)
        assert down.status_code == 503, down.text
        reply = httpx.post(f"{url}/restore", files=photo, timeout=120)
        assert reply.status_code == 200, reply.text  # the others keep serving
        health = httpx.get(f"{url}/health", timeout=30).json()
        assert health["models"]["restore"]["ready"]
        entry = health["models"]["upscale"]
        assert not entry["ready"] and "restarting" in entry["detail"], entry
        assert health["status"] == "degraded"

        run.wait_for("run-local: upscale exited with status -9; restarting in 1 s (restart 1)", 30)
        run.wait_for("run-local: upscale is ready again", timeout=180)
        reply = httpx.post(f"{url}/upscale", params=upscale, files=photo, timeout=120)
        assert reply.status_code == 200, reply.text
        assert decoded(reply.content).size == (64, 64)
        health = httpx.get(f"{url}/health", timeout=30).json()
        assert health["status"] == "ok" and health["models"]["upscale"]["predictor"] == address
        assert len(set(re.findall(started, run.output()))) == 2  # a new process, same port

        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(60) == 0, run.output()[-3000:]
        output = run.output()
        assert "all stopped" in output and "(restart 2)" not in output
        assert "gateway exited" not in output and "restore exited" not in output
        assert not is_listening(address) and not is_listening(f"127.0.0.1:{port}")
    finally:
        stop(run)


def test_a_start_that_fails_stops_everything_with_status_1(weights):
    """A process that dies before it ever listened (here the gateway, on a bad setting) would die
    again: run-local says so and stops, instead of restarting it."""
    env = environment(
        TASKS="upscale",
        WEIGHTS_DIR=str(weights.all_weights()),
        ALLOW_UNVERIFIED_WEIGHTS="true",
        PORT=str(free_port()),
        MAX_UPLOAD_MB="lots",
    )
    result = subprocess.run(
        [sys.executable, str(RUN_LOCAL)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "MAX_UPLOAD_MB must be a number" in output
    assert "run-local: gateway exited with status 1 while starting" in output
    assert "restarting in" not in output and "all stopped" in output


def test_unknown_task_in_tasks_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, str(RUN_LOCAL)],
        cwd=ROOT,
        env=environment(TASKS="upscale,sharpen", WEIGHTS_DIR=str(tmp_path), PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "sharpen" in result.stdout and "upscale" in result.stdout


def test_make_run_serves_several_models_of_a_task(weights, tmp_path, astronaut):
    """MODELS_UPSCALE: one predictor process serves both models, WEIGHTS_DIR/<task>/<name>/."""
    (tmp_path / "upscale").mkdir()
    (tmp_path / "upscale" / "x4plus").symlink_to(weights.model_dir("upscale", "x4plus"))
    (tmp_path / "upscale" / "span-x2").symlink_to(weights.other_model_dir("upscale", "span-x2"))
    port = free_port()
    env = environment(
        TASKS="upscale",
        WEIGHTS_DIR=str(tmp_path),
        MODELS_UPSCALE="x4plus,span-x2",
        ALLOW_UNVERIFIED_WEIGHTS="true",
        WEIGHTS_MIRROR=f"http://127.0.0.1:{free_port()}",
        PORT=str(port),
    )
    run = Running(env)
    try:
        run.wait_for("ready: upscale", timeout=300)
        url = f"http://127.0.0.1:{port}"
        models = httpx.get(f"{url}/health", timeout=30).json()["models"]["upscale"]["models"]
        assert [(m["name"], m["architecture"]) for m in models] == [
            ("x4plus", "ESRGAN"),
            ("span-x2", "SPAN"),
        ]
        reply = httpx.post(
            f"{url}/upscale", params={"scale": 2, "model": "span-x2"},
            files={"file": ("a.png", encoded(astronaut[::16, ::16]))}, timeout=300,
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        assert reply.headers["X-Steps"] == "upscale x2 (span-x2)"
        assert decoded(reply.content).size == (64, 64)
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(60) == 0, run.output()[-3000:]
    finally:
        stop(run)
