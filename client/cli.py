"""photo-enhance <task> INPUT... [-o OUT] [options]   |   photo-enhance health

Sends photos to the photo-enhance gateway as jobs, -j in flight, with a progress bar (tqdm), a bar
per photo in flight (its job's stage) and one line per file. An interrupted run started again
picks up its jobs (client/jobs.py); a gateway without jobs is used synchronously.
Exit status: 0 all done (or skipped), 1 some failed (listed at the end), 2 usage, 130 interrupted.

It fails fast on what retrying cannot fix. Before the first photo it asks /health once: a gateway
that cannot be reached, a server that is not a photo-enhance gateway, or a task (or a pipeline
step switched on) that the gateway does not offer stops the run at once with one message and exit
status 1. During the run, an answer about every file (503 without Retry-After, 404, 401, ...:
send.py) stops it the same way; a 422 stops it as a usage error (2).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx
from tqdm import tqdm

from .display import Display
from .inputs import DEFAULT_OUT, UsageError, find_inputs, plan
from .jobs import Follow, Ledger, ledger_folder, not_ready
from .params import TASK_HELP, TASK_PARAMS, TASKS, Param
from .send import Outcome, Policy, detail_of

DEFAULT_SERVER = "http://127.0.0.1:8000"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
HEALTH_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# The models each task needs; the pipeline's depend on its steps (needed_models).
TASK_MODELS = {
    "colorize": ("colorize",),
    "restore": ("restore",),
    "face-restore": ("face-restore",),
    "upscale": ("upscale",),
}
# Pipeline steps that always run when switched on (upscale only when the photo is smaller than
# the box, colorize=auto only on a photo without colour: the gateway says so if it comes to it).
PIPELINE_ALWAYS = (("restore", "restore", "--no-restore"),
                   ("face_restore", "face-restore", "--no-face-restore"))  # fmt: skip


class Stop(Exception):
    """Nothing more can succeed (gateway down, task not offered, ...): one message, exit 1."""


def _ranged(param: Param):
    def convert(text: str):
        try:
            value = param.kind(text)
        except ValueError:
            kind = "an integer" if param.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if param.minimum is not None and value < param.minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {param.minimum}")
        if param.maximum is not None and value > param.maximum:
            raise argparse.ArgumentTypeError(f"{value} is above the maximum {param.maximum}")
        return value

    return convert


def _add_param(parser: argparse.ArgumentParser, param: Param) -> None:
    flags = [param.flag]
    default = f"(server default: {param.default})"
    if param.kind is bool:
        parser.add_argument(
            *flags,
            dest=param.name,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{param.help} {default}",
        )
        return
    if param.choices:
        parser.add_argument(
            *flags,
            dest=param.name,
            choices=param.choices,
            default=None,
            help=f"{param.help} {default}",
        )
        return
    bounds = ", ".join(
        f"{word} {value:g}"
        for word, value in (("min", param.minimum), ("max", param.maximum))
        if value is not None
    )
    parser.add_argument(
        *flags,
        dest=param.name,
        type=_ranged(param) if param.kind is not str else str,
        default=None,
        metavar="NAME" if param.kind is str else param.kind.__name__.upper(),
        help=f"{param.help}{f' ({bounds})' if bounds else ''} {default}",
    )


def _server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("PHOTO_ENHANCE_URL", DEFAULT_SERVER),
        help=f"the gateway's URL (env PHOTO_ENHANCE_URL, default {DEFAULT_SERVER})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photo-enhance",
        description="Colorize, restore, face-restore or upscale photos on a photo-enhance gateway.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  photo-enhance restore scans/ -o restored/\n"
        "  photo-enhance upscale photo.jpg -o big.png --scale 4\n"
        "  photo-enhance health\n"
        "  photo-enhance <task> --help    (the task's options)\n\n"
        "exit status: 0 all done, 1 some files failed, 2 usage error",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{health," + ",".join(TASKS) + "}"
    )
    health = sub.add_parser("health", help="print each model's state")
    _server_option(health)
    for task, params in TASK_PARAMS.items():
        cmd = sub.add_parser(
            task,
            help=TASK_HELP[task],
            description=f"Send each INPUT to the gateway's /{task} and write the results.",
        )
        cmd.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
        cmd.add_argument(
            "-o",
            "--output",
            metavar="OUT",
            help="a file (.png, .jpg, .webp) for one input, else a folder "
            f"(default ./{DEFAULT_OUT}/)",
        )
        _server_option(cmd)
        cmd.add_argument(
            "-j",
            "--jobs",
            type=int,
            default=2,
            metavar="N",
            help="photos in flight at once: jobs on the gateway (default 2)",
        )
        cmd.add_argument("--overwrite", action="store_true", help="replace existing results")
        cmd.add_argument(
            "--retries",
            type=int,
            default=3,
            metavar="N",
            help="retries on 429, 503 with Retry-After, 504 and connections lost mid-run "
            "(default 3)",
        )
        cmd.add_argument(
            "--max-wait",
            type=float,
            default=120.0,
            metavar="S",
            help="longest wait before one retry, in s (default 120)",
        )
        cmd.add_argument(
            "--timeout",
            type=float,
            default=900.0,
            metavar="S",
            help="longest wait for one answer, in s (default 900)",
        )
        group = cmd.add_argument_group(f"{task} parameters (as the gateway's /{task})")
        for param in params:
            _add_param(group, param)
    return parser


def _check_server(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--server {url!r}: give a URL such as {DEFAULT_SERVER}")
    return url.rstrip("/")


def _effective(task: str, args: argparse.Namespace, name: str):
    value = getattr(args, name, None)
    if value is not None:
        return value
    return next(p.default for p in TASK_PARAMS[task] if p.name == name)


def _result_naming(task: str, args: argparse.Namespace) -> tuple[str, str]:
    tag = f"upscale_x{_effective(task, args, 'scale')}" if task == "upscale" else task
    ext = _effective(task, args, "output_format")
    return tag, "jpg" if ext == "jpeg" else ext


def _format_from_output(args: argparse.Namespace) -> None:
    """`-o result.jpg` for one input picks the format when --output-format is not given."""
    suffix = os.path.splitext(args.output or "")[1].lower().lstrip(".")
    if suffix not in ("png", "jpg", "jpeg", "webp"):
        return
    if args.output_format is None:
        args.output_format = suffix
    elif {args.output_format, suffix} - {"jpg", "jpeg"} and args.output_format != suffix:
        raise UsageError(f"-o {args.output} does not match --output-format {args.output_format}")


def _query(task: str, args: argparse.Namespace) -> dict[str, str]:
    """The options given on the command line, as the gateway's query parameters."""
    return {
        p.name: (str(v).lower() if p.kind is bool else str(v))
        for p in TASK_PARAMS[task]
        if (v := getattr(args, p.name)) is not None
    }


