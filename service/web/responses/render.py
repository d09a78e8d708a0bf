"""The Responses API's renderer: a `response` object, or its typed stream events.

The objects themselves (the `response`, its output items) are built by `objects`. A
stream is a sequence of named events (`event: response.output_text.delta`) each with a
growing `sequence_number`, in OpenAI's order:

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

from collections.abc import Iterator
from typing import Any, Protocol

from service.errors import ApiError
from service.events import Done, Terminal, ToolCall
from service.web.pipeline.answer import Answer
from service.web.pipeline.sse import FrameTemplate, frame
from service.web.pipeline.stream import Renderer
from service.web.responses.objects import (
    ResponseBuilder,
    citation_annotations,
    function_call_item,
    message_item,
    output_text,
)


class Keep(Protocol):
    """Stores the response with a change applied (see `ResponseRenderer`)."""

    def __call__(self, change: dict[str, Any], *, only_if_new: bool = False) -> None: ...


class ResponseRenderer(Renderer):
    """The Responses API through the pipeline: a `response` object, or its typed-event stream.

    `keep(change, only_if_new=False)` stores the response with `change` applied (a no-op
    when the request asked not to store): in progress while a non-streamed turn runs or
    once a stream's text flows, then the final, failed or cancelled response.
    """

    def __init__(
        self,
        builder: ResponseBuilder,
        answer: Answer,
        *,
        keep: Keep,
        storing: bool,
        starting_after: int | None = None,
    ) -> None:
        super().__init__(answer)
        self.starting_after = starting_after  # a resumed stream: sequence numbers the client has
        self.builder = builder
        self.final: dict[str, Any] | None = None  # the response object the stream ended with
        self._keep = keep
        self._storing = storing
        self._stored = False  # the in-progress response, once the first text went out
        self._seq = -1
        self._text = "none"  # the message item: none yet, open, closed
        self._where = {"item_id": builder.item_id, "output_index": 0}
        kind = "response.output_text.delta"
        self._text_delta = FrameTemplate(  # every text delta's frame, as `_event` writes it
            lambda seq, text: {
                "type": kind,
                "sequence_number": seq,
                **self._where,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
            2,
            event=kind,
            id_slot=0,
        )

    def _event(self, kind: str, **fields: Any) -> str:
        """One named event; `id:` is its sequence number. Nothing if a resumed client has it."""
        self._seq += 1
        if self.starting_after is not None and self._seq <= self.starting_after:
            return ""
        return frame({"type": kind, "sequence_number": self._seq, **fields}, event=kind, id=self._seq)

    def start(self) -> Iterator[str]:
        opening = "queued" if self.builder.background else "in_progress"
        yield self._event("response.created", response=self.builder.response(opening))
        yield self._event("response.in_progress", response=self.builder.response("in_progress"))

    def text(self, text: str) -> Iterator[str]:
        if self._text == "none":
            yield from self._open_text()
        self._seq += 1
        if self.starting_after is None or self._seq > self.starting_after:  # as `_event` skips
            yield self._text_delta(self._seq, text)
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

    def keep_change(self, change: dict[str, Any]) -> None:
        """Store the response with `change` applied (e.g. a background response `queued`)."""
        self._keep(change)

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
