"""RQ's dequeue, the job's start and the account's grant in ONE Redis round trip.

RQ's worker took three round trips before a turn could ask for its account, and the
grant a fourth: BLMOVE (the job's id), HGETALL (the job), a MULTI (its execution, the
started registry, the worker busy, the job started) and the fair line's grant (the slot
and the account's credentials). Here one pipeline sends a BLMOVE onto a list of this
worker's own and, right behind it, `DEQUEUE`, which takes the id from that list, reads
the job, writes RQ's start bookkeeping exactly as `GeventWorker.prepare_job_execution`
does (same keys, fields, scores and TTLs: RQ's registries, `rq info`, failure handling
and the started-job cleanup see an ordinary started job) and, for a turn whose web tier
left its owner and group under `service.turns.grant_hint_key`, runs the fair line's own
script (`fair_line.ADMIT`) for it. A turn that continues a stored conversation names it
there too: the script reads its document, handle and metadata (what `TurnSaver.load` read
in a round trip of its own; the web tier holds the conversation's lock, so nothing changes
it meanwhile) and asks for the handle's account, as `Scheduler.poll` does for `preferred`.
Redis runs one client's commands in order, so the script sees what the BLMOVE moved, and
the list is this worker's own, so no other worker's id comes between.

The turn takes the grant (`Ahead`) with its first `AccountLane.take`; not granted (the
pool is full), its ticket is already in the line and it waits there as usual.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from typing import Any

from redis import Redis
from rq.defaults import DEFAULT_WORKER_TTL
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import now
from rq.worker import WorkerStatus

from service.accounts import admission, capacity, fair_line, groups
from service.accounts.account import READY
from service.accounts.scheduler import Lease, lease_from
from service.state.conversations import conversation_key, handle_key, metadata_key
from service.turns import GRANT_HINT_PREFIX, lease_key
from workers import spare_conversations
from workers.account_pool import Pool
from workers.dequeue_grants import Ahead

DEQUEUE = (
    """
local own, job_prefix, started_key, worker_key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local worker, exec_id, monitoring = ARGV[5], ARGV[6], tonumber(ARGV[7])  -- DEFAULT_WORKER_TTL
local busy, started = ARGV[8], ARGV[9]
local id = redis.call('LPOP', own)
if not id then return false end
local job_key = job_prefix .. id
local raw = redis.call('HGETALL', job_key)
if #raw == 0 then return {id, false} end  -- gone (expired, deleted): skipped, as RQ's dequeue does
local timeout
for i = 1, #raw, 2 do if raw[i] == 'timeout' then timeout = tonumber(raw[i + 1]) end end
-- `SimpleWorker.get_heartbeat_ttl` (ours is one): the job's timeout and a minute, or RQ's worker TTL
local ttl = math.floor(timeout or monitoring) + 60
if timeout == -1 then ttl = monitoring end
local t = redis.call('TIME')
local sec, usec = tonumber(t[1]), tonumber(t[2])
local stamp = string.format('%d.%06d', sec, usec)
-- RQ's `utcformat`: days since the epoch to a civil date (H. Hinnant's algorithm)
local days = math.floor(sec / 86400)
local rest = sec - days * 86400
local z = days + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
  - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local day = doy - math.floor((153 * mp + 2) / 5) + 1
local month = mp < 10 and mp + 3 or mp - 9
local year = yoe + era * 400 + (month <= 2 and 1 or 0)
local iso = string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', year, month, day,
  math.floor(rest / 3600), math.floor(rest % 3600 / 60), rest % 60, usec)
-- `Execution.create`, the worker busy on the job, `Job.heartbeat`, `prepare_for_execution`, PERSIST
local exec_key = ARGV[10] .. id .. ':' .. exec_id
local executions = ARGV[11] .. id
redis.call('HSET', exec_key, 'id', exec_id, 'created_at', stamp, 'last_heartbeat', stamp,
  'worker_name', worker)
redis.call('EXPIRE', exec_key, ttl)
redis.call('ZADD', executions, sec + ttl + 60, exec_id)
redis.call('EXPIRE', executions, ttl + 60)
redis.call('ZADD', started_key, sec + ttl, id .. ':' .. exec_id)
redis.call('HSET', worker_key, 'state', busy, 'current_job', id, 'current_job_working_time', 0,
  'last_heartbeat', iso)
redis.call('EXPIRE', worker_key, ttl)
redis.call('HSET', job_key, 'last_heartbeat', iso, 'status', started, 'started_at', iso,
  'worker_name', worker)
