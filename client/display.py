"""Per-photo progress while its job runs: on a terminal a tqdm bar per photo in flight (percent,
the job's stage, the elapsed time, which ticks from the start, before any progress); otherwise
(a log, a pipe) one line per change of stage, and one every HEARTBEAT_S while nothing changes."""

from __future__ import annotations

import threading
import time

from tqdm import tqdm

from .inputs import Job

TICK_S = 0.25
HEARTBEAT_S = 10.0
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:20}| {elapsed}{postfix}"  # postfix: ", stage"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


class Display:
    def __init__(self, overall: tqdm, write, bars: bool):
        self.overall, self.write, self.bars = overall, write, bars
        self._lock = threading.Lock()
        self._active: dict[Job, dict] = {}
        self._free = []  # screen rows released by finished photos
        self._rows = 0
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def begin(self, job: Job) -> None:
        with self._lock:
            state = {"start": time.monotonic(), "said": 0.0, "stage": None, "bar": None}
            if self.bars:
                if not self._free:
                    self._rows += 1
                    self._free.append(self._rows)
                row = state["row"] = self._free.pop()
                state["bar"] = tqdm(
                    total=100, desc=job.source.name, position=row, leave=False,
                    bar_format=BAR_FORMAT, file=self.overall.fp, dynamic_ncols=True,
                )  # fmt: skip
                state["bar"].set_postfix_str("sending", refresh=True)
            self._active[job] = state

    def show(self, job: Job, current: dict) -> None:
        with self._lock:
            state = self._active.get(job)
            if state is None:
                return
            progress = current.get("progress") or {}
            total = max(1, int(progress.get("total") or 1))
            percent = 100 * min(int(progress.get("done") or 0), total) / total
            stage = progress.get("stage") or current.get("status", "")
            if current.get("status") == "queued":
                stage = "queued"
            bar = state["bar"]
            if bar is not None:
                bar.n = percent
                bar.set_postfix_str(stage, refresh=False)
                bar.refresh()
                return
            now = time.monotonic()
            if stage != state["stage"] or now - state["said"] >= HEARTBEAT_S:
                state["stage"], state["said"] = stage, now
                elapsed = _clock(now - state["start"])
                self.write(f"progress {job.source}: {percent:3.0f}% {stage} [{elapsed}]")

    def end(self, job: Job) -> None:
        with self._lock:
            state = self._active.pop(job, None)
            if state and state["bar"] is not None:
                state["bar"].close()
                self._free.append(state["row"])

    def _tick(self) -> None:
        """Refresh each bar so that its elapsed time moves before any progress comes."""
        while not self._stop.wait(TICK_S):
            with self._lock:
                for state in self._active.values():
                    if state["bar"] is not None:
                        state["bar"].refresh()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for state in self._active.values():
                if state["bar"] is not None:
                    state["bar"].close()
            self._active.clear()
