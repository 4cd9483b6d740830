"""The page's runs as jobs (CONTRACT section 6) in real headless Chromium: a moving progress bar
with its stage and the pipeline's steps, Cancel that cancels the job on the server, a reload
that comes back to the running job (its id in the URL) and shows its result, and the previous
result marked while a new run goes on.

The predictor is tests/slow_predictor.py's tiled server (restore and upscale): each call takes
its `tile_size` in ms, in TILES reported tiles, so every duration here is the predictor's own
configured time, not this machine's speed.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests import test_page_browser as base
from tests.gateway_process import start_gateway
from tests.jobs_client import slow_log, wait_until
from tests.servers import free_port
from tests.slow_predictor import start_tiled_slow_predictor
from tests.test_page_browser import DESKTOP, PHONE, Console

# The page tests' Chromium and 128x96 photo.
browser_context = base.browser_context
photo = base.photo

TILES = 10
STEP_MS = 6_000  # one pipeline step: long enough for a reload within the first one
QUICK_MS = 300
LONG_MS = 600_000  # a call that is cancelled long before it would end


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page-jobs-slow")
    process, address = start_tiled_slow_predictor(tmp / "slow.log", TILES)
    yield address, tmp / "slow.log"
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def gateway(slow, tmp_path_factory):
    stopped = f"127.0.0.1:{free_port()}"
    gw = start_gateway(
        {"restore": slow[0], "upscale": slow[0], "face-restore": stopped},
        tmp_path_factory.mktemp("page-jobs-gateway"),
    )
    yield gw
    gw.stop()


@pytest.fixture
def page(browser_context, gateway):
    page = browser_context.new_page()
    page.set_viewport_size(DESKTOP)
    console = Console(page)
    page.console = console
    page.goto(gateway.url + "/")
    expect(page.locator("#task option")).to_have_count(5)
    yield page
    page.close()
    assert console.errors == []


def job_in_url(page: Page) -> str:
    expect(page).to_have_url(re.compile(r"[?&]job=[0-9a-f]{32}"))
    return parse_qs(urlparse(page.url).query)["job"][0]


def progress_value(page: Page) -> float:
    return page.eval_on_selector("#progress", "p => p.hasAttribute('value') ? p.value : -1")


def test_a_long_pipeline_job_moves_shows_its_steps_and_a_reload_comes_back_to_it(
    page, gateway, photo, tmp_path
):
    page.set_input_files("#file", str(photo))
    page.select_option("#task", "pipeline")
    page.select_option("#p-colorize", "false")  # auto/true/false
    page.uncheck("#p-face_restore")
    for name, value in (("width", 200), ("height", 200)):
        page.fill(f"#p-{name}", str(value))
    page.fill("#p-restore_tile_size", str(STEP_MS))
    page.fill("#p-upscale_tile_size", str(STEP_MS))
    page.click("#run")

    job_id = job_in_url(page)
    stage = page.locator("#stage")
    expect(stage).to_contain_text(re.compile(r"restore: tile \d+ of 10 \(step 1 of 2\)"))
    first = progress_value(page)
    assert 0 < first < 50
    page.wait_for_function("v => document.getElementById('progress').value > v", arg=first)
    expect(page.locator("#percent")).to_have_text(re.compile(r"^\d+%$"))
    expect(page.locator("#eta")).to_contain_text(re.compile(r"about .* left"))
    expect(page.locator("#elapsed")).not_to_have_text("0.0 s")
    steps = page.locator("#steps li")
    expect(steps).to_have_count(2)
    expect(steps.nth(0)).to_have_text("restore (running)")
    page.screenshot(path=tmp_path / "job-running-desktop.png", full_page=True)

    # A reload in the first step comes back to the same job, already part-way.
    job = httpx.get(f"{gateway.url}/v1/jobs/{job_id}").json()
    assert job["status"] == "running" and "step 1 of 2" in job["progress"]["stage"]
    page.reload()
    expect(page.locator("#progress-box")).to_be_visible()
    expect(page.locator("#cancel")).to_be_visible()
    assert job_in_url(page) == job_id
    expect(stage).to_contain_text(re.compile(r"\(step [12] of 2\)"))
    assert progress_value(page) > 0  # where the job was, not from 0
    expect(stage).to_contain_text("upscale: tile", timeout=3 * STEP_MS)
    expect(steps.nth(0)).to_have_text("restore \u2713")
    expect(steps.nth(1)).to_have_text("upscale (running)")

    expect(page.locator("#result")).to_be_visible(timeout=3 * STEP_MS)
    expect(page.locator("[data-fact=Steps]")).to_have_text(
        re.compile(r"^restore,upscale x\d,resize 200x150$")
    )
    expect(page.locator("[data-fact=Size]")).to_contain_text("200\u00d7150 px")
    expect(page.locator("#progress-box")).to_be_hidden()
    expect(page).not_to_have_url(re.compile("job="))
    assert page.locator("#download").get_attribute("download").endswith("_pipeline.png")
    assert httpx.get(f"{gateway.url}/v1/jobs/{job_id}").json()["status"] == "succeeded"
    page.screenshot(path=tmp_path / "job-resumed-result-desktop.png", full_page=True)
    print(f"screenshots: {tmp_path}")


def test_cancel_cancels_the_job_and_the_previous_result_is_marked_at_phone_width(
    page, gateway, photo, slow, tmp_path
):
    page.set_viewport_size(PHONE)
    page.set_input_files("#file", str(photo))
    page.select_option("#task", "restore")
    page.fill("#p-tile_size", str(QUICK_MS))
    page.click("#run")
    expect(page.locator("#result")).to_be_visible(timeout=60_000)
    expect(page.locator("#stale")).to_be_hidden()

    started, cancelled = slow_log(slow, "start"), slow_log(slow, "cancelled")
    page.select_option("#task", "upscale")
    page.fill("#p-scale", "1")
    page.fill("#p-tile_size", str(LONG_MS))
    page.click("#run")
    job_id = job_in_url(page)
    stale = page.locator("#stale")
    expect(stale).to_be_visible()
    expect(stale).to_contain_text("Previous result")
    expect(page.locator("#result")).to_have_class(re.compile(r"\bstale\b"))
    assert base.dimmed(page)  # greyed, clearly not the current result
    expect(page.locator("#stage")).to_contain_text("upscale: started")
    wait_until(lambda: slow_log(slow, "start") > started, within_s=60)
    page.screenshot(path=tmp_path / "job-running-phone.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    page.click("#cancel")
    expect(page.locator("#message")).to_contain_text("Cancelled. The job was stopped")
    expect(page.locator("#progress-box")).to_be_hidden()
    expect(page.locator("#run")).to_be_enabled()
    assert httpx.get(f"{gateway.url}/v1/jobs/{job_id}").json()["status"] == "canceled"
    # The predictor's work stopped: its call was cancelled, not left to run for LONG_MS.
    wait_until(lambda: slow_log(slow, "cancelled") > cancelled, within_s=LONG_MS / 1000 / 20)
    expect(stale).to_have_text("Previous result: the last run was cancelled.")
    assert base.dimmed(page)  # the old result is still the old one
    expect(page).not_to_have_url(re.compile("job="))
    page.screenshot(path=tmp_path / "job-canceled-phone.png", full_page=True)
