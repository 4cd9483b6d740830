"""charts/photo-enhance: lint, render, validate every object, and check what the objects mean."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .k8s_helpers import (
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    SPECS,
    TASKS,
    by_kind,
    gateway_service,
    helm,
    isvc_key,
    isvc_task,
    kserve_predictor_service,
    one,
    pod_specs,
    render,
    selector_matches,
    storage_uris,
    strict_schema,
)

PRESETS = ("default", "gpu", "kind")
K8S_VERSIONS = ("1.30.0", "1.33.0")
# CONTRACT section 1: every public REST route, bare and under /v1.
POST_ROUTES = ("/colorize", "/restore", "/face-restore", "/upscale", "/pipeline")
REST_ROUTES = (
    *POST_ROUTES,
    *(f"/v1{r}" for r in POST_ROUTES),
    "/health",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/",  # the web page and its files
    "/ui/app.js",
    "/ui/style.css",
    "/ui/icon.svg",
)
GPU = "nvidia.com/gpu"
# The models each preset serves (OIP names: the task for its default model, <task>-<name> for
# the others): values-kind.yaml adds a CPU-friendly x4 upscaler beside x2plus.
MODELS = {
    "default": sorted(TASKS),
    "gpu": sorted(TASKS),
    "kind": sorted([*TASKS, "upscale-general-x4v3"]),
}
GENERAL_X4V3_SHA256 = "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292"


@pytest.mark.parametrize("preset", PRESETS)
def test_helm_lint_strict(preset):
    from .k8s_helpers import VALUES

    result = helm("lint", "--strict", str(CHART), *VALUES[preset], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_knative_mode_renders_and_lints():
    args = [
        "--set",
        "predictor.deploymentMode=Knative",
        "--set",
        "predictor.minReplicas=0",
        "--set",
        "predictor.scaleMetric=concurrency",
    ]
    result = helm("lint", "--strict", str(CHART), *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for isvc in by_kind(render("default", *args), "InferenceService"):
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
        ports = isvc["spec"]["predictor"]["containers"][0]["ports"]
        assert [p["name"] for p in ports] == ["h2c"], "Knative allows one port: gRPC over h2c"


# ---------------------------------------------------------------------------------------------
# Every rendered object is valid.


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_match_kubernetes_schemas(preset, version):
    objs = render(preset)
    checked = 0
    for obj in objs:
        if obj["apiVersion"].startswith(("serving.kserve.io/", "gateway.networking.k8s.io/")):
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("preset", PRESETS)
def test_predictor_pod_specs_match_kubernetes_pod_schema(preset):
    """The PodSpec part of each InferenceService predictor, validated as a core Pod."""
    for name, spec in pod_specs(render(preset)):
        if not name.startswith("InferenceService/"):
            continue
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec}
        kubernetes_validate.validate(pod, K8S_VERSIONS[0], strict=True)


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict]:
    folder = SPECS / "kserve-crds"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schemas = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=loader)  # a safe loader (C if built)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


@functools.cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """Strict validator for a CRD (built once: the InferenceService schema is large)."""
    return jsonschema.Draft7Validator(strict_schema(_crd_schemas()[(api_version, kind)]))


def require_crd_schemas() -> None:
    # ../shared sits beside the clone (as in CI): without it these checks cannot run, and
    # that is a broken checkout, not a pass.
    assert (SPECS / "kserve-crds").is_dir(), (
        f"{SPECS / 'kserve-crds'} is absent: put shared/ beside the clone"
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_inferenceservices_match_kserve_crd(preset):
    require_crd_schemas()
    isvcs = by_kind(render(preset), "InferenceService")
    assert isvcs
    for isvc in isvcs:
        errors = list(_crd_validator(isvc["apiVersion"], isvc["kind"]).iter_errors(isvc))
        assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
        name = isvc["metadata"]["name"]
        # KServe names the Deployment "<name>-predictor" and labels pods "isvc.<name>-predictor"
        # (<= 63 characters) and the name must be a DNS-1035 label.
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
        assert len(f"isvc.{name}-predictor") <= 63


def test_crd_validation_catches_a_typo():
    require_crd_schemas()
    isvc = by_kind(render("default"), "InferenceService")[0]
    isvc["spec"]["predictor"]["storageUri"] = "s3://x/y"  # not a predictor field for containers
    errors = list(_crd_validator(isvc["apiVersion"], "InferenceService").iter_errors(isvc))
    assert any("storageUri" in e.message for e in errors)


def test_httproute_shape():
    """No Gateway API schema is available offline: check the HTTPRoute's structure here."""
    route = one(render("gpu"), "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert spec["parentRefs"] and all(ref["name"] for ref in spec["parentRefs"])
    for rule in spec["rules"]:
        for match in rule["matches"]:
            assert match["path"]["type"] in ("Exact", "PathPrefix")
            assert match["path"]["value"].startswith("/")
        assert len(rule["backendRefs"]) == 1
        assert re.fullmatch(r"\d+s", rule["timeouts"]["request"])


def test_values_schema_is_valid_json_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for name in ("values.yaml", "values-gpu.yaml", "values-kind.yaml"):
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        _merge(values, yaml.safe_load((CHART / name).read_text()))
        jsonschema.validate(values, schema)


def _merge(base: dict, over: dict) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "predictor.deploymentMode=Serverless"], "deploymentMode"),
        (["--set", "predictor.deploymentMode=RawDeployment"], "deploymentMode"),
        (["--set", "models.colorize.variant=huge"], "variant"),
        (["--set", "models.restore.variant=deblur"], "Google Drive"),
        (["--set", "predictor.scaleMetric=rps"], "Knative"),
        (["--set", "predictor.minReplicas=0"], "minReplicas"),
        (["--set", "containerSecurityContext.allowPrivilegeEscalation=true"], "allowPrivilege"),
        (["--set", "models.upscale.storageUris={ftp://host/x.pth}"], "storageUris"),
        (["--set", "httpRoute.enabled=true"], "parentRefs"),
        (["--set", "models.upscale.storageUris={pvc://w/a,https://h/b.pth}"], "pvc://"),
        (["--set", "models.upscale.others[0].name=Big_One"], "name"),
        (["--set", "models.upscale.others[0].name=span-x4"], "not an official variant"),
        (["--set", "models.upscale.others[0].name=x4plus"], "already the task's default"),
        (
            [
                "--set",
                "models.upscale.others[0].name=s",
                "--set",
                "models.upscale.others[0].sha256=ab",
            ],
            "sha256",
        ),
    ],
)
def test_bad_values_are_refused(args, message):
    result = helm("template", "x", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


# ---------------------------------------------------------------------------------------------
# What the objects mean.


@pytest.mark.parametrize("preset", PRESETS)
def test_an_inferenceservice_per_model_with_storage_and_task_args(preset):
    isvcs = by_kind(render(preset), "InferenceService")
    assert sorted(isvc_key(i) for i in isvcs) == MODELS[preset]
    for isvc in isvcs:
        task = isvc_task(isvc)
        assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
        annotations = isvc["metadata"]["annotations"]
        assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
        predictor = isvc["spec"]["predictor"]
        uris = storage_uris(isvc)
        assert uris
        if task == "face-restore" and preset != "kind":
            names = sorted(u.rsplit("/", 1)[1] for u in uris)
            assert names == [
                "codeformer.pth",
                "detection_Resnet50_Final.pth",
                "parsing_parsenet.pth",
            ]
        (container,) = predictor["containers"]
        assert container["name"] == "kserve-container"
        assert container["command"] == ["python", "-m", "predictors"]
        args = container["args"]
        assert args[0] == task
        assert "--model_dir=/mnt/models" in args
        assert any(a.startswith("--variant=") for a in args)
        for flag in ("--grpc_max_send_message_length", "--grpc_max_receive_message_length"):
            (value,) = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
            assert int(value) >= 200 * 1024 * 1024, "a 4x upscale of 2048 px is ~200 MB"
        path = f"/v2/models/{isvc_key(isvc)}/ready"
        assert container["readinessProbe"]["httpGet"]["path"] == path
        assert predictor["minReplicas"] >= 1 <= predictor["maxReplicas"]
        assert predictor["scaleMetric"] in ("cpu", "memory")


def test_default_weights_are_the_official_files():
    official = yaml.safe_load((CHART / "files" / "official-weights.yaml").read_text())
    for isvc in by_kind(render("default"), "InferenceService"):
        task = isvc_task(isvc)
        variant = next(
            a
            for a in isvc["spec"]["predictor"]["containers"][0]["args"]
            if a.startswith("--variant=")
        ).split("=", 1)[1]
        assert storage_uris(isvc) == official[task][variant]


def test_official_weights_match_the_catalogue():
    """files/official-weights.yaml and archs.catalogue (the code's source of truth) agree:
    the same variants, and each KServe-fetchable URL is the catalogue's URL."""
    from archs.catalogue import CATALOGUE as catalogue

    official = yaml.safe_load((CHART / "files" / "official-weights.yaml").read_text())
    chart_pairs = {(t, v) for t, variants in official.items() for v in variants}
    assert chart_pairs == set(catalogue)
    for (task, variant), files in catalogue.items():
        urls = official[task][variant]
        if urls is None:
            assert any("drive" in f.url for f in files), (task, variant)
            continue
        assert urls == [f.url for f in files], (task, variant)


def test_gpu_render_requests_gpus_on_gpu_nodes():
    for preset in ("default", "gpu"):
        for isvc in by_kind(render(preset), "InferenceService"):
            predictor = isvc["spec"]["predictor"]
            resources = predictor["containers"][0]["resources"]
            assert int(resources["limits"][GPU]) >= 1
            assert resources["requests"][GPU] == resources["limits"][GPU]
            assert any(k.startswith("nvidia.com/") for k in predictor["nodeSelector"])
            assert any(t["key"] == GPU for t in predictor["tolerations"])
            env = {e["name"]: e.get("value") for e in predictor["containers"][0]["env"]}
            assert env["FORCE_CPU"] == "false"
            assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # no spinning workers beside the GPU


@pytest.mark.parametrize("preset", PRESETS)
def test_torch_threads_follow_the_cpu_limit(preset):
    """Not the node's core count: a 64-core GPU node would start 64 threads for 4 CPUs."""
    for isvc in by_kind(render(preset), "InferenceService"):
        container = isvc["spec"]["predictor"]["containers"][0]
        (threads,) = [e for e in container["env"] if e["name"] == "OMP_NUM_THREADS"]
        field = threads["valueFrom"]["resourceFieldRef"]
        assert field["resource"] == "limits.cpu" and str(field["divisor"]) == "1"
        assert container["resources"]["limits"]["cpu"]


def test_kind_render_has_no_gpu_anything():
    objs = render("kind")
    assert GPU not in yaml.safe_dump_all(objs)
    for isvc in by_kind(objs, "InferenceService"):
        predictor = isvc["spec"]["predictor"]
        assert "nodeSelector" not in predictor
        assert "tolerations" not in predictor
        container = predictor["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["FORCE_CPU"] == "true"
        assert "OMP_WAIT_POLICY" not in env  # on CPU the network's own threads want to spin
        (uri,) = storage_uris(isvc)
        assert uri.startswith("pvc://")
        # KServe mounts <claim>/<path> at /mnt/models only for STORAGE_URI, not storageUris
        assert "storageUris" not in predictor
        # small: a laptop runs all five
        assert container["resources"]["limits"]["memory"] in ("2Gi", "3Gi", "4Gi")
    variants = {
        isvc_key(i): next(
            a for a in i["spec"]["predictor"]["containers"][0]["args"] if a.startswith("--variant=")
        )
        for i in by_kind(objs, "InferenceService")
    }
    assert variants["colorize"] == "--variant=paper_tiny"
    assert variants["upscale"] == "--variant=x2plus"
    assert variants["upscale-general-x4v3"] == "--variant=general-x4v3"


def test_kind_serves_compact_x4_beside_x2plus_pinned():
    """values-kind.yaml: x2plus stays the default; realesr-general-x4v3 (Compact, x4) is its own
    InferenceService on the claim hack/kind-up stages, served because its sha256 is pinned."""
    objs = render("kind")
    isvc = next(
        i
        for i in by_kind(objs, "InferenceService")
        if i["metadata"]["name"] == f"{RELEASE}-upscale-general-x4v3"
    )
    (container,) = isvc["spec"]["predictor"]["containers"]
    args = container["args"]
    assert {"--variant=general-x4v3", "--model_name=upscale-general-x4v3"} <= set(args)
    assert f"--sha256={GENERAL_X4V3_SHA256}" in args
    assert "--allow_unverified_weights" not in args
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ALLOW_UNVERIFIED_WEIGHTS"] == "false"
    assert storage_uris(isvc) == ["pvc://photo-enhance-weights/upscale/general-x4v3"]
    gateway = _gateway_env(objs)
    assert gateway["MODEL_UPSCALE"] == "x2plus"
    assert gateway["MODELS_UPSCALE"] == "x2plus,general-x4v3"
    assert gateway["PREDICTOR_UPSCALE_GENERAL_X4V3"] == (
        f"dns:///{RELEASE}-upscale-general-x4v3-predictor-pods.{NAMESPACE}.svc.cluster.local:8081"
    )


def _gateway_env(objs: list[dict]) -> dict[str, str]:
    (container,) = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def _predictor_pod_labels(isvc: dict) -> dict:
    """The labels KServe gives an InferenceService's predictor pods (with the chart's own)."""
    return {
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"],
        "component": "predictor",
        **isvc["spec"]["predictor"]["labels"],
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_transformer_addresses_are_headless_services_of_the_predictor_pods(preset):
    """CONTRACT section 8: dns:/// of a headless Service per task that selects exactly that
    task's predictor pods, on the port they serve gRPC on (a pod IP: no port mapping)."""
    objs = render(preset)
    env = _gateway_env(objs)
    services = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    isvcs = by_kind(objs, "InferenceService")
    for isvc in isvcs:
        task, model = isvc_task(isvc), isvc["metadata"]["labels"]["photo-enhance.io/model"]
        variable = f"PREDICTOR_{task.upper().replace('-', '_')}"
        if isvc_key(isvc) != task:  # another model of the task: its own address
            variable += f"_{model.upper().replace('-', '_')}"
        address = env[variable]
        match = re.fullmatch(
            r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", address
        )
        assert match, address
        name, namespace, port = match[1], match[2], int(match[3])
        service = services[name]
        assert namespace == service["metadata"]["namespace"] == NAMESPACE
        assert service["spec"]["clusterIP"] == "None"
        assert not service["spec"].get("publishNotReadyAddresses")
        (svc_port,) = service["spec"]["ports"]
        assert svc_port["port"] == port
        ports = {p["name"]: p["containerPort"] for p in
                 isvc["spec"]["predictor"]["containers"][0]["ports"]}  # fmt: skip
        assert ports[svc_port["targetPort"]] == port
        assert f"--grpc_port={port}" in isvc["spec"]["predictor"]["containers"][0]["args"]
        selector = {"matchLabels": service["spec"]["selector"]}
        for other in isvcs:
            assert selector_matches(selector, _predictor_pod_labels(other)) == (other is isvc)
        gateway_pod = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert not selector_matches(selector, gateway_pod)
    addresses = sorted(k for k in env if k.startswith("PREDICTOR_") and k != "PREDICTOR_TIMEOUT_S")
    assert addresses == sorted(
        ["PREDICTOR_COLORIZE", "PREDICTOR_FACE_RESTORE", "PREDICTOR_RESTORE", "PREDICTOR_UPSCALE"]
        + (["PREDICTOR_UPSCALE_GENERAL_X4V3"] if preset == "kind" else [])
    )
    assert int(env["GRPC_MAX_MESSAGE_BYTES"]) >= 200 * 1024 * 1024


def test_without_headless_services_addresses_are_kserve_predictor_services():
    objs = render("default", "--set", "predictor.headlessService=false")
    env = _gateway_env(objs)
    assert not [s for s in by_kind(objs, "Service") if s["spec"].get("clusterIP") == "None"]
    for isvc in by_kind(objs, "InferenceService"):
        task = isvc_task(isvc)
        svc = kserve_predictor_service(isvc)
        (grpc,) = [p for p in svc["ports"] if p["name"] in ("grpc", "h2c")]
        want = f"{svc['name']}.{svc['namespace']}.svc.cluster.local:{grpc['port']}"
        assert env[f"PREDICTOR_{task.upper().replace('-', '_')}"] == want
        # the port KServe exposes there is the one the predictor serves gRPC on
        args = isvc["spec"]["predictor"]["containers"][0]["args"]
        assert f"--grpc_port={grpc['targetPort']}" in args


@pytest.mark.parametrize(
    ("args", "gateway_env", "predictor_cap"),
    [
        ([], {"MAX_INFLIGHT_PER_REPLICA": "1"}, "0"),
        (
            [
                "--set",
                "transformer.maxInflightPerReplica=2",
                "--set",
                "transformer.maxInflightPerTask=6",
            ],
            {"MAX_INFLIGHT_PER_REPLICA": "2", "MAX_INFLIGHT_PER_TASK": "6"},
            "0",
        ),
        (["-f", str(CHART / "values-gpu.yaml")], {"MAX_INFLIGHT_PER_REPLICA": "1"}, "1"),
        (["--set", "predictor.maxInflight=3"], {"MAX_INFLIGHT_PER_REPLICA": "1"}, "3"),
    ],
)
def test_inflight_caps_reach_the_gateway_and_the_predictors(args, gateway_env, predictor_cap):
    """One gateway: no predictor cap (direct OIP clients queue as before); several gateways
    (values-gpu: autoscaled with redis): each predictor refuses past the per-replica cap."""
    objs = render("default", *args)
    env = _gateway_env(objs)
    assert {k: v for k, v in env.items() if k.startswith("MAX_INFLIGHT")} == gateway_env
    for isvc in by_kind(objs, "InferenceService"):
        container = isvc["spec"]["predictor"]["containers"][0]
        assert {e["name"]: e.get("value") for e in container["env"]}[
            "MAX_INFLIGHT"
        ] == predictor_cap


def test_keda_scales_predictors_on_the_gateways_queue():
    require_crd_schemas()
    objs = render("gpu", "--set", "predictor.autoscaler=keda")
    for isvc in by_kind(objs, "InferenceService"):
        errors = list(_crd_validator(isvc["apiVersion"], isvc["kind"]).iter_errors(isvc))
        assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
        predictor = isvc["spec"]["predictor"]
        assert "scaleMetric" not in predictor and "scaleTarget" not in predictor
        (metric,) = predictor["autoScaling"]["metrics"]
        assert metric["type"] == "External"
        query = metric["external"]["metric"]["query"]
        selector = f'namespace="{NAMESPACE}",task="{isvc_task(isvc)}"'
        for gauge in ("photo_enhance_queue_depth", "photo_enhance_inflight"):
            assert f"{gauge}{{{selector}}}" in query  # the gateway's gauges (metrics.py)
        assert metric["external"]["metric"]["backend"] == "prometheus"
        assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "2"}
    for isvc in by_kind(render("gpu"), "InferenceService"):  # the default stays KServe's HPA
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
        assert "autoScaling" not in isvc["spec"]["predictor"]


def test_keda_needs_standard_mode():
    args = ["--set", "predictor.autoscaler=keda", "--set", "predictor.deploymentMode=Knative"]
    result = helm("template", "x", str(CHART), *args, check=False)
    assert result.returncode != 0 and "keda needs deploymentMode Standard" in result.stderr


def test_kserve_service_model_puts_http_on_port_80():
    """The Service model the address test relies on: port 80 is HTTP (OIP REST, KServe's own
    URL), gRPC keeps its number."""
    isvc = by_kind(render("default"), "InferenceService")[0]
    ports = {p["name"]: p for p in kserve_predictor_service(isvc)["ports"]}
    assert ports["http"]["port"] == 80 and ports["http"]["targetPort"] == 8080
    assert ports["grpc"]["port"] == 8081


def test_knative_addresses_use_port_80():
    args = ["--set", "predictor.deploymentMode=Knative"]
    env = {
        e["name"]: e.get("value")
        for e in one(render("default", *args), "Deployment")["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert env["PREDICTOR_UPSCALE"] == (
        f"photo-enhance-upscale-predictor.{NAMESPACE}.svc.cluster.local:80"
    )


def _path_matches(route: str, path: dict) -> bool:
    value, kind = path["path"], path["pathType"]
    if kind == "Exact":
        return route == value
    if kind == "Prefix":
        parts, prefix = route.strip("/").split("/"), value.strip("/").split("/")
        return parts[: len(prefix)] == prefix
    return False


@pytest.mark.parametrize("preset", ("default", "gpu"))
def test_ingress_reaches_every_rest_route(preset):
    objs = render(preset)
    ingress = one(objs, "Ingress")
    service = gateway_service(objs)
    deployment = one(objs, "Deployment")
    container_ports = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    for route in REST_ROUTES:
        hits = [p for p in paths if _path_matches(route, p)]
        assert hits, f"{route} is not exposed by the Ingress"
        for hit in hits:
            backend = hit["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert service_ports[backend["port"]["name"]]["targetPort"] in container_ports
    assert not any(_path_matches("/metrics", p) for p in paths), "/metrics stays internal"
    assert {p["pathType"] for p in paths} == {"Exact"}  # KServe's /v1/models/... stay inside
    assert selector_matches(
        {"matchLabels": service["spec"]["selector"]},
        deployment["spec"]["template"]["metadata"]["labels"],
    )


def test_httproute_reaches_every_rest_route():
    route = one(render("gpu"), "HTTPRoute")
    service = gateway_service(render("gpu"))
    (rule,) = route["spec"]["rules"]
    paths = [
        {
            "path": m["path"]["value"],
            "pathType": {"PathPrefix": "Prefix", "Exact": "Exact"}[m["path"]["type"]],
        }
        for m in rule["matches"]
    ]
    for r in REST_ROUTES:
        assert any(_path_matches(r, p) for p in paths), r
    assert rule["backendRefs"][0]["name"] == service["metadata"]["name"]
    assert rule["backendRefs"][0]["port"] == service["spec"]["ports"][0]["port"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_pod_is_restricted(preset):
    specs = pod_specs(render(preset))
    assert len(specs) == 1 + len(MODELS[preset])  # transformer + a predictor per model
    for name, spec in specs:
        pod_sc = spec.get("securityContext") or {}
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert spec.get("automountServiceAccountToken") is False, name
        for volume in spec.get("volumes") or []:
            assert "hostPath" not in volume, name
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container.get("securityContext") or {}
            where = f"{name}/{container['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged", False) is False, where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
            assert not sc.get("capabilities", {}).get("add"), where
            assert sc.get("readOnlyRootFilesystem") is True, where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: caches need a writable /tmp"


@pytest.mark.parametrize("preset", PRESETS)
def test_network_policy_admits_only_the_transformer(preset):
    objs = render(preset)
    policy = _policy(objs, "predictors")
    transformer_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for isvc in by_kind(objs, "InferenceService"):
        # KServe labels every predictor pod with its InferenceService name
        pod_labels = {
            "serving.kserve.io/inferenceservice": isvc["metadata"]["name"],
            "component": "predictor",
            **isvc["spec"]["predictor"]["labels"],
        }
        assert selector_matches(policy["spec"]["podSelector"], pod_labels)
        ports = {p["containerPort"] for p in isvc["spec"]["predictor"]["containers"][0]["ports"]}
        allowed = set()
        for rule in policy["spec"]["ingress"]:
            if any(
                selector_matches(peer.get("podSelector", {}), transformer_labels)
                for peer in rule["from"]
                if set(peer) == {"podSelector"}
            ):
                allowed |= {p["port"] for p in rule["ports"]}
        assert ports <= allowed, "the transformer must reach HTTP and gRPC"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    stranger = {"app": "something-else"}
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            assert set(peer) != {"podSelector"} or not selector_matches(
                peer["podSelector"], stranger
            )
            assert peer.get("podSelector", {"matchLabels": {"x": "y"}}) != {}, "no allow-all peer"
            assert "ipBlock" not in peer


def test_network_policy_names_oip_clients_when_asked():
    policy = _policy(render("gpu"), "predictors")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "photo-batch"}}
    } in peers


def _policy(objs: list[dict], component: str) -> dict:
    (policy,) = [
        p
        for p in by_kind(objs, "NetworkPolicy")
        if p["metadata"]["name"] == f"photo-enhance-{component}"
    ]
    return policy


def test_notes_tell_how_to_call_the_service():
    result = helm("install", "--dry-run=client", "photo-enhance", str(CHART), "-n", NAMESPACE)
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "port-forward svc/photo-enhance-transformer" in notes
    for route in POST_ROUTES:
        assert f"$GATEWAY{route}" in notes


def test_dockerfiles_are_non_root_and_pinned():
    for name in ("Dockerfile.predictor", "Dockerfile.transformer"):
        text = (ROOT / name).read_text()
        assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", text, re.M), name
        assert "USER 1000:1000" in text
        assert "TORCH_HOME" in text or name == "Dockerfile.transformer"
        # dependencies are installed before the code is copied (layer caching)
        assert text.index("pip install -r") < text.index(
            "COPY predictors" if "predictor" in name else "COPY transformer"
        )
    predictor = (ROOT / "Dockerfile.predictor").read_text()
    assert (
        "ARG TORCH_FLAVOR" in predictor and "download.pytorch.org/whl/${TORCH_FLAVOR}" in predictor
    )
    assert "torch" not in (ROOT / "Dockerfile.transformer").read_text().replace("no torch", "")
    ignore = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignore[0] == "*" and "**/*.pth" in ignore


# ---------------------------------------------------------------------------------------------
# Jobs: where the gateway keeps them (jobs.store), their settings, webhooks.

DATA_DIR = "/var/lib/photo-enhance"
REDIS_SECRET = [
    *("--set", "jobs.store=redis", "--set", "jobs.redis.existingSecret=jobs-redis"),
    *("--set", "jobs.redis.existingSecretKey=redis-url"),
    *("--set", "jobs.results.existingClaim=jobs-rwx", "--set", "transformer.replicas=3"),
]
REDIS_AUTOSCALING = [*REDIS_SECRET, "--set", "transformer.autoscaling.enabled=true"]
WEBHOOKS = [
    *("--set", "jobs.webhooks.enabled=true", "--set", "jobs.webhooks.existingSecret=hooks"),
    *("--set", "jobs.webhooks.allowedHosts={receiver.batch.svc:8080,hooks.example.com}"),
]
REDIS_S3_AWS = [
    *("--set", "jobs.store=redis", "--set", "jobs.redis.existingSecret=jobs-redis"),
    *("--set", "jobs.results.s3.bucket=photo-jobs", "--set", "transformer.replicas=3"),
    *("--set", "jobs.results.s3.prefix=/team-a/jobs/", "--set", "jobs.results.s3.region=eu-west-1"),
    *("--set", "jobs.results.s3.existingSecret=jobs-s3"),
]
REDIS_S3 = [*REDIS_S3_AWS, "--set", "jobs.results.s3.endpoint=http://minio.storage:9000"]
STORES = {
    "embedded": [],
    "redis-secret": REDIS_SECRET,
    "redis-autoscaling": REDIS_AUTOSCALING,
    "redis-s3": REDIS_S3,
    "redis-webhooks": [*REDIS_SECRET, *WEBHOOKS],
    "embedded-webhooks": WEBHOOKS,
}


def _gateway(objs: list[dict]) -> tuple[dict, dict]:
    (deployment,) = [
        d
        for d in by_kind(objs, "Deployment")
        if d["metadata"]["name"] == "photo-enhance-transformer"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


@pytest.mark.parametrize("store", sorted(STORES))
def test_each_job_store_renders_lints_and_validates(store):
    args = STORES[store]
    result = helm("lint", "--strict", str(CHART), *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    objs = render("default", *args)
    for obj in objs:
        if obj["apiVersion"].startswith("serving.kserve.io/"):
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    require_crd_schemas()
    for isvc in by_kind(objs, "InferenceService"):
        assert not list(_crd_validator(isvc["apiVersion"], isvc["kind"]).iter_errors(isvc))
    deployment, container = _gateway(objs)
    env = _env(container)
    # DATA_DIR on a writable volume: the root filesystem is read-only.
    assert env["DATA_DIR"]["value"] == DATA_DIR
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == DATA_DIR]
    assert not mount.get("readOnly")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[mount["name"]].get("persistentVolumeClaim", {}).get("claimName")
    pvcs = by_kind(objs, "PersistentVolumeClaim")
    spec = deployment["spec"]
    if store.startswith("embedded"):
        assert [p["metadata"]["name"] for p in pvcs] == [claim] == ["photo-enhance-jobs"]
        assert "JOBS_STORE" not in env and "RESULTS_STORE" not in env  # SQLite in DATA_DIR
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
        assert not by_kind(objs, "HorizontalPodAutoscaler")
        assert not by_kind(objs, "PodDisruptionBudget"), "one replica: it would block drains"
    elif store == "redis-s3":  # uploads and results in the bucket: no volume shared
        assert not pvcs and "emptyDir" in volumes[mount["name"]]
        assert env["RESULTS_STORE"]["value"] == "s3://photo-jobs/team-a/jobs"
    else:
        assert not pvcs and claim == "jobs-rwx"  # uploads and results shared by the replicas
        assert "strategy" not in spec
        assert by_kind(objs, "PodDisruptionBudget")
        assert "replicas" not in spec if store.endswith("autoscaling") else spec["replicas"] == 3


def test_embedded_is_the_default_and_kind_uses_it():
    for preset in ("default", "kind"):
        objs = render(preset)
        assert one(objs, "PersistentVolumeClaim")["metadata"]["name"] == "photo-enhance-jobs"
        assert "JOBS_STORE" not in _env(_gateway(objs)[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "transformer.replicas=2"], "use jobs.store=redis"),
        (["--set", "transformer.autoscaling.enabled=true"], "use jobs.store=redis"),
        (["--set", "jobs.store=redis", "--set", "jobs.results.existingClaim=x"], "existingSecret"),
        (["--set", "jobs.store=redis", "--set", "jobs.redis.existingSecret=x"], "s3.bucket"),
        ([*REDIS_S3, "--set", "jobs.results.existingClaim=x"], "not both"),
        (["--set", "jobs.results.s3.presignedSeconds=60"], "needs jobs.results.s3.bucket"),
        (["--set", "jobs.results.s3.bucket=Not_A_Bucket"], "bucket"),
        (["--set", "jobs.results.s3.endpoint=minio:9000"], "endpoint"),
        (["--set", "valkey.enabled=true"], "additional properties 'valkey'"),  # no bundled Valkey
        (["--set", "jobs.store=s3"], "jobs/store"),
        (["--set", "jobs.results.s3.bucket_name=x"], "s3"),
        (["--set", "jobs.webhooks.enabled=true"], "jobs.webhooks.existingSecret"),
        (["--set", "jobs.concurrency=0"], "concurrency"),
        (["--set", "jobs.webhooks.allowedHosts={http://x/}"], "allowedHosts"),
    ],
)
def test_bad_job_values_are_refused(args, message):
    result = helm("template", "x", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_job_settings_become_the_gateways_environment():
    args = ["--set", "jobs.ttlSeconds=600", "--set", "jobs.timeoutSeconds=900"]
    args += ["--set", "jobs.maxQueued=50", "--set", "jobs.concurrency=2"]
    env = _env(_gateway(render("default", *args))[1])
    want = {"JOB_TTL_S": "600", "JOB_TIMEOUT_S": "900", "MAX_JOBS_QUEUED": "50"}
    assert {k: env[k]["value"] for k in want} == want
    assert env["JOBS_CONCURRENCY"]["value"] == "2"
    assert "WEBHOOK_SECRET" not in env and "WEBHOOK_ALLOWED_HOSTS" not in env

    from transformer.jobs.config import JobSettings

    plain = {k: e["value"] for k, e in env.items() if "value" in e}
    settings = JobSettings.from_env(plain)
    assert (settings.ttl_s, settings.timeout_s, settings.max_queued, settings.concurrency) == (
        600,
        900,
        50,
        2,
    )
    assert settings.store_path == Path(DATA_DIR) / "jobs.sqlite3"
    assert str(settings.files_dir).startswith(DATA_DIR + "/")


def test_redis_url_and_webhook_secret_come_from_secrets():
    env = _env(_gateway(render("default", *REDIS_SECRET))[1])
    assert env["JOBS_STORE"] == {
        "name": "JOBS_STORE",
        "valueFrom": {"secretKeyRef": {"name": "jobs-redis", "key": "redis-url"}},
    }
    env = _env(_gateway(render("default", *WEBHOOKS))[1])
    assert env["WEBHOOK_SECRET"]["valueFrom"] == {
        "secretKeyRef": {"name": "hooks", "key": "secret"}
    }
    allowed = env["WEBHOOK_ALLOWED_HOSTS"]["value"]
    assert allowed == "receiver.batch.svc:8080,hooks.example.com"
    from transformer.jobs.webhooks import parse_allowed

    assert parse_allowed(allowed) == {("receiver.batch.svc", 8080), ("hooks.example.com", None)}
    assert "value" not in env["WEBHOOK_SECRET"] and "value" not in env.get("JOBS_STORE", {})


def test_the_results_bucket_and_its_credentials_come_from_values_and_a_secret():
    objs = render("default", *REDIS_S3, "--set", "jobs.results.s3.presignedSeconds=300")
    env = _env(_gateway(objs)[1])
    for name, key in (
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ):
        assert env[name] == {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": "jobs-s3", "key": key}},
        }
    from transformer.jobs.config import JobSettings, S3Location

    plain = {k: e["value"] for k, e in env.items() if "value" in e}
    settings = JobSettings.from_env(plain)
    assert settings.results_s3 == S3Location(
        "photo-jobs", "team-a/jobs/", "http://minio.storage:9000"
    )
    assert settings.results_presigned_s == 300 and settings.files_dir is None
    assert plain["AWS_REGION"] == "eu-west-1"
    # The gateway may reach the bucket's endpoint port (and, on AWS, 443).
    ports = [p["port"] for r in _egress_rules(objs) if "to" not in r for p in r.get("ports", [])]
    assert 9000 in ports
    env = _env(_gateway(render("default", *REDIS_S3_AWS))[1])
    assert "AWS_ENDPOINT_URL_S3" not in env and "RESULTS_PRESIGNED_S" not in env
    rules = _egress_rules(render("default", *REDIS_S3_AWS))
    assert 443 in [p["port"] for r in rules if "to" not in r for p in r.get("ports", [])]


def test_chart_declares_no_dependencies_and_ships_no_subcharts():
    # Redis/Valkey is installed separately (e.g. the official Valkey chart) and reached through
    # jobs.redis.existingSecret; no third-party chart is vendored or pulled in here.
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert not chart.get("dependencies")
    assert not (CHART / "charts").exists()
    assert not (CHART / "Chart.lock").exists()
    assert not list(CHART.rglob("*.tgz"))
    assert not by_kind(render("default", *REDIS_SECRET), "StatefulSet")


def _egress_rules(objs: list[dict]) -> list[dict]:
    policy = _policy(objs, "transformer")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert selector_matches(
        policy["spec"]["podSelector"], _gateway(objs)[0]["spec"]["template"]["metadata"]["labels"]
    )
    return policy["spec"]["egress"]


def _public_rules(rules: list[dict]) -> list[dict]:
    return [r for r in rules if any("ipBlock" in peer for peer in r.get("to", []))]


@pytest.mark.parametrize("store", sorted(STORES))
def test_gateway_egress_opens_the_internet_only_for_webhooks(store):
    objs = render("default", *STORES[store])
    rules = _egress_rules(objs)
    public = _public_rules(rules)
    if "webhooks" not in store:
        assert not public
        assert all(rule.get("to") or rule["ports"] for rule in rules)
    else:
        (rule,) = public
        assert sorted(p["port"] for p in rule["ports"]) == [80, 443]
        blocks = {peer["ipBlock"]["cidr"]: set(peer["ipBlock"]["except"]) for peer in rule["to"]}
        private = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}
        assert private <= blocks["0.0.0.0/0"]
        assert {"fc00::/7", "fe80::/10"} <= blocks["::/0"]
    # the gateway still reaches DNS and every predictor's HTTP and gRPC ports
    assert any({p["port"] for p in r["ports"]} == {53} and "to" not in r for r in rules)
    for isvc in by_kind(objs, "InferenceService"):
        labels = {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
        ports = {p["containerPort"] for p in isvc["spec"]["predictor"]["containers"][0]["ports"]}
        reached = set()
        for rule in rules:
            if any(
                selector_matches(peer.get("podSelector", {}), labels) for peer in rule.get("to", [])
            ):
                reached |= {p["port"] for p in rule["ports"]}
        assert ports <= reached
    redis = [r for r in rules if {p["port"] for p in r.get("ports", [])} == {6379}]
    assert bool(redis) == (not store.startswith("embedded"))
    # the Redis the Secret's URL names may live anywhere: its port, to any destination
    assert all(
        "to" not in rule and rule["ports"] == [{"port": 6379, "protocol": "TCP"}] for rule in redis
    )


def test_extra_gateway_egress_is_appended():
    extra = {"to": [{"ipBlock": {"cidr": "10.2.0.0/16"}}], "ports": [{"port": 6380}]}
    args = ["--set-json", f"networkPolicy.extraGatewayEgress=[{json.dumps(extra)}]"]
    assert _egress_rules(render("default", *args))[-1] == extra


# ---------------------------------------------------------------------------------------------
# Several models of a task (CONTRACT section 7).

SPAN_SHA = "0" * 63 + "1"


def test_each_other_model_is_its_own_inferenceservice_wired_to_the_gateway(tmp_path):
    values = tmp_path / "models.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "upscale": {
                        "others": [
                            {
                                "name": "span-x4",
                                "storageUris": ["https://example.org/span_x4.safetensors"],
                                "sha256": SPAN_SHA,
                                "gpu": {"enabled": False},
                                "nodeSelector": {"pool": "cpu"},
                                "resources": {
                                    "requests": {"cpu": "1", "memory": "2Gi"},
                                    "limits": {"cpu": "2", "memory": "4Gi"},
                                },
                            },
                            {"name": "x4anime"},  # an official variant: its official file
                        ]
                    }
                }
            }
        )
    )
    objs = render("default", "-f", str(values))
    isvcs = {i["metadata"]["name"]: i for i in by_kind(objs, "InferenceService")}
    span = isvcs[f"{RELEASE}-upscale-span-x4"]
    (container,) = span["spec"]["predictor"]["containers"]
    assert {"--variant=span-x4", "--model_name=upscale-span-x4", f"--sha256={SPAN_SHA}"} <= set(
        container["args"]
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/models/upscale-span-x4/ready"
    assert span["spec"]["predictor"]["nodeSelector"] == {"pool": "cpu"}  # no GPU node
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert [u["uri"] for u in span["spec"]["predictor"]["storageUris"]] == [
        "https://example.org/span_x4.safetensors"
    ]
    anime = isvcs[f"{RELEASE}-upscale-x4anime"]
    assert "RealESRGAN_x4plus_anime_6B.pth" in anime["spec"]["predictor"]["storageUris"][0]["uri"]
    default = isvcs[f"{RELEASE}-upscale"]["spec"]["predictor"]["containers"][0]
    assert not any(a.startswith("--model_name") for a in default["args"])
    assert "nvidia.com/gpu" in default["resources"]["limits"]  # the task's settings stay
    env = _gateway_env(objs)
    assert env["MODELS_UPSCALE"] == "x4plus,span-x4,x4anime"
    headless = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    address = env["PREDICTOR_UPSCALE_SPAN_X4"]
    name = f"{RELEASE}-upscale-span-x4-predictor-pods"
    assert address.startswith(f"dns:///{name}.")
    selector = headless[name]["spec"]["selector"]
    assert selector.items() <= _predictor_pod_labels(span).items()
    # the default model's Service does not select the other models' pods
    default_selector = headless[f"{RELEASE}-upscale-predictor-pods"]["spec"]["selector"]
    assert not default_selector.items() <= _predictor_pod_labels(span).items()
    assert len(by_kind(objs, "InferenceService")) == 6
