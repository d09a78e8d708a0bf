"""Serving a completion again from its replay log: a resumed stream, or a finished result.

`GET /v1/chat/completions/{id}?stream=true` and `GET /v1/responses/{id}?stream=true` have
no request body to rebuild the turn from; the completion's `StreamRecord` says whose it
is and how to render it, and the relay's log holds every event. A reader subscribes to
the live channel, reads the log from the start (`Subscription.catch_up`), and streams
through the surface's renderer, which leaves out what the client already has (its
`after`, or the Responses sequence number). Live if the turn still runs, replayed if it
is done: the same code either way.
"""

from __future__ import annotations

from flask import Response

from service.events import TERMINAL, Terminal
from service.state import streams
from service.state.relay import read_log
from service.turns import TurnRequest
from service.web.http.extension import Gateway
from service.web.pipeline import resume
from service.web.pipeline.enqueue import subscribe
from service.web.pipeline.request import ChatRequest
from service.web.pipeline.respond import MakeRenderer, answer_turn
from service.web.pipeline.run import Run
from service.web.pipeline.stream import Renderer


def request_of(record: streams.StreamRecord) -> ChatRequest:
    """The neutral request a resumed stream renders with (no messages: usage uses the record's count)."""
    return ChatRequest(
        model=record.model,
        prompt="",
        stream=True,
        include_usage=record.include_usage,
        store_completion=record.store,
        metadata=record.metadata,
    )


def turn_of(record: streams.StreamRecord) -> TurnRequest:
    """The turn as a reader knows it: ids, owner, model, creation time."""
    return TurnRequest(
        completion_id=record.completion_id,
        conversation_id="",
        owner=record.owner,
        model=record.model,
        prompt="",
        created=record.created,
    )


def stream_again(gw: Gateway, record: streams.StreamRecord, make: MakeRenderer) -> Response:
    """The completion's stream from the start of its log (the renderer skips what was sent).

    The reader ends any grace (a client is back) and survives its own disconnect as the
    first request did.
    """
    completion_id = record.completion_id
    key = record.idempotency_key or None
    streams.end_grace(gw.redis, completion_id)
    sub = subscribe(gw, completion_id)
    sub.catch_up()
    run = Run(
        turn_of(record),
        sub,
        idempotency_key=key,
        attached=True,
        grace=resume.grace_for(gw, key=key, store=record.store),
        detached=record.background,
    )
    return answer_turn(gw, run, request_of(record), make)


def fold_finished(gw: Gateway, record: streams.StreamRecord, renderer: Renderer) -> Terminal | None:
    """Fold a finished completion's log into `renderer` (which keeps its result); None if not finished."""
    events = read_log(gw.redis, record.completion_id)
    if not events or events[-1].get("type") not in TERMINAL:
        return None
    return resume.fold(renderer, events)
