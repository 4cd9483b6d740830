"""A job whose predictor is unavailable for now waits for it, then goes on from the step it
was at: the pipeline's steps that had finished are not run again (jobs/runner.py, the answers
kept by jobs/tracker.StepReports); while it waits, its JOBS_CONCURRENCY slot serves other jobs.

Real processes: the gateway; tests/slow_predictor.py as the restore predictor; the upscale
predictor's address is a closed port until the test starts a second slow predictor there. Each
slow call logs `start ID`, so the calls that reached each predictor are counted.
"""

from __future__ import annotations

import httpx

from tests.gateway_process import encoded, start_gateway
from tests.jobs_client import accepted, slow_log, submit, wait_for, wait_until
from tests.servers import free_port
from tests.slow_predictor import start_slow_predictor

STEP_MS = 300


def test_a_pipeline_waiting_for_its_upscale_predictor_does_not_restore_again(astronaut, tmp_path):
    restore, restore_address = start_slow_predictor(tmp_path / "restore.log")
    restore_log = (None, tmp_path / "restore.log")
    upscale_port = free_port()
    upscale = None
    gateway = start_gateway(
        {"restore": restore_address, "upscale": f"127.0.0.1:{upscale_port}"},
        tmp_path,
        env={"JOBS_CONCURRENCY": "1"},
    )
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            params = dict(colorize=False, face_restore=False, width=200, height=200)
            steps = dict(restore_tile_size=STEP_MS, upscale_tile_size=STEP_MS)
            photo = encoded(astronaut[:48, :64])
            job = accepted(submit(client, "/pipeline", photo, **params, **steps))

            def stage() -> str:
                return client.get(job["urls"]["self"]).json()["progress"]["stage"]

            wait_until(lambda: "upscale model is not available" in stage(), within_s=60)
            assert slow_log(restore_log, "done") == 1
            # Waiting, it holds no slot (JOBS_CONCURRENCY=1): a job for another predictor runs.
            other = accepted(submit(client, "/restore", photo, tile_size=STEP_MS))
            assert wait_for(client, other, ("succeeded", "failed"))["status"] == "succeeded"
            assert client.get(job["urls"]["self"]).json()["status"] == "running"
            upscale, _ = start_slow_predictor(tmp_path / "upscale.log", upscale_port)
            # The gateway tries again after the predictor's Retry-After (10 s).
            done = wait_for(client, job, ("succeeded", "failed"), within_s=120)
            assert done["status"] == "succeeded", done
            assert slow_log(restore_log, "start") == 2, "the restore step ran again"
            assert slow_log((None, tmp_path / "upscale.log"), "done") == 1
            result = client.get(job["urls"]["result"])
            assert result.headers["x-steps"] == "restore,upscale x4,resize 200x150"
    finally:
        gateway.stop()
        for process in (restore, upscale):
            if process is not None:
                process.kill()
                process.wait()
