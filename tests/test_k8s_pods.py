"""The chart's pods, run locally as rendered: the default (GPU) install and the kind install.

For each: KServe's storage initializer fills each predictor's /mnt/models from the rendered
storageUris (the official https:// URLs, hosts mapped to a local HTTPS server) or the rendered
STORAGE_URI names a claim folder (a local folder stands in for the mount); then every container
starts with its exact rendered command line and environment (tests/chart_pods.py says what is
mapped), is probed as its probes say, and serves hack/e2e_check.py's checks, the ones
hack/kind-e2e runs on a cluster. Generated weights are not the official files, so both installs
set predictor.allowUnverifiedWeights=true, and the default one serves colorize's paper_tiny (the
only DDColor the suite generates) instead of modelscope. The kind install's other model
(general-x4v3) is served by its pinned sha256 instead, the generated file's hash in place of the
official one: unverified weights stay refused there.
"""

from __future__ import annotations

import contextlib
import filecmp
import importlib.util
import io
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from archs.anymodel import model_file_in
from archs.catalogue import CATALOGUE
from archs.checkpoint import sha256_of
from common.models import MODELS_ENV
from tests import storage_initializer as si
from tests.chart_pods import ChartMismatch, LocalInstall, snapshot
from tests.gateway_process import encoded
from tests.k8s_helpers import (
    CHART,
    RELEASE,
    by_kind,
    gateway_service,
    isvc_key,
    isvc_task,
    one,
    render,
    storage_uris,
)
from tests.servers import ROOT
from transformer.config import model_address_env

_spec = importlib.util.spec_from_file_location("e2e_check", ROOT / "hack" / "e2e_check.py")
e2e_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e_check)

PRESETS = {
    "default": ["--set", "models.colorize.variant=paper_tiny"],
    "kind": [],
}
# Face restoration costs ~30 CPU seconds a call here (CodeFormer and ParseNet at 512 px), so
# each install makes one: default, one route per task (face-restore's three files come through
# storageUris there); kind, every route hack/kind-e2e calls but /face-restore, which its
# /pipeline runs.
ALL_ROUTES = tuple(dict.fromkeys(route.split("?")[0] for route, *_ in e2e_check.POST_ROUTES))
ROUTES = {
    "default": ("/colorize", "/restore", "/face-restore", "/upscale"),
    "kind": tuple(r for r in ALL_ROUTES if r != "/face-restore"),
}
UNVERIFIED = ["--set", "predictor.allowUnverifiedWeights=true"]
# Environment variables read by libraries or by KServe, not by our code.
LIBRARY_ENV = {"HOME", "TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME", "STORAGE_URI"}
LIBRARY_ENV |= {"OMP_NUM_THREADS", "OMP_WAIT_POLICY"}  # OpenMP's, under torch


def pinned_to_generated(weights) -> list[str]:
    """values-kind.yaml's other models (models.<task>.others) with the generated file's sha256
    pinned in place of the official file's, and unverified weights refused: served only through
    the pin the chart passes (the generated folder has no <file>.sha256 beside it)."""
    values = yaml.safe_load((CHART / "values-kind.yaml").read_text())
    args = []
    for task, model in values["models"].items():
        others = model.get("others") or []
        for entry in others:
            path = model_file_in(task, weights.other_model_dir(task, entry["name"]))
            entry |= {"sha256": sha256_of(path), "allowUnverifiedWeights": False}
        if others:
            args += ["--set-json", f"models.{task}.others={json.dumps(others)}"]
    return args


def variant_of(isvc: dict) -> str:
    """The --variant its predictor runs with (the model's name for another model)."""
    args = isvc["spec"]["predictor"]["containers"][0]["args"]
    (variant,) = [a.split("=", 1)[1] for a in args if a.startswith("--variant=")]
    return variant