def needed_models(task: str, args: argparse.Namespace) -> list[tuple[str, str]]:
    """(model, how to do without it) for the models the run will certainly call."""
    if task != "pipeline":
        return [(model, "") for model in TASK_MODELS[task]]
    needed = [(model, flag) for name, model, flag in PIPELINE_ALWAYS
              if _effective(task, args, name)]  # fmt: skip
    if _effective(task, args, "colorize") == "true":
        needed.insert(0, ("colorize", "--colorize auto or false"))
    return needed


def preflight(server: str, task: str, args: argparse.Namespace, say) -> None:
    """/health once, before any photo is sent: Stop when nothing could succeed."""
    url = f"{server}/health"
    try:
        reply = httpx.get(url, timeout=HEALTH_TIMEOUT)
    except httpx.HTTPError as exc:
        raise Stop(
            f"cannot reach the gateway at {server} ({type(exc).__name__}: {exc}); is it "
            "running? (--server or PHOTO_ENHANCE_URL names it)"
        ) from None
    try:
        models = reply.json()["models"] if reply.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        models = None
    if not isinstance(models, dict):
        raise Stop(
            f"{url} answered HTTP {reply.status_code}, not a photo-enhance gateway's health: "
            "check --server (or PHOTO_ENHANCE_URL)"
        )
    for model, instead in needed_models(task, args):
        entry = models.get(model)
        if entry is None or entry.get("predictor", "") is None:
            hint = f"; without that step: {instead}" if instead else ""
            raise Stop(f"the gateway at {server} does not offer {model}{hint}")
        if not entry.get("ready", True):
            say(f"note   {model} is not ready yet ({entry.get('detail', 'no reason given')}); "
                "requests wait for it (--retries, --max-wait)")  # fmt: skip


def run_task(task: str, args: argparse.Namespace) -> int:
    server = _check_server(args.server)
    if args.jobs < 1 or args.retries < 0:
        raise UsageError("-j must be 1 or more and --retries 0 or more")
    jobs = find_inputs(args.inputs)
    if len(jobs) == 1:
        _format_from_output(args)
    jobs = plan(jobs, args.output, *_result_naming(task, args))
    todo = [job for job in jobs if args.overwrite or not job.target.exists()]
    if todo:
        preflight(server, task, args, lambda line: print(line, file=sys.stderr))
    skipped = [
        Outcome(job, "skipped", f"{job.target} exists (--overwrite replaces it)")
        for job in jobs
        if job not in todo
    ]
    start = time.monotonic()
    bar = tqdm(total=len(jobs), initial=len(skipped), unit="photo", file=sys.stderr,
               disable=None, dynamic_ncols=True)  # fmt: skip
    for outcome in skipped:
        bar.write(f"skip   {outcome.job.source}: {outcome.message}", file=sys.stderr)
    ledger = Ledger(ledger_folder(jobs))
    try:
        outcomes = _send_all(task, todo, args, server, bar, ledger)
    except KeyboardInterrupt:
        bar.close()
        left = len(ledger.entries)
        where = f"; their ids are in {ledger.path}" if left else ""
        print(f"interrupted: {left} job(s) go on on the gateway{where}. "
              "Run the same command again to pick them up.", file=sys.stderr)  # fmt: skip
        return 130
    finally:
        bar.close()
    return _summary(skipped + outcomes, time.monotonic() - start)


