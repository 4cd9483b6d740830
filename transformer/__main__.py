"""`python -m transformer --http_port 8000 --predictor_colorize HOST:PORT ...`

A KServe ModelServer serving the gateway routes (transformer.routes) beside KServe's own V2
health and /metrics. KServe's flags (--http_port, --workers, ...) are accepted as usual.
"""

from __future__ import annotations

import argparse
import logging
import os

from kserve import Model, ModelServer
from kserve import model_server as kserve_server

from common import httplimits
from common.logs import configure_logging

from . import memory, routes
from .config import ADDRESS_ENV, TASKS, Settings, flag_name
from .jobs.config import JobSettings

logger = logging.getLogger("transformer")


class Gateway(Model):
    """Registered so that KServe starts and /v2/health/ready and /v2/models/gateway/ready
    answer for the gateway itself; the work is done by the REST routes."""

    def __init__(self, name: str = "gateway"):
        super().__init__(name)
        self.load()


class GatewayServer(ModelServer):
    """KServe's ModelServer with a chosen HTTP bind address (KServe 0.21 binds 0.0.0.0), header
    limits (common/httplimits.py) and a bound on open connections."""

    def __init__(self, http_host: str, http_protocol: type, max_connections: int, **kwargs):
        super().__init__(**kwargs)
        self.http_host = http_host
        self.http_protocol = http_protocol
        self.max_connections = max_connections

    def setup_event_loop(self):
        # Called by start() after the REST server is built and before it binds.
        if self._rest_server is not None:
            self._rest_server.config.host = self.http_host
            # 431 for oversized or too many headers, 408 for slow ones (common/httplimits.py)
            self._rest_server.config.http = self.http_protocol
            # 503 beyond MAX_CONNECTIONS open connections or requests in flight
            self._rest_server.config.limit_concurrency = self.max_connections
        super().setup_event_loop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m transformer",
        parents=[kserve_server.parser],
        description="photo-enhance REST gateway in front of the four V2 gRPC predictors.",
    )
    for task in TASKS:
        parser.add_argument(
            f"--{flag_name(task)}",
            default=None,
            help=f"gRPC address of the {task} predictor: host:port, a comma-separated list of "
            f"its replicas, or dns:///name:port (env {ADDRESS_ENV[task]})",
        )
    parser.add_argument("--http_host", default="0.0.0.0", help="address the REST server binds")
    parser.add_argument("--max_image_side", type=int, default=None, help="env MAX_IMAGE_SIDE")
    parser.add_argument("--max_upload_mb", type=float, default=None, help="env MAX_UPLOAD_MB")
    parser.add_argument("--max_pixels", type=int, default=None, help="env MAX_PIXELS")
    parser.add_argument(
        "--predictor_timeout_s", type=float, default=None, help="env PREDICTOR_TIMEOUT_S"
    )
    parser.add_argument(
        "--grpc_max_message",
        type=int,
        default=None,
        help="gRPC message limit to the predictors, bytes (env GRPC_MAX_MESSAGE_BYTES)",
    )
    # The gateway speaks REST only: its own gRPC server is off unless asked for.
    parser.set_defaults(enable_grpc=False, model_name="gateway")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        configure_logging()  # before KServe's ModelServer, which then keeps it
        settings = Settings.from_env(flags=vars(args))
        JobSettings.from_env()  # read again at start; a mistake stops the gateway here
        http_protocol, max_connections = httplimits.from_env(), httplimits.max_connections()
    except ValueError as exc:
        raise SystemExit(f"transformer: {exc}") from None
    routes.configure(settings)
    memory.hand_back_large_buffers()  # a burst of uploads leaves no memory held (memory.py)
    settings.export(os.environ)  # --workers > 1 spawns processes that read the environment
    server = GatewayServer(
        http_host=args.http_host,
        http_protocol=http_protocol,
        max_connections=max_connections,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=False,  # routes adds /docs and /redoc itself
        max_asyncio_workers=args.max_asyncio_workers,
    )
    for task in TASKS:
        logger.info("%s predictor: %s", task, settings.addresses[task] or "not configured")
    server.start([Gateway(args.model_name)])


if __name__ == "__main__":
    main()
