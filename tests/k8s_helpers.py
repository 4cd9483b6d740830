"""Shared helpers for the Kubernetes packaging tests (chart, manifests, hack scripts).

helm, kubectl and shellcheck come from hack/install-tools (pinned, cached in .tools/bin), so the
tests run from a fresh clone with nothing installed but Python.
"""

from __future__ import annotations

import copy
import functools
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "photo-enhance"
TOOLS = ROOT / ".tools" / "bin"
SPECS = ROOT.parent / "shared" / "specs"
RELEASE = "photo-enhance"
NAMESPACE = "photo-enhance"
TASKS = ("colorize", "restore", "face-restore", "upscale")
VALUES = {
    "default": [],
    "gpu": ["-f", str(CHART / "values-gpu.yaml")],
    "kind": ["-f", str(CHART / "values-kind.yaml")],
}


@functools.cache
def tools() -> Path:
    """Run hack/install-tools once per session (it is idempotent and cached)."""
    subprocess.run([str(ROOT / "hack" / "install-tools")], check=True, capture_output=True)
    return TOOLS


def tool(name: str) -> str:
    return str(tools() / name)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, check=check)


@functools.cache
def _render_text(extra: tuple[str, ...]) -> str:
    cmd = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra]
    return helm(*cmd).stdout


def render(values: str = "default", *extra: str) -> list[dict]:
    """The chart's objects for a values preset plus extra helm args (deep copies)."""
    text = _render_text((*VALUES[values], *extra))
    return [copy.deepcopy(d) for d in yaml.safe_load_all(text) if d]


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str) -> dict:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def gateway_service(objs: list[dict]) -> dict:
    """The gateway's Service (the others are the predictors' headless ones)."""
    (service,) = [
        s
        for s in by_kind(objs, "Service")
        if s["spec"]["selector"].get("app.kubernetes.io/component") == "transformer"
    ]
    return service


def isvc_task(isvc: dict) -> str:
    return isvc["metadata"]["labels"]["photo-enhance.io/task"]


def isvc_key(isvc: dict) -> str:
    """The OIP v2 model name its predictor serves: the task for the task's default model,
    `<task>-<model>` for another one (its --model_name)."""
    (container,) = isvc["spec"]["predictor"]["containers"]
    names = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--model_name=")]
    return names[0] if names else isvc_task(isvc)


def storage_uris(isvc: dict) -> list[str]:
    """Where KServe puts a predictor's weights from: its storageUris (fetched into /mnt/models)
    or, for a pvc:// folder, the kserve-container's STORAGE_URI (mounted at /mnt/models)."""
    predictor = isvc["spec"]["predictor"]
    entries = predictor.get("storageUris") or []
    assert all(entry["mountPath"] == "/mnt/models" for entry in entries)
    env = {e["name"]: e.get("value") for e in predictor["containers"][0].get("env", [])}
    uris = [entry["uri"] for entry in entries]
    if "STORAGE_URI" in env:
        assert not uris, "KServe refuses storageUris beside STORAGE_URI"
        uris = [env["STORAGE_URI"]]
    return uris


POD_SPEC_FIELDS = {
    "containers",
    "initContainers",
    "volumes",
    "securityContext",
    "nodeSelector",
    "tolerations",
    "affinity",
    "serviceAccountName",
    "automountServiceAccountToken",
    "imagePullSecrets",
    "priorityClassName",
    "runtimeClassName",
    "schedulerName",
    "terminationGracePeriodSeconds",
    "topologySpreadConstraints",
    "hostNetwork",
    "hostPID",
    "hostIPC",
}


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    """Every pod spec the chart defines: Deployment templates and each InferenceService's
    predictor (its PodSpec fields; KServe adds the storage initializer, not ours)."""
    specs = []
    for obj in objs:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs.append((name, obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "InferenceService":
            predictor = obj["spec"]["predictor"]
            specs.append((name, {k: v for k, v in predictor.items() if k in POD_SPEC_FIELDS}))
        elif obj["kind"] == "Pod":
            specs.append((name, obj["spec"]))
    return specs


def selector_matches(selector: dict, labels: dict) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND matchExpressions)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def kserve_predictor_service(isvc: dict) -> dict:
    """The Service KServe 0.21 creates for an InferenceService's predictor in Standard mode
    (pkg/controller/v1beta1/inferenceservice/reconcilers/service: createDefaultSvc): named
    "<isvc>-predictor"; port 80 -> the first container port; every further container port is
    exposed under its own number and name."""
    container = isvc["spec"]["predictor"]["containers"][0]
    ports = container.get("ports") or []
    service_ports = []
    if ports:
        first = ports[0]
        service_ports.append(
            {"name": first.get("name"), "port": 80, "targetPort": first["containerPort"]}
        )
        for port in ports[1:]:
            service_ports.append(
                {
                    "name": port.get("name"),
                    "port": port["containerPort"],
                    "targetPort": port["containerPort"],
                }
            )
    else:
        service_ports.append({"name": None, "port": 80, "targetPort": 8080})
    return {
        "name": f"{isvc['metadata']['name']}-predictor",
        "namespace": isvc["metadata"]["namespace"],
        "ports": service_ports,
    }


def strict_schema(schema: dict) -> dict:
    """A CRD's openAPIV3Schema with unknown fields rejected: the API server would silently
    prune them (a typo'd field is a silent no-op), so the test treats them as errors."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema
