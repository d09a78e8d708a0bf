"""`service.state.gated` against a real redis-server: checks in order, then the captured commands,
all in one script; a refusal writes nothing after the check that refused."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from service.state import gated

COUNT = "redis.call('INCR', KEYS[1]) return {tonumber(ARGV[1])}"


def _check(name: str, verdict: int) -> gated.Check:
    return gated.Check(name, COUNT, [f"ran:{name}"], [verdict], "r[1] == 1")


def test_every_check_passes_then_rqs_own_enqueue_runs(redis_client: Redis) -> None:
    queue = Queue("gated", connection=redis_client, serializer=JSONSerializer)
    commands = gated.captured(
        redis_client, lambda pipe: queue.enqueue("math.sqrt", 4.0, job_id="j1", pipeline=pipe)
    )
    assert not redis_client.exists("rq:job:j1")  # captured, not sent
    passed, replies = gated.run(redis_client, [_check("a", 1), _check("b", 1)], commands)
    assert passed and replies == [[1], [1]]
    job = Job.fetch("j1", connection=redis_client, serializer=JSONSerializer)  # what RQ wrote itself
    assert job.get_status() == JobStatus.QUEUED and queue.job_ids == ["j1"]
    assert queue.name in [q.name for q in Queue.all(connection=redis_client)]


def test_the_first_refusal_ends_the_script_before_anything_else(redis_client: Redis) -> None:
    commands = [("RPUSH", "gated:list", "x")]
    passed, replies = gated.run(redis_client, [_check("a", 1), _check("b", 0), _check("c", 1)], commands)
    assert not passed and replies == [[1], [0]]  # the last reply is the refusing check's
    assert redis_client.get("ran:a") == b"1" and redis_client.get("ran:b") == b"1"
    assert not redis_client.exists("ran:c") and not redis_client.exists("gated:list")


def test_a_full_redis_refuses_the_script_before_it_writes(redis_client: Redis) -> None:
    used = int(redis_client.info("memory")["used_memory"])
    redis_client.config_set("maxmemory", max(1, used // 2))
    try:
        try:
            gated.run(redis_client, [_check("a", 1)], [("RPUSH", "gated:list", "x")])
        except Exception as exc:
            assert "OOM" in str(exc)
        else:
            raise AssertionError("a full Redis ran the script")
    finally:
        redis_client.config_set("maxmemory", 0)
    assert not redis_client.exists("ran:a") and not redis_client.exists("gated:list")


def test_the_listening_check_sees_a_subscription_redis_has_handled(redis_client: Redis) -> None:
    """`gate.LISTENING` counts the turn's channel's subscribers as the job is queued: the web
    tier reads the replay log only when its own SUBSCRIBE was not yet in place."""
    from service.state.relay import channel_name
    from service.web.pipeline.gate import LISTENING

    channel = channel_name("chatcmpl-listening")
    check = gated.Check("listening", LISTENING, [], [channel], "true")
    assert gated.run(redis_client, [check], []) == (True, [0])
    pubsub = redis_client.pubsub()
    try:
        pubsub.subscribe(channel)
        assert pubsub.get_message(timeout=5) is not None  # the confirmation: Redis has it
        assert gated.run(redis_client, [check], []) == (True, [1])
    finally:
        pubsub.close()
