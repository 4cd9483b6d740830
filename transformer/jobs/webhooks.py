"""Job webhooks (CONTRACT section 6): when a job submitted with `?webhook=URL` ends (succeeded,
failed, canceled), its JSON is POSTed to URL, signed as Standard Webhooks do.

- Signing: `webhook-id` (`msg_<job id>`, the same on every attempt, so receivers can drop
  duplicates), `webhook-timestamp` (this attempt's, Unix seconds) and `webhook-signature`
  (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with WEBHOOK_SECRET, `whsec_<base64>`),
  computed by the `standardwebhooks` package (the specification's reference library).
- Where a webhook may go (SSRF): http(s) only, and only to a host whose every address is public
  (not loopback, private, link-local with the cloud metadata address, CGNAT, multicast, reserved,
  unspecified, nor those inside IPv6 forms: IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64),
  unless the host (`host` or `host:port`) is in WEBHOOK_ALLOWED_HOSTS. Checked at submission
  (422) and again before every attempt, since DNS may have changed.
- Pinning: an attempt resolves the host once, vets the addresses, and connects to a vetted
  address itself (the URL's host replaced by the address, with the original `Host` header and
  TLS SNI, so the certificate is verified for the name): a DNS answer that changes between the
  check and the connection (rebinding) cannot send it elsewhere. No proxy from the environment,
  no redirects (a 3xx is a failed attempt), no kept-alive connections, short timeouts.
- Delivery is at least once and survives restarts: the job store marks the delivery pending in
  the same update that ends the job; a Deliverer in each gateway claims due deliveries from the
  store (holding each for HOLD_S, so a gateway that dies mid-attempt leaves it to be retried),
  and retries a failed attempt after each WEBHOOK_BACKOFF_S delay in turn (default 2, 5, 15,
  40 s: five attempts over about a minute), then gives up and logs it. It runs beside the job
  runner, a bounded number of attempts at a time, never in a job's way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from .model import WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_PENDING, Job

logger = logging.getLogger("transformer.jobs")

MAX_URL_CHARS = 2000
RESOLVE_TIMEOUT_S = 3.0
TIMEOUT = httpx.Timeout(connect=3.0, read=5.0, write=5.0, pool=3.0)
ATTEMPT_TIMEOUT_S = 10.0  # one attempt, all addresses tried included
MAX_ADDRESSES = 3  # addresses of a host tried in one attempt (the next on a refused connection)
HOLD_S = 30.0  # a claimed delivery is not claimed again for this long (its attempt's time)
POLL_S = 5.0  # deliveries due are looked for at least this often (a finished job wakes it)
MAX_IN_FLIGHT = 8
DEFAULT_BACKOFF_S = (2.0, 5.0, 15.0, 40.0)
USER_AGENT = "photo-enhance-webhook/1"

# IPv6 prefixes that carry an IPv4 address the packet may end up at.
NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")

KINDS = ("unspecified", "loopback", "link_local", "private", "multicast", "reserved")
Resolver = Callable[[str, int], Awaitable[list[str]]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The URL may not be called; the message says why."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses, as the system resolves them (getaddrinfo, in a thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded(ip: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (mapped, compatible, 6to4, Teredo, NAT64)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    out = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)
    if any(ip in net for net in NAT64) or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _kind(ip: Address) -> str | None:
    for name in KINDS:
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    return None if ip.is_global else "not a public address"


def not_public(address: str) -> str | None:
    """What `address` is when it is not a public unicast address (None when it is)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return "not an IP address"
    for inner in _embedded(ip):  # what an IPv6 form leads to first: the clearer
        if (kind := _kind(inner)) is not None:
            return f"{kind} ({inner} inside it)"
    return _kind(ip)


def redacted(url: str) -> str:
    """The URL without its user info or query (they may hold credentials), for logs."""
    try:
        parsed = httpx.URL(url)
        return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))
    except Exception:
        return "(unparsable URL)"


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    host: str  # ASCII (IDNA) name or IP literal, as resolved and sent as SNI
    port: int
    addresses: tuple[str, ...]  # vetted: connect to these only
    allowed: bool  # listed in WEBHOOK_ALLOWED_HOSTS (its addresses were not judged)

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")


def parse_allowed(raw: str) -> frozenset[tuple[str, int | None]]:
    """WEBHOOK_ALLOWED_HOSTS: comma-separated `host` or `host:port` ([v6]:port for IPv6)."""
    out = set()
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        try:
            url = httpx.URL(f"http://{entry}")
        except Exception:
            raise ValueError(f"WEBHOOK_ALLOWED_HOSTS: {entry!r} is not host or host:port") from None
        host = url.raw_host.decode("ascii").lower()
        if not host or url.raw_path not in (b"/", b"") or url.userinfo:
            raise ValueError(f"WEBHOOK_ALLOWED_HOSTS: {entry!r} is not host or host:port")
        out.add((host, url.port))
    return frozenset(out)


