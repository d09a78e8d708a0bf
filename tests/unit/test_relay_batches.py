"""The relay's batched read path against a real redis-server: batches, wakes, reconnects, ticks.

The hub's listener reads every reply already received in one go (`relay_reader`) and
wakes each reader once per batch; readers under gevent wait on the listener's ticks
instead of a timer each. These check that none of that loses, reorders or delays an
event: a burst published in one pipeline, a connection killed under the listener, a
reader waiting on ticks.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import Redis

from service.state.relay import channel_name, decode_message, log_key
from service.state.relay_hub import RelayHub
from service.state.relay_publisher import Publisher
from service.state.relay_reader import more_replies
from service.state.relay_subscription import Subscription


@pytest.fixture()
def hub(redis_client: Redis):
    """A hub whose listener is stopped after the test."""
    hub = RelayHub(redis_client)
    yield hub
    hub.close()


def publish(redis: Redis, completion_id: str, events: list[dict[str, Any]], *, start: int = 0) -> None:
    """Log and publish `events` (seq from `start`) in one pipeline, as the worker's publisher does."""
    with redis.pipeline(transaction=False) as pipe:
        for seq, event in enumerate(events, start):
            message = json.dumps(dict(event, seq=seq))
            pipe.rpush(log_key(completion_id), message)
            pipe.publish(channel_name(completion_id), message)
        pipe.execute()


