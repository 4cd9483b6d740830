"""The chart's pods as local processes, started with exactly the rendered command lines.

Each container runs its rendered `command` (else its image's ENTRYPOINT) and `args`, with its
image's ENV (read from the Dockerfile) overlaid by the rendered `env`, as the kubelet would.
What has to change to run on one machine, and nothing else:
- a container port becomes a free local port, in the args (`--http_port=8080`) and wherever a
  Service leads to it; a port number in the args that the container does not declare, or a
  Service port that leads to no declared port, is a `ChartMismatch`;
- `<service>.<namespace>.svc.<domain>:<port>` in the env, `dns:///` before it or not, becomes
  127.0.0.1:<that local port> (one local pod behind each Service);
- the pod's volumes (`/tmp`, `/mnt/models`, the gateway's data volume) become local folders;
  the command runs in an empty folder standing in for the image's read-only WORKDIR, with
  TMPDIR inside the pod's /tmp;
- `python` is this interpreter, with the source tree on PYTHONPATH standing in for the
  installed package.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.dockerfile import Dockerfile
from tests.k8s_helpers import isvc_key, isvc_task, kserve_predictor_service
from tests.servers import ROOT, free_port, stop_process

PORT_ARG = re.compile(r"^(--[\w-]*port)=(\d+)$")
SERVICE_ADDRESS = re.compile(
    r"^(?:dns:///)?([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.[a-z0-9.-]+)?:(\d+)$"
)
TASK_LABEL = "photo-enhance.io/task"
MODEL_LABEL = "photo-enhance.io/model"
IMAGES = {
    "predictor": ROOT / "Dockerfile.predictor",
    "transformer": ROOT / "Dockerfile.transformer",
}


class ChartMismatch(AssertionError):
    """The chart describes a pod that cannot work as written."""


@dataclass
class LocalContainer:
    name: str
    container: dict
    image: Dockerfile
    volumes: dict[str, Path]  # mount path in the pod -> local folder
    ports: dict[int, int] = field(default_factory=dict)  # containerPort -> local port
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    def __post_init__(self) -> None:
        declared = self.container.get("ports") or []
        self.ports = {p["containerPort"]: free_port() for p in declared}
        self.port_names = {p["name"]: p["containerPort"] for p in declared if p.get("name")}

    def container_port(self, port: int | str) -> int:
        """A port as a probe or a Service's targetPort names it: number or port name."""
        number = self.port_names.get(port) if isinstance(port, str) else port
        if number not in self.ports:
            raise ChartMismatch(
                f"{self.name}: port {port!r} is not a declared container port "
                f"({sorted(self.port_names.items())})"
            )
        return number

    def local_port(self, port: int | str) -> int:
        return self.ports[self.container_port(port)]

    def _path(self, value: str) -> str:
        for mount, local in sorted(self.volumes.items(), key=lambda kv: -len(kv[0])):
            if value == mount or value.startswith(mount + "/"):
                return str(local) + value[len(mount) :]
        return value

    def argv(self) -> list[str]:
        command = self.container.get("command") or self.image.entrypoint
        argv = []
        for arg in [*command, *(self.container.get("args") or [])]:
            if m := PORT_ARG.match(arg):
                flag, number = m.group(1), int(m.group(2))
                if number not in self.ports:
                    raise ChartMismatch(
                        f"{self.name}: {arg} but the container declares ports {sorted(self.ports)}"
                    )
                arg = f"{flag}={self.ports[number]}"
            elif "=" in arg:
                flag, _, value = arg.partition("=")
                arg = f"{flag}={self._path(value)}"
            else:
                arg = self._path(arg)
            argv.append(arg)
        if argv[0] == "python":
            argv[0] = sys.executable
        return argv

    def env(self, resolve) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
        env.update(self.image.env)
        for entry in self.container.get("env") or []:
            env[entry["name"]] = self._env_value(entry)
        for key, value in env.items():
            if m := SERVICE_ADDRESS.match(value):
                env[key] = f"127.0.0.1:{resolve(m.group(1), m.group(2), int(m.group(3)))}"
            else:
                env[key] = self._path(value)
        env["TMPDIR"] = str(self.volumes["/tmp"])  # Python's tempfile then uses the pod's /tmp
        return env

    def _env_value(self, entry: dict) -> str:
        """A plain value, or a CPU limit in whole CPUs as the kubelet resolves it (rounded up)."""
        if "value" in entry:
            return entry["value"]
        field = (entry.get("valueFrom") or {}).get("resourceFieldRef") or {}
        if field.get("resource") != "limits.cpu" or str(field.get("divisor", "1")) != "1":
            raise ChartMismatch(f"{self.name}: env {entry['name']} is neither plain nor limits.cpu")
        cpu = str(self.container["resources"]["limits"]["cpu"])
        cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        return str(math.ceil(cores))

    def start(self, resolve, workdir: Path) -> None:
        self.log_path = self.volumes["/tmp"].parent / f"{self.name.replace('/', '-')}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                self.argv(),
                cwd=workdir,
                env=self.env(resolve),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def probe(self, kind: str) -> bool:
        http_get = self.container[kind]["httpGet"]
        url = f"http://127.0.0.1:{self.local_port(http_get['port'])}{http_get['path']}"
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)