def init_containers(isvcs, weights, tmp: Path, stack: contextlib.ExitStack) -> dict[str, Path]:
    """Each predictor's /mnt/models, filled as KServe fills it; OIP name (isvc_key) -> folder."""
    folders, downloads = {}, []
    for isvc in isvcs:
        task, variant, key = isvc_task(isvc), variant_of(isvc), isvc_key(isvc)
        uris = storage_uris(isvc)
        if (task, variant) in CATALOGUE or uris[0].startswith("pvc://"):
            weights.folder_of(task, variant)  # generated on first use
        if uris[0].startswith("pvc://"):
            # STORAGE_URI pvc://<claim>/<path>: KServe mounts that folder of the claim; the
            # generated weights are laid out like the claim hack/stage-weights fills.
            _claim, _, path = uris[0].removeprefix("pvc://").partition("/")
            folders[key] = weights.weights_dir() / path
        else:
            folders[key] = tmp / key / "mnt" / "models"
            downloads.append((key, task, variant, uris))
    if downloads:
        # A mirror of the official URLs: its paths come from archs.catalogue, the URIs from
        # the chart; any disagreement is a 404. Another model's file is served at its URI's path.
        files = {}
        for _key, task, variant, uris in downloads:
            if (task, variant) in CATALOGUE:
                for f in CATALOGUE[(task, variant)]:
                    files[urlsplit(f.url).path] = weights.model_dir(task, variant) / f.filename
            else:
                for uri in uris:
                    path = urlsplit(uri).path
                    files[path] = weights.other_model_dir(task, variant) / Path(path).name
        server = stack.enter_context(si.file_server(files, tmp))
        env = {"REQUESTS_CA_BUNDLE": str(server.ca_file)}

        def initializer(job):
            key, _task, _variant, uris = job
            pairs = [(si.on_host(u, server.base), folders[key]) for u in uris]
            return key, si.run(pairs, env, cwd=tmp)

        with ThreadPoolExecutor(len(downloads)) as pool:
            for key, result in pool.map(initializer, downloads):
                assert result.returncode == 0, f"{key}: {result.stderr[-3000:]}"
    return folders


@pytest.fixture(scope="module", params=sorted(PRESETS))
def install(request, weights, tmp_path_factory):
    preset = request.param
    pins = pinned_to_generated(weights) if preset == "kind" else []
    objs = render(preset, *PRESETS[preset], *UNVERIFIED, *pins)
    tmp = tmp_path_factory.mktemp(f"pods-{preset}")
    with contextlib.ExitStack() as stack:
        isvcs = by_kind(objs, "InferenceService")
        folders = init_containers(isvcs, weights, tmp, stack)
        local = LocalInstall(objs, folders, tmp / "pods")
        stack.callback(local.stop)
        facexlib = Path(importlib.util.find_spec("facexlib").origin).parent
        watched = (ROOT, facexlib, *folders.values())
        local.before = snapshot(*watched)
        local.watched = watched
        local.preset, local.isvcs = preset, isvcs
        local.start()
        yield local


def test_mnt_models_holds_the_official_file_names(install, weights):
    for isvc in install.isvcs:
        task, variant = isvc_task(isvc), variant_of(isvc)
        folder = install.model_dirs[isvc_key(isvc)]
        if (task, variant) not in CATALOGUE:
            continue  # another model: test_kind_serves_general_x4v3_at_x4_by_its_pin loads it
        names = sorted(f.filename for f in CATALOGUE[(task, variant)])
        assert sorted(p.name for p in folder.iterdir() if p.suffix == ".pth") == names
        for name in names:
            assert filecmp.cmp(folder / name, weights.model_dir(task, variant) / name, False)


def test_face_restore_gets_its_three_files_into_one_folder(install):
    folder = install.model_dirs["face-restore"]
    assert {"codeformer.pth", "detection_Resnet50_Final.pth", "parsing_parsenet.pth"} <= {
        p.name for p in folder.iterdir()
    }


def test_liveness_probes_answer(install):
    for container in install.containers.values():
        assert container.probe("livenessProbe"), container.name


def test_every_route_through_the_gateway(install, tmp_path):
    """hack/kind-e2e's gateway checks, against the transformer's Service."""
    gateway = install.url(f"{RELEASE}-transformer")
    variants = e2e_check.served_variants(install.isvcs)
    e2e_check.gateway(
        gateway,
        tmp_path,
        side=128,
        variants=variants,
        timeout=300,
        routes=ROUTES[install.preset],
        others=e2e_check.other_models(install.isvcs),
    )


