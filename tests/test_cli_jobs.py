"""`photo-enhance` on long work: photos as jobs (CONTRACT section 6), against the real gateway
and tests/slow_predictor.py's tiled server (each call takes its `tile_size` in ms, in TILES
reported tiles), the CLI run as a process. Per-photo progress lines with the job's stage, -j 2
running two jobs at once, and a run interrupted with SIGINT that, started again, follows the same
jobs (the gateway's job store holds no new ones for them) and finishes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import datetime

import httpx
import numpy as np
import pytest
from PIL import Image

from client.jobs import LEDGER
from tests.gateway_process import decoded, encoded, start_gateway
from tests.jobs_client import stored_jobs, wait_until
from tests.servers import ROOT
from tests.slow_predictor import start_tiled_slow_predictor

TILES = 10
STEP_MS = 2_000  # one photo's work on the slow predictor


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-jobs-slow")
    process, address = start_tiled_slow_predictor(tmp / "slow.log", TILES)
    yield address
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-jobs-data")


@pytest.fixture(scope="module")
def gateway(slow, data_dir, tmp_path_factory):
    gw = start_gateway(
        {"restore": slow, "upscale": slow},
        tmp_path_factory.mktemp("cli-jobs-gateway"),
        env={"DATA_DIR": str(data_dir)},
    )
    yield gw
    gw.stop()


@pytest.fixture
def photos(astronaut, tmp_path):
    def make(count: int):
        folder = tmp_path / "scans"
        folder.mkdir()
        for i in range(count):
            small = Image.fromarray(astronaut).resize((64 + i, 48), Image.Resampling.LANCZOS)
            (folder / f"p{i}.png").write_bytes(encoded(np.asarray(small)))
        return folder

    return make


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "client", *args]


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def as_from_a_terminal() -> None:
    """SIGINT as a terminal leaves it for a command: a suite run in the background of a
    non-interactive shell (a CI runner's `make test &`) has SIGINT ignored, which its children
    inherit, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_progress_lines_show_the_stage_and_j2_runs_two_jobs_at_once(gateway, photos, tmp_path):
    scans, out = photos(2), tmp_path / "out"
    run = subprocess.run(
        command("restore", str(scans), "-o", str(out), "-j", "2", "--tile-size", str(STEP_MS),
                "--server", gateway.url),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "2 done, 0 skipped, 0 failed" in run.stderr
    for i in range(2):
        assert decoded((out / f"p{i}_restore.png").read_bytes()).size == (64 + i, 48)
        lines = [line for line in run.stderr.splitlines() if f"p{i}.png" in line]
        stages = [line for line in lines if line.startswith("progress")]
        # The job's stage moves tile by tile, each line with the photo's elapsed time.
        tiles = {m.group(1) for s in stages if (m := re.search(r"restore: tile (\d+) of 10", s))}
        assert len(tiles) >= 3, stages
        assert all(re.search(r"\[\d\d:\d\d\]$", s) for s in stages), stages
        percents = [int(re.search(r"(\d+)%", s).group(1)) for s in stages]
        assert percents == sorted(percents) and percents[-1] == 100, stages
    ids = re.findall(r"^job    .*: ([0-9a-f]{32})$", run.stderr, re.M)
    assert len(ids) == 2
    first, second = (httpx.get(f"{gateway.url}/v1/jobs/{i}").json() for i in ids)
    # Both ran at once: each started before the other ended.
    assert at(first["started_at"]) < at(second["finished_at"])
    assert at(second["started_at"]) < at(first["finished_at"])
    assert not (out / LEDGER).exists()


def test_an_interrupted_run_picks_up_its_jobs_instead_of_sending_them_again(
    gateway, data_dir, photos, tmp_path
):
    scans, out = photos(3), tmp_path / "out"
    args = command("restore", str(scans), "-o", str(out), "-j", "2",
                   "--tile-size", str(3 * STEP_MS), "--server", gateway.url)  # fmt: skip
    before = len(stored_jobs(data_dir))
    first = subprocess.Popen(
        args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=as_from_a_terminal,
    )  # fmt: skip
    ledger = out / LEDGER

    def ids_kept() -> list[str]:
        try:
            entries = json.loads(ledger.read_text())["jobs"].values()
        except (OSError, ValueError):
            return []
        return [entry["id"] for entry in entries if "id" in entry]

    wait_until(lambda: len(ids_kept()) == 2, within_s=60)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 130, err
    assert "interrupted: 2 job(s) go on on the gateway" in err and LEDGER in err
    kept = sorted(ids_kept())
    assert len(stored_jobs(data_dir)) == before + 2
    assert not list(out.glob("*.png"))

    again = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "3 done, 0 skipped, 0 failed" in again.stderr
    resumed = sorted(re.findall(r"^resume .*: job ([0-9a-f]{32}) \(", again.stderr, re.M))
    assert resumed == kept
    # Only the photo that had not been sent became a new job.
    assert len(stored_jobs(data_dir)) == before + 3
    assert sorted(p.name for p in out.glob("*.png")) == [f"p{i}_restore.png" for i in range(3)]
    assert not ledger.exists()
