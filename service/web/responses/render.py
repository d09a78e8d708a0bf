"""Pure builders for the Responses API: the `response` object and its typed stream events.

Shapes follow openai-python's `openai.types.responses` exactly (every key OpenAI
sends, even when empty), because the SDK, the Agents SDK and Codex CLI parse them
strictly. A stream is a sequence of named events (`event: response.output_text.delta`)
each with a growing `sequence_number`, in OpenAI's order:

    response.created → response.in_progress → response.output_item.added →
    response.content_part.added → response.output_text.delta… →
    [response.output_text.annotation.added…] → response.output_text.done →
    response.content_part.done → response.output_item.done →
    [per emulated tool call: response.output_item.added (function_call) →
     response.function_call_arguments.delta… → .done → response.output_item.done] →
    response.completed (response.incomplete when cut at max_output_tokens)

(the message item is left out when the answer is only tool calls)

and a failure after the 200 is `response.failed` carrying the response with its
`error`. There is no `[DONE]`. Upstream reasoning or search progress is never output
text: the stream sends it as SSE comments.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from service.errors import ApiError
from service.events import Done, Terminal, ToolCall
from service.tokens import count_messages
from service.turns import new_message_id, new_token
from service.web.pipeline.answer import Answer
from service.web.pipeline.sse import frame
from service.web.pipeline.stream import Renderer
from service.web.responses.parse import ResponsesRequest


def image_generation_call(event: Mapping[str, Any], item_id: str, *, data: bytes | None) -> dict[str, Any]:
    """A Responses `image_generation_call` output item for a relayed `image` event.

    OpenAI's item carries the image as base64 in `result`; `data` is the fetched bytes, or
    None when they were not fetched (then `result` is null and the extension field `url`
    says where the image is). Responses renders chat-generated images with `data=None`:
    fetching every image's bytes inside a response would hold the answer up, and the URL
    is served by the upstream.
    """
    item: dict[str, Any] = {
        "type": "image_generation_call",
        "id": item_id,
        "status": "completed",
        "result": base64.b64encode(data).decode() if data is not None else None,
        "url": event.get("url"),
    }
    prompt = str(event.get("prompt") or "").strip()
    if prompt:
        item["revised_prompt"] = prompt
    return item

class Keep(Protocol):
    """Stores the response with a change applied (see `ResponseRenderer`)."""

    def __call__(self, change: dict[str, Any], *, only_if_new: bool = False) -> None: ...


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """The Responses API usage object."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def citation_annotations(answer: Answer) -> list[dict[str, Any]]:
    """Citations as the Responses API's flat `url_citation` annotations."""
    return [{"type": "url_citation", **item["url_citation"]} for item in answer.annotations()]


def output_text(text: str, notes: list[dict[str, Any]]) -> dict[str, Any]:
    """One `output_text` content part."""
    return {"type": "output_text", "text": text, "annotations": notes, "logprobs": []}


