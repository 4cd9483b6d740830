"""What a request costs outside the model: every stage, wall and CPU seconds, per route and size.

    flock /tmp/bench.lock .venv/bin/python bench/overhead.py            # full: 256..2048 px
    flock /tmp/bench.lock .venv/bin/python bench/overhead.py --quick    # 256 and 512 px, png
    .venv/bin/python bench/overhead.py --plot-only A.json [--before B.json] --plot out.png

Stages, each run with the checkout's own code (whatever `transformer` and `predictors` import):
  upload      the gateway's multipart parsing (`transformer.uploads.read_upload`)
  decode      `transformer.images.decode`
  grpc_out    the gateway's `Predictors.infer` sending the image to a real KServe predictor
              process (the real `EnhanceModel.predict` path) that answers 1x1 px
  tensor      the predictor's `to_tensor`
  forward     a zero-cost network standing in for the model inside the real predictor code
              (it returns zeros): reported, never added to the totals
  blend       the predictor's remaining host work: tiling, blending, Lab conversions...
  uint8       the predictor's `to_image`
  grpc_back   the same gRPC call with a 1x1 input and the real-size answer
  encode      `transformer.images.encode` of the answer
gRPC stages count the CPU of both processes and include one loopback round trip (~1 ms).
Resizing: none of these routes resizes at these sizes (the pipeline's box fit does; not timed).

The anchor does the same work the way the original single-process service did: cv2.imdecode,
Real-ESRGAN's host code around the (zero-cost) model (BGR->RGB float, per-tile copies into the
output, clamp/round to uint8; DDColor's own code for colorize), cv2.imencode (PNG compression 1,
JPEG/WebP quality 95). Best of --repeat runs. Output: a table on stdout, JSON in bench/results/
and, with matplotlib, a plot. Other processes on the machine lengthen wall time; CPU time less.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# This folder holds bench/predictors.py, which would shadow the `predictors` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # PYTHONPATH (e.g. another checkout) keeps precedence

ROUTES = {  # route -> (generated variant, predictor parameters, answer scale)
    "restore": ("denoise", {"tile_size": 0}, 1),
    "colorize": ("paper_tiny", {"render_factor": 32}, 1),
    "upscale": ("x4plus", {"scale": 4, "tile_size": 512}, 4),
}
FORMATS = ("png", "jpg", "webp")
STAGES = ("upload", "decode", "grpc_out", "tensor", "blend", "uint8", "grpc_back", "encode")
TICKS = os.sysconf("SC_CLK_TCK")


class Clock:
    """Wall and CPU seconds of a block; CPU of this process plus, optionally, another one."""

    def __init__(self, other_pid: int | None = None):
        self.other_pid = other_pid

    def _other_cpu(self) -> float:
        if self.other_pid is None:
            return 0.0
        fields = Path(f"/proc/{self.other_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def __enter__(self):
        self.wall0, self.cpu0, self.other0 = (
            time.perf_counter(),
            time.process_time(),
            self._other_cpu(),
        )
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0 + self._other_cpu() - self.other0


def best(runs: list[dict]) -> dict:
    return {k: min(r[k] for r in runs) for k in runs[0]}


# --- the photo and its upload ---------------------------------------------------------------


def photo(side: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.LANCZOS))


def upload_bytes(rgb: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    options = {"png": {}, "jpg": {"quality": 95}, "webp": {"quality": 95}}[fmt]
    Image.fromarray(rgb).save(out, {"jpg": "JPEG"}.get(fmt, fmt.upper()), **options)
    return out.getvalue()


def multipart(data: bytes, fmt: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    import httpx

    request = httpx.Request("POST", "http://x/", files={"file": (f"photo.{fmt}", data)})
    body = request.read()
    headers = [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    return body, headers


async def read_multipart(body: bytes, headers) -> bytes:
    """The gateway's upload parsing on an in-memory request, fed in 64 KiB chunks like uvicorn."""
    from starlette.requests import Request

    from transformer.uploads import read_upload

    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]

    async def receive():
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/upscale", "headers": headers}
    extra = []
    if "pace" in inspect.signature(read_upload).parameters:  # checkouts with upload timeouts
        from transformer.uploads import Pace

        extra.append(Pace(idle_timeout_s=15, min_bytes_per_s=8192))
    return await read_upload(Request(scope, receive), 64 << 20, *extra)


# --- the predictor side, in process, with a zero-cost network -------------------------------