@dataclass
class LocalInstall:
    """The predictors (one per InferenceService) and the transformer of one rendered install."""

    objs: list[dict]
    # OIP name (the task for its default model, isvc_key) -> the folder standing in for its
    # /mnt/models
    model_dirs: dict[str, Path]
    root: Path  # the pods' local folders and logs
    containers: dict[str, LocalContainer] = field(default_factory=dict)
    services: dict[tuple[str, str], tuple[dict, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = self.root / "app"  # the image's WORKDIR: nothing may be written there
        self.workdir.mkdir(parents=True)
        by_labels = {  # (task, model) labels -> its predictor's key
            (isvc_task(o), o["metadata"]["labels"].get(MODEL_LABEL)): isvc_key(o)
            for o in self.objs
            if o["kind"] == "InferenceService"
        }
        for obj in self.objs:
            kind, meta = obj["kind"], obj["metadata"]
            if kind == "InferenceService":
                key = isvc_key(obj)
                (container,) = obj["spec"]["predictor"]["containers"]
                self._add(
                    f"predictor/{key}",
                    container,
                    "predictor",
                    {"/mnt/models": self.model_dirs[key]},
                )
                svc = kserve_predictor_service(obj)
                self.services[(svc["name"], svc["namespace"])] = (
                    {"ports": svc["ports"]},
                    f"predictor/{key}",
                )
            elif kind == "Deployment":
                (container,) = obj["spec"]["template"]["spec"]["containers"]
                # Its other volumes (the jobs' data volume) become empty local folders.
                volumes = {}
                for mount in container.get("volumeMounts") or []:
                    if mount["mountPath"] != "/tmp":
                        local = self.root / "transformer" / "volumes" / mount["name"]
                        local.mkdir(parents=True)
                        volumes[mount["mountPath"]] = local
                self._add("transformer", container, "transformer", volumes)
            elif kind == "Service":  # the gateway's, or a headless one of a task's predictors
                selector = obj["spec"].get("selector", {})
                task = selector.get(TASK_LABEL)
                key = by_labels.get((task, selector.get(MODEL_LABEL)), task)
                backend = f"predictor/{key}" if task else "transformer"
                self.services[(meta["name"], meta["namespace"])] = (obj["spec"], backend)

    def _add(self, name: str, container: dict, image: str, volumes: dict[str, Path]) -> None:
        tmp = self.root / name.replace("/", "-") / "tmp"
        tmp.mkdir(parents=True)
        self.containers[name] = LocalContainer(
            name, container, Dockerfile.read(IMAGES[image]), {"/tmp": tmp, **volumes}
        )

    def resolve(self, service: str, namespace: str, port: int) -> int:
        """The local port behind <service>.<namespace>.svc:<port>."""
        if (service, namespace) not in self.services:
            raise ChartMismatch(f"no Service {service} in {namespace}: {sorted(self.services)}")
        spec, backend = self.services[(service, namespace)]
        for entry in spec["ports"]:
            if entry["port"] == port:
                return self.containers[backend].local_port(entry.get("targetPort", port))
        raise ChartMismatch(f"Service {service} has no port {port}: {spec['ports']}")

    def predictors(self) -> list[LocalContainer]:
        return [c for name, c in self.containers.items() if name.startswith("predictor/")]

    def start(self, timeout: float = 240) -> None:
        for container in self.containers.values():
            container.start(self.resolve, self.workdir)
        deadline = time.monotonic() + timeout
        waiting = list(self.containers.values())
        while waiting:
            for container in list(waiting):
                if container.process.poll() is not None:
                    raise RuntimeError(f"{container.name} exited:\n{container.log()[-3000:]}")
                if container.probe("readinessProbe"):
                    waiting.remove(container)
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {c.name}\n{c.log()[-2000:]}" for c in waiting)
                raise TimeoutError(f"not ready: {[c.name for c in waiting]}\n{logs}")
            time.sleep(0.3)

    def url(self, service: str, port: int = 80) -> str:
        namespace = next(ns for name, ns in self.services if name == service)
        return f"http://127.0.0.1:{self.resolve(service, namespace, port)}"

    def stop(self) -> None:
        for container in self.containers.values():  # all at once: each takes a while to drain
            if container.process and container.process.poll() is None:
                container.process.terminate()
        for container in self.containers.values():
            container.stop()


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folders` (skipping git, venvs, caches) with its size and mtime."""
    skip = {".git", ".venv", ".tools", ".cache", ".pytest_cache", ".ruff_cache"}
    files = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d not in skip]
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                files[path] = (st.st_size, st.st_mtime_ns)
    return files