@pytest.mark.parametrize("install", ["kind"], indirect=True)
def test_kind_serves_general_x4v3_at_x4_by_its_pin(install):
    """values-kind.yaml's second upscaler: ?model=general-x4v3 through the gateway is a x4
    image from its own predictor (Compact), loaded because its sha256 is pinned."""
    gateway = install.url(f"{RELEASE}-transformer")
    reply = httpx.post(
        f"{gateway}/upscale",
        params={"model": "general-x4v3"},  # the route's default scale: 4
        files={"file": ("p.png", encoded(np.full((20, 28, 3), 90, np.uint8)))},
        timeout=300,
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["X-Steps"] == "upscale x4 (general-x4v3)"
    assert Image.open(io.BytesIO(reply.content)).size == (112, 80)
    health = httpx.get(f"{gateway}/health", timeout=30).json()["models"]["upscale"]
    model = next(m for m in health["models"] if m["name"] == "general-x4v3")
    assert (model["architecture"], model["scale"], model["ready"]) == ("Compact", 4, True)
    log = install.containers["predictor/upscale-general-x4v3"].log()
    assert "upscale-general-x4v3: upscale/general-x4v3 (Compact" in log
    assert "unverified" not in log


def test_a_predictor_over_its_service(install):
    """hack/kind-e2e's OIP check: the upscale predictor's Service port 80, OIP v2 REST."""
    e2e_check.oip(install.url(f"{RELEASE}-upscale-predictor"), "upscale", side=32, scale=2)


def test_the_gateway_keeps_its_jobs_on_the_data_volume(install):
    """DATA_DIR is the claim's mount (the root is read-only): the embedded store is there."""
    gateway = install.containers["transformer"]
    data_dir = next(e["value"] for e in gateway.container["env"] if e["name"] == "DATA_DIR")
    assert (gateway.volumes[data_dir] / "jobs.sqlite3").is_file()


def test_nothing_is_written_outside_tmp(install):
    """Read-only root: after the pods ran, nothing new or changed in the source tree, the model
    folders or facexlib's package (which downloads weights into itself when asked to)."""
    install.stop()
    after = snapshot(*install.watched)
    changed = sorted(
        p for p in after.keys() | install.before.keys() if after.get(p) != install.before.get(p)
    )
    assert not changed, changed[:20]


# ---------------------------------------------------------------------------------------------
# What a broken chart looks like to the checks above (no processes: the mapping refuses it).


def _kind_install(tmp: Path) -> tuple[list[dict], dict[str, Path], Path]:
    objs = render("kind")
    folders = {isvc_key(i): tmp / "models" for i in by_kind(objs, "InferenceService")}
    return objs, folders, tmp / "pods"


def test_a_port_the_container_does_not_declare_fails(tmp_path):
    objs, folders, root = _kind_install(tmp_path)
    isvc = next(i for i in by_kind(objs, "InferenceService") if isvc_task(i) == "upscale")
    args = isvc["spec"]["predictor"]["containers"][0]["args"]
    assert (
        "--grpc_port=8081"
        not in LocalInstall(objs, folders, root / "ok").containers["predictor/upscale"].argv()
    ), "mapped to a free local port"
    args[args.index("--grpc_port=8081")] = "--grpc_port=9000"
    with pytest.raises(ChartMismatch, match="--grpc_port=9000"):
        LocalInstall(objs, folders, root).containers["predictor/upscale"].argv()


def test_a_transformer_address_on_the_wrong_port_fails(tmp_path):
    objs, folders, root = _kind_install(tmp_path)
    env = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    entry = next(e for e in env if e["name"] == "PREDICTOR_RESTORE")
    entry["value"] = entry["value"].replace(":8081", ":9000")
    local = LocalInstall(objs, folders, root)
    with pytest.raises(ChartMismatch, match="no port 9000"):
        local.containers["transformer"].env(local.resolve)


def test_a_service_pointing_at_an_undeclared_port_fails(tmp_path):
    objs, folders, root = _kind_install(tmp_path)
    gateway_service(objs)["spec"]["ports"][0]["targetPort"] = "web"
    local = LocalInstall(objs, folders, root)
    with pytest.raises(ChartMismatch, match="'web'"):
        local.url(f"{RELEASE}-transformer")


def test_a_renamed_predictor_flag_stops_the_predictor(monkeypatch, capsys):
    from predictors.__main__ import parse_args

    objs = render("kind")
    args = by_kind(objs, "InferenceService")[0]["spec"]["predictor"]["containers"][0]["args"]
    monkeypatch.setattr(sys, "argv", ["predictors", *args])
    assert parse_args().model_dir == "/mnt/models"
    renamed = [a.replace("--grpc_max_send_message_length", "--grpc_max_send_length") for a in args]
    monkeypatch.setattr(sys, "argv", ["predictors", *renamed])
    with pytest.raises(SystemExit):
        parse_args()
    assert "--grpc_max_send_length" in capsys.readouterr().err


def _unread_env(containers: list[dict]) -> set[str]:
    sources = "\n".join(
        p.read_text()
        for folder in ("archs", "predictors", "transformer", "common")
        for p in (ROOT / folder).rglob("*.py")
    )
    env = {e["name"]: e.get("value") or "" for c in containers for e in c.get("env", [])}
    # Names the code builds: MODELS_<TASK> and each listed model's PREDICTOR_<TASK>_<MODEL>.
    built = set()
    for task, name in MODELS_ENV.items():
        if name in env:
            built |= {name, *(model_address_env(task, m) for m in env[name].split(","))}
    return {n for n in env.keys() - LIBRARY_ENV - built if f'"{n}"' not in sources}


@pytest.mark.parametrize("preset", ["default", "gpu", "kind"])
def test_every_environment_variable_is_read_by_the_code(preset):
    objs = render(preset)
    containers = [one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]]
    containers += [
        i["spec"]["predictor"]["containers"][0] for i in by_kind(objs, "InferenceService")
    ]
    assert not _unread_env(containers)
    containers[0]["env"].append({"name": "PREDICTOR_UPSCALER", "value": "x:1"})
    assert _unread_env(containers) == {"PREDICTOR_UPSCALER"}