def zero_network(out_channels: int, scale: int, spent: list[float]):
    import torch

    class ZeroCost(torch.nn.Module):
        """Answers zeros of the right shape at once; its own time is counted in `spent`."""

        def forward(self, x, *args, **kwargs):
            start = time.perf_counter()
            n, _, h, w = x.shape
            out = x.new_zeros(n, out_channels, h * scale, w * scale)
            spent.append(time.perf_counter() - start)
            return out

    return ZeroCost()


def load_model(route: str):
    import torch

    from predictors.colorize import ColorizeModel
    from predictors.restore import RestoreModel
    from predictors.upscale import UpscaleModel
    from tests import weights_factory

    cls = {"restore": RestoreModel, "colorize": ColorizeModel, "upscale": UpscaleModel}[route]
    variant = ROUTES[route][0]
    model = cls(weights_factory.model_dir(route, variant), variant, allow_unverified=True,
                device=torch.device("cpu"))  # fmt: skip
    if not model.load():
        raise RuntimeError(model.load_error)
    spent: list[float] = []
    out_channels, scale = (2, 1) if route == "colorize" else (3, ROUTES[route][2])
    model.loaded.descriptor._model = zero_network(out_channels, scale, spent)  # spandrel: no setter
    return model, spent


def timed_method(model, name: str, log: list[float]) -> None:
    """Wrap model.<name> (when the checkout has it) to add its wall time to `log`."""
    original = getattr(model, name, None)
    if original is None:
        return

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            log.append(time.perf_counter() - start)

    setattr(model, name, wrapper)


def predictor_stages(model, spent: list[float], rgb: np.ndarray, params: dict) -> dict:
    import torch

    tensor_s: list[float] = []
    uint8_s: list[float] = []
    timed_method(model, "to_tensor", tensor_s)
    timed_method(model, "to_image", uint8_s)
    spent.clear()
    with torch.inference_mode(), Clock() as clock:
        model._enhance_batch(rgb[None], dict(params))
    forward = sum(spent)
    for name in ("to_tensor", "to_image"):
        model.__dict__.pop(name, None)
    # CPU of the sub-stages is not separable in one run: share the CPU in proportion to wall.
    ratio = clock.cpu / clock.wall if clock.wall else 1.0
    walls = {
        "tensor": sum(tensor_s),
        "uint8": sum(uint8_s),
        "forward": forward,
    }
    walls["blend"] = max(0.0, clock.wall - walls["tensor"] - walls["uint8"] - forward)
    out = {}
    for name, wall in walls.items():
        out[f"{name}_wall"], out[f"{name}_cpu"] = wall, wall * ratio
    return out


# --- gRPC between the gateway's client and a real predictor process -------------------------

ECHO_SERVER = """
import sys
import numpy as np
try:  # the predictors' own server (predictors/v2grpc.py) where the checkout has it
    from predictors.v2grpc import PredictorServer as ModelServer
except ImportError:
    from kserve import ModelServer
from predictors.base import EnhanceModel
from predictors.v2codec import Param

class Echo(EnhanceModel):
    params = {"out_h": Param(int, 1, 1), "out_w": Param(int, 1, 1)}
    cache = {}

    def enhance(self, rgb, params):
        shape = (params["out_h"], params["out_w"], 3)
        if shape not in self.cache:
            self.cache.clear()
            self.cache[shape] = np.full(shape, 128, np.uint8)
        return self.cache[shape], {}

models = []
for task in ("colorize", "restore", "upscale"):
    cls = type("Echo_" + task, (Echo,), {"task": task})
    model = cls(".", "bench")
    model.ready = True
    models.append(model)
ModelServer().start(models)  # ports and message limits: KServe's flags in sys.argv
"""


class EchoPredictor:
    """A KServe server (real `EnhanceModel.predict`) whose models answer a cached image."""

    def __init__(self):
        from tests.servers import free_port

        self.http, self.grpc = free_port(), free_port()
        env = {**os.environ, "FORCE_CPU": "true", "PYTHONWARNINGS": "ignore"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
        self.log = tempfile.NamedTemporaryFile("w+", prefix="echo-predictor-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER, "--http_port", str(self.http),
             "--grpc_port", str(self.grpc), "--grpc_max_send_message_length", str(512 << 20),
             "--grpc_max_receive_message_length", str(512 << 20)],
            cwd="/", env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"the echo predictor exited:\n{self.log.read()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.http}/v2/health/ready").is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError("the echo predictor did not start")

    def stop(self):
        self.process.terminate()
        self.process.wait(20)
        self.log.close()


