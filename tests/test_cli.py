"""The `photo-enhance` command-line client against the real gateway and a real restore predictor
(`python -m client`, the console script's own entry point, run as a process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from client import cli, send
from client.params import GATEWAY_BOUNDS, TASK_PARAMS
from tests.gateway_process import decoded, encoded
from tests.restore_gateway import restore_gateway
from tests.servers import ROOT, free_port

KINDS = {"integer": int, "number": float, "boolean": bool, "string": str}


@pytest.fixture(scope="module")
def gateway(weights, tmp_path_factory):
    with restore_gateway(weights, tmp_path_factory.mktemp("cli")) as gw:
        yield gw


@pytest.fixture(scope="module")
def small(astronaut) -> np.ndarray:
    return np.asarray(Image.fromarray(astronaut).resize((64, 48), Image.Resampling.LANCZOS))


def photo_enhance(
    *args: str, server: str | None = None, umask: int | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if server:
        env["PHOTO_ENHANCE_URL"] = server
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        preexec_fn=None if umask is None else (lambda: os.umask(umask)),
    )  # fmt: skip


def requests_seen(gateway, route: str) -> int:
    """How many requests the gateway has answered on `route` (its /metrics), any status."""
    text = httpx.get(f"{gateway.url}/metrics").text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(f'photo_enhance_request_seconds_count{{route="{route}"')
    )


def test_folder_with_a_broken_photo_gives_two_results_one_error_and_exit_1(
    gateway, small, tmp_path
):
    scans = tmp_path / "scans"
    (scans / "1980").mkdir(parents=True)
    (scans / "a.jpg").write_bytes(encoded(small, "JPEG"))
    (scans / "1980" / "b.png").write_bytes(encoded(small[:, ::-1]))
    (scans / "broken.jpg").write_bytes(encoded(small, "JPEG")[:300])  # cut off mid-file
    out = tmp_path / "out"

    run = photo_enhance("restore", str(scans), "-o", str(out), "-j", "2", server=gateway.url)

    assert run.returncode == 1, run.stderr
    results = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert results == ["1980/b_restore.png", "a_restore.png"]
    for name in results:
        assert decoded((out / name).read_bytes()).size == (64, 48)
    broken = [line for line in run.stdout.splitlines() if "broken.jpg" in line]
    assert len(broken) == 1 and broken[0].startswith("FAILED"), run.stdout
    assert "HTTP 400" in broken[0] and "could not be" in broken[0]
    assert "2 done, 0 skipped, 1 failed" in run.stderr
    assert re.search(r"failed:\n  .*broken\.jpg: HTTP 400", run.stderr)

    # Again: the existing results are skipped, not sent.
    before = {name: (out / name).stat().st_mtime_ns for name in results}
    again = photo_enhance("restore", str(scans), "-o", str(out), server=gateway.url)
    assert again.returncode == 1
    assert "0 done, 2 skipped, 1 failed" in again.stderr
    assert {name: (out / name).stat().st_mtime_ns for name in results} == before

    # --overwrite replaces it; one input with an OUT that has no image extension: a folder.
    replaced = photo_enhance("restore", str(scans / "a.jpg"), "-o", str(out), "--overwrite",
                             server=gateway.url)  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    assert (out / "a_restore.png").stat().st_mtime_ns != before["a_restore.png"]


def test_one_input_to_a_named_file_takes_its_format(gateway, small, tmp_path):
    source = tmp_path / "photo.png"
    source.write_bytes(encoded(small))
    run = photo_enhance("restore", str(source), "-o", str(tmp_path / "clean.jpg"),
                        "--server", gateway.url)  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = decoded((tmp_path / "clean.jpg").read_bytes())
    assert result.format == "JPEG" and result.size == (64, 48)
    assert "1 done, 0 skipped, 0 failed" in run.stderr


def test_stopped_predictor_is_retried_after_retry_after_then_fails_clearly(
    gateway, small, tmp_path
):
    source = tmp_path / "face.png"
    source.write_bytes(encoded(small))
    start = time.monotonic()
    run = photo_enhance("face-restore", str(source), "-o", str(tmp_path / "out.png"),
                        "--retries", "1", server=gateway.url)  # fmt: skip
    elapsed = time.monotonic() - start

    assert run.returncode == 1
    waited = re.search(r"HTTP 503: the face-restore model is not available.*retry 1/1 in (\d+) s",
                       run.stderr)  # fmt: skip
    assert waited, run.stderr
    assert elapsed >= int(waited.group(1))  # the gateway's Retry-After was honoured
    assert "FAILED" in run.stdout and "(gave up after 2 attempts)" in run.stdout
    assert not (tmp_path / "out.png").exists()


def test_unreachable_gateway_stops_at_once_with_one_message(small, tmp_path):
    source = tmp_path / "photo.png"
    source.write_bytes(encoded(small))
    closed = f"http://127.0.0.1:{free_port()}"
    run = photo_enhance("restore", str(source), "-o", str(tmp_path / "o"), "--retries", "2",
                        server=closed)  # fmt: skip
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()  # one message, no retries
    assert line.startswith(f"photo-enhance: cannot reach the gateway at {closed} (ConnectError")
    assert line.endswith("is it running? (--server or PHOTO_ENHANCE_URL names it)")
    assert run.stdout == ""
    assert not (tmp_path / "o").exists()


def test_task_the_gateway_does_not_offer_stops_before_sending(gateway, small, tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        (tmp_path / name).write_bytes(encoded(small))
    before = requests_seen(gateway, "colorize")
    run = photo_enhance("colorize", str(tmp_path), "-o", str(tmp_path / "out"),
                        server=gateway.url)  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.strip() == (
        f"photo-enhance: the gateway at {gateway.url} does not offer colorize"
    )
    assert requests_seen(gateway, "colorize") == before  # nothing was sent
    assert not (tmp_path / "out").exists()
    # A pipeline step switched on: the message says how to do without it.
    run = photo_enhance("pipeline", str(tmp_path / "a.png"), "--colorize", "true",
                        "-o", str(tmp_path / "out"), server=gateway.url)  # fmt: skip
    assert run.returncode == 1
    assert "does not offer colorize; without that step: --colorize auto or false" in run.stderr


def test_503_without_retry_after_mid_run_stops_the_run(gateway, camera, tmp_path):
    """colorize=auto decides on the photo: a grey one needs colorize, which this gateway does
    not offer (503 without Retry-After). The first such answer stops the run: one request."""
    grey = np.asarray(Image.fromarray(camera).resize((48, 48)))
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(encoded(grey))
    before = requests_seen(gateway, "pipeline")
    run = photo_enhance("pipeline", str(tmp_path), "-o", str(tmp_path / "out"), "-j", "1",
                        "--no-face-restore", "--no-upscale", server=gateway.url)  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "HTTP 503: this server does not offer colorize" in run.stderr
    assert run.stderr.rstrip().endswith("stopped, nothing more is sent")
    assert "retry 1/" not in run.stderr
    assert requests_seen(gateway, "pipeline") == before + 1


def test_a_server_that_is_not_the_gateway_stops_at_once(gateway, small, tmp_path):
    source = tmp_path / "photo.png"
    source.write_bytes(encoded(small))
    elsewhere = f"{gateway.url}/not-here"  # /not-here/health: 404
    run = photo_enhance("restore", str(source), "-o", str(tmp_path / "o"), server=elsewhere)
    assert run.returncode == 1
    assert f"{elsewhere}/health answered HTTP 404, not a photo-enhance gateway" in run.stderr


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_results_get_the_permissions_the_umask_gives(gateway, small, tmp_path, umask):
    source = tmp_path / "photo.png"
    source.write_bytes(encoded(small))
    run = photo_enhance("restore", str(source), "-o", str(tmp_path / "out.png"),
                        server=gateway.url, umask=umask)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.parametrize(
    ("status", "headers", "outcome"),
    [
        (400, {}, "file"), (408, {}, "file"), (413, {}, "file"), (415, {}, "file"),
        (500, {}, "file"), (422, {}, "usage"), (404, {}, "stop"), (401, {}, "stop"),
        (405, {}, "stop"), (503, {}, "stop"), (503, {"Retry-After": "0"}, "retried"),
        (429, {"Retry-After": "0"}, "retried"), (504, {}, "retried"),
    ],
)  # fmt: skip
def test_what_retrying_cannot_fix_is_not_retried(tmp_path, status, headers, outcome):
    """send.process on each answer: retried (and then given up on), this file failed, the run
    stopped (exit 1) or a usage error (exit 2)."""
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, headers=headers, json={"detail": "as the gateway says"})

    source = tmp_path / "a.png"
    source.write_bytes(b"x")
    job = send.Job(source, source, tmp_path / "out.png")
    policy = send.Policy(retries=1, max_wait_s=0)
    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://gw") as client:
        result = send.process(client, "/restore", {}, job, policy, lambda line: None)
    assert result.status == "failed" and "as the gateway says" in result.message
    assert len(calls) == (2 if outcome == "retried" else 1)
    assert (result.refused, result.stop) == (outcome == "usage", outcome == "stop")


def test_options_the_gateway_refuses_stop_the_run_with_exit_2(gateway, small, tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(encoded(small))
    run = photo_enhance("restore", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                        "-o", str(tmp_path / "out"), "--tile-size", "64", "-j", "1",
                        server=gateway.url)  # fmt: skip
    assert run.returncode == 2
    assert re.search(r"the gateway refused the options: HTTP 422: tile_size: .*at least 128",
                     run.stderr)  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_health_prints_each_model_and_exits_1_when_one_is_not_ready(gateway):
    run = photo_enhance("health", "--server", gateway.url)
    assert run.returncode == 1
    lines = {line.split()[0]: line for line in run.stdout.splitlines()[1:]}
    assert "ready (denoise" in lines["restore"]
    assert "NOT READY: predictor at 127.0.0.1:" in lines["face-restore"]
    assert "not offered by this server" in lines["colorize"]
    assert "[CodeFormer, NTU S-Lab License 1.0: non-commercial use only]" in lines["face-restore"]
    assert run.stdout.startswith(f"gateway {gateway.url}: degraded")


def test_options_are_in_step_with_the_gateways_openapi(gateway):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    routes = {path.lstrip("/") for path, item in spec["paths"].items()
              if "photo-enhance" in item.get("post", {}).get("tags", [])}  # fmt: skip
    assert routes == set(TASK_PARAMS)
    for task, params in TASK_PARAMS.items():
        served = {p["name"]: p["schema"] for p in spec["paths"][f"/{task}"]["post"]["parameters"]
                  if p["in"] == "query"}  # fmt: skip
        ours = {p.name: p for p in params}
        assert set(ours) == set(served), task
        for name, schema in served.items():
            param = ours[name]
            if name == "model" or name.endswith("_model"):  # the server's own list
                assert param.kind is str and param.default is None  # the server's default
                assert schema["default"] in schema["enum"]
                continue
            kind = KINDS[schema.get("type", "string")]
            assert (param.kind, param.default) == (kind, schema.get("default")), (task, name)
            for bound in ("minimum", "maximum"):
                ours_bound = getattr(param, bound)
                if (name, bound) in GATEWAY_BOUNDS:  # a deployment setting: the gateway checks
                    assert ours_bound is None, (task, name, bound)
                else:
                    assert ours_bound == schema.get(bound), (task, name, bound)
            assert param.choices == (tuple(schema["enum"]) if "enum" in schema else None)
        # and the command line takes each of them
        values = []
        for param in params:
            if param.default is None:  # a model: none by default
                continue
            if param.kind is bool:
                values.append(param.flag if param.default else f"--no-{param.flag[2:]}")
            else:
                values += [param.flag, str(param.default)]
        args = cli.build_parser().parse_args([task, "x.png", *values])
        for param in params:
            assert getattr(args, param.name) == param.default, (task, param.name)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required"),
        (["sharpen", "x.png"], "invalid choice: 'sharpen'"),
        (["upscale", "{photo}", "--scale", "9"], "9 is above the maximum 8"),
        (["face-restore", "{photo}", "--fidelity", "high"], "'high' is not a number"),
        (["restore", "{missing}"], "no such file or folder"),
        (["restore", "{folder}/*.webp"], "matches no file"),
        (["restore", "{photo}", "{photo2}", "-o", "{photo}"], "a file name, but 2 inputs"),
        (["restore", "{photo}", "-o", "x.jpg", "--output-format", "png"], "does not match"),
        (["restore", "{photo}", "--server", "localhost:8000"], "give a URL such as"),
        (["restore", "{photo}", "-j", "0"], "-j must be 1 or more"),
    ],
)
def test_usage_errors_exit_2(argv, message, tmp_path, capsys):
    photo, photo2 = tmp_path / "a.png", tmp_path / "b.png"
    photo.write_bytes(b"x")
    photo2.write_bytes(b"x")
    names = {"photo": photo, "photo2": photo2, "missing": tmp_path / "nope.png",
             "folder": tmp_path}  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(cli.main([arg.format(**names) for arg in argv]))
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
