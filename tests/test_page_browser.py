"""The web page at `/` in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright through its executable path) against the real gateway and a real restore predictor.

Every test fails on a console error or an uncaught exception in the page. The only console lines
allowed are Chromium's own "Failed to load resource" lines for the error statuses a test provokes
on purpose (Chromium logs every non-2xx fetch that way; the page cannot prevent it).
Screenshots at desktop and phone width go to bench/results/page/ (or $PAGE_SCREENSHOTS).
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from tests.gateway_process import encoded, start_gateway
from tests.restore_gateway import restore_gateway
from tests.servers import ROOT, free_port
from tests.slow_predictor import start_tiled_slow_predictor

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

    page.select_option("#zoom", "1")  # actual size: one image pixel is one CSS pixel
    assert page.eval_on_selector("#compare", "c => c.getBoundingClientRect().width") == 128
    page.select_option("#zoom", "4")  # to judge an upscale: 400%, drawn as sharp squares
    assert page.eval_on_selector("#compare", "c => c.getBoundingClientRect().width") == 4 * 128
    assert page.eval_on_selector("#after", "i => getComputedStyle(i).imageRendering") == (
        "pixelated"
    )
    page.select_option("#zoom", "fit")
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


def test_the_picker_takes_only_images_and_a_text_file_is_refused_at_once(page):
    accept = page.get_attribute("#file", "accept").split(",")
    assert {"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff"} <= set(accept)
    assert all(a.startswith(("image/", ".")) and a != "image/*" for a in accept)
    page.set_input_files(
        "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}]
    )
    message = page.locator("#message")  # at once, before Run: nothing is sent
    expect(message).to_contain_text("notes.txt is not a photo this server accepts (text/plain)")
    expect(message).to_contain_text("Choose a JPEG, PNG, WebP, BMP or TIFF photo")
    expect(page.locator("#preview")).to_be_hidden()
    page.click("#run")
    expect(message).to_contain_text("Choose a photo first")


def test_a_file_named_as_an_image_that_is_not_one_is_refused_by_the_server(page):
    page.console.expect_status(415)
    page.set_input_files(
        "#file", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not a photo"}]
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
    expect(message).to_contain_text("over the limit of 0.015625 MB")
    expect(message).not_to_contain_text("MAX_UPLOAD_MB")  # the operator's setting: not for people
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
        if param["name"] == "model" and len(schema["enum"]) == 1:
            expect(field).to_have_count(0)  # one model: nothing to choose (test_gateway_models)
            continue
        expect(field).to_have_value(str(schema["default"]))
        if "maximum" in schema:
            expect(field).to_have_attribute("max", str(schema["maximum"]))
        expect(page.locator(f"#p-{param['name']}-help")).to_contain_text(param["description"])


def test_not_ready_model_is_marked_and_503_counts_down(page, photo):
    page.console.expect_status(503)
    expect(page.locator("#health li[data-model]")).to_have_count(4)
    face = page.locator("#health li[data-model='face-restore']")
    expect(face).to_have_class("not-ready")
    expect(face).to_contain_text("face-restore starting…")  # never ready since the gateway began
    expect(page.locator("#health li[data-model=restore]")).to_have_class("ready")
    expect(page.locator("#task option[value='face-restore']")).to_contain_text("(not ready)")
    page.select_option("#task", "pipeline")  # needs the models of the steps switched on
    note = page.locator("#task-note")
    expect(note).to_contain_text("face-restore (starting…)")
    expect(page.locator("#p-colorize")).to_have_value("auto")  # auto/true/false: a select
    page.select_option("#p-colorize", "false")
    for step in ("upscale", "face_restore"):
        page.uncheck(f"#p-{step}")
    expect(note).to_have_text("")
    page.select_option("#task", "face-restore")
    expect(note).to_contain_text("Not ready yet: face-restore (starting…)")

    page.set_input_files("#file", str(photo))
    page.click("#run")
    message = page.locator("#message")
    expect(message).to_contain_text("the face-restore model is not available", timeout=30_000)
    expect(message).to_contain_text("its server cannot be reached")
    expect(message).to_contain_text(re.compile(r"Try again in \d+ s"))
    shown = page.inner_text("body")  # no internal address nor gRPC status anywhere on the page
    assert "127.0.0.1" not in shown and "UNAVAILABLE" not in shown, shown
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
    expect(message).not_to_contain_text("PREDICTOR_COLORIZE")
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
    examples = page.eval_on_selector_all("[data-example]", "bs => bs.length")
    for _ in range(3 + examples):
        page.keyboard.press("Tab")
        seen.append(
            page.evaluate(
                """(() => { const el = document.activeElement, style = getComputedStyle(el);
                    return [el.id || el.tagName, style.outlineStyle, style.outlineWidth]; })()"""
            )
        )
    # The API docs link, the picker, the examples' credits and the examples, then the task.
    assert [s[0] for s in seen] == ["A", "file", "A", *["BUTTON"] * examples]
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "task"
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


# ---- what a newcomer expects of the page (issue 16) -----------------------------------------

EXAMPLES = ROOT / "transformer" / "static" / "examples"
EXAMPLE_LIMIT = 60 * 1024


def run_restore(page: Page, photo: Path | None = None, output_format: str = "png") -> None:
    if photo is not None:
        page.set_input_files("#file", str(photo))
    page.select_option("#task", "restore")
    page.fill("#p-tile_size", "0")
    page.select_option("#p-output_format", output_format)
    page.click("#run")
    expect(page.locator("#result")).to_be_visible(timeout=60_000)
    expect(page.locator("#progress-box")).to_be_hidden(timeout=60_000)


def dimmed(page: Page) -> bool:
    return page.eval_on_selector(
        "#viewport", "v => Number(getComputedStyle(v).opacity) < 0.5"
    ) and "stale" in (page.get_attribute("#result", "class") or "")


def test_the_previous_result_is_dimmed_after_a_failure_at_phone_width(page, photo, tmp_path):
    """(While a new run goes on, and after a cancel: tests/test_page_jobs_browser.py.)"""
    page.console.expect_status(422)
    page.set_viewport_size(PHONE)
    run_restore(page, photo)
    assert not dimmed(page)
    stale = page.locator("#stale")
    expect(stale).to_be_hidden()

    page.fill("#p-tile_size", "64")  # under the floor: 422
    page.click("#run")
    expect(page.locator("#p-tile_size-error")).to_be_visible()
    expect(stale).to_have_text("Previous result: the last run failed.")
    assert dimmed(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=tmp_path / "stale-failed-phone.png", full_page=True)

    page.fill("#p-tile_size", "0")  # a run that succeeds shows its result undimmed
    page.click("#run")
    expect(stale).to_be_hidden(timeout=60_000)
    assert not dimmed(page)


def test_tile_hints_state_the_gateways_rule_and_no_setting_names(page, gateway):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    (tile,) = [
        p for p in spec["paths"]["/restore"]["post"]["parameters"] if p["name"] == "tile_size"
    ]
    floor = next(c["minimum"] for c in tile["schema"]["anyOf"] if "minimum" in c)
    page.select_option("#task", "restore")
    help_text = page.locator("#p-tile_size-help")
    expect(help_text).to_contain_text(f"0 = whole image at once, else at least {floor}.")
    expect(help_text).not_to_contain_text("\u2265 0")
    for task in ("restore", "upscale", "pipeline", "face-restore"):
        page.select_option("#task", task)
        shown = page.inner_text("body")
        assert not re.search(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", shown), (task, shown)


def test_pipeline_controls_follow_the_order_the_steps_run(page):
    from transformer import tasks

    options = tasks.PipelineOptions(
        colorize=True, restore=True, upscale=True, face_restore=True, width=1000, height=900,
        render_factor=32, restore_tile_size=0, fidelity=0.5, upscale_tile_size=0,
    )  # fmt: skip
    order = [step.name for step in tasks.plan_pipeline(300, 200, options)]
    assert order == ["colorize", "restore", "upscale", "resize", "face-restore"]
    control = {"resize": "width", "face-restore": "face_restore"}
    page.select_option("#task", "pipeline")
    shown = page.eval_on_selector_all(
        "#params [data-param]", "xs => xs.map((x) => x.dataset.param)"
    )
    positions = [shown.index(control.get(name, name)) for name in order]
    assert positions == sorted(positions), shown
    # Each step's own options come right after it, and are off while it is.
    assert shown.index("fidelity") == shown.index("face_restore") + 1
    expect(page.locator("#p-fidelity-help")).to_contain_text("0 = best quality, 1 = closest")
    page.uncheck("#p-face_restore")
    expect(page.locator("#p-fidelity")).to_be_disabled()
    page.check("#p-face_restore")
    expect(page.locator("#p-fidelity")).to_be_enabled()


def test_actual_size_is_one_image_pixel_per_css_pixel_on_a_dpr_3_phone(browser_context, gateway):
    page = browser_context.new_page()
    console = Console(page)
    cdp = browser_context.new_cdp_session(page)
    cdp.send(
        "Emulation.setDeviceMetricsOverride",
        {**PHONE, "deviceScaleFactor": 3, "mobile": True},
    )
    try:
        page.goto(gateway.url + "/")
        assert page.evaluate("window.devicePixelRatio") == 3
        page.click("[data-example='chelsea-small.jpg']")  # 180x120, under this server's 16 KB
        expect(page.locator("#preview-info")).to_contain_text("180\u00d7120 px")
        run_restore(page)
        page.select_option("#zoom", "1")
        box = page.locator("#after").bounding_box()
        assert (box["width"], box["height"]) == (180, 120)  # not 60x40
        # The Before/After labels are above the image, not over it.
        for label in page.locator("#tags span").all():
            tag = label.bounding_box()
            assert tag["y"] + tag["height"] <= box["y"], (tag, box)
        page.select_option("#zoom", "4")
        assert page.locator("#after").bounding_box()["width"] == 720  # scrolls in its frame
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.select_option("#zoom", "1")
        page.locator("#result").scroll_into_view_if_needed()
        # As the emulated phone shows it (Playwright's own screenshot resets the emulation).
        shot = cdp.send("Page.captureScreenshot", {"format": "png"})["data"]
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "page-phone-dpr3.png").write_bytes(base64.b64decode(shot))
    finally:
        page.close()
    assert console.errors == []


def test_the_task_select_is_not_cut_off_at_phone_width(page):
    page.set_viewport_size(PHONE)
    select = page.locator("#task")
    box, form = select.bounding_box(), page.locator("#form").bounding_box()
    assert box["x"] >= form["x"] and box["x"] + box["width"] <= form["x"] + form["width"]
    # Every option's label fits in the select's own width (its arrow takes about 24 px).
    widest = page.eval_on_selector(
        "#task",
        """s => { const c = document.createElement("canvas").getContext("2d");
            c.font = getComputedStyle(s).font;
            return Math.max(...[...s.options].map((o) => c.measureText(o.text).width)); }""",
    )
    assert widest <= box["width"] - 40, (widest, box["width"])


def test_example_photos_are_small_credited_and_one_click(page, gateway):
    files = sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    buttons = page.eval_on_selector_all("[data-example]", "bs => bs.map((b) => b.dataset.example)")
    assert sorted(buttons) == files and len(files) >= 3
    credits = (EXAMPLES / "CREDITS.md").read_text()
    for name in files:
        assert (EXAMPLES / name).stat().st_size <= EXAMPLE_LIMIT, name
        assert name in credits
        assert httpx.get(f"{gateway.url}/ui/examples/{name}").headers["content-type"] == (
            "image/jpeg"
        )
    assert httpx.get(f"{gateway.url}/ui/examples/CREDITS.md").status_code == 200

    page.click("[data-example='astronaut.jpg']")  # a face: the face task is chosen with it
    expect(page.locator("#preview-info")).to_contain_text("astronaut.jpg \u00b7 320\u00d7320 px")
    expect(page.locator("#task")).to_have_value("face-restore")
    page.click("[data-example='camera.jpg']")  # colorize is not offered here: the task stays
    expect(page.locator("#preview-info")).to_contain_text("camera.jpg \u00b7 320\u00d7320 px")
    expect(page.locator("#task")).to_have_value("face-restore")
    page.click("[data-example='chelsea-small.jpg']")
    expect(page.locator("#task")).to_have_value("upscale")
    run_restore(page)
    expect(page.locator("[data-fact=Size]")).to_contain_text("180\u00d7120 px")


def test_copy_as_curl_gives_a_command_that_answers_the_image(
    browser_context, page, gateway, photo, tmp_path
):
    browser_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway.url)
    named = tmp_path / "my photo's copy.jpg"  # a space and a quote: the shell quoting is real
    named.write_bytes(photo.read_bytes())
    page.set_input_files("#file", str(named))
    page.select_option("#task", "restore")
    page.fill("#p-tile_size", "0")
    page.select_option("#p-output_format", "jpg")
    page.click("#copy-curl")
    shown = page.locator("#curl")
    expect(shown).to_contain_text(f"curl -sS -X POST '{gateway.url}/restore?tile_size=0")
    expect(page.locator("#curl-status")).to_contain_text("Copied")
    command = page.evaluate("navigator.clipboard.readText()")
    assert command == shown.inner_text()
    run = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    (out,) = [p for p in tmp_path.iterdir() if p != named]
    assert out.name == "my_photo_s_copy_restore.jpg"
    with Image.open(out) as answer:
        assert answer.format == "JPEG" and answer.size == (128, 96)


def test_each_model_says_what_it_does_and_its_licence(page, gateway):
    models = httpx.get(f"{gateway.url}/health").json()["models"]
    face = page.locator("#health li[data-model='face-restore'] .model-licence")
    expect(face).to_contain_text("CodeFormer \u00b7 NTU S-Lab License 1.0: non-commercial use only")
    expect(face).to_have_class(re.compile(r"\bnon-commercial\b"))
    expect(page.locator("#health li[data-model=restore] .model-licence")).not_to_have_class(
        re.compile(r"\bnon-commercial\b")
    )
    page.select_option("#task", "face-restore")
    about = page.locator("#task-about [data-about='face-restore']")
    expect(about).to_contain_text(models["face-restore"]["about"]["description"])
    expect(about.locator(".licence")).to_have_class(re.compile(r"\bnon-commercial\b"))
    page.select_option("#task", "pipeline")  # every model of the steps switched on
    expect(page.locator("#task-about [data-about]")).to_have_count(4)
    page.uncheck("#p-face_restore")
    expect(page.locator("#task-about [data-about]")).to_have_count(3)


def test_use_this_result_as_the_input_chains_tasks_by_hand(page, photo):
    run_restore(page, photo, "jpg")  # a JPEG: under this server's 16 KB upload limit
    page.click("#reuse")
    expect(page.locator("#preview-info")).to_contain_text(
        "portrait_restore.jpg \u00b7 128\u00d796 px"
    )
    expect(page.locator("#task")).to_be_focused()
    run_restore(page)
    expect(page.locator("#download")).to_have_attribute("download", "portrait_restore_restore.png")
    expect(page.locator("[data-fact=Steps]")).to_have_text("restore")


def test_a_starting_model_reads_starting_and_turns_green_soon_after_it_is_ready(
    browser_context, tmp_path
):
    http_port, grpc_port = free_port(), free_port()
    gw = start_gateway({"upscale": f"127.0.0.1:{grpc_port}"}, tmp_path)  # nothing there yet
    page = browser_context.new_page()
    console = Console(page)
    reads: list[float] = []
    page.on("request", lambda r: r.url.endswith("/health") and reads.append(time.monotonic()))
    process = None
    try:
        page.goto(gw.url + "/")
        upscale = page.locator("#health li[data-model=upscale]")
        expect(upscale).to_contain_text("upscale starting\u2026")
        expect(upscale).to_have_class("not-ready")
        shown = page.inner_text("#health")
        assert "127.0.0.1" not in shown and "UNAVAILABLE" not in shown, shown
        deadline = time.monotonic() + 30
        while len(reads) < 3 and time.monotonic() < deadline:
            page.wait_for_timeout(200)  # Playwright's events arrive while it waits
        gaps = [b - a for a, b in itertools.pairwise(reads)][:2]
        assert len(gaps) == 2 and max(gaps) < 10, gaps  # read again every ~2 s meanwhile
        # The page notes the wall-clock time it turns green (it runs on while Python waits).
        page.evaluate(
            """() => new MutationObserver((_, observer) => {
                if (document.querySelector("#health li[data-model=upscale].ready")) {
                    window.greenAt = Date.now();
                    observer.disconnect();
                }
            }).observe(document.getElementById("health"), {subtree: true, childList: true})"""
        )
        process, _ = start_tiled_slow_predictor(tmp_path / "late.log", ports=(http_port, grpc_port))
        ready_at = time.time()  # its own /v2/health/ready said so (polled every 0.2 s)
        expect(upscale).to_have_class("ready", timeout=15_000)
        took = page.evaluate("window.greenAt") / 1000 - ready_at
        print(f"green {took:.1f} s after the predictor was ready")
        assert took < 10  # read every 2 s while starting (it was every 30 s)
        calm = len(reads)
        page.wait_for_timeout(5_000)  # all ready: read rarely again
        assert len(reads) <= calm + 1
    finally:
        page.close()
        if process is not None:
            process.kill()
            process.wait()
        gw.stop()
    assert console.errors == []


def test_screenshots_of_the_page_for_the_docs(page, photo):
    """The page with a result, at desktop and phone width (docs/page-*.png are made from these)."""
    page.set_input_files("#file", str(photo))
    run_restore(page)
    expect(page.locator("#health li[data-model]")).to_have_count(4)
    page.select_option("#task", "face-restore")  # shows a non-commercial licence note
    expect(page.locator("#task-about .non-commercial")).to_be_visible()
    page.click("#copy-curl")
    expect(page.locator("#curl")).to_contain_text("/face-restore?fidelity=0.5")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "page16-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=SHOTS / "page16-phone.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