def message_item(item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant `message` output item."""
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def function_call_item(call: Mapping[str, Any], status: str = "completed") -> dict[str, Any]:
    """A relayed tool call as a `function_call` output item (its id derived from the call id)."""
    return {
        "id": "fc_" + str(call["id"]).removeprefix("call_"),
        "type": "function_call",
        "status": status,
        "call_id": call["id"],
        "name": call["name"],
        "arguments": call["arguments"] if status == "completed" else "",
    }


def incomplete(answer: Answer) -> dict[str, Any] | None:
    """`incomplete_details` of an answer the gateway cut at `max_output_tokens`."""
    return {"reason": "max_output_tokens"} if answer.finish_reason == "length" else None


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
        incomplete_details: dict[str, Any] | None = None,
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
            "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
            "conversation": {"id": self.conversation_id} if req.conversation else None,
            "error": error,
            "incomplete_details": incomplete_details,
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
        return usage(count_messages(self.req.chat.messages), answer.usage()["completion_tokens"])

    def completed(self, answer: Answer) -> dict[str, Any]:
        """The finished response for a whole answer: its text message, then its function calls."""
        part = output_text(answer.content, citation_annotations(answer))
        items = (
            [message_item(self.item_id, "completed", [part])]
            if answer.content or not answer.tool_calls
            else []
        )
        items += [function_call_item(call) for call in answer.tool_calls]
        # Copilot's generated images: the same images the text links to, as OpenAI's output items.
        items += [image_generation_call(image, f"ig_{new_token()}", data=None) for image in answer.images]
        details = incomplete(answer)
        status = "incomplete" if details else "completed"
        return self.response(status, items, usage=self.usage(answer), incomplete_details=details)

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


class ResponseRenderer(Renderer):
    """The Responses API through the pipeline: a `response` object, or its typed-event stream.

    `keep(change, only_if_new=False)` stores the response with `change` applied (a no-op
    when the request asked not to store): in progress while a non-streamed turn runs or
    once a stream's text flows, then the final, failed or cancelled response.
    """

    def __init__(self, builder: ResponseBuilder, answer: Answer, *, keep: Keep, storing: bool) -> None:
        super().__init__(answer)
        self.builder = builder
        self.final: dict[str, Any] | None = None  # the response object the stream ended with
        self._keep = keep
        self._storing = storing
        self._stored = False  # the in-progress response, once the first text went out
        self._seq = -1
        self._text = "none"  # the message item: none yet, open, closed
        self._where = {"item_id": builder.item_id, "output_index": 0}

    def _event(self, kind: str, **fields: Any) -> str:
        self._seq += 1
        return frame({"type": kind, "sequence_number": self._seq, **fields}, event=kind)

    def start(self) -> Iterator[str]:
        yield self._event("response.created", response=self.builder.response("in_progress"))
        yield self._event("response.in_progress", response=self.builder.response("in_progress"))

    def text(self, text: str) -> Iterator[str]:
        if self._text == "none":
            yield from self._open_text()
        where = self._where
        yield self._event("response.output_text.delta", **where, content_index=0, delta=text, logprobs=[])
        if not self._stored:  # stored once text flows, off the first token's path
            self._stored = True
            self._keep({}, only_if_new=True)

    def tool_call(self, event: ToolCall) -> Iterator[str]:
        """One `function_call` item: added, its arguments in two deltas, done."""
        call = event.call()
        if self._text == "open":
            yield from self._close_text()
        index = len(self.answer.tool_calls) - (0 if self._text == "closed" else 1)
        item = function_call_item(call, "in_progress")
        where = {"item_id": item["id"], "output_index": index}
        yield self._event("response.output_item.added", output_index=index, item=item)
        arguments = str(call["arguments"])
        half = len(arguments) // 2
        for piece in [arguments[:half], arguments[half:]] if half else [arguments]:
            yield self._event("response.function_call_arguments.delta", **where, delta=piece)
        yield self._event(
            "response.function_call_arguments.done", **where, name=call["name"], arguments=arguments
        )
        yield self._event("response.output_item.done", output_index=index, item=function_call_item(call))

    def done(self, event: Done) -> Iterator[str]:
        answer = self.answer
        text = event.text if not answer.deltas else None
        if self._text == "none" and (text or not answer.tool_calls):
            yield from self._open_text()
        if text:
            yield self._event(
                "response.output_text.delta", **self._where, content_index=0, delta=str(text), logprobs=[]
            )
        if self._text == "open":
            yield from self._close_text()
        self.final = self.builder.completed(answer)
        kind = "response.incomplete" if self.final["status"] == "incomplete" else "response.completed"
        yield self._event(kind, response=self.final)

    def failed(self, error: ApiError) -> Iterator[str]:
        self.final = self.builder.failed(error)
        yield self._event("response.failed", response=self.final)

    def complete(self, done: Done) -> dict[str, Any]:
        final = self.builder.completed(self.answer)
        self._keep(final)
        return final

    def waiting(self) -> None:
        self._keep({})  # in progress: retrievable and cancellable while it runs

    def refused(self, error: ApiError) -> None:
        self._keep(self.builder.failed(error))

    def closed(self, terminal: Terminal | None) -> None:
        if self.final is not None:
            self._keep(self.final)
        elif self._storing:
            self._keep({"status": "cancelled"})

    def _open_text(self) -> Iterator[str]:
        """Add the message item and its text part (before the first text, or for an empty answer)."""
        b = self.builder
        self._text = "open"
        yield self._event(
            "response.output_item.added", output_index=0, item=message_item(b.item_id, "in_progress", [])
        )
        part = output_text("", [])
        yield self._event("response.content_part.added", **self._where, content_index=0, part=part)

    def _close_text(self) -> Iterator[str]:
        """Finish the text part and the message item (annotations, text.done, part.done, item.done)."""
        b, answer, where = self.builder, self.answer, self._where
        self._text = "closed"
        notes = citation_annotations(answer)
        for index, note in enumerate(notes):
            yield self._event(
                "response.output_text.annotation.added",
                **where,
                content_index=0,
                annotation_index=index,
                annotation=note,
            )
        yield self._event(
            "response.output_text.done", **where, content_index=0, text=answer.content, logprobs=[]
        )
        part = output_text(answer.content, notes)
        yield self._event("response.content_part.done", **where, content_index=0, part=part)
        yield self._event(
            "response.output_item.done", output_index=0, item=message_item(b.item_id, "completed", [part])
        )
