"""The answer a turn's relay events add up to, and the pieces every surface renders from it.

`Answer` accumulates deltas, citations, images and tool calls; `usage` and
`citation_annotations` are the token counts and `url_citation` spans all OpenAI-shaped
surfaces share. Pure: no I/O, no Flask.

Citations arrive from Bing as numbered markers (`[^1^]`) in the answer text plus
(index, url, title) events; they become `url_citation` annotations whose
`start_index`/`end_index` span the marker, as OpenAI's web-search annotations span
the cited text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from service.events import Citation, Delta, Done, Image, RelayEvent, ToolCall
from service.tokens import count_messages, count_text


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


def image(event: Image) -> dict[str, Any]:
    """The `images` extension entry for one relayed image event."""
    return {
        "url": event.url,
        "thumbnail_url": event.thumbnail_url or None,
        "prompt": event.prompt or None,
    }


class Answer:
    """Accumulates one turn's relay events into what the final objects need.

    `messages` are the request's messages (`{"role", "content"[, "name"]}`), counted
    for `prompt_tokens` only when usage is built, so a request that fails early never
    pays for tokenizing.
    """

    def __init__(self, messages: Iterable[Mapping[str, str]], *, prompt_tokens: int | None = None) -> None:
        self.messages = list(messages)
        self.prompt_tokens = prompt_tokens  # known already (a resumed stream has no messages)
        self.deltas: list[str] = []
        self.citations: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.done_text = ""
        self.finish_reason = "stop"

    def add(self, event: RelayEvent) -> None:
        """Take one non-error relay event into account; others are ignored."""
        if isinstance(event, Delta):
            self.deltas.append(event.text)
        elif isinstance(event, Citation):
            self.citations.append(event.to_json())
        elif isinstance(event, Image):
            self.images.append(image(event))
        elif isinstance(event, ToolCall):
            self.tool_calls.append(event.call())
        elif isinstance(event, Done):
            self.done_text = event.text
            self.finish_reason = event.finish_reason or "stop"

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
        prompt = self.prompt_tokens if self.prompt_tokens is not None else count_messages(self.messages)
        return usage(prompt, count_text(self.content) + count_text(calls))
