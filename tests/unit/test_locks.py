"""Conversation locks against a real redis-server: fencing a save, and waiters woken by a release."""

from __future__ import annotations

import concurrent.futures
import json

import pytest
from redis import Redis
from redis.exceptions import WatchError

from service.events import Done, Failed
from service.state import locks
from service.state.conversations import conversation_key
from service.state.relay import read_log
from service.state.relay_hub import RelayHub
from service.state.relay_publisher import Publisher


def save(redis: Redis, conversation_id: str, token: str, value: str, *, between=None) -> None:
    """A fenced write of the conversation, optionally with something happening before EXEC."""
    with redis.pipeline(transaction=True) as pipe:
        locks.fence(pipe, conversation_id, token, exists=True)
        pipe.set(conversation_key(conversation_id), value)
        if between is not None:
            between()
        pipe.execute()


def test_a_fenced_save_happens_only_while_the_token_holds_the_lock(redis_client: Redis) -> None:
    redis_client.set(conversation_key("c"), "v0")
    token = locks.acquire(redis_client, "c", ttl=30, wait=0)
    assert token is not None
    save(redis_client, "c", token, "v1")
    assert redis_client.get(conversation_key("c")) == b"v1"

    redis_client.set(locks.lock_key("c"), "another-holder")  # the lock lapsed and was taken
    with pytest.raises(locks.LockLost):
        save(redis_client, "c", token, "v2")
    assert redis_client.get(conversation_key("c")) == b"v1"


def test_a_lock_taken_between_the_check_and_exec_aborts_the_save(redis_client: Redis) -> None:
    redis_client.set(conversation_key("c"), "v0")
    token = locks.acquire(redis_client, "c", ttl=30, wait=0)
    assert token is not None
    with pytest.raises(WatchError):
        save(redis_client, "c", token, "v1", between=lambda: redis_client.set(locks.lock_key("c"), "thief"))
    assert redis_client.get(conversation_key("c")) == b"v0"


def test_a_deleted_conversation_is_not_saved_again(redis_client: Redis) -> None:
    token = locks.acquire(redis_client, "c", ttl=30, wait=0)
    assert token is not None
    with pytest.raises(locks.ConversationGone):
        save(redis_client, "c", token, "v1")
    assert not redis_client.exists(conversation_key("c"))


def test_a_waiter_is_woken_by_the_release_not_by_polling(redis_client: Redis) -> None:
    hub = RelayHub(redis_client)
    try:
        holder = locks.acquire(redis_client, "c", ttl=60, wait=0)
        assert holder is not None
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # A fallback poll longer than the wait: only the release message can let it in.
            waiter = pool.submit(
                locks.acquire, redis_client, "c", ttl=60, wait=20, waker=hub.notifications, poll=60
            )
            for _ in range(200):  # until the hub has subscribed to the release channel
                if redis_client.pubsub_numsub(locks.wake_channel("c"))[0][1]:
                    break
                concurrent.futures.wait([waiter], timeout=0.05)
            assert locks.release(redis_client, "c", holder)
            token = waiter.result(timeout=30)
        assert token is not None and token != holder
        assert redis_client.get(locks.lock_key("c")) == token.encode()
    finally:
        hub.close()


def test_a_refused_terminal_event_leaves_no_gap_in_the_sequence(redis_client: Redis) -> None:
    publisher = Publisher(redis_client, "chatcmpl-x", coalesce_ms=10_000)  # " answer" waits
    publisher.delta("partial")

    def refuse(pipe) -> None:
        raise locks.LockLost()

    publisher.delta(" answer")
    with pytest.raises(locks.LockLost):
        publisher.finish(Done("partial answer"), extra=refuse)
    publisher.finish(Failed({"code": "conversation_lock_lost"}))
    events = read_log(redis_client, "chatcmpl-x")
    assert [event["seq"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events][-1] == "error"
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "partial answer"
    assert json.dumps(events)  # plain JSON all the way
