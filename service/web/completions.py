"""POST …/completions: validate, enqueue the turn, relay the worker's answer back.

Served on any path whose last segment is `completions` (`/v1/chat/completions`,
`/chat/completions`, `/openai/chat/completions`, …) because clients join base URLs in
every possible way. The flow for one request:

    auth (middleware) → parse_chat_request → resolve the conversation
      → subscribe to the relay (confirmed by Redis) → enqueue `workers.jobs.run_turn`
      → stream.watch → one `chat.completion` JSON, or SSE chunks

Subscribing before enqueueing means no event can be published before we listen. A
stream first holds up to STREAM_HOLD_SECONDS for the first event so that a failure
the worker reports at once (429 from the upstream, no worker at all) still reaches
the client as a real HTTP status instead of an error inside a 200 stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug import exceptions as http

from service.errors import ApiError
from service.relay import TERMINAL, Subscription
from service.turns import TurnRequest, enqueue_turn, new_completion_id, new_conversation_id, request_cancel
from service.web.errors import redis_unavailable
from service.web.extension import Gateway, gateway
from service.web.meta import conversation_not_found
from service.web.openai_format import Answer, ChunkBuilder, completion
from service.web.sse import EventStream
from service.web.stream import watch
from service.web.validation import ChatRequest, parse_chat_request

log = logging.getLogger(__name__)

blueprint = Blueprint("completions", __name__)

ENDPOINT = "completions"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@blueprint.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def chat_completions(path: str) -> Response:
    """The Chat Completions endpoint; any other path that reaches here is a 404."""
    if path.rstrip("/").rsplit("/", 1)[-1] != ENDPOINT:
        raise http.NotFound()
    if request.method != "POST":
        raise http.MethodNotAllowed(valid_methods=["POST"])
    gw = gateway()
    chat = parse_chat_request(request.get_data(cache=False), request.headers, upstream=gw.settings.upstream)
    turn = _turn(gw, chat, g.owner)
    g.conversation_id = turn.conversation_id
    sub = _start(gw, turn)
    log.info(
        "event=completion_enqueued completion_id=%s conversation_id=%s model=%s stream=%s continues=%s",
        turn.completion_id,
        turn.conversation_id,
        turn.model,
        chat.stream,
        turn.continues,
    )
    if chat.stream:
        return _stream(gw, sub, turn, chat)
    return _complete(gw, sub, turn, chat)


def _turn(gw: Gateway, chat: ChatRequest, owner: str) -> TurnRequest:
    """Resolve the conversation and build the job payload."""
    if chat.conversation_id is not None:
        conversation = gw.store.get_owned(chat.conversation_id, owner)
        if conversation is None:
            raise conversation_not_found(chat.conversation_id, chat.conversation_param)
        # The upstream conversation already holds the earlier turns and instructions.
        conversation_id, continues, history, system = conversation.id, True, [], ""
    else:
        conversation_id, continues = new_conversation_id(), False
        history, system = [dict(m) for m in chat.history], chat.system
    return TurnRequest(
        completion_id=new_completion_id(),
        conversation_id=conversation_id,
        owner=owner,
        model=chat.model,
        prompt=chat.prompt,
        history=history,
        system=system,
        continues=continues,
        created=int(time.time()),
    )


def _start(gw: Gateway, turn: TurnRequest) -> Subscription:
    """Subscribe to the turn's relay channel, then enqueue it; 503 if Redis fails."""
    try:
        sub = gw.hub.subscribe(turn.completion_id)
    except TimeoutError as exc:
        raise redis_unavailable() from exc
    try:
        enqueue_turn(gw.queue, turn, gw.settings)
    except BaseException:
        sub.close()
        raise
    return sub


def _cleanup(gw: Gateway, sub: Subscription, completion_id: str, finished: bool) -> None:
    """Unsubscribe; unless the worker ended the turn, drop the queued job and ask it to stop.

    `finished` is False when the client went away, or we gave up on the worker: the
    job may still be queued (then a late worker never starts it) or running (then it
    sees the cancel flag), and nobody would read its answer.
    """
    try:
        if not finished:
            log.info("event=completion_abandoned completion_id=%s", completion_id)
            gw.queue.remove(completion_id)
            request_cancel(gw.redis, completion_id)
    except Exception:  # Redis is down: the job's own timeouts end it
        log.warning("event=cancel_failed completion_id=%s", completion_id, exc_info=True)
    finally:
        sub.close()


def _complete(gw: Gateway, sub: Subscription, turn: TurnRequest, chat: ChatRequest) -> Response:
    """Wait for the whole answer and return one `chat.completion` (or the error)."""
    answer = Answer(chat.messages)
    terminal: dict[str, Any] | None = None
    try:
        for event in watch(sub, gw.redis, turn.completion_id, gw.settings):
            if event is None:
                continue
            if event["type"] in TERMINAL:
                terminal = event
            answer.add(event)
    finally:
        _cleanup(gw, sub, turn.completion_id, terminal is not None and not terminal.get("synthetic"))
    if terminal is None or terminal["type"] == "error":  # watch only ends on a terminal event
        raise ApiError.from_event((terminal or {}).get("error") or {})
    return jsonify(
        completion(
            turn.completion_id,
            model=turn.model,
            created=turn.created,
            content=answer.content,
            finish_reason=answer.finish_reason,
            annotations=answer.annotations(),
            usage=answer.usage(),
        )
    )


def _stream(gw: Gateway, sub: Subscription, turn: TurnRequest, chat: ChatRequest) -> Response:
    """Hold briefly for the first event, then commit to a 200 SSE stream."""
    hold = gw.settings.stream_hold_seconds
    events: Iterator[dict[str, Any] | None] = watch(
        sub, gw.redis, turn.completion_id, gw.settings, hold=hold if hold > 0 else None
    )
    first: dict[str, Any] | None = None
    if hold > 0:
        try:
            first = next(events)
        except BaseException:
            _cleanup(gw, sub, turn.completion_id, False)
            raise
        if first is not None and first["type"] == "error":
            _cleanup(gw, sub, turn.completion_id, not first.get("synthetic"))
            raise ApiError.from_event(first.get("error") or {})
    completion_id = turn.completion_id

    def on_close(finished: bool) -> None:
        _cleanup(gw, sub, completion_id, finished)

    chunks = ChunkBuilder(
        completion_id, model=turn.model, created=turn.created, include_usage=chat.include_usage
    )
    body = EventStream(
        events,
        first,
        chunks=chunks,
        answer=Answer(chat.messages),
        on_close=on_close,
    )
    return Response(body, status=200, mimetype="text/event-stream", headers=SSE_HEADERS)