def read_all(sub: Subscription, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for _ in range(count):
        event = sub.next(timeout)
        assert event is not None, f"stalled after {len(events)} events"
        events.append(event)
    return events


def test_a_burst_in_one_pipeline_reaches_every_reader_whole_and_in_order(
    redis_client: Redis, hub: RelayHub
) -> None:
    subs = {cid: hub.subscribe(cid) for cid in ("chatcmpl-b1", "chatcmpl-b2")}
    twin = hub.subscribe("chatcmpl-b1")  # a second reader of one channel gets the batch too
    deltas = [{"type": "delta", "text": f"t{i} "} for i in range(300)]
    with redis_client.pipeline(transaction=False) as pipe:  # interleaved: one batch, two channels
        for seq, event in enumerate(deltas):
            for cid in subs:
                message = json.dumps(dict(event, seq=seq))
                pipe.rpush(log_key(cid), message)
                pipe.publish(channel_name(cid), message)
        pipe.execute()
    for sub in [*subs.values(), twin]:
        events = read_all(sub, len(deltas))
        assert [e["seq"] for e in events] == list(range(len(deltas)))
        assert "".join(e["text"] for e in events) == "".join(d["text"] for d in deltas)
        sub.close()


def test_ready_says_an_event_is_there_without_a_wait_and_skips_duplicates(
    redis_client: Redis, hub: RelayHub
) -> None:
    sub = hub.subscribe("chatcmpl-ready")
    assert not sub.ready()
    publish(redis_client, "chatcmpl-ready", [{"type": "delta", "text": "a"}, {"type": "delta", "text": "b"}])
    assert sub.next(2.0) == {"type": "delta", "text": "a", "seq": 0}
    deadline = time.monotonic() + 2.0
    while not sub.ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sub.ready()
    sub.deliver({"type": "delta", "text": "a", "seq": 0})  # a late duplicate after the next one
    assert sub.next(0.01) == {"type": "delta", "text": "b", "seq": 1}
    sub.deliver({"type": "delta", "text": "b", "seq": 1})
    assert not sub.ready()  # the duplicate is dropped: nothing new, so a join would not wait on it
    sub.close()


def test_a_killed_pubsub_connection_is_reconnected_and_the_gap_filled_from_the_log(
    redis_client: Redis, hub: RelayHub
) -> None:
    sub = hub.subscribe("chatcmpl-kill")
    publish(redis_client, "chatcmpl-kill", [{"type": "delta", "text": "one "}])
    assert read_all(sub, 1)[0]["text"] == "one "
    redis_client.client_kill_filter(_type="pubsub")
    # Published while the listener is reconnecting: live delivery may miss these, the log has them.
    publish(redis_client, "chatcmpl-kill", [{"type": "delta", "text": "two "}], start=1)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:  # resubscribed: a fresh message arrives live again
        if redis_client.pubsub_numsub(channel_name("chatcmpl-kill"))[0][1]:
            break
        time.sleep(0.02)
    publish(
        redis_client,
        "chatcmpl-kill",
        [{"type": "done", "text": "one two three", "finish_reason": "stop"}],
        start=2,
    )
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != "done":
        event = sub.next(3.0)
        if event is None:
            sub.catch_up()  # what `watch` does after a quiet slice
            continue
        events.append(event)
    assert [e["seq"] for e in events] == [1, 2]
    assert events[0]["text"] == "two "
    sub.close()


def test_more_replies_takes_only_what_has_arrived(redis_client: Redis) -> None:
    pubsub = redis_client.pubsub()
    pubsub.subscribe("relay:raw")
    assert pubsub.get_message(timeout=2.0)["type"] == "subscribe"
    assert more_replies(pubsub) == []
    for n in range(5):
        redis_client.publish("relay:raw", f"m{n}")
    deadline = time.monotonic() + 2.0
    got: list[Any] = []
    while len(got) < 5 and time.monotonic() < deadline:
        got += more_replies(pubsub)
    assert [reply[2] for reply in got] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert all(reply[0] in (b"message", "message") for reply in got)
    pubsub.close()


class TickingHub:
    """A hub stand-in whose listener ticks: what `Subscription` sees of a gevent hub."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.ticking = True
        self.subs: list[Subscription] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for sub in self.subs:
                sub.wake()

    def unsubscribe(self, sub: Subscription) -> None:
        pass


def test_a_wait_on_ticks_ends_at_its_deadline_and_returns_an_event_at_once(redis_client: Redis) -> None:
    hub: Any = TickingHub(redis_client)
    sub = Subscription(hub, "chatcmpl-tick")
    hub.subs.append(sub)
    ticker = threading.Thread(target=hub.run, daemon=True)
    ticker.start()
    try:
        started = time.monotonic()
        assert sub.next(timeout=0.6) is None  # woken by ticks, waits on to its deadline
        waited = time.monotonic() - started
        assert 0.6 <= waited < 1.0
        threading.Timer(0.1, lambda: sub.deliver({"type": "delta", "text": "x", "seq": 0})).start()
        started = time.monotonic()
        assert sub.next(timeout=5.0) == {"type": "delta", "text": "x", "seq": 0}
        assert time.monotonic() - started < 1.0
        hub.ticking = False  # the listener stops ticking (an outage): the wait takes a timer
        threading.Timer(0.05, sub.wake).start()
        started = time.monotonic()
        assert sub.next(timeout=0.6) is None
        assert 0.55 <= time.monotonic() - started < 1.0
    finally:
        hub.stop.set()
        ticker.join()


@settings(max_examples=300, deadline=None)
@given(text=st.text(), seq=st.integers(min_value=0, max_value=10**12))
def test_a_delta_message_decodes_as_json_loads_decodes_it(text: str, seq: int) -> None:
    publisher = Publisher(Redis(), "chatcmpl-codec")  # `_encode` is what goes on the wire
    publisher._seq = seq
    raw = publisher._encode({"type": "delta", "text": text})
    assert decode_message(raw.encode("utf-8", "surrogatepass")) == json.loads(raw)
    assert decode_message(raw) == json.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        '{"type":"done","text":"x","finish_reason":"stop","seq":3}',
        '{"type":"delta","text":"a","seq":1,"extra":true}',
        '{"type":"delta","text":"a","seq":"1"}',
        '{"type": "delta", "text": "spaced", "seq": 2}',
    ],
)
def test_any_other_message_takes_the_general_decoder(raw: str) -> None:
    assert decode_message(raw.encode()) == json.loads(raw)