def _send_all(
    task: str, jobs: list, args: argparse.Namespace, server: str, bar, ledger: Ledger
) -> list[Outcome]:
    """Every photo as a job (jobs.Follow), `-j` in flight, one line per outcome."""
    params = _query(task, args)
    policy = Policy(retries=args.retries, max_wait_s=args.max_wait)
    say = lambda line: bar.write(line, file=sys.stderr)  # noqa: E731
    outcomes = []
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    limits = httpx.Limits(max_connections=args.jobs)
    stop = threading.Event()
    display = Display(bar, say, bars=not bar.disable)
    with httpx.Client(base_url=server, timeout=timeout, limits=limits) as client:
        missing = not_ready(client, task, params)
        if missing:
            say(f"note   not ready: {', '.join(missing)}; sending synchronously (no jobs)")
        follow = Follow(client, f"/{task}", params, policy, ledger, stop, say, display.show,
                        use_jobs=not missing)  # fmt: skip

        def one(job):
            display.begin(job)
            try:
                outcome = follow(job)
                if outcome.stop or outcome.refused:
                    stop.set()  # before this worker takes the next photo
                return outcome
            finally:
                display.end(job)

        pool = ThreadPoolExecutor(max_workers=args.jobs)
        futures = [pool.submit(one, job) for job in jobs]
        try:
            for future in as_completed(futures):
                outcome = future.result()
                if outcome.refused:  # every other file would be refused the same way
                    raise UsageError(f"the gateway refused the options: {outcome.message}")
                if outcome.stop:  # and every other file would fail the same way
                    raise Stop(f"{outcome.job.source}: {outcome.message}; stopped, nothing "
                               "more is sent")  # fmt: skip
                outcomes.append(outcome)
                if outcome.status == "done":
                    took = f"{outcome.seconds:.1f} s"
                    line = f"done   {outcome.job.source} -> {outcome.message} ({took})"
                else:
                    line = f"FAILED {outcome.job.source}: {outcome.message}"
                bar.write(line, file=sys.stdout)
                bar.update(1)
        except (UsageError, Stop):
            stop.set()
            ledger.forget_unsent()
            raise
        finally:
            # On an early exit (Ctrl-C, refused options, Stop) nothing more is sent: the queued
            # work is dropped; jobs under way go on on the gateway, their ids kept in the ledger.
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            display.close()
    pool.shutdown(wait=True)
    return outcomes


def _summary(outcomes: list[Outcome], seconds: float) -> int:
    count = {
        status: sum(o.status == status for o in outcomes)
        for status in ("done", "skipped", "failed")
    }
    print(
        f"{count['done']} done, {count['skipped']} skipped, {count['failed']} failed "
        f"in {seconds:.1f} s",
        file=sys.stderr,
    )
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print("failed:", file=sys.stderr)
        for outcome in failed:
            print(f"  {outcome.job.source}: {outcome.message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def health(args: argparse.Namespace) -> int:
    server = _check_server(args.server)
    try:
        reply = httpx.get(f"{server}/health", timeout=30)
    except httpx.HTTPError as exc:
        print(f"cannot reach the gateway at {server}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if reply.status_code != 200:
        print(
            f"{server}/health answered HTTP {reply.status_code}: {detail_of(reply)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    body = reply.json()
    print(f"gateway {server}: {body.get('status')}")
    for name, entry in body.get("models", {}).items():
        facts = ", ".join(
            v for v in (entry.get("variant"), entry.get("device")) if v and v != "unknown"
        )
        if entry.get("predictor", "") is None:
            state = "not offered by this server"
        elif entry.get("ready"):
            state = "ready"
        else:
            state = f"NOT READY: {entry.get('detail', 'no reason given')}"
        about = entry.get("about") or {}  # the model and its licence (gateway's catalog.py)
        licence = f"  [{about['model']}, {about['licence']}]" if about.get("licence") else ""
        print(f"  {name:<13} {state}" + (f" ({facts})" if facts else "") + licence)
        models = entry.get("models") or []
        if len(models) > 1:  # several models: each with what it is (--model chooses)
            for model in models:
                print("    " + _model_line(model))
    return EXIT_OK if body.get("status") == "ok" else EXIT_FAILED


def _model_line(model: dict) -> str:
    """One model of a task, as `photo-enhance health` lists it under the task."""
    what = ", ".join(
        str(v)
        for v in (
            model.get("architecture"),
            f"x{model['scale']}" if model.get("scale") else None,
            "default" if model.get("default") else None,
        )
        if v
    )
    state = model.get("state") or ("ready" if model.get("ready") else "not ready")
    licence = (model.get("about") or {}).get("licence")
    line = f"--model {model.get('name')}: {state}" + (f" ({what})" if what else "")
    return line + (f"  [{licence}]" if licence else "")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors exit 2 here
    try:
        if args.command == "health":
            return health(args)
        return run_task(args.command, args)
    except UsageError as exc:
        print(f"photo-enhance: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Stop as exc:
        print(f"photo-enhance: {exc}", file=sys.stderr)
        return EXIT_FAILED
