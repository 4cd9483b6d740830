"""Job webhooks (CONTRACT section 6): the job JSON POSTed when a job ends, signed as Standard
Webhooks do (verified here with the `standardwebhooks` package's own Webhook.verify), retried,
and sent only where the SSRF rules allow.

Real parts: the gateway process, tests/slow_predictor.py as its upscale predictor (every call
takes `tile_size` ms), and receivers that are real HTTP servers on 127.0.0.1 in threads (allowed
by WEBHOOK_ALLOWED_HOSTS). Refused destinations are refused before any connection: the unit tests
resolve names with a stub (and record every request an HTTP client would make), the gateway tests
use IP literals (never dialed: they are refused before) and names that resolve to loopback, and
count the connections their receivers accept. No test connects to a private address other than
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sqlite3
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
import trustme
from PIL import Image
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.gateway_process import encoded, start_gateway
from tests.jobs_client import accepted, stored_jobs, submit, wait_for, wait_until
from tests.slow_predictor import start_slow_predictor
from transformer.jobs import webhooks
from transformer.jobs.config import JobSettings
from transformer.jobs.model import Job
from transformer.jobs.sqlite import SqliteJobStore

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
BACKOFF = "0.5,0.5,0.5"  # four attempts, quickly
STEP_MS = 200  # the smallest tile_size the gateway takes is 128
LONG_MS = 30_000
# A job's webhook goes out however it ends. (A first job can also fail for a reason outside this
# module: a gRPC stream to a predictor without ModelStreamInfer sometimes ends INTERNAL "Internal
# error from Core" instead of UNIMPLEMENTED, before the gateway falls back to unary calls.)
ENDED = ("succeeded", "failed", "canceled")


# --- receivers ------------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers the next of `statuses`
    (then 200); with `location`, its answers carry that Location header (a redirect)."""

    def __init__(self, statuses=(), location: str | None = None, tls: ssl.SSLContext | None = None):
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request, in order
        self.connections = 0
        self.statuses = list(statuses)
        self.location = location
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with outer.lock:
                    outer.requests.append((self.path, dict(self.headers.items()), body))
                    outer.arrivals.append(time.monotonic())
                    status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                if outer.location:
                    self.send_header("Location", outer.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address):
                with outer.lock:
                    outer.connections += 1
                return True

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verified(request: tuple[str, dict[str, str], bytes]) -> dict:
    """The body of a received webhook, verified by standardwebhooks (raises if not)."""
    _, headers, body = request
    return Webhook(SECRET).verify(body, headers)


# --- unit: signing, the SSRF rules, pinning ---------------------------------------------------


def test_the_signature_is_the_standard_one():
    # The Standard Webhooks / Svix reference vector.
    secret = Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    headers = webhooks.signed_headers(
        secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", b'{"test": 2432232314}', now=1614265330.9
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    body = b'{"id": "x"}'
    fresh = webhooks.signed_headers(Webhook(SECRET), "msg_1", body)
    assert Webhook(SECRET).verify(body, fresh) == {"id": "x"}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", fresh)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.0.1", "172.31.255.254", "192.168.1.1",
        "169.254.169.254", "169.254.1.1", "100.64.0.1", "100.127.255.254", "0.0.0.0",
        "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.2.1",
        "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%2", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::7f00:1",
        "2002:a00:1::1", "64:ff9b::a9fe:a9fe", "2001:db8::1",
    ],
)  # fmt: skip
def test_non_public_addresses_are_named(address):
    assert webhooks.not_public(address) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert webhooks.not_public(address) is None


class StubResolver:
    """Names -> addresses, recording what was asked; no DNS."""

    def __init__(self, names: dict[str, list[str]]):
        self.names = names
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.names:
            raise OSError(f"no such name {host}")
        return self.names[host]


NAMES = {
    "public.test": ["93.184.215.14"],
    "private.test": ["10.1.2.3"],
    "metadata.test": ["169.254.169.254"],
    "loopback.test": ["127.0.0.1"],
    "mixed.test": ["93.184.215.14", "192.168.0.10"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "v6local.test": ["fd00::1"],
}


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://10.0.0.1/hook", "private"),
        ("http://172.16.5.4:8080/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://100.64.0.1/", "not a public address"),
        ("http://127.0.0.1:9/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://2130706433/", "does not resolve"),  # the stub knows no such name
        ("https://private.test/", "resolves to 10.1.2.3"),
        ("https://metadata.test/", "resolves to 169.254.169.254"),
        ("https://loopback.test/", "resolves to 127.0.0.1"),
        ("https://mixed.test/", "resolves to 192.168.0.10"),
        ("https://mapped.test/", "resolves to ::ffff:10.0.0.1"),
        ("https://v6local.test/", "resolves to fd00::1"),
        ("https://nowhere.test/", "does not resolve"),
        ("ftp://public.test/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("javascript:alert(1)", "only http and https"),
        ("gopher://public.test:70/", "only http and https"),
        ("https:///nohost", "no host"),
        ("http://public.test/a b", "spaces"),
        ("http://public.test/" + "a" * 3000, "longer"),
    ],
)
def test_refused_urls_are_refused_without_a_connection(url, words):
    resolver = StubResolver(NAMES)
    with pytest.raises(webhooks.Refused, match=words):
        asyncio.run(webhooks.check(url, frozenset(), resolver))


