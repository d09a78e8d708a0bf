"""Chat completions after the request: `GET …/chat/completions/{id}` and its resumed stream.

A completion whose request had `store: true` is kept when it finishes (OpenAI's stored
completions: the `chat.completion` object with its `metadata`) and returned to its owner;
anyone else, like an unknown id, gets the same 404. With `?stream=true` the GET resumes
the completion's stream after `Last-Event-ID` (`service.web.pipeline.replay`), for a
request that had `store: true` or an Idempotency-Key (which, if sent, must be the same).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, g, jsonify, request

from service.errors import NotFound
from service.state import streams
from service.turns import TurnRequest
from service.web.chat.render import ChatRenderer
from service.web.http.extension import Gateway, gateway
from service.web.pipeline import replay, resume
from service.web.pipeline.request import ChatRequest
from service.web.pipeline.run import Run


def completion_not_found(completion_id: str) -> NotFound:
    """The 404 for a completion that does not exist (any more) or belongs to another key."""
    return NotFound(f"Completion with id '{completion_id}' not found.", param=None, code="not_found")


def keeper(gw: Gateway, owner: str, chat: ChatRequest) -> Callable[[dict[str, Any]], None] | None:
    """What a `store: true` completion's renderer hands its finished object to (None: keep nothing)."""
    if not chat.store_completion:
        return None
    return functools.partial(streams.save_completion, gw.redis, owner, ttl=gw.settings.conversation_ttl)


def renderer(
    run: Run, chat: ChatRequest, *, after: int | None = None, prompt_tokens: int | None = None
) -> ChatRenderer:
    """The Chat Completions renderer of a run (resuming after `after`, if set)."""
    return renderer_for(run.turn, chat, after=after, prompt_tokens=prompt_tokens)


def renderer_for(
    turn: TurnRequest, chat: ChatRequest, *, after: int | None = None, prompt_tokens: int | None = None
) -> ChatRenderer:
    """The Chat Completions renderer of a turn: storing it if asked, resuming after `after`."""
    made = ChatRenderer(
        turn,
        chat.messages,
        include_usage=chat.include_usage,
        prompt_tokens=prompt_tokens,
        keep=keeper(gateway(), turn.owner, chat),
        metadata=chat.metadata,
    )
    made.after = after
    return made


def get_completion(completion_id: str) -> Response:
    """A stored completion of the caller's, or its stream resumed after `Last-Event-ID`."""
    gw, owner = gateway(), g.owner
    if request.args.get("stream", "").lower() == "true":
        return _resume(gw, owner, completion_id)
    found = streams.stored_completion(gw.redis, completion_id, owner)
    if found is None:
        record = streams.load(gw.redis, completion_id, owner)
        if record is None or not record.store or record.surface != "chat":
            raise completion_not_found(completion_id)
        # Finished while nobody read it (e.g. in a disconnect's grace): keep it now, from the log.
        turn, chat = replay.turn_of(record), replay.request_of(record)
        fresh = renderer_for(turn, chat, prompt_tokens=record.prompt_tokens)
        if replay.fold_finished(gw, record, fresh) is None:
            raise completion_not_found(completion_id)
        found = streams.stored_completion(gw.redis, completion_id, owner)
        if found is None:
            raise completion_not_found(completion_id)
    return jsonify(found)


def _resume(gw: Gateway, owner: str, completion_id: str) -> Response:
    record = streams.load(gw.redis, completion_id, owner)
    key = request.headers.get("Idempotency-Key")
    if (
        record is None
        or record.surface != "chat"
        or (key is not None and key.strip() != record.idempotency_key)
    ):
        raise completion_not_found(completion_id)
    if not (record.store or record.idempotency_key):
        raise completion_not_found(completion_id)
    after = resume.last_event_id()
    make = functools.partial(renderer, after=after, prompt_tokens=record.prompt_tokens)
    return replay.stream_again(gw, record, make)
