"""A job's progress from its predictor calls (jobs/tracker.py): each step an equal share of one
total, tile reports moving within a step, never backwards (also when a job runs again), and
the step's start and end reported even by predictor calls that report nothing themselves.

The predictor calls here stand in for predictors.Predictors.infer: one that reports nothing
(today's unary call) and one that reports tiles through progress.current, as a streaming call
does (CONTRACT section 6)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from transformer import progress
from transformer.errors import GatewayError
from transformer.jobs.tracker import SCALE, StepReports, Tracker
from transformer.predictors import Answer

IMAGE = np.zeros((4, 6, 3), np.uint8)


class Recorder:
    def __init__(self):
        self.seen: list[tuple[int, int, str]] = []

    def __call__(self, done: int, total: int, stage: str) -> None:
        self.seen.append((done, total, stage))


class Calls:
    """Predictor calls: with `tiles`, each reports them to progress.current as it goes."""

    settings = object()

    def __init__(self, tiles: int = 0):
        self.tiles = tiles

    async def infer(self, task, image, parameters, model=None):
        listener = progress.current.get()
        for tile in range(1, self.tiles + 1):
            listener(task, tile, self.tiles, f"{task}: tile {tile} of {self.tiles}")
            await asyncio.sleep(0)
        return f"{task} answer"


def run_steps(tasks: list[str], calls: Calls, start_done: int = 0) -> Recorder:
    recorder = Recorder()
    tracker = Tracker(tasks, start_done, recorder)

    async def job():
        progress.current.set(tracker.listener)
        reporting = StepReports(calls)
        assert reporting.settings is calls.settings  # everything else is the predictors' own
        for task in tasks:
            assert await reporting.infer(task, IMAGE, {}) == f"{task} answer"

    asyncio.run(job())
    return recorder


def test_steps_are_shares_of_one_total_and_move_even_without_tile_reports():
    seen = run_steps(["colorize", "restore", "upscale", "face-restore"], Calls()).seen
    assert {total for _, total, _ in seen} == {SCALE}
    assert [done for done, _, _ in seen] == [0, 250, 250, 500, 500, 750, 750, 1000]
    assert seen[2][2] == "restore: started (step 2 of 4)"
    assert seen[-1][2] == "face-restore: done (step 4 of 4)"


def test_tile_reports_move_within_their_step_and_the_next_step_starts_where_it_ended():
    seen = run_steps(["restore", "upscale"], Calls(tiles=4)).seen
    dones = [done for done, _, _ in seen]
    assert dones == sorted(dones) and dones[-1] == SCALE
    assert (125, SCALE, "restore: tile 1 of 4 (step 1 of 2)") in seen
    assert (625, SCALE, "upscale: tile 1 of 4 (step 2 of 2)") in seen
    upscale = [done for done, _, stage in seen if stage.startswith("upscale")]
    assert min(upscale) == SCALE // 2


def test_a_single_step_reports_its_tiles_without_a_step_count():
    seen = run_steps(["upscale"], Calls(tiles=3)).seen
    assert seen[1] == (333, SCALE, "upscale: tile 1 of 3")


def test_progress_never_goes_backwards_also_when_a_job_runs_again():
    seen = run_steps(["restore", "upscale"], Calls(tiles=2), start_done=700).seen
    dones = [done for done, _, _ in seen]
    assert dones[0] == 700 and dones == sorted(dones) and dones[-1] == SCALE
    recorder = Recorder()
    tracker = Tracker(["upscale"], 0, recorder)
    tracker.listener("upscale", 30, 48, "tile 30 of 48")
    tracker.listener("upscale", 2, 48, "tile 2 of 48")  # a retried call starts again
    assert recorder.seen[-1][0] == recorder.seen[0][0] == 625
    assert recorder.seen[-1][2] == "upscale: tile 2 of 48"


class Unavailable:
    """Predictor calls where `down` answers 503 (unavailable for now) until it is brought up;
    every call that reached a predictor is counted."""

    settings = object()

    def __init__(self, down: str):
        self.down = down
        self.calls: list[str] = []

    async def infer(self, task, image, parameters, model=None):
        if task == self.down:
            raise GatewayError(503, f"the {task} model is not available", {"Retry-After": "1"})
        self.calls.append(task)
        return Answer(image + 1, {}, 0.0)


def test_a_step_tried_again_does_not_run_the_steps_before_it_again():
    """What the runner does while a predictor is away: the operation starts over, and the calls
    it made already answer from what was kept (the same task, parameters and image)."""
    calls = Unavailable("upscale")
    reporting = StepReports(calls)

    async def pipeline(image, factor=4):
        restored = (await reporting.infer("restore", image, {"tile_size": 0})).image
        return (await reporting.infer("upscale", restored, {"scale": factor})).image

    async def scenario():
        with pytest.raises(GatewayError):
            await pipeline(IMAGE)
        reporting.again()
        with pytest.raises(GatewayError):
            await pipeline(IMAGE)
        calls.down = None
        reporting.again()
        out = await pipeline(IMAGE)
        assert reporting.replayed == 2
        # Another input or other parameters: run again, not answered from the kept ones.
        reporting.again()
        await pipeline(IMAGE + 7)
        reporting.again()
        await pipeline(IMAGE + 7, factor=2)
        return out

    out = asyncio.run(scenario())
    assert np.array_equal(out, IMAGE + 2)
    assert calls.calls == ["restore", "upscale", "restore", "upscale", "upscale"]
