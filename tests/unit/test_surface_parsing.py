"""The Responses and Anthropic Messages parsers: the neutral turn they produce, and their 400s."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from service.errors import ApiError, InvalidRequest, NotFound, RateLimited, ServiceUnavailable
from service.limits import COPILOT_TEXT_LIMIT
from service.web.messages.parse import parse_messages_request
from service.web.pipeline.request import Bounds
from service.web.responses.parse import parse_responses_request


def responses(body: dict[str, Any]) -> Any:
    return parse_responses_request(json.dumps(body).encode(), {}, upstream="copilot")


def messages(body: dict[str, Any], **kwargs: Any) -> Any:
    return parse_messages_request(json.dumps(body).encode(), {}, upstream="copilot", **kwargs)


def test_stateless_responses_input_is_history_plus_prompt() -> None:
    req = responses(
        {
            "model": "gpt-5.3-codex",
            "instructions": "Be brief.",
            "input": [
                {
                    "type": "message",
                    "role": "developer",
                    "content": [{"type": "input_text", "text": "Rules."}],
                },
                {"role": "user", "content": "hi"},
                {"type": "reasoning", "summary": []},
                {"type": "function_call", "name": "ls", "arguments": "{}", "call_id": "c1"},
                {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
            ],
            "store": False,
            "tools": [{"type": "function", "name": "ls"}],
        }
    )
    chat = req.chat
    assert chat.model == "gpt-5" and req.echo["model"] == "gpt-5.3-codex"
    assert chat.system == "Be brief.\n\nRules."
    assert chat.history == (
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": '<tool_call>{"arguments":{},"id":"c1","name":"ls"}</tool_call>'},
    )  # the call as the worker stores it, so history matching finds the conversation
    assert chat.prompt == '[gateway:tool_results]\n<tool_result id="c1" name="ls">\na.txt\n</tool_result>'
    assert chat.conversation_id is None and req.store is False


def test_continuing_responses_send_every_new_item_upstream() -> None:
    req = responses({"model": "copilot", "input": "next", "previous_response_id": "resp_x"})
    assert req.chat.conversation_id == "resp_x" and req.chat.conversation_param == "previous_response_id"
    assert req.chat.prompt == "next" and req.chat.history == ()
    req = responses({"model": "copilot", "input": "next", "conversation": {"id": "conv_y"}})
    assert req.chat.conversation_id == "conv_y" and req.chat.conversation_param == "conversation"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "copilot"}, "input"),
        ({"model": "copilot", "input": 3}, "input"),
        (
            {
                "model": "copilot",
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_text", "text": "x"}, {"type": "input_image"}],
                    }
                ],
            },
            "input[0].content[1].image_url",
        ),
        ({"model": "copilot", "input": [{"role": "assistant", "content": "x"}]}, "input"),
        ({"model": "copilot", "input": "x", "background": True, "store": False}, "background"),
        ({"model": "copilot", "input": "x", "background": "yes"}, "background"),
        ({"model": "copilot", "input": "x", "metadata": {"k": 1}}, "metadata.k"),
        ({"model": "copilot", "input": "x", "max_output_tokens": 2}, "max_output_tokens"),
    ],
)
def test_responses_400s_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        responses(body)
    assert caught.value.param == param


def test_messages_become_the_neutral_turn() -> None:
    req = messages(
        {
            "model": "claude-opus-4-8",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "system", "content": [{"type": "text", "text": "Environment."}]},
                {
                    "role": "assistant",
                    "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "ok"}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "done"}],
                },
                {"role": "user", "content": "and now?"},
            ],
        }
    )
    chat = req.chat
    assert chat.model == "copilot" and req.model == "claude-opus-4-8"
    assert chat.system == "You are Claude Code.\n\nEnvironment."
    assert chat.history == ({"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "ok"})
    # a tool result and the user message after it are one turn, the result naming its call
    assert (
        chat.prompt == '[gateway:tool_results]\n<tool_result id="t1" name="">\ndone\n</tool_result>\nand now?'
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "copilot", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "copilot", "max_tokens": 5, "messages": []}, "messages"),
        (
            {
                "model": "copilot",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
            },
            "messages",
        ),
        (
            {
                "model": "copilot",
                "max_tokens": 5,
                "stop_sequences": "\n",
                "messages": [{"role": "user", "content": "x"}],
            },
            "stop_sequences",
        ),
        (
            {
                "model": "copilot",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image"}]}],
            },
            "messages.0.content.1.source",
        ),
    ],
)
def test_messages_400s_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        messages(body)
    assert caught.value.message.startswith(f"{field}:")


def test_count_tokens_needs_no_max_tokens_and_unknown_models_are_404() -> None:
    assert messages({"model": "copilot", "messages": [{"role": "user", "content": "x"}]}, count_only=True)
    with pytest.raises(NotFound):
        messages({"model": "dall-e-3", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]})


def test_anthropic_error_shape_per_status() -> None:
    assert RateLimited("slow down", retry_after=3).anthropic() == (
        429,
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
    )
    assert ServiceUnavailable("busy").anthropic()[0] == 529
    assert ServiceUnavailable("busy").anthropic()[1]["error"]["type"] == "overloaded_error"
    assert ApiError("boom", status=502).anthropic()[1]["error"]["type"] == "api_error"


# -- the same size bounds as Chat Completions, through the shared checks --------------------


def test_responses_apply_the_upstream_limit_and_the_request_bounds() -> None:
    with pytest.raises(InvalidRequest) as long_prompt:
        responses({"model": "copilot", "input": "x" * (COPILOT_TEXT_LIMIT + 1)})
    assert (long_prompt.value.param, long_prompt.value.code) == ("input", "context_length_exceeded")
    items = [{"role": "user", "content": "hi"}] * 3
    tight = Bounds(max_messages=2, max_input_chars=10)
    raw = json.dumps({"model": "copilot", "input": items}).encode()
    with pytest.raises(InvalidRequest) as too_many:
        parse_responses_request(raw, {}, upstream="copilot", bounds=tight)
    assert (too_many.value.param, too_many.value.code) == ("input", "array_above_max_length")
    raw = json.dumps({"model": "copilot", "instructions": "x" * 11, "input": "hi"}).encode()
    with pytest.raises(InvalidRequest) as too_long:
        parse_responses_request(raw, {}, upstream="copilot", bounds=tight)
    assert too_long.value.code == "context_length_exceeded"


def test_messages_apply_the_upstream_limit_and_the_request_bounds() -> None:
    base = {"model": "claude-sonnet-4-5", "max_tokens": 10}
    with pytest.raises(InvalidRequest) as long_prompt:
        messages({**base, "messages": [{"role": "user", "content": "x" * (COPILOT_TEXT_LIMIT + 1)}]})
    assert long_prompt.value.code == "context_length_exceeded"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}] * 2
    with pytest.raises(InvalidRequest) as too_many:
        messages({**base, "messages": [*turns, {"role": "user", "content": "hi"}]}, bounds=Bounds(4, 100))
    assert too_many.value.code == "array_above_max_length"
    with pytest.raises(InvalidRequest) as too_long:
        messages(
            {**base, "system": "x" * 200, "messages": [{"role": "user", "content": "hi"}]},
            bounds=Bounds(4, 100),
        )
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(InvalidRequest):  # nesting is checked by the shared parse_body
        deep: Any = "x"
        for _ in range(70):
            deep = [deep]
        messages({**base, "messages": [{"role": "user", "content": "hi"}], "metadata": {"d": deep}})


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


def test_responses_input_image_goes_upstream_and_earlier_ones_are_marked() -> None:
    image = {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}
    req = responses(
        {
            "model": "copilot",
            "input": [
                {"role": "user", "content": [image, {"type": "input_text", "text": "first"}]},
                {"role": "assistant", "content": "seen"},
                {"role": "user", "content": [{"type": "input_text", "text": "and this?"}, image]},
            ],
        }
    )
    assert req.chat.prompt == "and this?"
    assert [i.mime for i in req.chat.images] == ["image/png"]
    assert req.chat.history[0]["content"] == "[image]\nfirst"


def test_messages_image_block_goes_upstream_and_earlier_ones_are_marked() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    req = messages(
        {
            "model": "copilot",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [image, {"type": "text", "text": "first"}]},
                {"role": "assistant", "content": "seen"},
                {"role": "user", "content": [{"type": "text", "text": "and this?"}, image]},
            ],
        }
    )
    assert req.chat.prompt == "and this?"
    assert [i.mime for i in req.chat.images] == ["image/png"]
    assert req.chat.history[0]["content"] == "[image]\nfirst"