class Gateway:
    """The gateway's own gRPC client (`transformer.predictors.Predictors`) in an event loop."""

    def __init__(self, echo: EchoPredictor):
        from transformer.config import Settings
        from transformer.predictors import Predictors

        address = f"127.0.0.1:{echo.grpc}"
        settings = Settings(addresses=dict.fromkeys(("colorize", "restore", "upscale"), address))
        settings.grpc_max_message = 512 << 20
        self.predictors = Predictors(settings)
        self.loop = asyncio.new_event_loop()
        self.pid = echo.process.pid

    def infer(self, route: str, image: np.ndarray, out_h: int, out_w: int) -> tuple[dict, tuple]:
        with Clock(self.pid) as clock:
            answer = self.loop.run_until_complete(
                self.predictors.infer(route, image, {"out_h": out_h, "out_w": out_w})
            )
        return {"wall": clock.wall, "cpu": clock.cpu}, answer.image.shape

    def close(self):
        self.loop.run_until_complete(self.predictors.close())
        self.loop.close()


# --- the anchor: the original single-process service ----------------------------------------

CV2_OPTIONS = {"png": (".png", 16, 1), "jpg": (".jpg", 1, 95), "webp": (".webp", 64, 95)}


def anchor(route: str, data: bytes, fmt: str, model, tile: int = 512) -> dict:
    """cv2.imdecode, the original host code around a zero-cost model, cv2.imencode."""
    import cv2
    import torch

    scale = ROUTES[route][2]
    ext, flag, value = CV2_OPTIONS[fmt]
    with Clock() as clock:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if route == "colorize":
            out = model.enhance(np.ascontiguousarray(bgr[:, :, ::-1]), {"render_factor": 32})[0]
            out = out[:, :, ::-1]
        else:  # Real-ESRGAN's RealESRGANer.enhance/tile_process, the network costing nothing
            img = cv2.cvtColor(bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2RGB)
            x = torch.from_numpy(np.transpose(img, (2, 0, 1))).float()[None]
            h, w = img.shape[:2]
            output = x.new_zeros(1, 3, h * scale, w * scale)
            step = tile if route == "upscale" else max(h, w)
            for y0 in range(0, h, step):
                for x0 in range(0, w, step):
                    patch = x[:, :, y0 : y0 + step, x0 : x0 + step]
                    result = patch.new_zeros(1, 3, patch.shape[2] * scale, patch.shape[3] * scale)
                    output[:, :, y0 * scale : (y0 * scale + result.shape[2]),
                           x0 * scale : (x0 * scale + result.shape[3])] = result  # fmt: skip
            out = output.data.squeeze().float().cpu().clamp_(0, 1).numpy()
            out = np.transpose(out[[2, 1, 0], :, :], (1, 2, 0))
            out = (out * 255.0).round().astype(np.uint8)
        ok, _ = cv2.imencode(ext, out, [flag, value])
        assert ok
    return {"wall": clock.wall, "cpu": clock.cpu}


# --- the run --------------------------------------------------------------------------------


def measure(args) -> list[dict]:
    import cv2
    import torch

    from transformer import images

    cv2.setNumThreads(1)  # the anchor's imencode runs single-threaded, as in the issue
    echo = EchoPredictor()
    gateway = Gateway(echo)
    rows = []
    try:
        for route in args.routes:
            model, spent = load_model(route)
            params, scale = ROUTES[route][1], ROUTES[route][2]
            for side in args.sizes:
                rgb = photo(side)
                repeat = args.repeat if side < 2048 else 1
                if side < 2048:  # warm-up: first calls allocate (2048 px follows warm runs)
                    predictor_stages(model, spent, rgb, params)
                    gateway.infer(route, rgb, 1, 1)
                host = best([predictor_stages(model, spent, rgb, params) for _ in range(repeat)])
                out_side = side * scale
                grpc_out = best([gateway.infer(route, rgb, 1, 1)[0] for _ in range(repeat)])
                tiny = np.zeros((1, 1, 3), np.uint8)
                back = [gateway.infer(route, tiny, out_side, out_side) for _ in range(repeat)]
                assert back[0][1] == (out_side, out_side, 3), back[0][1]
                grpc_back = best([b[0] for b in back])
                answer = upscaled(rgb, scale) if scale > 1 else rgb
                for fmt in args.formats:
                    data = upload_bytes(rgb, fmt)
                    body, headers = multipart(data, fmt)
                    runs = []
                    for _ in range(repeat):
                        run = {}
                        with Clock() as c:
                            got = gateway.loop.run_until_complete(read_multipart(body, headers))
                        run["upload_wall"], run["upload_cpu"] = c.wall, c.cpu
                        assert got == data
                        with Clock() as c:
                            images.decode(data, 100_000_000, 2048)
                        run["decode_wall"], run["decode_cpu"] = c.wall, c.cpu
                        with Clock() as c:
                            encoded, _ = images.encode(answer, None, fmt)
                        run["encode_wall"], run["encode_cpu"] = c.wall, c.cpu
                        runs.append(run)
                    row = {"route": route, "side": side, "answer_side": out_side, "format": fmt}
                    row.update(best(runs))
                    row.update(host)
                    row["grpc_out_wall"], row["grpc_out_cpu"] = grpc_out["wall"], grpc_out["cpu"]
                    row["grpc_back_wall"], row["grpc_back_cpu"] = (
                        grpc_back["wall"],
                        grpc_back["cpu"],
                    )
                    row["answer_bytes"] = len(encoded)
                    row["total_wall"] = sum(row[f"{s}_wall"] for s in STAGES)
                    row["total_cpu"] = sum(row[f"{s}_cpu"] for s in STAGES)
                    with torch.inference_mode():
                        anchors = [anchor(route, data, fmt, model) for _ in range(repeat)]
                    row["anchor_wall"] = min(a["wall"] for a in anchors)
                    row["anchor_cpu"] = min(a["cpu"] for a in anchors)
                    rows.append(row)
                    print(line(row), file=sys.stderr, flush=True)
            del model
    finally:
        gateway.close()
        echo.stop()
    return rows


