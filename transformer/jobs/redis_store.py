"""The shared job store for several gateway replicas: Redis or Valkey (JOBS_STORE=redis://...).

Layout, under one key prefix (`photo-enhance:{jobs}:`, one hash slot):
- `job:ID`: a hash, one field per Job attribute (absent when None; JSON for params, error, result);
- `queue`: the queued ids, scored by created_at (oldest first);
- `running`: the running ids, scored by their lease's end (Redis server time);
- `done:succeeded|failed|canceled`: the finished ids, scored by expires_at;
- `keys`: Idempotency-Key -> id; `all`: every id (orphan files are those of no id);
- `webhooks`: the ids of finished jobs whose webhook delivery is pending, scored by when it is due
  (marked in the script that ends the job; webhooks.Deliverer claims them, any replica);
- channel `changed`: the id of every job that changed (wakes `wait` in every replica at once;
  without it, `wait` polls every POLL_S).

Every state change is one Lua script, so it is atomic and conditional as the SQLite store's
updates: one claimer wins a queued job; only the owner sets progress, renews or finishes a running
job; a canceled or deleted job is never brought back by a late runner. Times come from the Redis
server's clock (TIME), so leases do not depend on the replicas' clocks agreeing. A replica that
dies stops renewing its leases; any replica's next tick (JobSettings.tick_s) puts those jobs back
in the queue once the lease has lapsed (JOB_LEASE_S, 10 s by default): at least once, never run by
two replicas at once for longer than a lease.

An unreachable Redis raises StoreUnavailable (503 with Retry-After, a GatewayError): submissions
and reads answer 503 and nothing is lost; a running job keeps running and its end is written once
Redis answers again (runner.Runner). Persistence is Redis's own: AOF (`appendonly yes`) keeps
accepted jobs through a Redis restart.

Why our own layer rather than a job library (each one's documentation, checked; README "Jobs"):

             cancel a running job   progress          redelivery (worker died)   embedded mode
  arq        Job.abort()            no                yes, after the job timeout  no (Redis)
  saq        Job.abort()            job.update()      yes, heartbeat + sweep      no (Redis/PG)
  taskiq     no (third party)       no                Redis Streams XAUTOCLAIM    InMemoryBroker*
  dramatiq   no (dramatiq-abort)    no                yes, worker heartbeats      StubBroker*
  (* for tests: not durable, nothing survives a restart)

None gives all four, and each would still need our own record of a job's status, progress and
result for the API (CONTRACT section 6), our own idempotency keys and queue limit, and a second
implementation for the embedded SQLite store of `make run`. The jobs' state machine is a dozen
conditional updates (store.py); kept here, one runner, one API and one set of contract tests
serve both stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .model import FINISHED, Job
from .store import JobStore, QueueFull, StoreUnavailable, redacted

logger = logging.getLogger("transformer.jobs")

PREFIX = "photo-enhance:{jobs}:"
INTS = ("done", "total", "version", "attempts", "webhook_attempts")
FLOATS = ("created_at", "started_at", "finished_at", "lease_until", "expires_at", "webhook_next_at")
JSONS = ("params", "error", "result")
FIELDS = (
    "id", "task", "params", "status", "done", "total", "stage", "created_at", "started_at",
    "finished_at", "error", "version", "attempts", "owner", "lease_until", "expires_at",
    "idempotency_key", "result", "webhook", "webhook_state", "webhook_attempts", "webhook_next_at",
)  # fmt: skip
# An unreachable Redis is noticed this fast unless the URL says otherwise (?socket_timeout=...).
DEFAULT_TIMEOUT_S = 5.0

# Shared by the scripts: ARGV[1] is the key prefix.
LUA_HEAD = """
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function num(x) return string.format('%.6f', x) end
local function live(key)
  if redis.call('EXISTS', key) == 0 then return false end
  local exp = redis.call('HGET', key, 'expires_at')
  return (not exp) or tonumber(exp) > now
end
local function changed(id) redis.call('PUBLISH', p .. 'changed', id) end
-- A job that ends: its webhook (if it has one) is due now.
local function webhook_due(id)
  local key = p .. 'job:' .. id
  if redis.call('HEXISTS', key, 'webhook') == 1 then
    redis.call('HSET', key, 'webhook_state', 'pending', 'webhook_next_at', num(now))
    redis.call('ZADD', p .. 'webhooks', num(now), id)
  end
