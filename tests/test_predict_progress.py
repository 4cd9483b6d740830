"""A streamed request's progress reporter (predictors/progress.py): what the inference thread
reports becomes a monotone, rate-limited series with one total, delivered on the event loop."""

from __future__ import annotations

import asyncio

from predictors import progress
from predictors.progress import Progress, Reporter


class Loop:
    """Stands in for the event loop: runs what is handed to it at once, and counts."""

    def __init__(self):
        self.calls = 0

    def call_soon_threadsafe(self, callback, *args):
        self.calls += 1
        callback(*args)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reporter(task: str = "upscale", interval: float = 0.1):
    sent: list[Progress] = []
    clock = Clock()
    return Reporter(task, Loop(), sent.append, interval=interval, clock=clock), sent, clock


def test_tiles_are_reported_with_their_counts_and_the_task():
    r, sent, clock = reporter()
    for done in range(4):
        clock.now += 1
        r.step(done, 3, "tile")
    assert sent == [Progress(d, 3, f"upscale: tile {d} of 3") for d in range(4)]
    assert r.close() is None


def test_at_most_one_report_per_interval_plus_the_last():
    r, sent, clock = reporter(interval=1 / 8)
    for done in range(102):  # tiles of 1/32 s (exact in binary: no rounding at the interval)
        r.step(done, 101, "tile")
        clock.now += 1 / 32
    assert [p.done for p in sent] == [*range(0, 101, 4), 101]


def test_a_report_held_back_by_the_interval_is_given_at_close_and_later_ones_dropped():
    r, sent, clock = reporter()
    r.step(0, 10, "tile")
    clock.now += 0.01
    r.step(1, 10, "tile")
    assert [p.done for p in sent] == [0]
    assert r.close() == Progress(1, 10, "upscale: tile 1 of 10")
    clock.now += 1
    r.step(2, 10, "tile")
    assert [p.done for p in sent] == [0]


def test_a_restart_is_not_reported_until_it_passes_what_was_reported():
    """A CUDA out-of-memory retry with half the tile: four times the tiles, from 0 again."""
    r, sent, clock = reporter()
    for done in range(11):
        clock.now += 1
        r.step(done, 48, "tile")
    for done in range(193):
        clock.now += 1
        r.step(done, 192, "tile")
    dones = [p.done for p in sent]
    assert dones == sorted(dones) and dones[-1] == 48
    assert {p.total for p in sent} == {48}
    assert sent[11] == Progress(10, 48, "upscale: tile 40 of 192")  # the first after the restart
    assert sent[-1].stage == "upscale: tile 192 of 192"


def test_a_batch_counts_each_image_as_its_share_of_one_total():
    """Faces differ per image (5, then 2): the first report's total stays, done never drops."""
    r, sent, clock = reporter("face-restore")
    for index, faces in enumerate((5, 2)):
        r.image(index, 2)
        for done in range(faces + 1):
            clock.now += 1
            r.step(done, faces, "face")
    assert {p.total for p in sent} == {10}
    dones = [p.done for p in sent]
    assert dones == sorted(dones) and dones[-1] == 10
    assert sent[-1].stage == "face-restore: image 2 of 2, face 2 of 2"


def test_nothing_to_count_reports_nothing():
    r, sent, _ = reporter("face-restore")
    r.step(0, 0, "face")  # no face found
    assert sent == [] and r.close() is None


def test_reports_from_the_inference_thread_arrive_on_the_event_loop():
    async def scenario() -> list[tuple[Progress, bool]]:
        loop = asyncio.get_running_loop()
        got: list[tuple[Progress, bool]] = []
        r = Reporter("restore", loop, lambda p: got.append((p, loop.is_running())), interval=0)
        token = progress.current.set(r)
        try:
            await asyncio.to_thread(lambda: [progress.tiles(d, 3) for d in range(4)])
        finally:
            progress.current.reset(token)
        await asyncio.sleep(0)  # the loop runs what the thread handed it
        return got

    got = asyncio.run(scenario())
    assert [p.done for p, _ in got] == [0, 1, 2, 3] and all(on_loop for _, on_loop in got)


def test_outside_a_streamed_request_reports_go_nowhere():
    assert progress.current.get() is None
    progress.image(0, 1)
    progress.tiles(1, 2)  # no error, nothing to do
