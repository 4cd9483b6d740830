"""A task's predictor replicas: one gRPC client each, which replica takes a call, which are up.

`PREDICTOR_<TASK>` names the replicas (config.parse_target): fixed `host:port` addresses, or
`dns:///name:port`, which is resolved here every DNS_REFRESH_S (a headless Service's name
resolves to its ready pods), so pods that come and go are followed.

Why our own pick over one channel per replica, and not one channel with gRPC's `round_robin`:
- admission needs the replicas that are up (MAX_INFLIGHT_PER_REPLICA times them); gRPC Python
  shows neither a channel's resolved addresses nor its subchannels' states;
- the pick goes to the replica with the fewest of our calls in flight, so a long call does not
  hold up the one queued behind it on the same replica while another is idle (round_robin
  alternates blindly: bench/balance.py measures both);
- a replica that answers "busy" (its own cap, predictors/v2grpc.py) or fails is skipped for this
  call and the call goes to another at once;
- gRPC's DNS resolver (C core, which Python uses) re-resolves when a connection breaks, not on
  a timer: pods added by the autoscaler would get no calls from a healthy channel
  (grpc/grpc#12295).

A replica that fails (UNAVAILABLE, its model not ready) is `down`: skipped while another is up,
and probed every PROBE_INTERVAL_S with ModelReady; it rejoins when ready (a restarted predictor
rejoins within about a second of its readiness, plus gRPC's reconnect backoff of at most 1 s).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from .config import Target
from .v2wire import RawTensorClient

logger = logging.getLogger("transformer.replicas")

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 3.0
DNS_REFRESH_S = 5.0
# A replica that answered "busy" is not offered another call for this long.
BUSY_HOLD_S = 0.1


async def lookup(host: str, port: int) -> set[str]:
    """The IP addresses `host` resolves to (the system's resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return {info[4][0] for info in infos}


@dataclass(eq=False)
class Replica:
    address: str
    client: RawTensorClient
    inflight: int = 0  # this gateway's calls at it
    down: bool = False  # failed: skipped until ModelReady says ready
    seen_up: bool = False  # ready or answered since this gateway started
    busy_until: float = 0.0
    turn: int = 0  # when it was last picked: ties go to the least recently picked
    retired: bool = False  # no longer resolved: closed once its calls end


class ReplicaSet:
    def __init__(
        self,
        task: str,
        target: Target,
        make_client: Callable[[str], RawTensorClient],
        on_change: Callable[[], None],
    ):
        self.task = task
        self.target = target
        self._make_client = make_client
        self._on_change = on_change
        self.replicas: dict[str, Replica] = {}
        self._turns = itertools.count(1)
        self._keeper: asyncio.Task | None = None
        self._resolved = asyncio.Event()
        self._dns_failing = False
        for address in target.addresses:
            self.replicas[address] = Replica(address, make_client(address))
        if not target.dns:
            self._resolved.set()

    @property
    def up(self) -> int:
        return sum(not r.down for r in self.replicas.values())

    def describe(self) -> str:
        return f"{self.up} of {len(self.replicas)} replicas up"

    async def ready_to_pick(self) -> None:
        """Start watching the replicas (in the running loop) and, for a dns:/// name, wait
        for its first resolution."""
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep(), name=f"replicas-{self.task}")
        if not self._resolved.is_set():
            async with asyncio.timeout(DNS_REFRESH_S):
                await self._resolved.wait()

    def pick(self, tried: set[Replica]) -> Replica | None:
        """The replica for the next attempt of a call, of those not tried yet: one that is up
        before one that is down (it may be back before the probe sees it), one that has not
        just said busy before one that has, then the one with the fewest calls in flight, the
        least recently picked first. None when every replica has been tried."""
        now = time.monotonic()
        fresh = [r for r in self.replicas.values() if r not in tried]
        if not fresh:
            return None
        replica = min(fresh, key=lambda r: (r.down, r.busy_until > now, r.inflight, r.turn))
        replica.turn = next(self._turns)
        return replica

    def busy(self, replica: Replica) -> None:
        replica.busy_until = time.monotonic() + BUSY_HOLD_S

    def failed(self, replica: Replica, why: str) -> None:
        if not replica.down:
            replica.down = True
            if replica.seen_up:
                logger.warning(
                    "%s: replica %s failed (%s); skipped until ready (%s)",
                    self.task, replica.address, why, self.describe(),
                )  # fmt: skip
            else:  # a predictor that is still starting (make run starts all at once): expected
                logger.info(
                    "%s: replica %s not ready yet (%s); skipped until ready (%s)",
                    self.task, replica.address, why, self.describe(),
                )  # fmt: skip
            self._on_change()

    def answered(self, replica: Replica) -> None:
        self._mark_up(replica)

    def _mark_up(self, replica: Replica) -> None:
        first = not replica.seen_up
        replica.seen_up = True
        if replica.down and replica.address in self.replicas:
            replica.down = False
            logger.info(
                "%s: replica %s is ready; it takes calls %s(%s)",
                self.task, replica.address, "" if first else "again ", self.describe(),
            )  # fmt: skip
            self._on_change()

    def done(self, replica: Replica) -> None:
        """A call at `replica` ended (after its inflight count went down)."""
        if replica.retired and replica.inflight == 0:
            asyncio.get_running_loop().create_task(replica.client.close())

    async def probe(self, replica: Replica) -> tuple[bool, str]:
        """(ready, why not) from the replica's ModelReady; marks it up or down."""
        try:
            ok = await replica.client.is_model_ready(self.task, timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "error"
            if code == "DEADLINE_EXCEEDED":  # slow (a busy host), not known to be down
                return False, f"no answer to ModelReady within {PROBE_TIMEOUT_S:g} s"
            why = f"{code} (not reachable: down or restarting)" if code == "UNAVAILABLE" else code
            ok = False
        else:
            why = "" if ok else "model loading or failed to load (see the predictor's log)"
        if ok:
            self._mark_up(replica)
        else:
            self.failed(replica, why)
        return ok, why

    async def _keep(self) -> None:
        """Every PROBE_INTERVAL_S: probe the down replicas; every DNS_REFRESH_S: resolve."""
        resolved_at = -DNS_REFRESH_S
        while True:
            try:
                if self.target.dns and time.monotonic() - resolved_at >= DNS_REFRESH_S:
                    resolved_at = time.monotonic()
                    await self._resolve()
                down = [r for r in self.replicas.values() if r.down]
                await asyncio.gather(*(self.probe(r) for r in down))
            except Exception:
                logger.exception("%s: watching the replicas failed", self.task)
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _resolve(self) -> None:
        host, _, port = self.target.dns.rpartition(":")
        try:
            ips = await lookup(host.strip("[]"), int(port))
        except OSError as exc:  # kept as they were: a DNS outage is not every pod gone
            if not self._dns_failing:
                logger.warning("%s: %s does not resolve (%s)", self.task, self.target.dns, exc)
            self._dns_failing = True
        else:
            self._dns_failing = False
            self._update({self._address(ip) for ip in ips})
        self._resolved.set()

    def _address(self, ip: str) -> str:
        return f"[{ip}]:{self.target.port}" if ":" in ip else f"{ip}:{self.target.port}"

    def _update(self, found: set[str]) -> None:
        known = set(self.replicas)
        if found == known:
            return
        for address in found - known:
            self.replicas[address] = Replica(address, self._make_client(address))
        for address in known - found:
            replica = self.replicas.pop(address)
            replica.retired = True
            if replica.inflight == 0:
                asyncio.get_running_loop().create_task(replica.client.close())
        logger.info(
            "%s: %s resolves to %s (%s)",
            self.task, self.target.dns, ", ".join(sorted(found)) or "nothing", self.describe(),
        )  # fmt: skip
        self._on_change()

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
        for replica in self.replicas.values():
            await replica.client.close()
        self.replicas.clear()
