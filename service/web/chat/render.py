"""Pure builders for OpenAI's `chat.completion` and `chat.completion.chunk` objects.

Clients (the official SDKs, LangChain, chat front-ends) parse these objects strictly,
so every key OpenAI sends is present, in OpenAI's shape, even when we have nothing to
put in it (`system_fingerprint`, `logprobs`, `refusal`). Nothing here does I/O or
knows about Flask; the view feeds in relay events and gets dicts back.

Citations arrive from Bing as numbered markers (`[^1^]`) in the answer text plus
(index, url, title) events; they become `url_citation` annotations whose
`start_index`/`end_index` span the marker, as OpenAI's web-search annotations span
the cited text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


