"""manifests/ (kubectl apply -k) is the chart's output and never drifts from it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from .k8s_helpers import CHART, NAMESPACE, RELEASE, ROOT, helm, tool

OVERLAYS = {"gpu": [], "kind": ["-f", str(CHART / "values-kind.yaml")]}


def _ids(objs: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}


def test_manifests_are_up_to_date_with_the_chart():
    tool("helm")  # gen_manifests uses the pinned helm from .tools/bin
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen_manifests.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_kustomize_overlay_equals_chart_output(overlay):
    built = subprocess.run(
        [tool("kubectl"), "kustomize", str(ROOT / "manifests" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kustomized = _ids([d for d in yaml.safe_load_all(built) if d])
    rendered = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--set",
        "namespace.create=true",
        *OVERLAYS[overlay],
    ).stdout
    charted = _ids([d for d in yaml.safe_load_all(rendered) if d])
    assert sorted(kustomized) == sorted(charted)
    for key, obj in charted.items():
        assert kustomized[key] == obj, f"{key} differs between manifests/ and the chart"
    kinds = {k[0] for k in kustomized}
    assert {"Namespace", "InferenceService", "Deployment", "Service", "NetworkPolicy"} <= kinds
    # one per model: kind serves a second upscale model (general-x4v3) beside x2plus
    assert sum(k[0] == "InferenceService" for k in kustomized) == {"gpu": 4, "kind": 5}[overlay]


def test_overlays_share_a_base():
    base = yaml.safe_load((ROOT / "manifests" / "base" / "kustomization.yaml").read_text())
    assert "namespace-photo-enhance.yaml" in base["resources"]
    for overlay in OVERLAYS:
        kust = yaml.safe_load(
            (ROOT / "manifests" / "overlays" / overlay / "kustomization.yaml").read_text()
        )
        assert kust["resources"][0] == "../../base"
        listed = set(kust["resources"][1:])
        present = {p.name for p in (ROOT / "manifests" / "overlays" / overlay).glob("*.yaml")}
        assert listed == present - {"kustomization.yaml"}


def test_drift_is_detected(tmp_path):
    """The --check the first test relies on fails on a changed file."""
    out = tmp_path / "manifests"
    gen = [sys.executable, str(ROOT / "hack" / "gen_manifests.py"), "--out", str(out)]
    subprocess.run(gen, check=True, capture_output=True)
    assert subprocess.run([*gen, "--check"], capture_output=True).returncode == 0
    victim = out / "overlays" / "kind" / "inferenceservice-photo-enhance-upscale.yaml"
    victim.write_text(victim.read_text().replace("x2plus", "x4plus"))
    result = subprocess.run([*gen, "--check"], capture_output=True, text=True)
    assert result.returncode == 1 and "make manifests" in result.stdout