end
"""

ADD = (
    LUA_HEAD
    + """
local id, ikey, max_queued, created = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if ikey ~= '' then
  local existing = redis.call('HGET', p .. 'keys', ikey)
  if existing and live(p .. 'job:' .. existing) then
    return {'same', existing}
  end
end
local queued = redis.call('ZCARD', p .. 'queue')
if queued >= max_queued then return {'full', tostring(queued)} end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', p .. 'job:' .. id, unpack(fields))
redis.call('ZADD', p .. 'queue', created, id)
redis.call('SADD', p .. 'all', id)
if ikey ~= '' then redis.call('HSET', p .. 'keys', ikey, id) end
changed(id)
return {'new', id}
"""
)

GET = (
    LUA_HEAD
    + """
local key = p .. 'job:' .. ARGV[2]
if ARGV[3] == 'by_key' then
  local id = redis.call('HGET', p .. 'keys', ARGV[2])
  if not id then return false end
  key = p .. 'job:' .. id
end
if not live(key) then return false end
return redis.call('HGETALL', key)
"""
)

CLAIM = (
    LUA_HEAD
    + """
local owner, lease = ARGV[2], tonumber(ARGV[3])
while true do
  local first = redis.call('ZRANGE', p .. 'queue', 0, 0)
  if #first == 0 then return false end
  local id = first[1]
  local key = p .. 'job:' .. id
  redis.call('ZREM', p .. 'queue', id)
  if redis.call('HGET', key, 'status') == 'queued' then
    redis.call('HSET', key, 'status', 'running', 'owner', owner, 'lease_until', num(now + lease),
      'started_at', num(now), 'stage', 'starting')
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HINCRBY', key, 'version', 1)
    redis.call('ZADD', p .. 'running', num(now + lease), id)
    changed(id)
    return redis.call('HGETALL', key)
  end
end
"""
)

PROGRESS = (
    LUA_HEAD
    + """
local key = p .. 'job:' .. ARGV[2]
if redis.call('HGET', key, 'status') ~= 'running' or redis.call('HGET', key, 'owner') ~= ARGV[3]
then return 0 end
redis.call('HSET', key, 'done', ARGV[4], 'total', ARGV[5], 'stage', ARGV[6])
redis.call('HINCRBY', key, 'version', 1)
changed(ARGV[2])
return 1
"""
)

RENEW = (
    LUA_HEAD
    + """