def test_public_and_listed_hosts_pass_with_their_vetted_addresses():
    resolver = StubResolver(NAMES)
    target = asyncio.run(webhooks.check("https://Public.test/hook?a=1", frozenset(), resolver))
    assert (target.host, target.port, target.addresses) == ("public.test", 443, ("93.184.215.14",))
    allowed = webhooks.parse_allowed("loopback.test:8080, 127.0.0.1:9000")
    names = {**NAMES, "localhost": ["127.0.0.1"]}
    target = asyncio.run(webhooks.check("http://loopback.test:8080/x", allowed, resolver))
    assert target.addresses == ("127.0.0.1",) and target.allowed
    assert target.host_header == "loopback.test:8080"
    for url in ("http://loopback.test:8081/x", "http://127.0.0.1:9001/", "http://localhost:9000/"):
        with pytest.raises(webhooks.Refused, match="WEBHOOK_ALLOWED_HOSTS"):
            asyncio.run(webhooks.check(url, allowed, StubResolver(names)))
    assert asyncio.run(webhooks.check("http://127.0.0.1:9000/", allowed, resolver)).allowed


def _deliverer(resolver, allowed: str = "", verify=True) -> webhooks.Deliverer:
    settings = JobSettings(
        store_path=None,
        files_dir=None,
        webhook_secret=SECRET,
        webhook_allowed_hosts=webhooks.parse_allowed(allowed),
    )
    return webhooks.Deliverer(settings, store=None, resolver=resolver, verify=verify)


def _finished_job(url: str) -> Job:
    job = Job.new("upscale", {}, webhook=url)
    job.status, job.finished_at, job.webhook_attempts = "succeeded", time.time(), 1
    return job


def test_delivery_checks_again_and_never_connects_to_a_name_that_moved():
    """DNS rebinding: public at submission, private at delivery: refused, nothing sent."""
    resolver = StubResolver({"moving.test": ["93.184.215.14"]})
    deliverer = _deliverer(resolver)
    asyncio.run(deliverer.check("http://moving.test/hook"))  # accepted at submission
    resolver.names["moving.test"] = ["10.0.0.7"]
    sent = []

    async def attempt():
        transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200))
        async with httpx.AsyncClient(transport=transport) as client:
            deliverer._client = client
            return await deliverer.attempt(_finished_job("http://moving.test/hook"))

    failure = asyncio.run(attempt())
    assert failure is not None and "resolves to 10.0.0.7" in failure
    assert sent == [] and resolver.asked == ["moving.test", "moving.test"]


