"""Streams that outlive their connection: resume points, the grace after a disconnect, folding the log.

The worker runs a turn whether or not anyone reads it, and every relay event stays in
the replay log for REPLAY_TTL; a stream is therefore resumable by re-rendering that log.
Which streams survive a disconnect:

- a request with `store: true` or an `Idempotency-Key` (Responses' `store` defaults to
  true): the turn keeps running for STREAM_RESUME_GRACE_SECONDS after the client went
  away; a client back within it (`Last-Event-ID`, `starting_after`) ends the grace and
  gets the rest of the stream. If nobody comes back, the turn is cancelled then
  (`_lapse`), or, if it finished meanwhile, its result is kept (`fold`);
- a background response (`Run.detached`): no disconnect touches it;
- anything else: a disconnect cancels the turn at once, as it always did (`Run.close`).

The grace runs on a timer in the web process that saw the disconnect (a greenlet under
gevent); its token in Redis (`service.state.streams`) lets a resume or a later
disconnect overrule it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request

from service.errors import ApiError, InvalidRequest
from service.events import Done, Failed, Terminal, decode
from service.state import idempotency, locks, streams
from service.state.relay import read_log
from service.turns import TurnRequest, request_cancel
from service.web.http.extension import Gateway
from service.web.pipeline.request import ChatRequest
from service.web.pipeline.run import Run
from service.web.pipeline.stream import Renderer

log = logging.getLogger(__name__)

Refold = Callable[[], Renderer]
"""A fresh renderer for the same run (the surface's factory, bound), to fold the log into."""


@dataclasses.dataclass(frozen=True)
class Resumable:
    """What a surface tells the pipeline about a request's resumability."""

    surface: str  # "chat" | "responses"
    store: bool  # the request's `store`: makes it resumable and keeps its result
    background: bool = False
    metadata: dict[str, str] | None = None


def last_event_id(name: str = "Last-Event-ID", value: str | None = None) -> int | None:
    """The resume point a client sent (an `id:` this gateway's stream carried), or None."""
    raw = request.headers.get(name) if value is None else value
    if raw is None or not raw.strip():
        return None
    try:
        position = int(raw.strip())
    except ValueError:
        position = -2
    if position < -1:
        raise InvalidRequest(
            f"Invalid '{name}': expected the id of an event this stream sent (an integer), got {raw[:40]!r}.",
            param=name,
        )
    return position


def grace_for(gw: Gateway, *, key: str | None, store: bool) -> float:
    """Seconds a turn outlives its client: STREAM_RESUME_GRACE_SECONDS with `store` or a key, else 0."""
    return gw.settings.stream_resume_grace_seconds if key is not None or store else 0.0


def remember(
    gw: Gateway, turn: TurnRequest, chat: ChatRequest, key: str | None, resumable: Resumable | None
) -> tuple[float, streams.StreamRecord | None]:
    """The turn's grace, and the record a resumed or stored stream needs (`service.state.streams`),
    which the pipeline writes with the job."""
    if resumable is None:
        return 0.0, None
    grace = grace_for(gw, key=key, store=resumable.store)
    record = None
    if grace > 0 or resumable.store or resumable.background:
        record = streams.StreamRecord(
            completion_id=turn.completion_id,
            owner=turn.owner,
            surface=resumable.surface,
            model=turn.model,
            created=turn.created,
            include_usage=chat.include_usage,
            idempotency_key=key or "",
            store=resumable.store,
            background=resumable.background,
            metadata=resumable.metadata,
        )
    return grace, record


def closed(
    app: Flask, gw: Gateway, run: Run, renderer: Renderer, terminal: Terminal | None, refold: Refold
) -> None:
    """A stream's body closed: a surviving turn is left running (in its grace), any other is closed."""
    if terminal is None and run.survives_disconnect:
        run.close(gw, None)  # frees the subscription and the ticket; the turn runs on
        if not run.detached:
            _start_grace(app, gw, run, renderer, refold)
        return
    try:
        run.close(gw, terminal)
    finally:
        renderer.closed(terminal)


def _start_grace(app: Flask, gw: Gateway, run: Run, renderer: Renderer, refold: Refold) -> None:
    completion_id = run.turn.completion_id
    try:
        holds = run.turn.conversation_id if run.turn.lock_token else ""  # the conversation it has locked
        token, moved_on = streams.open_grace(
            gw.redis, completion_id, seconds=run.grace, conversation_id=holds
        )
        # The prompt is counted now, off any client's path, for a resumed stream's usage.
        streams.note_prompt_tokens(gw.redis, completion_id, renderer.answer.usage()["prompt_tokens"])
    except Exception as exc:  # Redis is down: nobody could resume either; cancel as before
        log.warning("event=stream_grace_failed completion_id=%s error=%r", completion_id, exc)
        _cancel(gw, run)
        return
    log.info("event=stream_grace completion_id=%s seconds=%g", completion_id, run.grace)
    seconds = 0.0 if moved_on else run.grace  # a new turn already waits for its conversation
    args = (app, gw, run, token, refold, seconds)
    waiter = threading.Thread(target=_wait, args=args, name="grace", daemon=True)
    waiter.start()


def _wait(app: Flask, gw: Gateway, run: Run, token: str, refold: Refold, seconds: float) -> None:
    """Sleep through the grace, unless woken early (a client back, a new turn on the conversation)."""
    try:
        with gw.hub.notifications(streams.wake_channel(run.turn.completion_id)) as woken:
            woken.wait(seconds)
    except Exception:  # no pub/sub: the grace simply runs its length
        threading.Event().wait(seconds)
    _lapse(app, gw, run, token, refold)


def _lapse(app: Flask, gw: Gateway, run: Run, token: str, refold: Refold) -> None:
    """The grace is over: unless a client came back, keep the finished result or cancel the turn."""
    completion_id = run.turn.completion_id
    with app.app_context():
        try:
            if not streams.grace_holds(gw.redis, completion_id, token):
                return  # resumed, or left again (that disconnect's grace decides)
            # Woken early by a new turn on the conversation, or the grace is over: nobody is back.
            streams.end_grace(gw.redis, completion_id)
            events = read_log(gw.redis, completion_id)
            if events and events[-1].get("type") in (Done.TYPE, Failed.TYPE):
                fold(refold(), events)  # finished in the grace: keep it as a full read would
                return
            log.info("event=stream_grace_lapsed completion_id=%s", completion_id)
            _cancel(gw, run)
            streams.forget(gw.redis, completion_id)
            refold().closed(None)  # e.g. a stored response becomes "cancelled"
        except Exception:
            log.warning("event=stream_lapse_failed completion_id=%s", completion_id, exc_info=True)


def _cancel(gw: Gateway, run: Run) -> None:
    """Cancel a turn nobody reads: drop it from the queue, or stop it upstream; free its claim."""
    turn = run.turn
    if gw.queue.remove(turn.completion_id):
        if turn.lock_token:
            locks.release(gw.redis, turn.conversation_id, turn.lock_token)
    else:
        request_cancel(gw.redis, turn.completion_id)
    if run.idempotency_key:  # a retry after this must run afresh, not attach to a dead turn
        idempotency.release(gw.redis, turn.owner, run.idempotency_key, turn.completion_id)


def fold(renderer: Renderer, events: Iterable[dict[str, Any]]) -> Terminal | None:
    """Take a finished turn's logged events into `renderer` as a non-streamed answer would.

    The renderer's `complete` (or `refused`) runs, so a surface that keeps its result
    (a stored response or completion) keeps it. The terminal event, or None if the log
    has none.
    """
    for raw in events:
        event = decode(raw)
        if isinstance(event, Failed):
            renderer.refused(ApiError.from_event(dict(event.error)))
            return event
        renderer.answer.add(event)
        if isinstance(event, Done):
            renderer.complete(event)
            return event
    return None
