"""Pure builders for OpenAI's `chat.completion` and `chat.completion.chunk` objects.

Clients (the official SDKs, LangChain, chat front-ends) parse these objects strictly,
so every key OpenAI sends is present, in OpenAI's shape, even when we have nothing to
put in it (`system_fingerprint`, `logprobs`, `refusal`). Nothing here does I/O or
knows about Flask: `ChatRenderer` gives the pipeline's one render loop these shapes.

Citations arrive from Bing as numbered markers (`[^1^]`) in the answer text plus
(index, url, title) events; they become `url_citation` annotations whose
`start_index`/`end_index` span the marker, as OpenAI's web-search annotations span
the cited text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from service.errors import ApiError
from service.events import Done, Image, ToolCall
from service.turns import TurnRequest
from service.web.pipeline.answer import Answer, image
from service.web.pipeline.sse import DONE, FrameTemplate, frame
from service.web.pipeline.stream import Renderer

COMPLETION = "chat.completion"
CHUNK = "chat.completion.chunk"


def completion(
    completion_id: str,
    *,
    model: str,
    created: int,
    content: str,
    finish_reason: str,
    annotations: list[dict[str, Any]],
    usage: dict[str, int],
    images: list[dict[str, Any]] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A whole non-streamed `chat.completion` object.

    `images` (generated images, Copilot) is this gateway's extension field on the
    message; the same images are also in `content` as markdown links. `tool_calls`
    are the relay's neutral calls (`id`, `name`, `arguments`); with calls and no
    prose, `content` is null as OpenAI sends it.
    """
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content if content or not tool_calls else None,
        "refusal": None,
        "annotations": annotations,
    }
    if images:
        message["images"] = images
    if tool_calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in tool_calls
        ]
    return {
        "id": completion_id,
        "object": COMPLETION,
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
    }


class ChunkBuilder:
    """Builds the chunks of one stream; fixes the id, model, created and usage mode once.

    With `include_usage` (the client's `stream_options.include_usage`), every chunk
    carries `"usage": null` and the stream ends with a usage-only chunk, as OpenAI does.
    """

    def __init__(self, completion_id: str, *, model: str, created: int, include_usage: bool = False) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = created
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": CHUNK,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage
        return chunk

    def _delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])

    def role(self) -> dict[str, Any]:
        """The first chunk: announces the assistant role with empty content."""
        return self._delta({"role": "assistant", "content": "", "refusal": None})

    def content(self, text: str) -> dict[str, Any]:
        """A chunk carrying answer text."""
        return self._delta({"content": text})

    def tool_call(self, index: int, call: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks of one tool call: id and name with empty arguments, then the arguments.

        OpenAI streams the arguments in pieces after the header; clients concatenate
        them by `index`, so two pieces exercise exactly what they do.
        """
        arguments = str(call.get("arguments", ""))
        half = len(arguments) // 2
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": ""},
        }
        pieces = [arguments[:half], arguments[half:]] if half else [arguments]
        return [
            self._delta({"tool_calls": [head]}),
            *(self._delta({"tool_calls": [{"index": index, "function": {"arguments": p}}]}) for p in pieces),
        ]

    def annotations(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The chunk carrying all citations, sent after the last content chunk."""
        return self._delta({"annotations": items})

    def images(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A chunk carrying generated images in the `images` extension field."""
        return self._delta({"images": items})

    def finish(self, finish_reason: str) -> dict[str, Any]:
        """The chunk with an empty delta and the finish reason."""
        return self._delta({}, finish_reason)

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        """The final usage-only chunk (`choices` empty); only with include_usage."""
        return self._chunk([], usage)


class ChatRenderer(Renderer):
    """Chat Completions through the pipeline: `chat.completion`, or chunk frames ending with `[DONE]`.

    A stream sends the role chunk, text as content chunks, generated images and tool
    calls as their chunks, progress notes and heartbeats as comments (the pipeline's
    defaults), then annotations, the finish chunk, the usage chunk if asked for, and
    `[DONE]`. An error after the stream began is sent as an `{"error": …}` frame, the
    only way left once the 200 is out. Every data frame carries `id:` (the relay
    sequence number of the event it renders; -1 for the role chunk), where a client
    resumes with `Last-Event-ID`. `keep`, when the request said `store: true`, is given
    the finished completion (with `metadata`) for `GET /v1/chat/completions/{id}`.
    """

    sse_ids = True

    def __init__(
        self,
        turn: TurnRequest,
        messages: Iterable[Mapping[str, str]],
        *,
        include_usage: bool,
        prompt_tokens: int | None = None,
        keep: Callable[[dict[str, Any]], None] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(Answer(messages, prompt_tokens=prompt_tokens))
        self.turn = turn
        self.keep = keep
        self.metadata = dict(metadata) if metadata else None
        self.chunks = ChunkBuilder(
            turn.completion_id, model=turn.model, created=turn.created, include_usage=include_usage
        )
        self._content = FrameTemplate(self.chunks.content)  # every text delta's frame

    def start(self) -> Iterator[str]:
        yield frame(self.chunks.role())

    def text(self, text: str) -> Iterator[str]:
        yield self._content(text)

    def image(self, event: Image) -> Iterator[str]:
        yield frame(self.chunks.images([image(event)]))

    def tool_call(self, call: ToolCall) -> Iterator[str]:
        for chunk in self.chunks.tool_call(len(self.answer.tool_calls) - 1, call.call()):
            yield frame(chunk)

    def done(self, event: Done) -> Iterator[str]:
        chunks, answer = self.chunks, self.answer
        if not answer.deltas and event.text:
            yield frame(chunks.content(event.text))
        if answer.citations:
            yield frame(chunks.annotations(answer.annotations()))
        yield frame(chunks.finish(answer.finish_reason))
        if chunks.include_usage:
            yield frame(chunks.usage(answer.usage()))
        yield frame(DONE)
        if self.keep is not None:  # `store: true`: counted and kept once the stream is out
            self._keep(self.complete_object())

    def failed(self, error: ApiError) -> Iterator[str]:
        yield frame(error.body())
        yield frame(DONE)

    def complete(self, done: Done) -> dict[str, Any]:
        body = self.complete_object()
        self._keep(body)
        return body

    def _keep(self, body: dict[str, Any]) -> None:
        if self.keep is not None:
            self.keep({**body, "metadata": self.metadata} if self.metadata else body)

    def complete_object(self) -> dict[str, Any]:
        """The whole `chat.completion` the answer so far adds up to."""
        turn, answer = self.turn, self.answer
        return completion(
            turn.completion_id,
            model=turn.model,
            created=turn.created,
            content=answer.content,
            finish_reason=answer.finish_reason,
            annotations=answer.annotations(),
            usage=answer.usage(),
            images=answer.images,
            tool_calls=answer.tool_calls,
        )