def test_delivery_connects_to_the_vetted_address_with_the_name_as_host_and_sni(tmp_path):
    """Pinning: the name is resolved once (stub: hook.test -> 127.0.0.1), the connection goes to
    that address, and the request keeps the name: its Host header and, over TLS, the SNI and the
    certificate check (the certificate is for hook.test only, not for 127.0.0.1)."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hook.test").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    plain, secure = Receiver(), Receiver(tls=server_tls)
    try:
        resolver = StubResolver({"hook.test": ["127.0.0.1"]})
        allowed = f"hook.test:{plain.port},hook.test:{secure.port}"
        deliverer = _deliverer(resolver, allowed, verify=client_tls)

        async def attempts():
            deliverer._client = webhooks.new_client(client_tls)
            try:
                return [
                    await deliverer.attempt(_finished_job(url))
                    for url in (
                        f"http://hook.test:{plain.port}/in?a=1",
                        f"https://hook.test:{secure.port}/in",
                    )
                ]
            finally:
                await deliverer._client.aclose()

        assert asyncio.run(attempts()) == [None, None]
        for receiver in (plain, secure):
            ((_, headers, _),) = receiver.requests
            assert headers["Host"] == f"hook.test:{receiver.port}"
            assert verified(receiver.requests[0])["status"] == "succeeded"
        assert plain.requests[0][0] == "/in?a=1"
        # Without the name's certificate check passing, nothing is delivered.
        deliverer.verify = ssl.create_default_context()

        async def untrusted():
            deliverer._client = webhooks.new_client(ssl.create_default_context())
            try:
                return await deliverer.attempt(_finished_job(f"https://hook.test:{secure.port}/"))
            finally:
                await deliverer._client.aclose()

        assert "ConnectError" in asyncio.run(untrusted())
        assert len(secure.requests) == 1
    finally:
        plain.close()
        secure.close()


def test_no_secret_means_no_webhooks():
    deliverer = webhooks.Deliverer(JobSettings(None, None), None)
    with pytest.raises(webhooks.Refused, match="WEBHOOK_SECRET"):
        asyncio.run(deliverer.check("https://example.com/"))
    for bad in ("plain", "whsec_###", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
            JobSettings.from_env({"WEBHOOK_SECRET": bad})


def test_a_store_of_the_first_schema_gains_the_webhook_columns(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, task TEXT NOT NULL, params TEXT NOT NULL, "
            "status TEXT NOT NULL, done INTEGER NOT NULL, total INTEGER NOT NULL, stage TEXT NOT "
            "NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL, error TEXT, "
            "version INTEGER NOT NULL, attempts INTEGER NOT NULL, owner TEXT, lease_until REAL, "
            "expires_at REAL, idempotency_key TEXT UNIQUE, result TEXT)"
        )
        db.execute(
            "INSERT INTO jobs VALUES ('a', 'upscale', '{}', 'queued', 0, 1, 'queued', 1.0, "
            "NULL, NULL, NULL, 1, 0, NULL, NULL, NULL, NULL, NULL)"
        )

    async def run():
        store = SqliteJobStore(path)
        await store.open()
        try:
            old = await store.get("a")
            job = Job.new("upscale", {}, webhook="https://example.com/")
            await store.add(job, 10)
            claimed = await store.claim("me", 10)
            assert claimed.id == "a"
            await store.cancel(job.id, 60)
            due, _ = await store.claim_webhook(time.time(), 30)
            again, next_at = await store.claim_webhook(time.time(), 30)
            return old, due, again, next_at
        finally:
            await store.close()

    old, due, again, next_at = asyncio.run(run())
    assert old.webhook is None and old.webhook_attempts == 0
    assert due.status == "canceled" and due.webhook_attempts == 1
    assert again is None and next_at > time.time() + 20  # held while its attempt runs


# --- through a real gateway ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webhooks-slow")
    process, address = start_slow_predictor(tmp / "slow.log")
    yield address
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def receivers():
    other = Receiver()  # not allowed: a loopback address the gateway must never call
    made = {
        "ok": Receiver(),
        "flaky": Receiver([500, 503]),
        "redirect": Receiver([302] * 10, location=other.url("/elsewhere")),
        "other": other,
    }
    yield made
    for receiver in made.values():
        receiver.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("webhooks-data")


def _env(receivers, data_dir, **more) -> dict[str, str]:
    allowed = ",".join(f"127.0.0.1:{receivers[n].port}" for n in ("ok", "flaky", "redirect"))
    return {
        "DATA_DIR": str(data_dir),
        "JOBS_CONCURRENCY": "2",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOWED_HOSTS": allowed,
        "WEBHOOK_BACKOFF_S": BACKOFF,
        **more,
    }


@pytest.fixture(scope="module")
def gateway(slow, receivers, data_dir, tmp_path_factory):
    gw = start_gateway(
        {"upscale": slow}, tmp_path_factory.mktemp("webhooks-gateway"), _env(receivers, data_dir)
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    return encoded(np.asarray(Image.fromarray(astronaut).resize((32, 24))))


def test_the_job_json_is_posted_signed_when_the_job_ends(client, photo, receivers):
    ok = receivers["ok"]
    before = len(ok.requests)
    url = ok.url("/hook?source=photo-enhance")
    job = accepted(submit(client, "/upscale", photo, scale=1, tile_size=STEP_MS, webhook=url))
    done = wait_for(client, job, ENDED)
    wait_until(lambda: len(ok.requests) > before, within_s=20)
    time.sleep(0.5)  # nothing more comes
    (request,) = ok.requests[before:]
    path, headers, body = request
    assert path == "/hook?source=photo-enhance"
    assert headers["Content-Type"] == "application/json"
    assert headers["webhook-id"] == f"msg_{job['id']}"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert verified(request) == done == client.get(job["urls"]["self"]).json()
    forged = dict(headers, **{"webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()})
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, forged)


def test_a_canceled_job_is_posted_too(client, photo, receivers):
    ok = receivers["ok"]
    before = len(ok.requests)
    job = accepted(
        submit(client, "/upscale", photo, scale=1, tile_size=LONG_MS, webhook=ok.url("/c"))
    )
    wait_for(client, job, "running")
    assert client.post(f"{job['urls']['self']}/cancel").json()["status"] == "canceled"
    wait_until(lambda: len(ok.requests) > before, within_s=20)
    payload = verified(ok.requests[before])
    assert payload["id"] == job["id"] and payload["status"] == "canceled"


def test_a_failing_receiver_gets_it_after_retries(client, photo, receivers):
    flaky = receivers["flaky"]  # answers 500, then 503, then 200
    job = accepted(
        submit(client, "/upscale", photo, scale=1, tile_size=STEP_MS, webhook=flaky.url())
    )
    wait_for(client, job, ENDED)
    wait_until(lambda: len(flaky.requests) >= 3, within_s=30)
    time.sleep(1.5)  # no attempt after the 200
    assert len(flaky.requests) == 3
    ids = {headers["webhook-id"] for _, headers, _ in flaky.requests}
    assert ids == {f"msg_{job['id']}"}  # the same message each time: receivers can dedupe
    assert all(verified(r)["status"] in ENDED for r in flaky.requests)
    first, second, third = flaky.arrivals
    delays = [float(d) for d in BACKOFF.split(",")]
    # Each retry waits its backoff after the failed answer (a little slack: the receiver's clock
    # is monotonic, the store's due times are wall-clock).
    assert second - first >= delays[0] - 0.05
    assert third - second >= delays[1] - 0.05


def test_a_redirect_is_not_followed(client, photo, receivers):
    redirect, other = receivers["redirect"], receivers["other"]
    before, connections = len(redirect.requests), other.connections
    job = accepted(
        submit(client, "/upscale", photo, scale=1, tile_size=STEP_MS, webhook=redirect.url())
    )
    wait_for(client, job, ENDED)
    attempts = len(BACKOFF.split(",")) + 1
    wait_until(lambda: len(redirect.requests) - before >= attempts, within_s=30)
    time.sleep(1.5)
    assert len(redirect.requests) - before == attempts  # a 3xx is a failed attempt; then given up
    assert other.connections == connections == 0


def test_refused_webhooks_are_422_at_submission_before_any_connection(
    client, photo, receivers, data_dir
):
    ok, other = receivers["ok"], receivers["other"]
    refused = [
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.10.10/",
        "http://100.64.0.1/",
        f"http://0.0.0.0:{other.port}/",
        f"http://[::1]:{other.port}/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        f"http://[::ffff:127.0.0.1]:{other.port}/",
        other.url(),  # loopback, not in WEBHOOK_ALLOWED_HOSTS
        other.url(host="localhost"),  # a name that resolves to loopback
        ok.url(host="localhost"),  # listed as 127.0.0.1:port, not by this name
        f"ftp://127.0.0.1:{ok.port}/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "not a url",
    ]
    rows = stored_jobs(data_dir)
    counts = {name: (r.connections, len(r.requests)) for name, r in receivers.items()}
    for url in refused:
        reply = submit(client, "/upscale", photo, scale=1, webhook=url)
        assert reply.status_code == 422, (url, reply.text)
        detail = reply.json()["detail"]
        assert detail.startswith("webhook ") and "refused" in detail, detail
        assert "location" not in reply.headers
    two = submit(client, "/upscale", photo, scale=1, webhook=[ok.url(), ok.url("/2")])
    assert two.status_code == 422 and "one URL" in two.json()["detail"]
    sync = client.post(
        "/upscale", params={"scale": 1, "webhook": ok.url()}, files={"file": ("p.png", photo)}
    )
    assert sync.status_code == 422 and "Prefer: respond-async" in sync.json()["detail"]
    time.sleep(0.5)
    assert stored_jobs(data_dir) == rows
    assert {name: (r.connections, len(r.requests)) for name, r in receivers.items()} == counts


def test_a_pending_delivery_survives_a_killed_gateway(slow, photo, receivers, tmp_path_factory):
    """The receiver fails the first attempt; the gateway is killed (-9) before the retry; a new
    gateway on the same store delivers it."""
    flaky = Receiver([500])
    data = tmp_path_factory.mktemp("webhooks-restart")
    tmp = tmp_path_factory.mktemp("webhooks-restart-gw")
    env = _env(receivers, data, WEBHOOK_BACKOFF_S="4,0.5")
    env["WEBHOOK_ALLOWED_HOSTS"] += f",127.0.0.1:{flaky.port}"
    first = start_gateway({"upscale": slow}, tmp, env)
    try:
        with httpx.Client(base_url=first.url, timeout=60) as c:
            job = accepted(
                submit(c, "/upscale", photo, scale=1, tile_size=STEP_MS, webhook=flaky.url())
            )
            wait_until(lambda: len(flaky.requests) >= 1, within_s=30)

        def retry_scheduled() -> bool:  # the failed attempt recorded (else: held for 30 s)
            with sqlite3.connect(data / "jobs.sqlite3") as db:
                row = db.execute(
                    "SELECT webhook_state, webhook_next_at FROM jobs WHERE id = ?", (job["id"],)
                ).fetchone()
            return row[0] == "pending" and row[1] < time.time() + 10

        wait_until(retry_scheduled, within_s=10)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait()
        assert len(flaky.requests) == 1
        second = start_gateway({"upscale": slow}, tmp, env)
        try:
            wait_until(lambda: len(flaky.requests) >= 2, within_s=30)
            payload = verified(flaky.requests[1])
            assert payload["id"] == job["id"] and payload["status"] in ENDED

            def delivered() -> bool:
                with sqlite3.connect(data / "jobs.sqlite3") as db:
                    row = db.execute(
                        "SELECT webhook_state FROM jobs WHERE id = ?", (job["id"],)
                    ).fetchone()
                return row[0] == "delivered"

            wait_until(delivered, within_s=10)
        finally:
            second.stop()
    finally:
        first.stop()
        flaky.close()
    assert json.loads(flaky.requests[1][2])["id"] == job["id"]


# --- several replicas on Redis ----------------------------------------------------------------


def test_webhooks_with_the_redis_store_are_delivered_once_and_survive_a_killed_replica(
    slow, photo, receivers, redis_server, tmp_path
):
    """Two gateway replicas on one Redis (JOBS_STORE=redis://): every job's webhook is delivered
    once, signed; a delivery that failed on a replica killed (-9) before its retry is made by the
    other replica."""
    ok, flaky = receivers["ok"], Receiver([500])
    env = _env(receivers, tmp_path / "unused", WEBHOOK_BACKOFF_S="3,0.5")
    env["WEBHOOK_ALLOWED_HOSTS"] += f",127.0.0.1:{flaky.port}"
    env |= {
        "JOBS_STORE": f"{redis_server.url.rsplit('/', 1)[0]}/5",
        "RESULTS_STORE": f"file://{tmp_path / 'shared-results'}",
    }
    replicas = [start_gateway({"upscale": slow}, tmp_path, env) for _ in range(2)]
    try:
        clients = [httpx.Client(base_url=r.url, timeout=60) for r in replicas]
        before = len(ok.requests)
        jobs = [
            accepted(submit(c, "/upscale", photo, scale=1, tile_size=STEP_MS, webhook=ok.url("/r")))
            for c in clients * 2
        ]
        wait_until(lambda: len(ok.requests) - before >= len(jobs), within_s=60)
        time.sleep(1.0)  # nothing more comes
        received = [verified(r) for r in ok.requests[before:]]
        assert sorted(p["id"] for p in received) == sorted(j["id"] for j in jobs)
        for payload in received:
            assert payload["status"] in ENDED
            assert payload == clients[0].get(payload["urls"]["self"]).json()

        # The first attempt fails (500); its replica is killed before the retry (3 s later).
        job = accepted(
            submit(clients[0], "/upscale", photo, scale=1, tile_size=STEP_MS, webhook=flaky.url())
        )
        wait_until(lambda: len(flaky.requests) >= 1, within_s=60)
        attempted = [r for r in replicas if f"job {job['id']}: webhook to" in r.log()]
        (victim,) = attempted or wait_until_one(replicas, job)
        os.killpg(victim.process.pid, signal.SIGKILL)
        victim.process.wait()
        (survivor,) = [r for r in replicas if r is not victim]
        wait_until(lambda: len(flaky.requests) >= 2, within_s=60)
        assert verified(flaky.requests[1])["id"] == job["id"]
        assert {h["webhook-id"] for _, h, _ in flaky.requests} == {f"msg_{job['id']}"}
        wait_until(lambda: f"job {job['id']}: webhook delivered" in survivor.log(), within_s=10)
    finally:
        for c in clients:
            c.close()
        for r in replicas:
            r.stop()
        flaky.close()


def wait_until_one(replicas, job: dict) -> list:
    """The replica whose log says it attempted the job's webhook (logged just after)."""
    found: list = []

    def logged() -> bool:
        found[:] = [r for r in replicas if f"job {job['id']}: webhook to" in r.log()]
        return len(found) == 1

    wait_until(logged, within_s=10)
    return found
