"""Pure builders for the Responses API: the `response` object and its typed stream events.

Shapes follow openai-python's `openai.types.responses` exactly (every key OpenAI
sends, even when empty), because the SDK, the Agents SDK and Codex CLI parse them
strictly. A stream is a sequence of named events (`event: response.output_text.delta`)
each with a growing `sequence_number`, in OpenAI's order:

    response.created → response.in_progress → response.output_item.added →
    response.content_part.added → response.output_text.delta… →
    [response.output_text.annotation.added…] → response.output_text.done →
    response.content_part.done → response.output_item.done → response.completed

and a failure after the 200 is `response.failed` carrying the response with its
`error`. There is no `[DONE]`. Upstream reasoning or search progress is never output
text: the stream sends it as SSE comments.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from service.errors import ApiError
from service.tokens import count_messages, count_text
from service.turns import new_message_id
from service.web.openai_format import Answer
from service.web.responses_request import ResponsesRequest
from service.web.sse import FrameStream, frame


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """The Responses API usage object."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def annotations(answer: Answer) -> list[dict[str, Any]]:
    """Citations as the Responses API's flat `url_citation` annotations."""
    return [{"type": "url_citation", **item["url_citation"]} for item in answer.annotations()]


def output_text(text: str, notes: list[dict[str, Any]]) -> dict[str, Any]:
    """One `output_text` content part."""
    return {"type": "output_text", "text": text, "annotations": notes, "logprobs": []}


