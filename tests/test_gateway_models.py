"""Several models per task (CONTRACT section 7): one predictor process per task serving all its
models (`--models`, each under its OIP name), a gateway told MODELS_<TASK>, the model chosen per
request with `model` (and per step on /pipeline), /health and /openapi.json listing them."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests import servers
from tests.gateway_process import decoded, encoded, start_gateway

UPSCALE = ["x4plus", "span-x2", "compact-x4"]
RESTORE = ["denoise", "compact-x1", "scunet", "wrong"]  # wrong: an upscaler, refused at load


def lay_out(weights, root):
    """WEIGHTS_DIR/<task>/<name>/ as make run lays it out (links to the generated files)."""
    for task, names in (("upscale", UPSCALE), ("restore", RESTORE)):
        for name in names:
            if name == "wrong":
                source = weights.other_model_dir("upscale", "compact-x4")
            elif name in ("x4plus", "denoise"):
                source = weights.model_dir(task, name)
            else:
                source = weights.other_model_dir(task, name)
            (root / task).mkdir(parents=True, exist_ok=True)
            (root / task / name).symlink_to(source, target_is_directory=True)
    return root


def wait_models_ready(predictor, names, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predictor.process.poll() is not None:
            raise RuntimeError(predictor.log()[-3000:])
        ready = [
            httpx.get(f"http://{predictor.http}/v2/models/{n}/ready", timeout=5).status_code == 200
            for n in names
        ]
        if all(ready):
            return
        time.sleep(0.3)
    raise TimeoutError(predictor.log()[-3000:])


@pytest.fixture(scope="module")
def predictors(weights, tmp_path_factory):
    root = lay_out(weights, tmp_path_factory.mktemp("weights"))
    tmp = tmp_path_factory.mktemp("models-predictors")
    started = {}
    try:
        for task, names in (("upscale", UPSCALE), ("restore", RESTORE)):
            started[task] = servers.start_predictor(
                task, root / task, tmp, names[0], args=["--models", ",".join(names)]
            )
        for task, names in (("upscale", UPSCALE), ("restore", RESTORE[:3])):
            started[task].wait(ready=False)
            oip = [task] + [f"{task}-{n}" for n in names[1:]]
            wait_models_ready(started[task], oip)
        yield started
    finally:
        for predictor in started.values():
            predictor.stop()


@pytest.fixture(scope="module")
def gateway(predictors, tmp_path_factory):
    gw = start_gateway(
        {task: p.grpc for task, p in predictors.items()},
        tmp_path_factory.mktemp("models-gateway"),
        env={"MODELS_UPSCALE": ",".join(UPSCALE), "MODELS_RESTORE": ",".join(RESTORE)},
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=600) as c:
        yield c


@pytest.fixture(scope="module")
def photo(astronaut):
    from PIL import Image

    return np.asarray(Image.fromarray(astronaut).resize((48, 40)))


def post(client, route, photo, **params):
    return client.post(route, params=params, files={"file": ("p.png", encoded(photo))})


def test_health_lists_every_model_with_its_state_architecture_and_scale(client, predictors):
    health = client.get("/health").json()["models"]
    upscale = health["upscale"]
    assert upscale["ready"] and upscale["variant"] == "x4plus"  # the shape /health always had
    listed = {m["name"]: m for m in upscale["models"]}
    assert list(listed) == UPSCALE
    assert [listed[n]["architecture"] for n in UPSCALE] == ["ESRGAN", "SPAN", "Compact"]
    assert [listed[n]["scale"] for n in UPSCALE] == [4, 2, 4]
    assert all(m["state"] == "ready" for m in upscale["models"])
    assert listed["x4plus"]["default"] and listed["x4plus"]["about"]["licence"] == "BSD-3-Clause"
    assert listed["span-x2"]["oip_name"] == "upscale-span-x2"
    assert "licence applies" in listed["span-x2"]["about"]["licence"]
    restore = {m["name"]: m for m in health["restore"]["models"]}
    assert restore["scunet"]["architecture"] == "SCUNet" and restore["scunet"]["ready"]
    wrong = restore["wrong"]
    assert not wrong["ready"] and wrong["state"] == "starting"
    assert "failed to load" in wrong["detail"]
    # the predictor says why, in its log
    why = "restore-wrong is not ready: compact_x4.pth does not fit: restore serves an image"
    assert why in predictors["restore"].log()


def test_the_model_is_chosen_per_request(client, photo):
    default = post(client, "/upscale", photo, scale=2)
    span = post(client, "/upscale", photo, scale=2, model="span-x2")
    compact = post(client, "/upscale", photo, scale=3, model="compact-x4")
    assert default.status_code == span.status_code == compact.status_code == 200, span.text
    assert default.headers["X-Steps"] == "upscale x2"
    assert span.headers["X-Steps"] == "upscale x2 (span-x2)"
    assert compact.headers["X-Steps"] == "upscale x3 (compact-x4)"
    assert decoded(compact.content).size == (48 * 3, 40 * 3)
    assert decoded(span.content).size == (96, 80)
    assert default.content != span.content
    for name in ("compact-x1", "scunet"):
        answer = post(client, "/restore", photo, model=name)
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Steps"] == f"restore ({name})"
        assert decoded(answer.content).size == (48, 40)


def test_an_unknown_model_is_a_422_naming_the_served_ones(client, photo):
    answer = post(client, "/upscale", photo, model="x8-nope")
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]  # FastAPI's validation shape
    assert error["loc"] == ["query", "model"]
    assert "it serves x4plus, span-x2, compact-x4" in error["msg"]
    answer = post(client, "/pipeline", photo, restore_model="nope")
    assert answer.status_code == 422 and "denoise, compact-x1" in str(answer.json()["detail"])
    job = client.post(
        "/upscale",
        params={"model": "nope"},
        files={"file": ("p.png", encoded(photo))},
        headers={"Prefer": "respond-async"},
    )
    assert job.status_code == 422  # no job made


def test_a_model_that_is_not_ready_is_a_503(client, photo):
    answer = post(client, "/restore", photo, model="wrong")
    assert answer.status_code == 503
    assert "Retry-After" in answer.headers


def test_the_pipeline_takes_a_model_per_step(client, photo):
    answer = post(
        client,
        "/pipeline",
        photo,
        colorize="false",
        face_restore="false",
        width=96,
        height=80,
        restore_model="compact-x1",
        upscale_model="span-x2",
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Steps"] == "restore (compact-x1),upscale x2 (span-x2)"


def test_openapi_lists_the_models_of_each_route(client):
    spec = client.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/upscale"]["post"]["parameters"]}
    assert params["model"]["schema"]["enum"] == UPSCALE
    pipeline = {p["name"]: p for p in spec["paths"]["/pipeline"]["post"]["parameters"]}
    assert pipeline["restore_model"]["schema"]["enum"] == RESTORE


def test_each_model_is_its_own_oip_model_at_the_predictor(predictors):
    http = predictors["upscale"].http
    for name in ("upscale", "upscale-span-x2", "upscale-compact-x4"):
        assert httpx.get(f"http://{http}/v2/models/{name}/ready").status_code == 200
    meta = httpx.get(f"http://{http}/v2/models/upscale-span-x2").json()
    assert meta["versions"] == ["span-x2:SPAN:x2"]


def test_the_cli_chooses_a_model_and_health_lists_them(gateway, photo, tmp_path, capsys):
    from client import cli

    source, result = tmp_path / "p.png", tmp_path / "out.png"
    source.write_bytes(encoded(photo))
    argv = ["upscale", str(source), "--model", "span-x2", "--scale", "2", "-o", str(result)]
    assert cli.main([*argv, "--server", gateway.url]) == 0
    assert decoded(result.read_bytes()).size == (96, 80)
    cli.main(["health", "--server", gateway.url])
    listed = capsys.readouterr().out
    assert "--model span-x2: ready (SPAN, x2)" in listed
    assert "--model x4plus: ready (ESRGAN, x4, default)  [BSD-3-Clause]" in listed


def test_the_page_offers_a_model_select_where_a_task_has_several(gateway, photo, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tests.test_page_browser import CHROMIUM, CHROMIUM_ARGS

    source = tmp_path / "p.png"
    source.write_bytes(encoded(photo))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(gateway.url + "/")
            expect(page.locator("#task option")).to_have_count(5)
            page.select_option("#task", "upscale")
            options = page.locator("#p-model option")
            expect(options).to_have_count(len(UPSCALE))
            assert options.all_inner_texts() == UPSCALE
            assert page.input_value("#p-model") == "x4plus"  # the default, preselected
            expect(page.locator("#task-about")).to_contain_text("BSD-3-Clause")
            page.select_option("#p-model", "span-x2")
            # the chosen model's description and licence note (/health's models)
            expect(page.locator("#task-about")).to_contain_text("SPAN")
            expect(page.locator("#task-about")).to_contain_text("licence applies")
            page.fill("#p-scale", "2")
            page.set_input_files("#file", str(source))
            page.click("#run")
            expect(page.locator("[data-fact=Steps]")).to_have_text(
                "upscale x2 (span-x2)", timeout=60_000
            )
            page.select_option("#task", "pipeline")
            expect(page.locator("#p-restore_model option")).to_have_count(len(RESTORE))
            expect(page.locator("#p-colorize_model")).to_have_count(0)  # one model: no select
        finally:
            browser.close()
