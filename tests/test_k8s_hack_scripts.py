"""hack/ scripts: shellcheck-clean, and --dry-run prints every step in order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .k8s_helpers import CHART, ROOT, tool

SCRIPTS = ("install-tools", "kind-up", "kind-down", "kind-e2e", "stage-weights", "lib.sh")


def dry_run(script: str, *args: str, tmp_path: Path, **env: str) -> list[str]:
    """Run `hack/<script> --dry-run`, with no docker, kind or cluster on PATH."""
    environ = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "WEIGHTS_DIR": str(tmp_path / "weights"),
        **env,
    }
    result = subprocess.run(
        [str(ROOT / "hack" / script), "--dry-run", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def commands(lines: list[str]) -> list[str]:
    return [line[2:] for line in lines if line.startswith("+ ")]


def assert_in_order(cmds: list[str], patterns: list[str]) -> None:
    """Each pattern matches a later command than the previous one."""
    position = -1
    for pattern in patterns:
        hits = [i for i, c in enumerate(cmds) if i > position and re.search(pattern, c)]
        assert hits, f"no command matching {pattern!r} after step {position}:\n" + "\n".join(cmds)
        position = hits[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_clean(script):
    result = subprocess.run(
        [tool("shellcheck"), "-x", "--severity=style", f"hack/{script}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_strict_mode_and_executable(script):
    text = (ROOT / "hack" / script).read_text()
    if script == "lib.sh":
        assert text.startswith("# shellcheck shell=bash")
        return
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(ROOT / "hack" / script, os.X_OK)


def test_kind_up_dry_run_lists_the_steps_in_order(tmp_path):
    cmds = commands(dry_run("kind-up", tmp_path=tmp_path))
    assert_in_order(
        cmds,
        [
            r"^kind create cluster --name photo-enhance --image kindest/node:v1\.\d+\.\d+",
            r"kubectl .*apply .*cert-manager/releases/download/v1\.\d+\.\d+/cert-manager\.yaml",
            r"kubectl .*-n cert-manager wait",
            r"helm .*upgrade --install kserve-crd oci://ghcr\.io/kserve/charts/kserve-crd "
            r"--version v0\.21\.\d+",
            r"helm .*upgrade --install kserve oci://ghcr\.io/kserve/charts/kserve-resources "
            r"--version v0\.21\.\d+"
            r".*kserve\.controller\.deploymentMode=Standard",
            r"kubectl .*-n kserve wait .*kserve-controller-manager",
            r"^docker build -f \S+/Dockerfile\.predictor --build-arg TORCH_FLAVOR=cpu "
            r"-t photo-enhance/predictor:dev-cpu",
            r"^docker build -f \S+/Dockerfile\.transformer -t photo-enhance/transformer:dev",
            r"^kind load docker-image photo-enhance/predictor:dev-cpu "
            r"photo-enhance/transformer:dev",
            r"fetch-weights colorize --variant paper_tiny",
            r"fetch-weights upscale --variant x2plus",
            # values-kind.yaml's other upscale model: its official URL, its pinned sha256
            r"fetch-weights upscale --variant general-x4v3 .*--url https://github\.com/xinntao/"
            r"Real-ESRGAN/releases/download/v0\.2\.5\.0/realesr-general-x4v3\.pth "
            r"--sha256 8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292$",
            r"kubectl .* create namespace photo-enhance",
            r"kubectl .* apply -f \S+stage-weights",
            r"kubectl .* wait --for=condition=Ready pod/photo-enhance-weights-loader",
            r"kubectl .* cp \S+/weights/colorize/paper_tiny "
            r"photo-enhance/photo-enhance-weights-loader:/weights/colorize/paper_tiny",
            r"kubectl .* cp \S+/weights/upscale/x2plus ",
            r"kubectl .* cp \S+/weights/upscale/general-x4v3 ",
            r"sha256sum",
            r"kubectl .* delete pod photo-enhance-weights-loader",
            r"helm .*upgrade --install photo-enhance \S+/charts/photo-enhance "
            r"--namespace photo-enhance "
            r"-f \S+/values-kind\.yaml",
            r"kubectl .*rollout status deployment/photo-enhance-transformer",
            r"kubectl .*wait --for=condition=Ready inferenceservice --all",
        ],
    )
    # a dry run touches nothing: no temp manifests left behind, no tools installed
    assert not list(tmp_path.glob("stage-weights.*"))


def test_kind_values_point_at_what_kind_up_stages(tmp_path):
    """The PVC paths in values-kind.yaml (each task's model and its others) are the ones kind-up
    copies the weights to; an other model's pinned sha256 is the one kind-up fetches it with."""
    cmds = commands(dry_run("kind-up", tmp_path=tmp_path))
    staged = {m.group(1) for c in cmds if (m := re.search(r" cp \S+ \S+:/weights/(\S+)$", c))}
    fetched_pins = {
        f"{m.group(1)}/{m.group(2)}": m.group(3)
        for c in cmds
        if (m := re.search(r"fetch-weights (\S+) --variant (\S+) .*--sha256 (\S+)$", c))
    }
    values = yaml.safe_load((CHART / "values-kind.yaml").read_text())
    wanted, pins = set(), {}
    for task, model in values["models"].items():
        for name, entry in [
            (model["variant"], model),
            *((o["name"], o) for o in model.get("others", [])),
        ]:
            (uri,) = entry["storageUris"]
            assert uri == f"pvc://photo-enhance-weights/{task}/{name}"
            wanted.add(f"{task}/{name}")
            if "sha256" in entry:
                pins[f"{task}/{name}"] = entry["sha256"]
    assert "upscale/general-x4v3" in wanted
    assert staged == wanted
    assert fetched_pins == pins


def test_kind_e2e_dry_run_calls_every_route_then_oip(tmp_path):
    cmds = commands(dry_run("kind-e2e", tmp_path=tmp_path))
    assert_in_order(
        cmds,
        [
            r"kubectl --context kind-photo-enhance --namespace photo-enhance "
            r"get inferenceservices -o json > \S+/isvcs\.json",
            r"kubectl --context kind-photo-enhance --namespace photo-enhance port-forward "
            r"svc/photo-enhance-transformer 18080:80",
            r"curl .*--retry .*127\.0\.0\.1:18080/health",
            # every route, the checks tests/test_k8s_pods.py runs against the chart's pods
            r"e2e_check\.py gateway http://127\.0\.0\.1:18080 --out \S+ --isvcs \S+/isvcs\.json$",
            r"port-forward svc/photo-enhance-upscale-predictor 18081:80",
            r"curl .*127\.0\.0\.1:18081/v2/health/ready",
            r"e2e_check\.py oip http://127\.0\.0\.1:18081 upscale",
        ],
    )


def test_kind_down_dry_run(tmp_path):
    cmds = commands(dry_run("kind-down", "--cluster", "demo", tmp_path=tmp_path))
    assert cmds == ["kind delete cluster --name demo"]


def test_stage_weights_dry_run(tmp_path):
    lines = dry_run(
        "stage-weights",
        "--context",
        "ctx",
        "--namespace",
        "ns",
        "--pvc",
        "w",
        "--access-mode",
        "ReadWriteMany",
        "restore/deblur",
        tmp_path=tmp_path,
    )
    cmds = commands(lines)
    assert_in_order(
        cmds,
        [
            r"create namespace ns",
            r"label namespace ns .*pod-security\.kubernetes\.io/enforce=baseline",
            r"apply -f ",
            r"wait --for=condition=Ready pod/photo-enhance-weights-loader",
            r"exec photo-enhance-weights-loader -- mkdir -p /weights/restore$",
            r"cp \S+/weights/restore/deblur "
            r"ns/photo-enhance-weights-loader:/weights/restore/deblur$",
            r"sha256sum",
            r"delete pod photo-enhance-weights-loader",
        ],
    )
    assert not any("fetch-weights" in c for c in cmds), "no --fetch: nothing downloaded"
    assert all("--context ctx" in c for c in cmds)
    assert any("models.restore.storageUris={pvc://w/restore/deblur}" in line for line in lines)


def test_stage_weights_refuses_unknown_models(tmp_path):
    result = subprocess.run(
        [str(ROOT / "hack" / "stage-weights"), "--dry-run", "restore/sharpen"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode != 0 and "unknown TASK/VARIANT restore/sharpen" in result.stderr


def test_install_tools_is_idempotent():
    tool("helm")
    again = subprocess.run(
        [str(ROOT / "hack" / "install-tools")], capture_output=True, text=True, check=True
    )
    assert "already in" in again.stdout
    assert "pip download" not in again.stdout


def test_e2e_check_helpers(tmp_path):
    check = [sys.executable, str(ROOT / "hack" / "e2e_check.py")]
    photo = tmp_path / "photo.jpg"
    subprocess.run([*check, "photo", str(photo), "--side", "64"], check=True, capture_output=True)
    ok = subprocess.run(
        [*check, "image", str(photo), "--like", str(photo), "--type", "jpeg"], capture_output=True
    )
    assert ok.returncode == 0
    wrong = subprocess.run(
        [*check, "image", str(photo), "--like", str(photo), "--scale", "2"],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0 and "expected 128x128" in wrong.stderr
