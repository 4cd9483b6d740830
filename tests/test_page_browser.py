"""The web page at `/` in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright through its executable path) against the real gateway and a real restore predictor.

Every test fails on a console error or an uncaught exception in the page. The only console lines
allowed are Chromium's own "Failed to load resource" lines for the error statuses a test provokes
on purpose (Chromium logs every non-2xx fetch that way; the page cannot prevent it).
Screenshots at desktop and phone width go to bench/results/page/ (or $PAGE_SCREENSHOTS).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from tests.gateway_process import encoded
from tests.restore_gateway import restore_gateway
from tests.servers import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")  # make browser installs it
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
UPLOAD_MB = "0.015625"
SHOTS = Path(os.environ.get("PAGE_SCREENSHOTS", ROOT / "bench" / "results" / "page"))


@pytest.fixture(scope="module")
def gateway(weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    # Uploads up to 16 KB: the test photo fits, a noisy 96 px PNG does not.
    with restore_gateway(
        weights, tmp, hanging_upscale=True, env={"MAX_UPLOAD_MB": UPLOAD_MB}
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def browser_context():
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: `make browser` installs it"
    profile = tempfile.mkdtemp(prefix="page-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=DESKTOP,
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


class Console:
    """Console errors and uncaught exceptions of one page; `expect_status` allows the browser's
    own log line for a non-2xx answer the test provokes."""

    def __init__(self, page: Page):
        self.errors: list[str] = []
        self.allowed: set[int] = set()
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message) -> None:
        if message.type not in ("error", "warning"):
            return
        status = re.search(r"Failed to load resource: .* status of (\d{3})", message.text)
        if status and int(status.group(1)) in self.allowed:
            return
        self.errors.append(f"{message.type}: {message.text}")

    def expect_status(self, status: int) -> None:
        self.allowed.add(status)


@pytest.fixture
def page(browser_context, gateway):
    page = browser_context.new_page()
    console = Console(page)
    page.console = console
    page.goto(gateway.url + "/")
    expect(page.locator("#task option")).to_have_count(5)
    yield page
    page.close()
    assert console.errors == []


@pytest.fixture(scope="module")
def photo(astronaut, tmp_path_factory) -> Path:
    """The astronaut's head and shoulders as a 128x96 JPEG file."""
    path = tmp_path_factory.mktemp("photos") / "portrait.jpg"
    crop = Image.fromarray(astronaut[10:310, 80:480]).resize((128, 96), Image.Resampling.LANCZOS)
    path.write_bytes(encoded(np.asarray(crop), "JPEG", quality=90))
    return path


def run_task(page: Page, task: str) -> None:
    page.select_option("#task", task)
    page.click("#run")


def test_restore_result_slider_and_download_equal_to_the_rest_answer(page, gateway, photo):
    page.set_input_files("#file", str(photo))
    expect(page.locator("#preview-info")).to_contain_text("128\u00d796")
    run_task(page, "restore")
    expect(page.locator("#result")).to_be_visible(timeout=60_000)
    expect(page.locator("[data-fact=Steps]")).to_have_text("restore")
    expect(page.locator("[data-fact='Server timing']")).to_contain_text("predictor")
    expect(page.locator("[data-fact=Size]")).to_contain_text("128\u00d796 px")
    assert page.eval_on_selector("#after", "img => img.naturalWidth") == 128

    # The slider moves the split between before and after, with the keyboard too.
    split = page.locator("#split")
    split.focus()
    page.keyboard.press("Home")
    assert page.eval_on_selector("#compare", "c => c.style.getPropertyValue('--split')") == "0%"
    page.keyboard.press("ArrowRight")
    assert page.eval_on_selector("#compare", "c => c.style.getPropertyValue('--split')") == "1%"
    page.keyboard.press("End")

    page.check("#zoom")  # actual size: the result's own pixels
    assert page.eval_on_selector("#compare", "c => c.getBoundingClientRect().width") == 128
    page.uncheck("#zoom")
    split.fill("50")

    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == "portrait_restore.png"
    rest = httpx.post(
        f"{gateway.url}/restore",
        params={"tile_size": 0, "output_format": "png"},
        files={"file": ("portrait.jpg", photo.read_bytes(), "image/jpeg")},
        timeout=120,
    )
    assert rest.status_code == 200
    assert Path(download.path()).read_bytes() == rest.content

    expect(page.locator("#health li[data-model]")).to_have_count(4)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "page-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=SHOTS / "page-phone.png", full_page=True)
    print(f"screenshots: {SHOTS}/page-desktop.png, {SHOTS}/page-phone.png")
    # At phone width nothing is wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_unsupported_file_shows_what_to_do(page):
    page.console.expect_status(415)
    page.set_input_files(
        "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}]
    )
    run_task(page, "restore")
    message = page.locator("#message")
    expect(message).to_contain_text("This file is not accepted")
    expect(message).to_contain_text("Choose a JPEG, PNG, WebP, BMP or TIFF photo")
    expect(page.locator("#result")).to_be_hidden()


