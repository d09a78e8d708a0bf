"""Joined writes: a stream that is behind sends the same bytes in fewer writes.

`RenderStream` joins the frames of events already waiting (`ready()`) into one item, so
gunicorn writes them in one send. Whatever the moment `ready()` says yes, the bytes on
the wire must be exactly those of one write per frame, for every surface's renderer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.events import Delta, Done, Progress, RelayEvent, ToolCall
from service.turns import TurnRequest
from service.web.chat.render import ChatRenderer
from service.web.messages.render import MessageBuilder, MessageRenderer
from service.web.pipeline.answer import Answer
from service.web.pipeline.stream import EncodedStream, Renderer, RenderStream

TURN = TurnRequest(
    completion_id="chatcmpl-j", conversation_id="c", owner="o", model="m", prompt="p", created=1
)
MESSAGES = ({"role": "user", "content": "p"},)


def chat() -> Renderer:
    return ChatRenderer(TURN, [dict(m) for m in MESSAGES], include_usage=True, prompt_tokens=3)


def anthropic() -> Renderer:
    return MessageRenderer(MessageBuilder("msg_j", model="m", messages=MESSAGES), Answer(MESSAGES))


def writes(
    make: Callable[[], Renderer],
    events: list[RelayEvent],
    ready: Callable[[], bool],
    body: type[RenderStream] = RenderStream,
    on_close: Callable[[object], None] = lambda _: None,
) -> list[Any]:
    position = {"now": -1}

    def numbered() -> Iterator[RelayEvent]:
        for seq, event in enumerate(events):
            position["now"] = seq
            yield event

    stream = body(make(), numbered(), None, on_close=on_close, position=lambda: position["now"], ready=ready)
    return list(stream)


texts = st.text(min_size=1, max_size=12)
bodies = st.lists(
    st.one_of(
        texts.map(Delta),
        texts.map(lambda t: Progress("search", t)),
        st.just(ToolCall("call_1", "f", '{"a":1}')),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(body=bodies, pattern=st.lists(st.booleans(), min_size=1, max_size=20))
def test_joined_writes_carry_exactly_the_bytes_of_one_write_per_frame(
    body: list[RelayEvent], pattern: list[bool]
) -> None:
    events: list[RelayEvent] = [*body, Done("".join(e.text for e in body if isinstance(e, Delta)), "stop")]
    for make in (chat, anthropic):
        alone = writes(make, events, lambda: False)
        joined = writes(make, events, itertools.cycle(pattern).__next__)
        assert "".join(joined) == "".join(alone)
        assert len(joined) <= len(alone)
        assert joined[0] == alone[0]  # the first frame always goes out alone


def test_a_stream_that_is_behind_writes_its_waiting_events_at_once() -> None:
    events: list[RelayEvent] = [Delta("a"), Delta("b"), Delta("c"), Done("abc", "stop")]
    alone = writes(chat, events, lambda: False)
    joined = writes(chat, events, lambda: True)
    assert len(joined) == 2  # the first frame, then everything that was waiting
    assert "".join(joined) == "".join(alone)


def test_the_encoded_stream_is_the_same_text_as_utf8_bytes_and_closes_once() -> None:
    closed: list[object] = []
    events: list[RelayEvent] = [Delta("héllo ✓ 😀"), Done("héllo ✓ 😀", "stop")]
    text = "".join(writes(chat, events, lambda: True))
    items = writes(chat, events, lambda: True, EncodedStream, closed.append)
    assert all(isinstance(item, bytes) for item in items)
    assert b"".join(items) == text.encode("utf-8")
    assert len(closed) == 1  # exhausted: closed once, whatever the server does after