# ---------------------------------------------------------------------------------------------
# Several models of a task (CONTRACT section 7): models.<task>.others, each its own
# InferenceService, pinned by sha256, the gateway wired to all of them.


def test_another_model_of_a_task_is_its_own_predictor_reached_through_the_gateway(
    weights, tmp_path
):
    pin = weights.other_model_dir("upscale", "compact-x4") / "compact_x4.pth.sha256"
    others = [
        {
            "name": "compact-x4",
            "storageUris": ["https://models.example.org/upscale/compact_x4.pth"],
            "sha256": pin.read_text().split()[0],
            "allowUnverifiedWeights": False,  # served because its sha256 is pinned
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2"}},
        }
    ]
    values = tmp_path / "models.yaml"
    values.write_text(
        json.dumps(
            {
                "models": {
                    "colorize": {"enabled": False},
                    "restore": {"enabled": False},
                    "face-restore": {"enabled": False},
                    # the generated x4plus is not the official file
                    "upscale": {"allowUnverifiedWeights": True, "others": others},
                }
            }
        )
    )
    objs = render("kind", "-f", str(values))
    isvcs = by_kind(objs, "InferenceService")
    assert sorted(isvc_key(i) for i in isvcs) == ["upscale", "upscale-compact-x4"]
    with contextlib.ExitStack() as stack:
        (tmp_path / "init").mkdir()
        folders = init_containers(isvcs, weights, tmp_path / "init", stack)
        local = LocalInstall(objs, folders, tmp_path / "pods")
        stack.callback(local.stop)
        local.start()
        gateway = local.url(f"{RELEASE}-transformer")
        models = httpx.get(f"{gateway}/health", timeout=30).json()["models"]["upscale"]["models"]
        default = variant_of(next(i for i in isvcs if isvc_key(i) == "upscale"))
        assert [(m["name"], m["architecture"], m["ready"]) for m in models] == [
            (default, "ESRGAN", True),
            ("compact-x4", "Compact", True),
        ]
        photo = encoded(np.full((24, 32, 3), 120, np.uint8))
        reply = httpx.post(
            f"{gateway}/upscale",
            params={"model": "compact-x4", "scale": 2},
            files={"file": ("p.png", photo)},
            timeout=300,
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["X-Steps"] == "upscale x2 (compact-x4)"
        log = local.containers["predictor/upscale-compact-x4"].log()
        assert "upscale-compact-x4: upscale/compact-x4 (Compact" in log
        assert "unverified" not in log