def test_too_large_file_says_what_to_do(page, tmp_path):
    page.console.expect_status(413)
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    big = tmp_path / "noise.png"
    big.write_bytes(encoded(noise))
    assert big.stat().st_size > float(UPLOAD_MB) * 1024 * 1024
    page.set_input_files("#file", str(big))
    run_task(page, "restore")
    message = page.locator("#message")
    expect(message).to_contain_text("The photo is too large for this server")
    expect(message).to_contain_text("MAX_UPLOAD_MB")
    expect(message).to_contain_text("Make it smaller")


def test_out_of_range_parameter_is_shown_at_its_field(page, photo):
    page.console.expect_status(422)
    page.set_input_files("#file", str(photo))
    page.select_option("#task", "restore")
    page.fill("#p-tile_size", "-1")
    page.click("#run")
    expect(page.locator("#p-tile_size-error")).to_contain_text("greater than or equal to 0")
    expect(page.locator("#p-tile_size")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#message")).to_contain_text("Tile Size")


def test_parameters_are_built_from_openapi(page, gateway):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    page.select_option("#task", "upscale")
    for param in spec["paths"]["/upscale"]["post"]["parameters"]:
        field = page.locator(f"#p-{param['name']}")
        schema = param["schema"]
        expect(field).to_have_value(str(schema["default"]))
        if "maximum" in schema:
            expect(field).to_have_attribute("max", str(schema["maximum"]))
        expect(page.locator(f"#p-{param['name']}-help")).to_contain_text(param["description"])


def test_not_ready_model_is_marked_and_503_counts_down(page, photo):
    page.console.expect_status(503)
    expect(page.locator("#health li[data-model]")).to_have_count(4)
    face = page.locator("#health li[data-model='face-restore']")
    expect(face).to_have_class("not-ready")
    expect(face).to_contain_text("not ready: predictor at 127.0.0.1:")
    expect(page.locator("#health li[data-model=restore]")).to_have_class("ready")
    expect(page.locator("#task option[value='face-restore']")).to_contain_text("(not ready)")
    page.select_option("#task", "pipeline")  # needs the models of the steps switched on
    note = page.locator("#task-note")
    expect(note).to_contain_text("face-restore (predictor at")
    expect(page.locator("#p-colorize")).to_have_value("auto")  # auto/true/false: a select
    page.select_option("#p-colorize", "false")
    for step in ("upscale", "face_restore"):
        page.uncheck(f"#p-{step}")
    expect(note).to_have_text("")
    page.select_option("#task", "face-restore")
    expect(note).to_contain_text("Not ready: face-restore")

    page.set_input_files("#file", str(photo))
    page.click("#run")
    message = page.locator("#message")
    expect(message).to_contain_text("the face-restore model is not available", timeout=30_000)
    expect(message).to_contain_text(re.compile(r"Try again in \d+ s"))
    first = int(re.search(r"in (\d+) s", message.inner_text()).group(1))
    expect(message).to_contain_text(f"Try again in {first - 1} s", timeout=3_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "page-not-ready.png", full_page=True)


def test_task_not_offered_is_greyed_out_and_its_503_does_not_count_down(page, photo):
    page.console.expect_status(503)
    colorize = page.locator("#health li[data-model=colorize]")
    expect(colorize).to_have_class("not-offered")  # no predictor address in this gateway
    expect(colorize).to_contain_text("not offered by this server")
    option = page.locator("#task option[value=colorize]")
    expect(option).to_be_disabled()
    expect(option).to_contain_text("(not offered here)")
    expect(page.locator("#task option[value=restore]")).to_be_enabled()

    page.select_option("#task", "pipeline")
    note = page.locator("#task-note")
    expect(note).to_contain_text("This server does not offer colorize: switch that step off")
    page.select_option("#p-colorize", "true")
    page.uncheck("#p-face_restore")
    page.set_input_files("#file", str(photo))
    page.click("#run")
    message = page.locator("#message")
    expect(message).to_contain_text("this server does not offer colorize", timeout=30_000)
    # showRetry writes its countdown line together with the message: none here.
    expect(message.locator(".countdown")).to_have_count(0)
    expect(message).not_to_contain_text("Try again")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "page-not-offered.png", full_page=True)


