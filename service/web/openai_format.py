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

from collections.abc import Iterable, Mapping
from typing import Any

from service.tokens import count_messages, count_text

COMPLETION = "chat.completion"
CHUNK = "chat.completion.chunk"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def citation_annotations(content: str, citations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`url_citation` annotations for citation events, spanning each `[^N^]` marker.

    The first occurrence of a marker is spanned; a citation whose marker is absent
    spans the whole content. Repeated citation events for one index are merged.
    """
    result: list[dict[str, Any]] = []
    seen: set[int] = set()
    for citation in citations:
        index = int(citation.get("index", 0))
        if index in seen:
            continue
        seen.add(index)
        marker = f"[^{index}^]"
        start = content.find(marker)
        start, end = (0, len(content)) if start < 0 else (start, start + len(marker))
        result.append(
            {
                "type": "url_citation",
                "url_citation": {
                    "url": str(citation.get("url", "")),
                    "title": str(citation.get("title", "")),
                    "start_index": start,
                    "end_index": end,
                },
            }
        )
    return result


def image(event: Mapping[str, Any]) -> dict[str, Any]:
    """The `images` extension entry for one relayed image event."""
    return {
        "url": str(event.get("url", "")),
        "thumbnail_url": str(event.get("thumbnail_url", "")) or None,
        "prompt": str(event.get("prompt", "")) or None,
    }


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


class Answer:
    """Accumulates one turn's relay events into what the final objects need.

    `messages` are the request's messages (`{"role", "content"[, "name"]}`), counted
    for `prompt_tokens` only when usage is built, so a request that fails early never
    pays for tokenizing.
    """

    def __init__(self, messages: Iterable[Mapping[str, str]]) -> None:
        self.messages = list(messages)
        self.deltas: list[str] = []
        self.citations: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.done_text = ""
        self.finish_reason = "stop"

    def add(self, event: Mapping[str, Any]) -> None:
        """Take one non-error relay event into account; others are ignored."""
        kind = event.get("type")
        if kind == "delta":
            self.deltas.append(str(event.get("text", "")))
        elif kind == "citation":
            self.citations.append(dict(event))
        elif kind == "image":
            self.images.append(image(event))
        elif kind == "tool_call":
            self.tool_calls.append({k: event[k] for k in ("id", "name", "arguments")})
        elif kind == "done":
            self.done_text = str(event.get("text") or "")
            self.finish_reason = str(event.get("finish_reason") or "stop")

    @property
    def content(self) -> str:
        """The answer text: the streamed deltas, or the done text if nothing streamed."""
        return "".join(self.deltas) or self.done_text

    def annotations(self) -> list[dict[str, Any]]:
        """The answer's `url_citation` annotations."""
        return citation_annotations(self.content, self.citations)

    def usage(self) -> dict[str, int]:
        """Token usage of the request and this answer (calls counted as their arguments)."""
        calls = "".join(c["name"] + c["arguments"] for c in self.tool_calls)
        return usage(count_messages(self.messages), count_text(self.content) + count_text(calls))
