"""Pure builders for Anthropic Messages: the `message` object and its stream's event sequence.

Shapes follow the anthropic SDK's `anthropic.types` (Message, TextBlock, Usage and the
Raw*Event stream types), because anthropic-python and Claude Code parse them strictly.
A stream is:

    message_start → ping → content_block_start (text) → content_block_delta (text_delta)…
      → content_block_stop → [tool_use blocks] → message_delta (stop_reason, usage) → message_stop

(the text block opens with the first text; an answer of tool calls alone has none, as in the
non-streamed message)

with `ping` events as keep-alives and an `error` event (Anthropic's error object) for a
failure after the 200. Copilot's citations become `web_search_result_location`
citations on the text block; upstream reasoning or search progress travels only as
SSE comments, never as text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from service.errors import ApiError
from service.events import Done, ToolCall
from service.tokens import count_messages
from service.web.pipeline.answer import Answer
from service.web.pipeline.sse import FrameTemplate, frame
from service.web.pipeline.stream import Renderer

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
    "tool_calls": "tool_use",
}


def stop_reason(finish_reason: str) -> str:
    """Anthropic's stop reason for the relay's (OpenAI-worded) finish reason."""
    return STOP_REASONS.get(finish_reason, "end_turn")


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Anthropic's usage object."""
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def citations(answer: Answer) -> list[dict[str, Any]] | None:
    """The answer's citations as `web_search_result_location` entries, or None without any."""
    found = []
    for item in answer.annotations():
        note = item["url_citation"]
        found.append(
            {
                "type": "web_search_result_location",
                "url": note["url"],
                "title": note["title"] or None,
                "cited_text": answer.content[note["start_index"] : note["end_index"]],
                "encrypted_index": "",
            }
        )
    return found or None


def tool_use(call: dict[str, Any]) -> dict[str, Any]:
    """A relayed tool call as a `tool_use` content block."""
    return {
        "type": "tool_use",
        "id": call["id"],
        "name": call["name"],
        "input": json.loads(call["arguments"]),
    }


def stop_fields(answer: Answer, done: dict[str, Any] | None) -> dict[str, Any]:
    """`stop_reason` and `stop_sequence`: a stop sequence the gateway cut at is `stop_sequence`."""
    matched = (done or {}).get("stop_sequence")
    if matched:
        return {"stop_reason": "stop_sequence", "stop_sequence": matched}
    return {"stop_reason": stop_reason(answer.finish_reason), "stop_sequence": None}


def _text(text: str) -> dict[str, str]:
    return {"type": "text_delta", "text": text}


def error_event(error: ApiError) -> dict[str, Any]:
    """The `error` stream event for a failure after the stream began."""
    return error.anthropic()[1]


class MessageBuilder:
    """Builds one answer's objects; fixes its id, model and input token count once."""

    def __init__(self, message_id: str, *, model: str, messages: tuple[dict[str, str], ...]) -> None:
        self.message_id = message_id
        self.model = model
        self.messages = messages
        self._input_tokens: int | None = None

    @property
    def input_tokens(self) -> int:
        """Tokens of the request's system prompt and messages (counted once, when first needed)."""
        if self._input_tokens is None:
            self._input_tokens = count_messages(self.messages)
        return self._input_tokens

    def message(
        self,
        content: list[dict[str, Any]],
        reason: str | None,
        output_tokens: int,
        stop_sequence: str | None = None,
    ) -> dict[str, Any]:
        """The `message` object."""
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": stop_sequence,
            "usage": usage(self.input_tokens, output_tokens),
        }

    def complete(self, answer: Answer, done: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole non-streamed message for an answer (text, then its tool calls)."""
        block: dict[str, Any] = {"type": "text", "text": answer.content}
        notes = citations(answer)
        if notes:
            block["citations"] = notes
        blocks = [block] if answer.content or not answer.tool_calls else []
        blocks += [tool_use(call) for call in answer.tool_calls]
        stop = stop_fields(answer, done)
        return self.message(
            blocks, stop["stop_reason"], answer.usage()["completion_tokens"], stop["stop_sequence"]
        )


class MessageRenderer(Renderer):
    """Anthropic Messages through the pipeline: a `message`, or its event stream (module docstring)."""

    def __init__(self, builder: MessageBuilder, answer: Answer) -> None:
        super().__init__(answer)
        self.builder = builder
        self.text_block = "none"  # none | open | closed: index 0 opens with the first text
        self._text_delta = FrameTemplate(  # every text delta's frame, as `_event` writes it
            lambda text: {"type": "content_block_delta", "index": 0, "delta": _text(text)},
            event="content_block_delta",
        )

    @staticmethod
    def _event(kind: str, **fields: Any) -> str:
        return frame({"type": kind, **fields}, event=kind)

    def start(self) -> Iterator[str]:
        yield self._event("message_start", message=self.builder.message([], None, 1))
        yield self._event("ping")

    def keep_alive(self) -> Iterator[str]:
        yield self._event("ping")

    def _open_text(self) -> Iterator[str]:
        if self.text_block == "none":
            self.text_block = "open"
            yield self._event("content_block_start", index=0, content_block={"type": "text", "text": ""})

    def text(self, text: str) -> Iterator[str]:
        yield from self._open_text()
        yield self._text_delta(text)

    def tool_call(self, event: ToolCall) -> Iterator[str]:
        """One `tool_use` block: start (empty input), `input_json_delta` pieces, stop.

        The text block, if any text came, is closed before the first call, as Anthropic
        closes each block before opening the next; calls follow it (or start at index 0).
        """
        call = event.call()
        if self.text_block == "open":
            self.text_block = "closed"
            yield self._event("content_block_stop", index=0)
        index = len(self.answer.tool_calls) - (0 if self.text_block == "closed" else 1)
        block = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
        yield self._event("content_block_start", index=index, content_block=block)
        arguments = str(call["arguments"])
        half = len(arguments) // 2
        for piece in [arguments[:half], arguments[half:]] if half else [arguments]:
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield self._event("content_block_delta", index=index, delta=delta)
        yield self._event("content_block_stop", index=index)

    def done(self, event: Done) -> Iterator[str]:
        answer = self.answer
        if not answer.deltas and event.text and self.text_block != "closed":
            yield from self.text(event.text)
        if not answer.tool_calls:
            yield from self._open_text()  # an empty answer still has its text block
        if self.text_block == "open":
            for note in citations(answer) or []:
                cited = {"type": "citations_delta", "citation": note}
                yield self._event("content_block_delta", index=0, delta=cited)
            self.text_block = "closed"
            yield self._event("content_block_stop", index=0)
        yield self._event(
            "message_delta",
            delta=stop_fields(answer, event.to_json()),
            usage={"output_tokens": answer.usage()["completion_tokens"]},
        )
        yield self._event("message_stop")

    def failed(self, error: ApiError) -> Iterator[str]:
        yield frame(error_event(error), event="error")

    def complete(self, done: Done) -> dict[str, Any]:
        return self.builder.complete(self.answer, done.to_json())