def test_cancel_aborts_a_running_request(page, photo):
    page.set_input_files("#file", str(photo))
    run_task(page, "upscale")  # its predictor accepts the request and never answers
    expect(page.locator("#cancel")).to_be_visible()
    expect(page.locator("#elapsed")).not_to_have_text("0.0 s")
    page.keyboard.press("Escape")
    expect(page.locator("#message")).to_contain_text("Cancelled")
    expect(page.locator("#run")).to_be_enabled()
    expect(page.locator("#progress-box")).to_be_hidden()


def test_drop_and_paste_a_photo(page, photo):
    send = """([bytes, name, event]) => {
        const file = new File([new Uint8Array(bytes)], name, {type: "image/jpeg"});
        const data = new DataTransfer();
        data.items.add(file);
        const init = {bubbles: true, cancelable: true};
        if (event === "drop") {
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {...init, dataTransfer: data}));
        } else {
            document.body.dispatchEvent(
                new ClipboardEvent("paste", {...init, clipboardData: data}));
        }
    }"""
    content = list(photo.read_bytes())
    page.evaluate(send, [content, "dropped.jpg", "drop"])
    expect(page.locator("#preview-info")).to_contain_text("dropped.jpg \u00b7 128\u00d796 px")
    page.evaluate(send, [content, "pasted.jpg", "paste"])
    expect(page.locator("#preview-info")).to_contain_text("pasted.jpg \u00b7 128\u00d796 px")


def test_every_control_is_labelled_and_keyboard_focus_is_visible(page):
    page.select_option("#task", "pipeline")
    unlabelled = page.evaluate(
        """[...document.querySelectorAll("input, select, button")]
            .filter((el) => !el.hidden && !(el.labels && el.labels.length)
                    && !el.getAttribute("aria-label") && !el.textContent.trim())
            .map((el) => el.id)"""
    )
    assert unlabelled == []
    page.locator("body").focus()
    seen = []
    for _ in range(6):
        page.keyboard.press("Tab")
        seen.append(
            page.evaluate(
                """(() => { const el = document.activeElement, style = getComputedStyle(el);
                    return [el.id || el.tagName, style.outlineStyle, style.outlineWidth]; })()"""
            )
        )
    assert [s[0] for s in seen][:3] == ["A", "file", "task"]
    assert all(style != "none" and width == "3px" for _, style, width in seen), seen


# ---- API docs offline -----------------------------------------------------------------------


def offline_page(browser_context, gateway, prefix: str = ""):
    """A page whose every request off the gateway's origin is aborted (and recorded). With a
    prefix, the gateway is reached as a proxy would serve it under that path (the prefix is
    stripped before the request reaches it); a request outside the prefix is aborted too."""
    page = browser_context.new_page()
    page.console = Console(page)
    blocked: list[str] = []
    origin = gateway.url

    def handle(route) -> None:
        url = route.request.url
        if prefix and url.startswith(f"{origin}{prefix}/"):
            route.fulfill(response=route.fetch(url=origin + url[len(origin) + len(prefix) :]))
        elif not prefix and url.startswith(f"{origin}/"):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", handle)
    return page, blocked


@pytest.mark.parametrize("prefix", ["", "/photo-enhance"])
def test_swagger_ui_lists_the_operations_offline(browser_context, gateway, prefix):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    operations = sum(len(item) for item in spec["paths"].values())
    page, blocked = offline_page(browser_context, gateway, prefix)
    try:
        page.goto(f"{gateway.url}{prefix}/docs")
        expect(page.locator(".opblock")).to_have_count(operations, timeout=30_000)
        expect(page.locator(".opblock-summary-path[data-path='/upscale']")).to_be_visible()
        expect(page.locator(".info .title")).to_contain_text("photo-enhance")
        if not prefix:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SHOTS / "docs-offline.png", full_page=False)
    finally:
        page.close()
    assert blocked == []  # nothing was asked of another host, nor outside the prefix
    assert page.console.errors == []


@pytest.mark.parametrize("prefix", ["", "/photo-enhance"])
def test_redoc_renders_offline(browser_context, gateway, prefix):
    page, blocked = offline_page(browser_context, gateway, prefix)
    try:
        page.goto(f"{gateway.url}{prefix}/redoc")
        heading = page.locator("h2", has_text="Upscale a photo (Real-ESRGAN)").first
        expect(heading).to_be_visible(timeout=30_000)
        expect(page.locator("h1").first).to_contain_text("photo-enhance")
        if not prefix:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SHOTS / "redoc-offline.png", full_page=False)
    finally:
        page.close()
    assert blocked == []
    assert page.console.errors == []
