"""Server-sent events: the one function every SSE byte goes through, and the stream body.

OpenAI streams `data: <json>\\n\\n` frames and ends with `data: [DONE]\\n\\n`. We also
send comment frames (`: text\\n\\n`), which every SSE parser ignores, for progress
notes and keep-alive heartbeats that stop proxies from closing an idle stream.
A newline inside a comment would end it early and turn the rest into a field line,
so comments are flattened to one line.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

from service.errors import ApiError
from service.web.chat.render import ChunkBuilder
from service.web.pipeline.answer import Answer, image

log = logging.getLogger(__name__)

DONE = "[DONE]"


def frame(
    data: Mapping[str, Any] | str | None = None, *, comment: str | None = None, event: str | None = None
) -> str:
    """One SSE frame: a JSON `data:` frame, the literal `[DONE]` frame, or a comment.

    Pass a mapping for a JSON event, `DONE` for the terminator, or `comment=` for a
    comment line. `event=` adds an `event:` line (the Responses and Anthropic streams
    name every event).
    """
    if comment is not None:
        flat = " ".join(comment.replace("\r", "\n").split("\n")).strip()
        return f": {flat}\n\n"
    if data == DONE:
        return f"data: {DONE}\n\n"
    if not isinstance(data, Mapping):
        raise TypeError("an SSE data frame needs a mapping or DONE")
    # json.dumps escapes control characters, so the payload is always one line.
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


class FrameStream:
    """The SSE body of a streamed turn, built from relay events (`first`, then `events`).

    Each surface subclasses it with its own `_generate` (its renderer); the closing
    contract is shared. It takes plain arguments, not the request context, because it
    is iterated after the view has returned.

    `on_close(terminal)` runs exactly once, when the WSGI server closes the body (as
    PEP 3333 requires, also when the client went away mid-stream) or when it is
    exhausted; `terminal` is the done/error event that ended the stream, or None when
    the client went away first, so the caller knows whether to cancel the job. A class
    rather than a bare generator because closing a generator that never started
    skips its `finally`.
    """

    def __init__(
        self,
        events: Iterator[dict[str, Any] | None],
        first: dict[str, Any] | None,
        *,
        on_close: Callable[[dict[str, Any] | None], None],
    ) -> None:
        self.terminal: dict[str, Any] | None = None
        self._on_close = on_close
        self._closed = False
        self._frames = self._generate(itertools.chain([first] if first is not None else [], events))

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._frames)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        """Stop streaming and run the clean-up once (the client went away, or we are done)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._frames.close()
        finally:
            self._on_close(self.terminal)

    def _generate(self, events: Iterator[dict[str, Any] | None]) -> Generator[str, None, None]:
        raise NotImplementedError


class EventStream(FrameStream):
    """Chat Completions' stream: `chat.completion.chunk` frames ending with `[DONE]`.

    Sends the role chunk, text as content chunks, progress notes and heartbeats as
    comments, then annotations, the finish chunk, the usage chunk if asked for, and
    `[DONE]`. An error after the stream began is sent as an `{"error": …}` frame, the
    only way left once the 200 is out.
    """

    def __init__(
        self,
        events: Iterator[dict[str, Any] | None],
        first: dict[str, Any] | None,
        *,
        chunks: ChunkBuilder,
        answer: Answer,
        on_close: Callable[[dict[str, Any] | None], None],
    ) -> None:
        self._chunks = chunks
        self._answer = answer
        super().__init__(events, first, on_close=on_close)

    def _generate(self, events: Iterator[dict[str, Any] | None]) -> Generator[str, None, None]:
        chunks, answer = self._chunks, self._answer
        try:
            yield frame(chunks.role())
            for event in events:
                if event is None:
                    yield frame(comment="keep-alive")
                    continue
                kind = event.get("type")
                if kind == "delta":
                    answer.add(event)
                    yield frame(chunks.content(str(event.get("text", ""))))
                elif kind == "progress":
                    yield frame(comment=str(event.get("text", "")))
                elif kind == "queued":  # waiting for an upstream account slot
                    yield frame(comment=f"queued, position {int(event.get('position') or 0)}")
                elif kind == "image":
                    answer.add(event)
                    yield frame(chunks.images([image(event)]))
                elif kind == "tool_call":
                    answer.add(event)
                    for chunk in chunks.tool_call(len(answer.tool_calls) - 1, event):
                        yield frame(chunk)
                elif kind == "done":
                    self.terminal = event
                    if not answer.deltas and event.get("text"):
                        yield frame(chunks.content(str(event["text"])))
                    answer.add(event)
                    if answer.citations:
                        yield frame(chunks.annotations(answer.annotations()))
                    yield frame(chunks.finish(answer.finish_reason))
                    if chunks.include_usage:
                        yield frame(chunks.usage(answer.usage()))
                    yield frame(DONE)
                    return
                elif kind == "error":
                    self.terminal = event
                    yield frame(ApiError.from_event(event.get("error") or {}).body())
                    yield frame(DONE)
                    return
                else:
                    answer.add(event)  # citations (and suggestions, limits) are kept for the end
        except Exception as exc:  # e.g. Redis failed mid-stream: tell the client, then end
            log.error("event=stream_failed error=%s", exc.__class__.__name__, exc_info=True)
            yield frame(ApiError.from_exception(exc).body())
            yield frame(DONE)
