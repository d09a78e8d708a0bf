"""A text delta's frame from `FrameTemplate` is byte for byte the frame `frame()` writes, on every surface."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from service.turns import TurnRequest
from service.web.chat.render import ChatRenderer
from service.web.completions.render import LegacyRenderer
from service.web.messages.render import MessageBuilder, MessageRenderer
from service.web.pipeline.answer import Answer
from service.web.pipeline.sse import FrameTemplate, frame
from service.web.responses.render import ResponseRenderer

# Every code point, lone surrogates and control characters included: json.dumps passes the
# former through and escapes the latter, and the template must do exactly the same.
TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=40)
TURN = TurnRequest(
    completion_id="chatcmpl-x", conversation_id="c", owner="o", model='m "quoted"\n', prompt="p", created=7
)
MESSAGES = [{"role": "user", "content": "p"}]


@given(TEXT, st.integers(min_value=-(2**70), max_value=2**70))
def test_template_writes_what_frame_writes(text: str, number: int) -> None:
    def build(value: Any, seq: Any) -> dict[str, Any]:
        return {"type": "t", "seq": seq, "nested": [{"value": value, "none": None}], "after": "é\u2028"}

    template = FrameTemplate(build, 2, event="t", id_slot=1)
    assert template(text, number) == frame(build(text, number), event="t", id=number)


def test_values_json_encodes_differently_take_frames_own_path() -> None:
    template = FrameTemplate(lambda value: {"value": value})
    for value in (True, None, 1.5, ["a"], {"k": "v"}):
        assert template(value) == frame({"value": value})


def test_a_slot_used_twice_is_not_templated_but_still_right() -> None:
    template = FrameTemplate(lambda value: {"a": value, "b": value})
    assert template("x") == frame({"a": "x", "b": "x"})


@given(TEXT, st.booleans())
def test_chat_delta_frame(text: str, include_usage: bool) -> None:
    renderer = ChatRenderer(TURN, MESSAGES, include_usage=include_usage)
    assert list(renderer.text(text)) == [frame(renderer.chunks.content(text))]


@given(TEXT)
def test_legacy_completion_delta_frame(text: str) -> None:
    renderer = LegacyRenderer(TURN, MESSAGES, echo="", include_usage=True)
    expected = frame(
        {
            "id": "chatcmpl-x",
            "object": "text_completion",
            "created": 7,
            "model": TURN.model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": None}],
        }
    )
    assert list(renderer.text(text)) == [expected]


@given(TEXT)
def test_messages_delta_frame(text: str) -> None:
    renderer = MessageRenderer(MessageBuilder("msg_x", model="m", messages=()), Answer(MESSAGES))
    renderer.text_block = "open"  # the block is opened by the first text; only the delta is under test
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    assert list(renderer.text(text)) == [frame(delta, event="content_block_delta")]


@given(TEXT, st.integers(min_value=0, max_value=10**6))
def test_responses_delta_frame(text: str, seq: int) -> None:
    builder = cast(Any, SimpleNamespace(item_id="msg_x"))
    renderer = ResponseRenderer(builder, Answer(MESSAGES), keep=lambda *a, **k: None, storing=False)
    kind = "response.output_text.delta"
    data = {
        "type": kind,
        "sequence_number": seq,
        "item_id": "msg_x",
        "output_index": 0,
        "content_index": 0,
        "delta": text,
        "logprobs": [],
    }
    assert renderer._text_delta(seq, text) == frame(data, event=kind, id=seq)