def upscaled(rgb: np.ndarray, scale: int) -> np.ndarray:
    """A large answer like the model's: the photo resized (cv2 Lanczos, fast for 8192 px)."""
    import cv2

    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (w * scale, h * scale), interpolation=cv2.INTER_LANCZOS4)


def line(r: dict) -> str:
    cells = [f"{r[f'{s}_wall']:.3f}/{r[f'{s}_cpu']:.3f}" for s in STAGES]
    return (
        f"| {r['route']} | {r['side']}->{r['answer_side']} | {r['format']} | "
        + " | ".join(cells)
        + f" | **{r['total_wall']:.3f}/{r['total_cpu']:.3f}** | {r['forward_wall']:.3f} "
        f"| {r['anchor_wall']:.3f}/{r['anchor_cpu']:.3f} |"
    )


def table(rows: list[dict]) -> str:
    head = ["route", "px in->out", "fmt", *STAGES, "total", "forward (zero-cost)", "anchor"]
    lines = [
        "Seconds, wall/CPU (best of runs); total excludes the forward.",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += [line(r) for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, before: list[dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    routes = list(dict.fromkeys(r["route"] for r in rows))
    fig, axes = plt.subplots(1, len(routes), figsize=(5 * len(routes), 4), squeeze=False)
    colours = {"png": "tab:blue", "jpg": "tab:orange", "webp": "tab:green"}
    for ax, route in zip(axes[0], routes, strict=True):
        for fmt, colour in colours.items():
            for source, style, label, key in (
                (rows, "-", "", "total_cpu"),
                (before or [], ":", " before", "total_cpu"),
                (rows, "--", " anchor (cv2)", "anchor_cpu"),
            ):
                pts = sorted(
                    (r["side"], r[key])
                    for r in source
                    if r["route"] == route and r["format"] == fmt
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, color=colour, marker="o",
                            label=f"{fmt}{label}", alpha=0.5 if style == ":" else 1)  # fmt: skip
        sides = sorted({r["side"] for r in rows})
        ax.set(title=f"/{route}: host work, model excluded", xlabel="input side (px)",
               ylabel="CPU seconds (both processes)", xscale="log", yscale="log")  # fmt: skip
        ax.minorticks_off()
        ax.set_xticks(sides, [str(side) for side in sides])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    parser.add_argument("--repeat", type=int, default=2, help="runs per case (1 at 2048 px)")
    parser.add_argument("--quick", action="store_true", help="256 and 512 px, png only")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/...)")
    parser.add_argument("--plot", type=Path, help="PNG path (default beside the JSON)")
    parser.add_argument("--before", type=Path, help="an earlier JSON to draw for comparison")
    parser.add_argument("--plot-only", type=Path, help="draw the plot of this JSON and stop")
    args = parser.parse_args()
    before = json.loads(args.before.read_text())["rows"] if args.before else None
    if args.plot_only:
        rows = json.loads(args.plot_only.read_text())["rows"]
        plot(rows, args.plot or args.plot_only.with_suffix(".png"), before)
        return 0
    if args.quick:
        args.sizes, args.formats = [256, 512], ["png"]
    import torch

    rows = measure(args)
    print(table(rows))
    out = args.out or ROOT / "bench" / "results" / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "code": str(Path(sys.modules["transformer"].__file__).parent.parent)}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\n{out}")
    try:
        plot(rows, args.plot or out.with_suffix(".png"), before)
        print(args.plot or out.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