async def check(
    url: str,
    allowed: frozenset[tuple[str, int | None]],
    resolver: Resolver = system_resolver,
) -> Target:
    """The target of `url`, its addresses resolved once and vetted; Refused saying why not.
    Nothing connects to the host here; only its name is resolved."""
    if len(url) > MAX_URL_CHARS:
        raise Refused(f"the URL is longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise Refused("the URL holds spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except Exception as exc:
        raise Refused(f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are called, not {parsed.scheme or 'none'!r}")
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise Refused("the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    listed = (host, None) in allowed or (host, port) in allowed
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                addresses = await resolver(host, port)
        except (OSError, TimeoutError) as exc:
            raise Refused(f"its host {host} does not resolve ({exc or 'timed out'})") from None
    if not addresses:
        raise Refused(f"its host {host} has no address")
    if not listed:
        for address in addresses:
            kind = not_public(address)
            if kind is not None:
                shown = address if host == address else f"{host} resolves to {address}, which"
                raise Refused(
                    f"{shown} is {kind}; a webhook goes to public addresses only, unless its "
                    "host is listed in WEBHOOK_ALLOWED_HOSTS"
                )
    return Target(parsed, host, port, tuple(addresses[:MAX_ADDRESSES]), listed)


def signed_headers(
    webhook: Webhook, msg_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt."""
    at = datetime.fromtimestamp(math.floor(time.time() if now is None else now), UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": webhook.sign(msg_id, at, body),
    }


def _address_host(address: str) -> str:
    return address.split("%")[0]


async def post(
    client: httpx.AsyncClient, target: Target, body: bytes, headers: dict[str, str]
) -> int:
    """POST `body` to a vetted address of the target (the next one when a connection is
    refused); the answer's status. Nothing of the answer is read beyond its head."""
    headers = {
        **headers,
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    error: Exception | None = None
    async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
        for address in target.addresses:
            url = target.url.copy_with(host=_address_host(address), fragment=None)
            try:
                async with client.stream(
                    "POST", url, content=body, headers=headers, extensions=extensions
                ) as reply:
                    return reply.status_code
            except httpx.ConnectError as exc:
                error = exc
    assert error is not None
    raise error


def new_client(verify: Any = True) -> httpx.AsyncClient:
    """No proxy from the environment (it would connect elsewhere), no redirects, no kept-alive
    connections (one made for one name is never reused for another on the same address)."""
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=TIMEOUT,
        verify=verify,
        limits=httpx.Limits(max_connections=MAX_IN_FLIGHT * 2, max_keepalive_connections=0),
    )


class Deliverer:
    """Delivers the webhooks of finished jobs from the store (any gateway process sharing it)."""

    def __init__(
        self,
        settings,  # JobSettings
        store,  # JobStore
        resolver: Resolver = system_resolver,
        verify: Any = True,
    ):
        self.settings = settings
        self.store = store
        self.resolver = resolver
        self.verify = verify
        self.webhook = Webhook(settings.webhook_secret) if settings.webhook_secret else None
        self.in_flight: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None

    async def check(self, url: str) -> Target:
        """At submission: Refused when the URL may not be called, or webhooks are off."""
        if self.webhook is None:
            raise Refused("this gateway sends no webhooks: WEBHOOK_SECRET is not set")
        return await check(url, self.settings.webhook_allowed_hosts, self.resolver)

    async def start(self) -> None:
        if self.webhook is None:
            return
        self._client = new_client(self.verify)
        self._loop = asyncio.create_task(self._claim_loop(), name="jobs-webhooks")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self.in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def _claim_loop(self) -> None:
        while True:
            self._wake.clear()
            wait = POLL_S
            try:
                while len(self.in_flight) < MAX_IN_FLIGHT:
                    job, next_at = await self.store.claim_webhook(time.time(), HOLD_S)
                    if job is None:
                        if next_at is not None:
                            wait = min(POLL_S, max(0.0, next_at - time.time()))
                        break
                    task = asyncio.create_task(self._deliver(job), name=f"webhook-{job.id}")
                    self.in_flight[job.id] = task
            except Exception:
                logger.exception("jobs: claiming a webhook delivery failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def attempt(self, job: Job) -> str | None:
        """One attempt: None when delivered, else why not."""
        assert self.webhook is not None and self._client is not None and job.webhook
        try:
            target = await check(job.webhook, self.settings.webhook_allowed_hosts, self.resolver)
        except Refused as exc:
            return f"refused: {exc}"
        body = job_body(job)
        headers = signed_headers(self.webhook, f"msg_{job.id}", body)
        try:
            status = await post(self._client, target, body, headers)
        except TimeoutError:
            return "timed out"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            return None
        if 300 <= status < 400:
            return f"answered {status}, a redirect (not followed)"
        return f"answered {status}"

    async def _deliver(self, job: Job) -> None:
        url = redacted(job.webhook or "")
        attempt = job.webhook_attempts  # counted at the claim: a crash mid-attempt counts too
        backoff = self.settings.webhook_backoff_s
        try:
            failure = await self.attempt(job)
            if failure is None:
                await self.store.set_webhook(job.id, WEBHOOK_DELIVERED, None)
                logger.info("job %s: webhook delivered to %s (attempt %d)", job.id, url, attempt)
            elif attempt > len(backoff):
                await self.store.set_webhook(job.id, WEBHOOK_FAILED, None)
                logger.error(
                    "job %s: webhook to %s failed %d times, the last: %s; given up",
                    job.id, url, attempt, failure,
                )  # fmt: skip
            else:
                delay = backoff[attempt - 1]
                await self.store.set_webhook(job.id, WEBHOOK_PENDING, time.time() + delay)
                logger.warning(
                    "job %s: webhook to %s failed (attempt %d: %s); again in %g s",
                    job.id, url, attempt, failure, delay,
                )  # fmt: skip
        except asyncio.CancelledError:  # the gateway stops: the next one delivers it
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.set_webhook(job.id, WEBHOOK_PENDING, time.time()))
            raise
        except Exception:
            logger.exception("job %s: delivering its webhook failed; retried later", job.id)
        finally:
            self.in_flight.pop(job.id, None)
            self.wake()  # its next attempt may be due sooner than the loop would look again


def job_body(job: Job) -> bytes:
    """What is POSTed: the job JSON, as GET /v1/jobs/{id} answers it."""
    return json.dumps(job.to_json(), separators=(",", ":")).encode()