local owner, lease = ARGV[2], tonumber(ARGV[3])
local owned = {}
for _, id in ipairs(redis.call('ZRANGE', p .. 'running', 0, -1)) do
  local key = p .. 'job:' .. id
  if redis.call('HGET', key, 'owner') == owner and redis.call('HGET', key, 'status') == 'running'
  then
    redis.call('HSET', key, 'lease_until', num(now + lease))
    redis.call('ZADD', p .. 'running', num(now + lease), id)
    owned[#owned + 1] = id
  end
end
return owned
"""
)

FINISH = (
    LUA_HEAD
    + """
local id, owner, status, ttl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local key = p .. 'job:' .. id
if redis.call('HGET', key, 'status') ~= 'running' or redis.call('HGET', key, 'owner') ~= owner
then return false end
redis.call('HSET', key, 'status', status, 'finished_at', num(now), 'expires_at', num(now + ttl),
  'done', ARGV[6], 'total', ARGV[7], 'stage', ARGV[8])
redis.call('HDEL', key, 'owner', 'lease_until', 'error', 'result')
if ARGV[9] ~= '' then redis.call('HSET', key, 'error', ARGV[9]) end
if ARGV[10] ~= '' then redis.call('HSET', key, 'result', ARGV[10]) end
redis.call('HINCRBY', key, 'version', 1)
redis.call('ZREM', p .. 'running', id)
redis.call('ZADD', p .. 'done:' .. status, num(now + ttl), id)
webhook_due(id)
changed(id)
return redis.call('HGETALL', key)
"""
)

CANCEL = (
    LUA_HEAD
    + """
local id, ttl = ARGV[2], tonumber(ARGV[3])
local key = p .. 'job:' .. id
if not live(key) then return false end
local status = redis.call('HGET', key, 'status')
if status == 'queued' or status == 'running' then
  redis.call('HSET', key, 'status', 'canceled', 'finished_at', num(now),
    'expires_at', num(now + ttl), 'stage', 'canceled')
  redis.call('HDEL', key, 'lease_until')
  redis.call('HINCRBY', key, 'version', 1)
  redis.call('ZREM', p .. 'queue', id)
  redis.call('ZREM', p .. 'running', id)
  redis.call('ZADD', p .. 'done:canceled', num(now + ttl), id)
  webhook_due(id)
  changed(id)
end
return redis.call('HGETALL', key)
"""
)

RELEASE = (
    LUA_HEAD
    + """
local id, owner = ARGV[2], ARGV[3]
local key = p .. 'job:' .. id
if redis.call('HGET', key, 'status') ~= 'running' or redis.call('HGET', key, 'owner') ~= owner
then return 0 end
redis.call('HSET', key, 'status', 'queued', 'stage', ARGV[4])
redis.call('HDEL', key, 'owner', 'lease_until')
redis.call('HINCRBY', key, 'attempts', -1)
redis.call('HINCRBY', key, 'version', 1)
redis.call('ZREM', p .. 'running', id)
redis.call('ZADD', p .. 'queue', redis.call('HGET', key, 'created_at'), id)
changed(id)
return 1
"""
)

RECOVER = (
    LUA_HEAD
    + """
local max_attempts, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local requeued, failed = {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'running', '-inf', '(' .. num(now))) do
  local key = p .. 'job:' .. id
  redis.call('ZREM', p .. 'running', id)
  if redis.call('HGET', key, 'status') == 'running' then
    local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
    redis.call('HDEL', key, 'owner', 'lease_until')
    redis.call('HINCRBY', key, 'version', 1)
    if attempts >= max_attempts then
      local detail = string.format(ARGV[5], attempts)
      redis.call('HSET', key, 'status', 'failed', 'finished_at', num(now),
        'expires_at', num(now + ttl), 'stage', 'failed',
        'error', cjson.encode({status = 500, detail = detail}))
      redis.call('ZADD', p .. 'done:failed', num(now + ttl), id)
      webhook_due(id)
      failed[#failed + 1] = id
    else
      redis.call('HSET', key, 'status', 'queued', 'stage', ARGV[4])
      redis.call('ZADD', p .. 'queue', redis.call('HGET', key, 'created_at'), id)
      requeued[#requeued + 1] = id
    end
    changed(id)
  end
end
return {requeued, failed}
"""
)

DELETE = (
    LUA_HEAD
    + """
local id = ARGV[2]
local key = p .. 'job:' .. id
local ikey = redis.call('HGET', key, 'idempotency_key')
if ikey and redis.call('HGET', p .. 'keys', ikey) == id then
  redis.call('HDEL', p .. 'keys', ikey)
end
redis.call('ZREM', p .. 'queue', id)
redis.call('ZREM', p .. 'running', id)
for _, status in ipairs({'succeeded', 'failed', 'canceled'}) do
  redis.call('ZREM', p .. 'done:' .. status, id)
end
redis.call('ZREM', p .. 'webhooks', id)
redis.call('SREM', p .. 'all', id)
local existed = redis.call('DEL', key)
changed(id)
return existed
"""
)

EXPIRED = (
    LUA_HEAD
    + """
local out = {}
for _, status in ipairs({'succeeded', 'failed', 'canceled'}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'done:' .. status, '-inf', num(now))) do
    out[#out + 1] = id
  end
end
return out
"""
)

COUNTS = (
    LUA_HEAD
    + """
local out = {'queued', redis.call('ZCARD', p .. 'queue'),
  'running', redis.call('ZCARD', p .. 'running')}
for _, status in ipairs({'succeeded', 'failed', 'canceled'}) do
  out[#out + 1] = status
  out[#out + 1] = redis.call('ZCOUNT', p .. 'done:' .. status, '(' .. num(now), '+inf')
end
return out
"""
)

# Times cross as delays (seconds from now), so that due dates are on the Redis server's clock.
CLAIM_WEBHOOK = (
    LUA_HEAD
    + """
local hold = tonumber(ARGV[2])
while true do
  local first = redis.call('ZRANGE', p .. 'webhooks', 0, 0, 'WITHSCORES')
  if #first == 0 then return {false, false} end
  local id, due = first[1], tonumber(first[2])
  local key = p .. 'job:' .. id
  if redis.call('HGET', key, 'webhook_state') ~= 'pending' then
    redis.call('ZREM', p .. 'webhooks', id)
  elseif due > now then
    return {false, num(due - now)}
  else
    redis.call('ZADD', p .. 'webhooks', num(now + hold), id)
    redis.call('HSET', key, 'webhook_next_at', num(now + hold))
    redis.call('HINCRBY', key, 'webhook_attempts', 1)
    return {redis.call('HGETALL', key), false}
  end
end
"""
)

SET_WEBHOOK = (
    LUA_HEAD
    + """
local id, state, delay = ARGV[2], ARGV[3], ARGV[4]
local key = p .. 'job:' .. id
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'webhook_state', state)
if state == 'pending' then
  local due = num(now + tonumber(delay))
  redis.call('HSET', key, 'webhook_next_at', due)
  redis.call('ZADD', p .. 'webhooks', due, id)
else
  redis.call('HDEL', key, 'webhook_next_at')
  redis.call('ZREM', p .. 'webhooks', id)
end
return 1
"""
)

QUEUED_AGAIN = "queued again: the gateway running it stopped"
TOO_MANY = (
    "the gateway running this job stopped %d times before it ended (JOB_MAX_ATTEMPTS); "
    "see the gateway's log"
)


def _fields(job: Job) -> list[str]:
    out: list[str] = []
    for name in FIELDS:
        value = getattr(job, name)
        if value is None:
            continue
        if name in JSONS:
            value = json.dumps(value)
        elif name in FLOATS:
            value = f"{value:.6f}"
        out += [name, str(value)]
    return out


def _job(flat: list[str] | None) -> Job | None:
    if not flat:
        return None
    raw = dict(zip(flat[::2], flat[1::2], strict=True))
    fields: dict[str, Any] = {}
    for name in FIELDS:
        value = raw.get(name)
        if value is None:
            continue  # the Job's default
        if name in INTS:
            fields[name] = int(value)
        elif name in FLOATS:
            fields[name] = float(value)
        elif name in JSONS:
            fields[name] = json.loads(value)
        else:
            fields[name] = value
    return Job(**fields)


class RedisJobStore(JobStore):
    def __init__(self, url: str, prefix: str = PREFIX):
        super().__init__()
        self.url = url
        self.prefix = prefix
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._listener: asyncio.Task | None = None

    # --- plumbing -----------------------------------------------------------------------------

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"the job store ({redacted(self.url)}) does not answer: {exc}")

    async def _call(self, name: str, *args: Any) -> Any:
        try:
            return await self._scripts[name](args=[self.prefix, *args])
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def open(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_timeout=DEFAULT_TIMEOUT_S,
            socket_connect_timeout=DEFAULT_TIMEOUT_S,
            health_check_interval=30,
            # One more try on a fresh connection (a pooled one may be stale after a Redis
            # restart), then StoreUnavailable: a 503 at once rather than after backoffs.
            retry=Retry(NoBackoff(), 1),
        )
        for name, source in (
            ("add", ADD), ("get", GET), ("claim", CLAIM), ("progress", PROGRESS),
            ("renew", RENEW), ("finish", FINISH), ("cancel", CANCEL), ("release", RELEASE),
            ("recover", RECOVER), ("delete", DELETE), ("expired", EXPIRED), ("counts", COUNTS),
            ("claim_webhook", CLAIM_WEBHOOK), ("set_webhook", SET_WEBHOOK),
        ):  # fmt: skip
            self._scripts[name] = self._redis.register_script(source)
        try:
            await self._redis.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            await self._redis.aclose()
            raise RuntimeError(f"JOBS_STORE={redacted(self.url)}: cannot connect: {exc}") from exc
        self._listener = asyncio.create_task(self._listen(), name="jobs-redis-changes")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _listen(self) -> None:
        """Wake the local `wait`s on every change published by any replica; reconnects."""
        channel = self.prefix + "changed"
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                while True:
                    message = await pubsub.get_message(timeout=self.POLL_S * 10)
                    if message is not None and message["type"] == "message":
                        self._notify(message["data"])
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await asyncio.sleep(self.POLL_S)  # `wait` polls meanwhile
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # --- the interface -----------------------------------------------------------------------

    async def add(self, job: Job, max_queued: int) -> tuple[Job, bool]:
        while True:
            kind, value = await self._call(
                "add", job.id, job.idempotency_key or "", max_queued, f"{job.created_at:.6f}",
                *_fields(job),
            )  # fmt: skip
            if kind == "full":
                raise QueueFull(int(value))
            if kind == "new":
                self._notify(job.id)
                return job, True
            existing = await self.get(value)
            if existing is not None:  # else it expired just now: its key is free again
                return existing, False

    async def get(self, job_id: str) -> Job | None:
        return _job(await self._call("get", job_id, "by_id"))

    async def by_key(self, idempotency_key: str) -> Job | None:
        return _job(await self._call("get", idempotency_key, "by_key"))

    async def claim(self, owner: str, lease_s: float) -> Job | None:
        job = _job(await self._call("claim", owner, lease_s))
        if job is not None:
            self._notify(job.id)
        return job

    async def set_progress(
        self, job_id: str, owner: str, done: int, total: int, stage: str
    ) -> bool:
        changed = await self._call("progress", job_id, owner, done, total, stage) == 1
        if changed:
            self._notify(job_id)
        return changed

    async def renew(self, owner: str, lease_s: float) -> set[str]:
        return set(await self._call("renew", owner, lease_s))

    async def finish(
        self,
        job_id: str,
        owner: str,
        status: str,
        ttl_s: float,
        *,
        progress: tuple[int, int, str],
        error: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
    ) -> Job | None:
        assert status in FINISHED
        job = _job(
            await self._call(
                "finish", job_id, owner, status, ttl_s, *progress,
                json.dumps(error) if error else "", json.dumps(result) if result else "",
            )
        )  # fmt: skip
        self._notify(job_id)
        return job

    async def cancel(self, job_id: str, ttl_s: float) -> Job | None:
        job = _job(await self._call("cancel", job_id, ttl_s))
        self._notify(job_id)
        return job

    async def release(self, job_id: str, owner: str) -> bool:
        released = await self._call("release", job_id, owner, QUEUED_AGAIN) == 1
        self._notify(job_id)
        return released

    async def recover(self, max_attempts: int, ttl_s: float) -> tuple[list[str], list[str]]:
        requeued, failed = await self._call("recover", max_attempts, ttl_s, QUEUED_AGAIN, TOO_MANY)
        for job_id in requeued + failed:
            self._notify(job_id)
        return list(requeued), list(failed)

    async def expired(self) -> list[str]:
        return list(await self._call("expired"))

    async def claim_webhook(self, now: float, hold_s: float) -> tuple[Job | None, float | None]:
        # Due dates are on the Redis server's clock; `now` (this replica's) only converts the
        # next one back.
        flat, wait = await self._call("claim_webhook", hold_s)
        if flat:
            return _job(flat), None
        return None, (now + float(wait) if wait else None)

    async def set_webhook(self, job_id: str, state: str, next_at: float | None) -> None:
        delay = max(0.0, next_at - time.time()) if next_at is not None else 0.0
        await self._call("set_webhook", job_id, state, f"{delay:.6f}")

    async def delete(self, job_id: str) -> bool:
        deleted = await self._call("delete", job_id) == 1
        self._notify(job_id)
        return deleted

    async def ids(self) -> set[str]:
        try:
            return set(await self._redis.smembers(self.prefix + "all"))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def counts(self) -> dict[str, int]:
        flat = await self._call("counts")
        counts = dict(zip(flat[::2], (int(n) for n in flat[1::2]), strict=True))
        return {status: n for status, n in counts.items() if n}
