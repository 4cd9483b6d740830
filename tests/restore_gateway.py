"""A gateway for the page and CLI tests: one real restore predictor (the cheap task), the
face-restore predictor stopped (its address is a port nobody listens on), and optionally the
upscale predictor at a peer that accepts connections and never answers (a request that hangs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests import servers
from tests.gateway_process import Gateway, start_gateway, start_silent_peer


@contextmanager
def restore_gateway(
    weights, tmp: Path, hanging_upscale: bool = False, env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    stopped = f"127.0.0.1:{servers.free_port()}"  # nothing listens there: a stopped predictor
    peer = None
    with servers.running_predictor(
        "restore", weights.model_dir("restore", "denoise"), tmp, "denoise"
    ) as restore:
        addresses = {"restore": restore.grpc, "face-restore": stopped}
        if hanging_upscale:
            peer, addresses["upscale"] = start_silent_peer()
        gateway = None
        try:
            gateway = start_gateway(
                addresses, tmp, env={"PREDICTOR_TIMEOUT_S": "60", **(env or {})}
            )
            yield gateway
        finally:
            if peer is not None:  # first, so that a request still hanging there ends now
                peer.kill()
                peer.wait()
            if gateway is not None:
                gateway.stop()
