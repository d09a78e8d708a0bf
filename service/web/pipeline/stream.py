"""The one render loop: a turn's relay events driven through a surface's `Renderer`.

Every wire format streams the same story — start, text, tool calls, comments, then
done or failed — in its own frames. The loop that reads the relay (keep-alives,
progress notes, the answer's bookkeeping, the ending, a failure mid-stream) is written
once here; a surface supplies only a `Renderer` whose hooks return its SSE frames and
its non-streamed body. `RenderStream` is the SSE body the pipeline hands to Flask.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, ClassVar

from service.errors import ApiError
from service.events import Delta, Done, Failed, Image, Progress, Queued, RelayEvent, Terminal, ToolCall
from service.web.pipeline.answer import Answer
from service.web.pipeline.sse import frame

log = logging.getLogger(__name__)

Frames = Iterable[str]


class Renderer:
    """How one wire format renders a turn; the pipeline calls its hooks and never its frames' shape.

    Each hook returns the SSE frames to send for what happened (nothing by default).
    `answer` has already taken the event in when a hook runs. `complete` is the body
    of a non-streamed answer; `waiting`, `refused` and `closed` let a surface keep a
    record (the Responses store) without seeing the run.
    """

    sse_ids: ClassVar[bool] = False
    """Tag every data frame with `id: <relay sequence number>` (the stream's resume points)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.after: int | None = None
        """The relay sequence number through which the client already has the frames (a resume)."""

    def metered(self) -> Answer | None:
        """What the key's token usage counts (None: no tokens, e.g. an image generation)."""
        return self.answer

    def start(self) -> Frames:
        """The frames that open a stream, before any event."""
        return ()

    def text(self, text: str) -> Frames:
        """A piece of the answer's text."""
        raise NotImplementedError

    def image(self, event: Image) -> Frames:
        """An image the upstream generated (most formats keep it for the end)."""
        return ()

    def tool_call(self, call: ToolCall) -> Frames:
        """One whole tool call (already the last of `answer.tool_calls`)."""
        raise NotImplementedError

    def comment(self, text: str) -> Frames:
        """A progress note: an SSE comment, never answer text."""
        return (frame(comment=text),)

    def keep_alive(self) -> Frames:
        """A heartbeat while nothing happens, so proxies keep the stream open."""
        return (frame(comment="keep-alive"),)

    def done(self, event: Done) -> Frames:
        """The frames that end a finished stream (the `done` event is in `answer`)."""
        raise NotImplementedError

    def failed(self, error: ApiError) -> Frames:
        """The frames that end a stream whose turn failed after the 200."""
        raise NotImplementedError

    def complete(self, done: Done) -> dict[str, Any]:
        """The non-streamed body of a finished answer."""
        raise NotImplementedError

    def waiting(self) -> None:
        """A non-streamed turn is running (before the answer is awaited)."""

    def refused(self, error: ApiError) -> None:
        """The turn failed before any 200 went out; the pipeline raises `error` next."""

    def closed(self, terminal: Terminal | None) -> None:
        """A stream's body was closed; `terminal` ended it, or None if the client left first."""


JOIN_LIMIT = 65536
"""Most characters of frames `RenderStream` joins into one write."""

START = -1
"""The position of a stream's opening frames: before the relay's first event (seq 0)."""


def render(
    renderer: Renderer, events: Iterable[RelayEvent | None], stream: RenderStream
) -> Generator[str, None, None]:
    """The one relay-event loop: each event to the renderer's hook, until done or failed.

    Frames are tagged with the relay sequence number of the event they render when the
    renderer asks for SSE ids, and left out (but still rendered, so the answer adds up)
    when the client already has them (`renderer.after`, a resumed stream).
    """
    try:
        if renderer.after is None:
            yield from _tagged(renderer, renderer.start(), START)
        for event in events:
            if event is None:
                yield from renderer.keep_alive()
                continue
            # The web tier's own verdict (no worker, worker lost) is no point in the log to resume at.
            said_here = isinstance(event, Failed) and event.synthetic
            yield from _tagged(
                renderer, _frames(renderer, event, stream), None if said_here else stream.position()
            )
            if isinstance(event, Done | Failed):
                return
    except Exception as exc:  # e.g. Redis failed mid-stream: tell the client, then end
        log.error("event=stream_failed error=%s", exc.__class__.__name__, exc_info=True)
        yield from renderer.failed(ApiError.from_exception(exc))


def _frames(renderer: Renderer, event: RelayEvent, stream: RenderStream) -> Frames:
    """The frames one relay event renders to (lazily: a hook may act after its first frame is out)."""
    if isinstance(event, Progress):
        return renderer.comment(event.text)
    if isinstance(event, Queued):  # waiting for an upstream account slot
        return renderer.comment(f"queued, position {int(event.position or 0)}")
    if isinstance(event, Failed):
        stream.terminal = event
        return renderer.failed(ApiError.from_event(dict(event.error)))
    renderer.answer.add(event)  # citations, suggestions, limits: kept for the end
    if isinstance(event, Done):
        stream.terminal = event
        return renderer.done(event)
    return _hook(renderer, event)


def _tagged(renderer: Renderer, frames: Frames, position: int | None) -> Iterator[str]:
    """An event's frames, `id:`-tagged if the renderer wants; run but not sent if the client has them."""
    skip = position is not None and renderer.after is not None and position <= renderer.after
    tag = renderer.sse_ids and position is not None
    for text in frames:
        if skip or not text:
            continue
        yield f"id: {position}\n{text}" if tag and not text.startswith(":") else text


def _hook(renderer: Renderer, event: RelayEvent) -> Frames:
    if isinstance(event, Delta):
        return renderer.text(event.text)
    if isinstance(event, ToolCall):
        return renderer.tool_call(event)
    if isinstance(event, Image):
        return renderer.image(event)
    return ()


class RenderStream:
    """The SSE body of a streamed turn: `first`, then `events`, through `render`.

    While the next relayed event is already waiting (`ready()` says so: the stream is
    behind), the frames up to it and its own go out as one item, so the WSGI server writes
    them in one send (one chunk of the chunked encoding): the same bytes, in fewer writes.
    A frame is never held back waiting for another, and the first item is always one
    frame alone (a hook may act after its first frame, off the first token's path).

    It takes plain arguments, not the request context, because it is iterated after
    the view has returned. `on_close(terminal)` runs exactly once, when the WSGI server
    closes the body (as PEP 3333 requires, also when the client went away mid-stream)
    or when it is exhausted; `terminal` is the done/error event that ended the stream,
    or None when the client went away first, so the pipeline knows whether to cancel
    the job. A class rather than a bare generator because closing a generator that
    never started skips its `finally`.
    """

    def __init__(
        self,
        renderer: Renderer,
        events: Iterator[RelayEvent | None],
        first: RelayEvent | None,
        *,
        on_close: Callable[[Terminal | None], None],
        position: Callable[[], int] = lambda: START,
        on_first: Callable[[], None] | None = None,
        ready: Callable[[], bool] = lambda: False,
    ) -> None:
        self.terminal: Terminal | None = None
        self.position = position  # the relay sequence number of the event just read
        self._on_first = on_first  # called once the first frame is handed over (a traced turn)
        self._on_close = on_close
        self._closed = False
        self._ready = ready  # True while the next event is there already: its frames join this write
        self._exhausted = False
        self._started = False
        chained = itertools.chain([first] if first is not None else [], events)
        self._frames = render(renderer, chained, self)

    def __iter__(self) -> RenderStream:
        return self

    def __next__(self) -> str:
        return self._next_text()

    def _next_text(self) -> str:
        if self._exhausted:
            self.close()
            raise StopIteration
        try:
            text = next(self._frames)
        except StopIteration:
            self.close()
            raise
        if not self._started:
            self._started = True
            if self._on_first is not None:
                self._on_first()
        elif self._ready():
            text = self._join(text)
        return text

    def _join(self, text: str) -> str:
        """`text` and the frames after it that need no wait, up to JOIN_LIMIT characters."""
        pieces = [text]
        size = len(text)
        while size < JOIN_LIMIT and self._ready():
            try:
                more = next(self._frames)
            except StopIteration:
                self._exhausted = True  # the next call ends the body (and closes it)
                break
            pieces.append(more)
            size += len(more)
        return "".join(pieces)

    def close(self) -> None:
        """Stop streaming and run the clean-up once (the client went away, or we are done)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._frames.close()
        finally:
            self._on_close(self.terminal)


class EncodedStream(RenderStream):
    """`RenderStream` as UTF-8 bytes, so a response hands it to the WSGI server as it is.

    With `direct_passthrough` werkzeug passes the body through untouched: no encoding
    generator and closing iterator around every write. The server closes it (PEP 3333).
    """

    def __next__(self) -> bytes:  # type: ignore[override]  # bytes for the WSGI server
        return self._next_text().encode()
