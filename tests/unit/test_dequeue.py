"""`workers.dequeue` against a real redis-server and RQ: one round trip starts the job exactly as
RQ's own worker would (same keys, fields, registries), RQ finishes or fails it as usual, and a
new conversation's account is granted in the same script."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis
from rq import Queue
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from service.accounts import admission
from service.errors import UpstreamUnavailable
from service.runtime.settings import load_settings
from service.state.conversations import Conversation, ConversationStore
from service.state.relay_publisher import Publisher
from service.turns import grant_hint_key, lease_key
from workers import dequeue
from workers.account_pool import AccountLane, Pool
from workers.dequeue_grants import granted_ahead
from workers.gevent_worker import GeventWorker

SECRET = "Kq3v9ZrT1mW8pL2xN7bY4cH6dF0gJ5sA"


def _worker(redis: Redis, url: str, name: str, cookies: str = "_U=x") -> tuple[GeventWorker, Queue, Pool]:
    settings = load_settings({"REDIS_URL": url, "UPSTREAM_COOKIES": cookies, "SECRET_KEY": SECRET})
    pool = Pool(settings, redis)
    pool.seed()
    queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)
    worker = GeventWorker([queue], connection=redis, name=name, serializer=JSONSerializer, accounts=pool)
    worker.register_birth()
    return worker, queue, pool


def _take(worker: GeventWorker, queue: Queue) -> Job:
    for _ in range(3):  # the first call only empties the worker's own list
        got = worker._dequeue_started(queue, burst=True)
        if isinstance(got, tuple):
            return got[0]
    raise AssertionError("no job dequeued")


def test_rq_keys_are_what_the_script_writes() -> None:
    """The key layouts the script spells out (an RQ upgrade that changes them fails here)."""
    connection = Redis()
    assert Execution(id="e", job_id="j", connection=connection).key == "rq:execution:j:e"
    assert ExecutionRegistry.key_template.format("j") == "rq:executions:j"
    assert Job.redis_job_namespace_prefix == "rq:job:"
    assert GeventWorker.redis_worker_namespace_prefix == dequeue.WORKER_KEY_PREFIX


def test_a_job_started_in_one_round_trip_is_what_rqs_worker_writes(
    redis_client: Redis, redis_url: str
) -> None:
    worker, queue, _ = _worker(redis_client, redis_url, "ours")
    rq_worker, _, _ = _worker(redis_client, redis_url, "theirs")
    queue.enqueue("math.sqrt", 4.0, job_id="ours-job", job_timeout=300, result_ttl=60, ttl=35)
    queue.enqueue("math.sqrt", 9.0, job_id="rq-job", job_timeout=300, result_ttl=60, ttl=35)
    job = _take(worker, queue)
    assert job.id == "ours-job" and job.get_status(refresh=False) == JobStatus.STARTED
    theirs = Queue.dequeue_any([queue], None, connection=redis_client, serializer=JSONSerializer)
    assert theirs is not None
    rq_worker.prepare_job_execution(theirs[0], remove_from_intermediate_queue=True)

    ours_hash: dict[bytes, bytes] = redis_client.hgetall("rq:job:ours-job")  # type: ignore[assignment]
    rq_hash: dict[bytes, bytes] = redis_client.hgetall("rq:job:rq-job")  # type: ignore[assignment]
    assert ours_hash.keys() == rq_hash.keys()
    assert ours_hash[b"status"] == rq_hash[b"status"] == b"started"
    started = datetime.fromisoformat(ours_hash[b"started_at"].decode().replace("Z", "+00:00"))
    enqueued = datetime.fromisoformat(ours_hash[b"enqueued_at"].decode().replace("Z", "+00:00"))
    assert enqueued <= started <= datetime.now(UTC) + timedelta(seconds=1)
    assert redis_client.ttl("rq:job:ours-job") == redis_client.ttl("rq:job:rq-job") == -1  # persisted
    registry = StartedJobRegistry(queue=queue)
    assert set(registry.get_job_ids()) == {"ours-job", "rq-job"}
    ours_exec: list[bytes] = redis_client.zrange("rq:executions:ours-job", 0, -1)  # type: ignore[assignment]
    rq_exec: list[bytes] = redis_client.zrange("rq:executions:rq-job", 0, -1)  # type: ignore[assignment]
    assert len(ours_exec) == len(rq_exec) == 1
    ours_fields = redis_client.hgetall(f"rq:execution:ours-job:{ours_exec[0].decode()}")
    assert ours_fields.keys() == redis_client.hgetall(f"rq:execution:rq-job:{rq_exec[0].decode()}").keys()
    ours_ttl = redis_client.ttl(f"rq:execution:ours-job:{ours_exec[0].decode()}")
    assert abs(ours_ttl - redis_client.ttl(f"rq:execution:rq-job:{rq_exec[0].decode()}")) <= 1
    assert abs(ours_ttl - rq_worker.get_heartbeat_ttl(theirs[0])) <= 1
    assert abs(redis_client.ttl("rq:executions:ours-job") - redis_client.ttl("rq:executions:rq-job")) <= 1
    assert abs(redis_client.ttl(worker.key) - redis_client.ttl(rq_worker.key)) <= 1
    assert redis_client.hget(worker.key, "current_job") == b"ours-job"
    assert redis_client.hget(worker.key, "state") == b"busy"
    assert redis_client.llen(dequeue.own_list(queue, worker.name)) == 0
    assert redis_client.llen(queue.intermediate_queue_key) == 0  # RQ's LREM took its job out too


def test_rq_finishes_and_fails_a_job_started_that_way(redis_client: Redis, redis_url: str) -> None:
    worker, queue, _ = _worker(redis_client, redis_url, "w")
    queue.enqueue("math.sqrt", 4.0, job_id="fine", result_ttl=60)
    queue.enqueue("math.sqrt", "not a number", job_id="broken", failure_ttl=600)
    for _ in range(2):
        job = _take(worker, queue)
        worker.perform_job(job, queue)
    assert Job.fetch("fine", connection=redis_client, serializer=JSONSerializer).return_value() == 2.0
    assert "fine" in FinishedJobRegistry(queue=queue).get_job_ids()
    assert "broken" in FailedJobRegistry(queue=queue).get_job_ids()
    failed = Job.fetch("broken", connection=redis_client, serializer=JSONSerializer)
    result = failed.latest_result()
    assert failed.get_status() == JobStatus.FAILED and result is not None
    assert "TypeError" in (result.exc_string or "")
    assert StartedJobRegistry(queue=queue).get_job_ids() == []


def test_a_new_conversations_account_comes_with_the_dequeue(redis_client: Redis, redis_url: str) -> None:
    worker, queue, pool = _worker(redis_client, redis_url, "w")
    prefix = pool.registry.prefix
    redis_client.zadd(admission.pending_key(prefix, "owner-1"), {"claim": 1e12})  # the door's claim
    queue.enqueue("math.sqrt", 4.0, job_id="new-conv")
    redis_client.hset(grant_hint_key("new-conv"), mapping={"owner": "owner-1", "group": "default"})
    queue.enqueue("math.sqrt", 9.0, job_id="continued")  # no hint: its turn asks for itself
    job = _take(worker, queue)
    ahead = granted_ahead(job.id)
    assert ahead is not None and ahead.lease is not None and ahead.lease.account.id == "env-1"
    assert ahead.lease.fresh and ahead.lease.door_ended
    assert redis_client.zscore(f"{prefix}:leases:env-1", ahead.ticket) is not None
    assert redis_client.zcard(admission.pending_key(prefix, "owner-1")) == 0  # ended with the grant
    assert not redis_client.exists(grant_hint_key("new-conv"))
    other = _take(worker, queue)
    assert other.id == "continued" and granted_ahead(other.id) is None


def test_a_full_pool_leaves_the_turn_its_place_in_the_line(redis_client: Redis, redis_url: str) -> None:
    worker, queue, pool = _worker(redis_client, redis_url, "w")
    prefix = pool.registry.prefix
    limit = pool.settings.account_max_concurrent
    redis_client.zadd(f"{prefix}:leases:env-1", {f"busy-{n}": 1e12 for n in range(limit)})
    queue.enqueue("math.sqrt", 4.0, job_id="waits")
    redis_client.hset(grant_hint_key("waits"), mapping={"owner": "o", "group": "default"})
    ahead = granted_ahead(_take(worker, queue).id)
    assert ahead is not None and ahead.lease is None
    assert redis_client.zscore(f"{prefix}:line", ahead.ticket) is not None  # waits on with it


def test_a_dead_workers_list_goes_back_to_the_head_of_the_queue(redis_client: Redis, redis_url: str) -> None:
    worker, queue, _ = _worker(redis_client, redis_url, "alive")
    queue.enqueue("math.sqrt", 1.0, job_id="waiting")
    redis_client.rpush(dequeue.own_list(queue, "dead"), "stranded")  # died between BLMOVE and script
    redis_client.rpush(dequeue.own_list(queue, "alive"), "its-own")  # a live worker's: left alone
    assert dequeue.recover(redis_client, queue) == 1
    assert queue.job_ids[:1] == ["stranded"] and "waiting" in queue.get_job_ids()
    assert redis_client.lrange(dequeue.own_list(queue, "alive"), 0, -1) == [b"its-own"]
    worker.run_maintenance_tasks()  # with RQ's own clean-up; nothing left to move
    assert not redis_client.exists(dequeue.own_list(queue, "dead"))


def test_a_grant_for_an_account_marked_unwell_since_the_wait_began_is_given_back(
    redis_client: Redis, redis_url: str
) -> None:
    # The dequeue's ready list is the worker's snapshot from before it began to wait; another
    # process marked the account unreachable meanwhile. The grant read the account afresh, so the
    # turn gives the slot back and fails with the pool's own 503 instead of calling the upstream.
    worker, queue, pool = _worker(redis_client, redis_url, "w")
    prefix = pool.registry.prefix
    pool.registry.all()  # the worker's snapshot: env-1 ready
    redis_client.hset(
        pool.registry.key("env-1"), mapping={"unreachable": "1", "error_code": "upstream_unreachable"}
    )
    queue.enqueue("math.sqrt", 4.0, job_id="stale")
    redis_client.hset(grant_hint_key("stale"), mapping={"owner": "o", "group": "default"})
    ahead = granted_ahead(_take(worker, queue).id)
    assert ahead is not None and ahead.lease is not None and ahead.lease.account.unreachable
    lane = AccountLane(pool, "o", Publisher(redis_client, "chatcmpl-stale"), lambda: False, ahead=ahead)
    lane.wants_spare = pool.settings.upstream_spare_conversations
    with pytest.raises(UpstreamUnavailable, match="unreachable"):
        lane.take(None)
    assert redis_client.zcard(f"{prefix}:leases:env-1") == 0  # the stale grant's slot was given back


def _continued(redis: Redis, queue: Queue, job_id: str, account: str) -> None:
    """A turn continuing a stored conversation whose upstream handle is on `account`."""
    stored = Conversation(
        id=f"conv_{job_id}", owner="o", model="gpt-4", messages=[{"role": "user", "content": "hi"}]
    )
    stored.handle = {"dialect": "copilot", "account": account, "conversation_id": "up-1"}
    ConversationStore(redis, ttl=600).save(stored)
    queue.enqueue("math.sqrt", 4.0, job_id=job_id)
    redis.hset(
        grant_hint_key(job_id), mapping={"owner": "o", "group": "default", "conv": stored.id, "pref": "1"}
    )


def test_a_continued_conversation_is_read_and_its_account_granted_with_the_dequeue(
    redis_client: Redis, redis_url: str
) -> None:
    worker, queue, pool = _worker(redis_client, redis_url, "w", cookies="_U=x\n_U=y")
    prefix = pool.registry.prefix
    redis_client.zadd(admission.pending_key(prefix, "o"), {"claim": 1e12})
    _continued(redis_client, queue, "cont", "env-2")
    ahead = granted_ahead(_take(worker, queue).id)
    assert ahead is not None and ahead.preferred == "env-2" and ahead.stored is not None
    assert ahead.lease is not None and ahead.lease.account.id == "env-2" and ahead.lease.spare is None
    doc, handle, metadata = ahead.stored
    assert doc is not None
    read = Conversation.from_json(doc, handle, metadata)
    assert read.id == "conv_cont" and read.handle is not None and read.handle["account"] == "env-2"
    lane = AccountLane(pool, "o", Publisher(redis_client, "chatcmpl-cont"), lambda: False, ahead=ahead)
    assert lane.take("env-2") is not None  # the dequeue's grant: no second one
    assert lane.lease is ahead.lease
    assert (
        redis_client.zcard(f"{prefix}:leases:env-2") == 1
        and redis_client.zcard(f"{prefix}:leases:env-1") == 0
    )
    assert redis_client.zcard(admission.pending_key(prefix, "o")) == 0


def test_a_grant_the_turn_does_not_ask_for_is_given_back_its_door_claim_ended_once(
    redis_client: Redis, redis_url: str
) -> None:
    # The turn found the handle unusable (say, expired): it asks for any account, with a spare.
    worker, queue, pool = _worker(redis_client, redis_url, "w", cookies="_U=x\n_U=y")
    prefix = pool.registry.prefix
    redis_client.zadd(admission.pending_key(prefix, "o"), {"this turn": 1e12, "another turn": 2e12})
    _continued(redis_client, queue, "given-back", "env-2")
    ahead = granted_ahead(_take(worker, queue).id)
    assert ahead is not None and ahead.lease is not None
    lane = AccountLane(pool, "o", Publisher(redis_client, "chatcmpl-gb"), lambda: False, ahead=ahead)
    lane.wants_spare = pool.settings.upstream_spare_conversations
    assert lane.take(None, spare=lane.wants_spare) is not None
    assert lane.lease is not None and lane.lease is not ahead.lease
    assert redis_client.zrange(admission.pending_key(prefix, "o"), 0, -1) == [b"another turn"]


def test_a_turn_starts_with_its_liveness_lease(redis_client: Redis, redis_url: str) -> None:
    """The lease goes out with the start: a worker killed before its watcher's first round is
    seen by the web tier as lost (the lease expires), not as never having taken the turn."""
    worker, queue, pool = _worker(redis_client, redis_url, "w")
    queue.enqueue("math.sqrt", 4.0, job_id="leased")
    assert not redis_client.exists(lease_key("leased"))
    job = _take(worker, queue)
    assert job.id == "leased"
    assert 0 < redis_client.ttl(lease_key("leased")) <= pool.settings.worker_lease_seconds