def message_item(item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant `message` output item."""
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def error_object(error: ApiError) -> dict[str, Any]:
    """A response's `error`: OpenAI's codes are few, so the wire code keeps its meaning."""
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    if error.status == 400:
        code = "invalid_prompt"
    return {"code": code, "message": error.message}


class ResponseBuilder:
    """Builds one response's objects; fixes its ids, request echo and creation time once."""

    def __init__(
        self, response_id: str, item_id: str, req: ResponsesRequest, *, model: str, conversation_id: str
    ) -> None:
        self.response_id = response_id
        self.item_id = item_id
        self.req = req
        self.model = model
        self.created_at = int(time.time())
        self.conversation_id = conversation_id

    def response(
        self,
        status: str,
        output: list[dict[str, Any]] | None = None,
        *,
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The `response` object in the given state."""
        req = self.req
        echo = req.echo
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if status == "completed" else None,
            "conversation": {"id": self.conversation_id} if req.conversation else None,
            "error": error,
            "incomplete_details": None,
            "instructions": req.instructions,
            "max_output_tokens": echo.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.model,
            "output": output or [],
            "parallel_tool_calls": echo.get("parallel_tool_calls", True),
            "previous_response_id": req.previous_response_id,
            "reasoning": echo.get("reasoning") or {"effort": None, "summary": None},
            "service_tier": "default",
            "store": req.store,
            "temperature": echo.get("temperature", 1.0),
            "text": echo.get("text") or {"format": {"type": "text"}},
            "tool_choice": echo.get("tool_choice", "auto"),
            "tools": echo.get("tools", []),
            "top_p": echo.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": echo.get("user"),
            "metadata": req.metadata,
        }

    def usage(self, answer: Answer) -> dict[str, Any]:
        """Token usage of the request and this answer."""
        return usage(count_messages(self.req.chat.messages), count_text(answer.content))

    def completed(self, answer: Answer) -> dict[str, Any]:
        """The finished response for a whole answer."""
        part = output_text(answer.content, annotations(answer))
        item = message_item(self.item_id, "completed", [part])
        return self.response("completed", [item], usage=self.usage(answer))

    def failed(self, error: ApiError) -> dict[str, Any]:
        """The response of a turn that failed."""
        return self.response("failed", error=error_object(error))

    def input_items(self) -> list[dict[str, Any]]:
        """The request's input as stored input items (`message` items with text parts)."""
        items = []
        for message in self.req.input_items:
            kind = "output_text" if message["role"] == "assistant" else "input_text"
            items.append(
                {
                    "id": new_message_id(),
                    "type": "message",
                    "role": message["role"],
                    "status": "completed",
                    "content": [{"type": kind, "text": message["content"]}],
                }
            )
        return items


class ResponseStream(FrameStream):
    """The typed-event SSE body of a streamed response (see the module docstring)."""

    def __init__(
        self,
        events: Iterator[dict[str, Any] | None],
        first: dict[str, Any] | None,
        *,
        builder: ResponseBuilder,
        answer: Answer,
        on_close: Any,
        on_text: Callable[[], None] | None = None,
    ) -> None:
        self.builder = builder
        self.answer = answer
        self.final: dict[str, Any] | None = None  # the response object the stream ended with
        self._on_text = on_text  # called once, after the first text went out
        self._seq = -1
        super().__init__(events, first, on_close=on_close)

    def _event(self, kind: str, **fields: Any) -> str:
        self._seq += 1
        return frame({"type": kind, "sequence_number": self._seq, **fields}, event=kind)

    def _generate(self, events: Iterator[dict[str, Any] | None]) -> Generator[str, None, None]:
        b, answer = self.builder, self.answer
        where = {"item_id": b.item_id, "output_index": 0}
        text_opened = False
        try:
            yield self._event("response.created", response=b.response("in_progress"))
            yield self._event("response.in_progress", response=b.response("in_progress"))
            yield self._event(
                "response.output_item.added", output_index=0, item=message_item(b.item_id, "in_progress", [])
            )
            for event in events:
                if event is None:
                    yield frame(comment="keep-alive")
                    continue
                kind = event.get("type")
                if kind in ("delta", "done") and not text_opened:
                    text_opened = True
                    yield self._event(
                        "response.content_part.added", **where, content_index=0, part=output_text("", [])
                    )
                if kind == "delta":
                    answer.add(event)
                    yield self._event(
                        "response.output_text.delta",
                        **where,
                        content_index=0,
                        delta=str(event.get("text", "")),
                        logprobs=[],
                    )
                    if self._on_text is not None:
                        self._on_text()
                        self._on_text = None
                elif kind == "progress":
                    yield frame(comment=str(event.get("text", "")))
                elif kind == "queued":  # waiting for an upstream account slot
                    yield frame(comment=f"queued, position {int(event.get('position') or 0)}")
                elif kind == "done":
                    self.terminal = event
                    if not answer.deltas and event.get("text"):
                        yield self._event(
                            "response.output_text.delta",
                            **where,
                            content_index=0,
                            delta=str(event["text"]),
                            logprobs=[],
                        )
                    answer.add(event)
                    notes = annotations(answer)
                    for index, note in enumerate(notes):
                        yield self._event(
                            "response.output_text.annotation.added",
                            **where,
                            content_index=0,
                            annotation_index=index,
                            annotation=note,
                        )
                    yield self._event(
                        "response.output_text.done",
                        **where,
                        content_index=0,
                        text=answer.content,
                        logprobs=[],
                    )
                    part = output_text(answer.content, notes)
                    yield self._event("response.content_part.done", **where, content_index=0, part=part)
                    yield self._event(
                        "response.output_item.done",
                        output_index=0,
                        item=message_item(b.item_id, "completed", [part]),
                    )
                    self.final = b.completed(answer)
                    yield self._event("response.completed", response=self.final)
                    return
                elif kind == "error":
                    self.terminal = event
                    self.final = b.failed(ApiError.from_event(event.get("error") or {}))
                    yield self._event("response.failed", response=self.final)
                    return
                else:
                    answer.add(event)  # citations, images, suggestions, limits: kept for the end
        except Exception as exc:  # e.g. Redis failed mid-stream: tell the client, then end
            self.final = b.failed(ApiError.from_exception(exc))
            yield self._event("response.failed", response=self.final)