redis.call('PERSIST', job_key)
-- The turn's first liveness lease (`service.turns.lease_key`), with its start: a worker killed
-- before its lease watcher's first round is a lost worker (502), never a missing one (503).
redis.call('SET', ARGV[24] .. id .. ARGV[25], '1', 'EX', ARGV[26])
local clock = {stamp, string.format('%011d%06d000', sec, usec)}
-- The grant, for a turn whose hint names its owner and group (a new upstream conversation, or a
-- stored one: its document is read here too, and its upstream handle's account preferred)
local hint_key = ARGV[12] .. id
local hint = redis.call('HMGET', hint_key, 'owner', 'group', 'conv', 'pref', 'imgs')
if not hint[1] then return {id, raw, clock} end
redis.call('DEL', hint_key)
local owner, group = hint[1], hint[2]
local stored, preferred, spares, images = false, false, ARGV[20], false
if hint[5] then  -- the parked image bytes the turn will read
  local keys = {}
  for key in string.gmatch(hint[5], '[^,]+') do keys[#keys + 1] = key end
  images = {keys, redis.call('MGET', unpack(keys))}
end
if hint[3] then
  local c = ARGV[21] .. hint[3]
  stored = redis.call('MGET', c, c .. ARGV[22], c .. ARGV[23])
  if hint[4] == '1' and stored[2] then
    local ok, handle = pcall(cjson.decode, stored[2])
    if ok and type(handle) == 'table' and type(handle['account']) == 'string' then
      preferred, spares = handle['account'], ''  -- continued upstream: no spare with its slot
    end
  end
end
local ticket = clock[2] .. ARGV[13]
local args = {ARGV[14], stamp, ticket, owner, '', ARGV[15], ARGV[16], ARGV[17], ARGV[18]}
local ids, mine = {}, false
for i = 27, #ARGV, 4 do
  if ARGV[i] == group then
    ids[#ids + 1] = ARGV[i + 1]
    if ARGV[i + 1] == preferred then mine = true end
    args[#args + 1] = ARGV[i + 1]; args[#args + 1] = ARGV[i + 2]; args[#args + 1] = ARGV[i + 3]
  end
end
-- none ready: the turn learns why the usual way
if #ids == 0 then return {id, raw, clock, false, owner, false, stored, preferred, images} end
args[5] = mine and preferred or table.concat(ids, ',')  -- `Scheduler.poll`'s `want`
local grant = admit({ARGV[19] .. owner, spares}, args)
return {id, raw, clock, ticket, owner, grant, stored, preferred, images}
"""
)

_BASE = conversation_key("")
_CONVERSATION_KEYS = (_BASE, handle_key("")[len(_BASE) :], metadata_key("")[len(_BASE) :])
"""How the script names a conversation's document, handle and metadata (`service.state.conversations`)."""

WORKER_KEY_PREFIX = "rq:worker:"  # `Worker.key` (tests/unit/test_dequeue.py)

SCRIPT = f"local function admit(KEYS, ARGV)\n{fair_line.ADMIT}\nend\n{DEQUEUE}"
"""The fair line's script as a local function (its parameters shadow KEYS and ARGV), then DEQUEUE."""


@dataclasses.dataclass(frozen=True)
class Dequeued:
    """A started job, its execution, and the grant that came with it (if the turn had a hint)."""

    job: Job
    execution: Execution
    ahead: Ahead | None


def own_list(queue: Queue, worker_name: str) -> str:
    """The list this worker's BLMOVE fills and its script empties at once."""
    return f"{queue.intermediate_queue_key}:{worker_name}"


def dequeue(
    redis: Redis,
    queue: Queue,
    *,
    worker_name: str,
    worker_key: str,
    wait: bool = True,
    timeout: int | None,
    pool: Pool,
    job_class: type[Job],
    serializer: Any,
) -> Dequeued | str | None:
    """One round trip: a job started (and granted), the id of a job gone meanwhile, or None.

    `timeout` None takes a job only if one is waiting (burst); `wait` False only runs the
    script on what an earlier dequeue that failed half-way left on the worker's own list.
    """
    execution_id = uuid.uuid4().hex
    own = own_list(queue, worker_name)
    args = _arguments(queue, own, worker_name, worker_key, execution_id, pool)
    with redis.pipeline(transaction=False) as pipe:
        if not wait:  # only what an earlier, failed dequeue left on the worker's own list
            pass
        elif timeout is None:
            pipe.lmove(queue.key, own)
        else:
            pipe.blmove(queue.key, own, timeout)
        pipe.evalsha(SHA, 0, *args)
        reply = pipe.execute()[-1]
    if not reply:
        return None
    job_id = str(reply[0].decode())
    if not reply[1]:
        return job_id
    job = job_class(job_id, connection=redis, serializer=serializer)
    raw = reply[1]
    job.restore(dict(zip(raw[::2], raw[1::2], strict=True)))
    job.origin = job.origin or queue.name
    execution = Execution(id=execution_id, job_id=job_id, connection=redis, worker_name=worker_name)
    ahead = None
    if len(reply) > 3:
        ticket, grant = (reply[3] or b"").decode(), reply[5]
        lease: Lease | None = None
        if grant and grant[0]:
            lease = lease_from(grant, ticket, pool.registry.prefix, door=True)
        preferred = reply[7].decode() if reply[7] else None
        stored = tuple(reply[6]) if reply[6] else None
        images = {k.decode(): v for k, v in zip(*reply[8], strict=True) if v is not None} if reply[8] else {}
        ahead = Ahead(ticket, lease, preferred=preferred, stored=stored, images=images)
    return Dequeued(job, execution, ahead)


def recover(redis: Redis, queue: Queue) -> int:
    """Put back at the head of the queue what dead workers' own lists still hold; how many.

    A worker's list is empty but for the instant between its BLMOVE and its script (or after
    a dequeue that failed half-way, which the same worker drains next): a worker that died
    there left its job on no RQ list, so RQ's own clean-up never sees it. Run with RQ's
    maintenance; a worker whose key is gone (RQ's heartbeat TTL) is dead.
    """
    prefix = own_list(queue, "")
    moved = 0
    for key in redis.scan_iter(match=f"{prefix}*", count=100):
        name = key.decode()[len(prefix) :] if isinstance(key, bytes) else str(key)[len(prefix) :]
        if redis.exists(f"{WORKER_KEY_PREFIX}{name}"):
            continue
        while redis.lmove(key, queue.key, "RIGHT", "LEFT") is not None:
            moved += 1
    return moved


def mirror(worker: Any, job: Job) -> None:
    """What the script wrote, set on the worker and job objects as RQ's own calls set them (RQ
    reads them on): the same calls on a pipeline that is never sent."""
    ttl = worker.get_heartbeat_ttl(job)
    with worker.connection.pipeline() as written:
        worker.set_state(WorkerStatus.BUSY, pipeline=written)
        worker.set_current_job_id(job.id, pipeline=written)
        worker.set_current_job_working_time(0, pipeline=written)
        worker.heartbeat(ttl, pipeline=written)
        job.heartbeat(now(), ttl, pipeline=written)
        job.prepare_for_execution(worker.name, pipeline=written)


SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


def load_script(redis: Redis) -> None:
    """Load the script (after NOSCRIPT: a new or restarted Redis); the next dequeue retries."""
    redis.script_load(SCRIPT)


def _arguments(
    queue: Queue,
    own: str,
    worker_name: str,
    worker_key: str,
    execution_id: str,
    pool: Pool,
) -> list[Any]:
    prefix = pool.registry.prefix
    settings = pool.settings
    args: list[Any] = [
        own,
        Job.redis_job_namespace_prefix,
        queue.started_job_registry.key,
        worker_key,
        worker_name,
        execution_id,
        DEFAULT_WORKER_TTL,  # what `SimpleWorker.get_heartbeat_ttl` falls back on
        WorkerStatus.BUSY.value,
        JobStatus.STARTED.value,
        "rq:execution:",  # `Execution.key` without its composite key (tests/unit/test_dequeue.py)
        ExecutionRegistry.key_template.format(""),
        GRANT_HINT_PREFIX,
        f".{uuid.uuid4().int & (1 << 40) - 1:010x}",  # the ticket's tail (`fair_line.new_ticket`)
        prefix,
        fair_line.TICKET_SECONDS,
        pool.scheduler.lease_seconds,
        capacity.WINDOW_SECONDS,
        fair_line.SCAN,
        admission.pending_key(prefix, ""),
        spare_conversations.prefix(prefix) if settings.upstream_spare_conversations else "",
        *_CONVERSATION_KEYS,
        *lease_key("\n").split("\n"),  # the lease key around the job id (a turn's completion id)
        settings.worker_lease_seconds,
    ]
    now = pool.scheduler.clock()
    for account in pool.registry.all():
        if account.state(now) == READY:
            group = getattr(account, "group", groups.DEFAULT_GROUP)
            limits = account.limits(settings.account_max_concurrent, settings.account_rpm)
            args.extend((group, account.id, *limits))
    return args
