"""Numbers from the environment (common/env.py): one parser for the gateway's and the predictors'
settings. A malformed or out-of-range one stops the server at start with one line naming it,
never a traceback and never a server that runs on a nonsense value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from common.env import env_float, env_int
from tests.servers import ROOT, free_port


@pytest.mark.parametrize(
    ("raw", "bounds", "expected"),
    [
        ("", {"minimum": 1}, 7),
        ("  ", {"minimum": 1}, 7),
        (" 12 ", {"minimum": 1}, 12),
        ("0", {"minimum": 0}, 0),
        ("100", {"minimum": 1, "maximum": 100}, 100),
    ],
)
def test_whole_numbers_within_their_bounds_or_the_default(raw, bounds, expected):
    assert env_int({"N": raw}, "N", 7, **bounds) == expected
    assert env_int({}, "N", None, minimum=1) is None  # unset, where "none" is a choice


@pytest.mark.parametrize(
    ("raw", "bounds", "message"),
    [
        ("lots", {"minimum": 1}, "N must be a whole number, got 'lots'"),
        ("1.5", {"minimum": 1}, "N must be a whole number, got '1.5'"),
        ("0", {"minimum": 1}, "N must be >= 1, got '0'"),
        ("-1", {"minimum": 0}, "N must be >= 0, got '-1'"),
        ("101", {"minimum": 1, "maximum": 100}, "N must be within 1..100, got '101'"),
    ],
)
def test_whole_numbers_out_of_bounds_name_the_setting(raw, bounds, message):
    with pytest.raises(ValueError) as refused:
        env_int({"N": raw}, "N", 7, **bounds)
    assert str(refused.value) == message


def test_numbers_are_positive():
    assert env_float({"T": "2.5"}, "T", 1.0) == 2.5
    assert env_float({"T": ""}, "T", 1.0) == 1.0
    for raw, message in [
        ("soon", "T must be a number, got 'soon'"),
        ("0", "T must be > 0, got '0'"),
        ("-3", "T must be > 0, got '-3'"),
        ("nan", "T must be > 0, got 'nan'"),
    ]:
        with pytest.raises(ValueError) as refused:
            env_float({"T": raw}, "T", 1.0)
        assert str(refused.value) == message


def start(argv: list[str], **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "PREDICTOR_"))}
    env |= {"FORCE_CPU": "true", "PYTHONUNBUFFERED": "1", **settings}
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


# Each was read as a bare int()/float() or not bounded: a traceback, or a server that ran on it
# (MAX_CONNECTIONS=0 answered every request 503; MAX_INFLIGHT=-1 refused every inference).
GATEWAY_MISTAKES = {
    "MAX_CONNECTIONS": ("0", "MAX_CONNECTIONS must be >= 1, got '0'"),
    "MAX_HEADER_BYTES": ("16k", "MAX_HEADER_BYTES must be a whole number, got '16k'"),
    "HEADER_TIMEOUT_S": ("-1", "HEADER_TIMEOUT_S must be > 0, got '-1'"),
    "MAX_RENDER_FACTOR": ("101", "MAX_RENDER_FACTOR must be within 1..100, got '101'"),
}
PREDICTOR_MISTAKES = {
    "MAX_INFLIGHT": ("-1", "MAX_INFLIGHT must be >= 0, got '-1'"),
    "TILE_BATCH": ("0", "TILE_BATCH must be >= 1, got '0'"),
    "MAX_RENDER_FACTOR": ("lots", "MAX_RENDER_FACTOR must be a whole number, got 'lots'"),
    "MAX_BATCH_PIXELS": ("0", "MAX_BATCH_PIXELS must be >= 1, got '0'"),
}


@pytest.mark.parametrize("name", list(GATEWAY_MISTAKES))
def test_the_gateway_stops_at_start_with_one_line(name, tmp_path):
    raw, message = GATEWAY_MISTAKES[name]
    run = start(
        ["transformer", "--http_host", "127.0.0.1", "--http_port", str(free_port())],
        DATA_DIR=str(tmp_path), **{name: raw},
    )  # fmt: skip
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [f"transformer: {message}"], run.stderr


@pytest.mark.parametrize("name", list(PREDICTOR_MISTAKES))
def test_a_predictor_stops_at_start_with_one_line(name, tmp_path):
    raw, message = PREDICTOR_MISTAKES[name]
    port = str(free_port())
    run = start(
        ["predictors", "upscale", f"--model_dir={tmp_path}", "--variant=x2plus",
         "--bind_address=127.0.0.1", f"--http_port={port}", f"--grpc_port={free_port()}"],
        **{name: raw},
    )  # fmt: skip
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1:] == [f"predictor: {message}"], run.stderr
    assert "Traceback" not in run.stderr
