"""KServe's storage initializer (the PyPI package kserve-storage, the code of KServe's
storage-initializer container) fills a /mnt/models-shaped folder from the URIs the chart renders.

https:// is covered in tests/test_k8s_pods.py, where the default install's pods download the
official URLs (hosts mapped to a local HTTPS server) and then serve from what they fetched. Here:
s3:// (moto's S3 server), a local path (what pvc:// stands for: KServe mounts a claim, it does not
copy it), and the answers KServe's HTTP downloader refuses.
"""

from __future__ import annotations

import filecmp

import pytest

from archs.catalogue import CATALOGUE
from tests import storage_initializer as si
from tests.k8s_helpers import by_kind, isvc_task, render, storage_uris

S3_BUCKET = "photo-enhance-weights"


def official_names(task: str, variant: str) -> list[str]:
    return sorted(f.filename for f in CATALOGUE[(task, variant)])


def assert_same_files(folder, source_dir, names):
    assert sorted(p.name for p in folder.iterdir()) == names
    for name in names:
        assert filecmp.cmp(folder / name, source_dir / name, shallow=False), name


@pytest.fixture(scope="module")
def s3(weights):
    """moto S3 with the test weights laid out <task>/<variant>/<official names>, as
    hack/stage-weights lays out a claim (and as a user would sync WEIGHTS_DIR to a bucket)."""
    with si.s3_server() as server:
        client = server.client()
        client.create_bucket(Bucket=S3_BUCKET)
        for task, variant in (("restore", "denoise"), ("upscale", "x2plus")):
            for path in weights.model_dir(task, variant).iterdir():
                client.upload_file(str(path), S3_BUCKET, f"{task}/{variant}/{path.name}")
        yield server


def test_s3_folder_and_object_uris_fill_mnt_models(s3, weights, tmp_path):
    """A folder URI (every object under the prefix) and an exact object URI, as rendered."""
    objs = render(
        "default",
        "--set",
        f"models.restore.storageUris={{s3://{S3_BUCKET}/restore/denoise}}",
        "--set",
        "models.upscale.variant=x2plus",
        "--set",
        f"models.upscale.storageUris={{s3://{S3_BUCKET}/upscale/x2plus/RealESRGAN_x2plus.pth}}",
    )
    isvcs = {isvc_task(i): i for i in by_kind(objs, "InferenceService")}
    for task, variant in (("restore", "denoise"), ("upscale", "x2plus")):
        pod = isvcs[task]["spec"]["predictor"]
        pairs = [
            (e["uri"], tmp_path / task / e["mountPath"].lstrip("/")) for e in pod["storageUris"]
        ]
        result = si.run(pairs, s3.env(), cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert_same_files(
            tmp_path / task / "mnt" / "models",
            weights.model_dir(task, variant),
            official_names(task, variant),
        )


def test_s3_without_credentials_fails_clearly(s3, tmp_path):
    env = {k: v for k, v in s3.env().items() if not k.startswith("AWS_SECRET")}
    env["AWS_ACCESS_KEY_ID"] = "nobody"
    result = si.run([(f"s3://{S3_BUCKET}/restore/denoise", tmp_path / "m")], env, cwd=tmp_path)
    assert result.returncode == 1
    assert "credentials" in result.stderr and "AWS_SECRET_ACCESS_KEY" in result.stderr


def test_a_local_folder_stands_in_for_the_kind_claim(weights, tmp_path):
    """values-kind.yaml's pvc://photo-enhance-weights/<task>/<variant>: KServe mounts that
    folder of the claim at /mnt/models. The same folder, as a local path through the storage
    initializer, gives the predictor the same files."""
    claim = weights.weights_dir()  # laid out <task>/<variant>/<files>, like the staged claim
    for isvc in by_kind(render("kind"), "InferenceService"):
        (uri,) = storage_uris(isvc)
        claim_name, _, path = uri.removeprefix("pvc://").partition("/")
        assert claim_name == "photo-enhance-weights"
        task, variant = path.split("/")
        source = weights.folder_of(task, variant)  # generated on first use
        if (task, variant) in CATALOGUE:
            names = official_names(task, variant)
        else:  # another model (general-x4v3): its own file
            names = sorted(p.name for p in source.iterdir())
        dest = tmp_path / path / "mnt" / "models"
        result = si.run([(str(claim / path), dest)], {}, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert_same_files(dest, source, names)


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/octet-stream", True),
        # S3-backed CDNs often answer this; KServe 0.21 refuses anything but octet-stream
        ("binary/octet-stream", False),
        ("text/html; charset=utf-8", False),  # a login or "confirm download" page
    ],
)
def test_https_downloads_need_octet_stream(weights, tmp_path, content_type, accepted):
    model = weights.model_dir("restore", "denoise") / "NAFNet-SIDD-width64.pth"
    with si.file_server({"/w/NAFNet-SIDD-width64.pth": model}, tmp_path) as server:
        server.content_type = content_type
        result = si.run(
            [(f"{server.base}/w/NAFNet-SIDD-width64.pth", tmp_path / "m")],
            {"REQUESTS_CA_BUNDLE": str(server.ca_file)},
            cwd=tmp_path,
        )
    assert (result.returncode == 0) is accepted, result.stderr[-2000:]
    if not accepted:
        assert "application/octet-stream" in result.stderr


def test_plain_http_is_accepted_too(weights, tmp_path):
    model = weights.model_dir("upscale", "x2plus") / "RealESRGAN_x2plus.pth"
    with si.file_server({"/RealESRGAN_x2plus.pth": model}, tmp_path, tls=False) as server:
        result = si.run([(f"{server.base}/RealESRGAN_x2plus.pth", tmp_path / "m")], {}, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert filecmp.cmp(tmp_path / "m" / "RealESRGAN_x2plus.pth", model, shallow=False)
