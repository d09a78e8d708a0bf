"""Resumable streams' parts: SSE ids and skipping in the render loop, grace tokens, folding a log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from redis import Redis

from service.errors import InvalidRequest
from service.events import Delta, Done, Failed, RelayEvent, ToolCall
from service.state import streams
from service.turns import TurnRequest
from service.web.chat.render import ChatRenderer
from service.web.pipeline import resume
from service.web.pipeline.stream import RenderStream

TURN = TurnRequest(
    completion_id="chatcmpl-x", conversation_id="c", owner="o", model="m", prompt="p", created=1
)
EVENTS: list[RelayEvent] = [
    Delta("Hello"),
    Delta(" world"),
    ToolCall("call_1", "f", '{"a":1}'),
    Done("Hello world", "tool_calls"),
]


def run_stream(after: int | None = None, events: list[RelayEvent] = EVENTS) -> list[str]:
    """The writes a chat stream of `events` (relay seqs 0…) makes, resuming after `after`."""
    renderer = ChatRenderer(TURN, [{"role": "user", "content": "p"}], include_usage=True, prompt_tokens=3)
    renderer.after = after
    seq = iter(range(len(events)))
    position = {"now": -1}

    def numbered() -> Iterator[RelayEvent]:
        for event in events:
            position["now"] = next(seq)
            yield event

    stream = RenderStream(
        renderer, numbered(), None, on_close=lambda _: None, position=lambda: position["now"]
    )
    return list(stream)


def ids(writes: list[str]) -> list[str]:
    return [line[4:] for write in writes for line in write.split("\n") if line.startswith("id: ")]


def test_every_data_frame_carries_the_relay_seq_of_its_event() -> None:
    writes = run_stream()
    # role chunk (-1), two text chunks, a tool call (3 chunks), then the ending (finish, usage, DONE).
    assert ids(writes) == ["-1", "0", "1", "2", "2", "2", "3", "3", "3"]
    assert all(write.startswith("id: ") for write in writes) and writes[-1].endswith("data: [DONE]\n\n")


@pytest.mark.parametrize("after", [-1, 0, 1, 2])
def test_a_resumed_stream_is_the_rest_of_the_uncut_one(after: int) -> None:
    whole = run_stream()
    rest = run_stream(after)
    assert rest == [write for write in whole if int(ids([write])[0]) > after]
    assert rest and int(ids(rest)[0]) == after + 1


def test_a_resume_after_the_end_sends_nothing() -> None:
    assert run_stream(3) == []


def test_the_web_tiers_own_failure_has_no_resume_point() -> None:
    writes = run_stream(
        events=[Delta("a"), Failed({"message": "lost", "code": "worker_lost"}, synthetic=True)]
    )
    assert writes[-2:] == [writes[-2], "data: [DONE]\n\n"] and '"worker_lost"' in writes[-2]
    assert "id:" not in "".join(writes[-2:])


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("7", 7), (" -1 ", -1)])
def test_last_event_id(raw: str | None, expected: int | None) -> None:
    headers = {} if raw is None else {"Last-Event-ID": raw}
    with Flask(__name__).test_request_context(headers=headers):
        assert resume.last_event_id() == expected


@pytest.mark.parametrize("raw", ["abc", "-2", "1.5"])
def test_a_bad_last_event_id_is_a_400_naming_it(raw: str) -> None:
    context = Flask(__name__).test_request_context(headers={"Last-Event-ID": raw})
    with context, pytest.raises(InvalidRequest) as caught:
        resume.last_event_id()
    assert caught.value.param == "Last-Event-ID"


def test_a_later_disconnect_or_a_resume_overrules_a_grace(redis_client: Redis) -> None:
    first, _ = streams.open_grace(redis_client, "c1", seconds=5)
    assert streams.grace_holds(redis_client, "c1", first)
    second, _ = streams.open_grace(redis_client, "c1", seconds=5)  # resumed, then dropped again
    assert not streams.grace_holds(redis_client, "c1", first)
    assert streams.grace_holds(redis_client, "c1", second)
    streams.end_grace(redis_client, "c1")  # a client is back
    assert not streams.grace_holds(redis_client, "c1", second)


def test_a_turn_waiting_for_the_conversation_ends_the_grace(redis_client: Redis) -> None:
    _, moved_on = streams.open_grace(redis_client, "c3", seconds=5, conversation_id="conv")
    assert not moved_on
    pubsub = redis_client.pubsub()
    pubsub.subscribe(streams.wake_channel("c3"))
    streams.preempt(redis_client, "conv", ttl=30)  # a new turn waits for the conversation
    messages = [pubsub.get_message(timeout=1) for _ in range(2)]
    assert [m["data"] for m in messages if m and m["type"] == "message"] == [b"preempted"]
    pubsub.close()
    # A drop noticed after the new turn began waiting ends its grace at once.
    _, moved_on = streams.open_grace(redis_client, "c4", seconds=5, conversation_id="conv")
    assert moved_on
    streams.waited(redis_client, "conv")
    _, moved_on = streams.open_grace(redis_client, "c5", seconds=5, conversation_id="conv")
    assert not moved_on


def test_a_record_is_its_owners_alone(redis_client: Redis) -> None:
    record = streams.StreamRecord("c2", "owner-a", "chat", "m", 1, store=True)
    streams.save(redis_client, record, ttl=60)
    assert streams.load(redis_client, "c2", "owner-b") is None
    streams.note_prompt_tokens(redis_client, "c2", 42)
    assert streams.load(redis_client, "c2", "owner-a") == record.__class__(
        **{**record.to_json(), "prompt_tokens": 42}
    )
    assert 0 < int(redis_client.ttl(streams.record_key("c2"))) <= 60


def test_folding_a_finished_log_keeps_the_completion() -> None:
    kept: list[dict[str, Any]] = []
    renderer = ChatRenderer(
        TURN, [], include_usage=False, prompt_tokens=5, keep=kept.append, metadata={"k": "v"}
    )
    log = [{**event.to_json(), "seq": i} for i, event in enumerate(EVENTS)]
    assert isinstance(resume.fold(renderer, log), Done)
    assert kept[0]["metadata"] == {"k": "v"} and kept[0]["usage"]["prompt_tokens"] == 5
    assert kept[0]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"
