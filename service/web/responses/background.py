"""Responses that outlive their request: `background: true`, polling, and resumed streams.

A background response's turn runs detached: the request answers at once with the
response `queued` (or, with `stream: true`, streams its events as a reader that may go
away at any time), and a collector in this web process (a greenlet under gevent)
follows the turn to its end and stores the final response, as a non-streamed request
would have. `GET /v1/responses/{id}` polls the stored object; `?stream=true` streams
the response's events again from the relay's log, after `starting_after` (OpenAI's
sequence numbers), live if the turn still runs (`service.web.pipeline.replay`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from service.errors import ApiError, InvalidRequest
from service.events import TERMINAL
from service.state import streams
from service.state.relay import last_event
from service.state.response_store import ResponseStore
from service.tokens import count_messages
from service.turns import lease_key
from service.web.http.extension import Gateway
from service.web.pipeline import replay, resume
from service.web.pipeline.answer import Answer
from service.web.pipeline.enqueue import subscribe
from service.web.pipeline.request import ChatRequest
from service.web.pipeline.respond import MakeRenderer, answer_turn, collect
from service.web.pipeline.run import Run
from service.web.responses.objects import ResponseBuilder
from service.web.responses.objects import usage as response_usage
from service.web.responses.render import Keep, ResponseRenderer

log = logging.getLogger(__name__)


class StoredBuilder(ResponseBuilder):
    """Builds a response's objects from its stored form (a resumed stream has no request body)."""

    def __init__(self, template: dict[str, Any], item_id: str, *, prompt_tokens: int | None) -> None:
        self.template = template
        self.response_id = str(template["id"])
        self.item_id = item_id
        self.model = str(template.get("model", ""))
        self.created_at = int(template.get("created_at") or 0)
        self.conversation_id = str((template.get("conversation") or {}).get("id") or "")
        self.background = bool(template.get("background"))
        self.prompt_tokens = prompt_tokens or 0

    def response(
        self,
        status: str,
        output: list[dict[str, Any]] | None = None,
        *,
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        incomplete_details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        final = status in ("completed", "incomplete")
        return {
            **self.template,
            "status": status,
            "completed_at": (self.template.get("completed_at") or int(time.time())) if final else None,
            "error": error,
            "incomplete_details": incomplete_details,
            "output": output or [],
            "usage": usage,
        }

    def usage(self, answer: Answer) -> dict[str, Any]:
        return response_usage(self.prompt_tokens, answer.usage()["completion_tokens"])


def answer(gw: Gateway, run: Run, chat: ChatRequest, make: MakeRenderer) -> Response:
    """A background response's answer: `queued` at once (or its event stream); a collector runs it."""
    renderer = make(run, chat)
    assert isinstance(renderer, ResponseRenderer)
    response_id = run.turn.completion_id
    if not run.attached:
        renderer.keep_change({"status": "queued"})
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        threading.Thread(
            target=_collect, args=(app, gw, run, renderer), name="background", daemon=True
        ).start()
    elif not chat.stream:  # a retry by Idempotency-Key: the collector is already there
        store = ResponseStore(gw.redis, ttl=gw.settings.conversation_ttl)
        current = store.get(response_id, run.turn.owner)
        return jsonify(polled(gw, store, run.turn.owner, current or renderer.builder.response("queued")))
    if not chat.stream:
        return jsonify(renderer.builder.response("queued"))
    sub = subscribe(gw, run.turn.completion_id)
    sub.catch_up()
    reader = Run(run.turn, sub, idempotency_key=run.idempotency_key, attached=True, detached=True)
    return answer_turn(gw, reader, chat, make)


def _collect(app: Flask, gw: Gateway, run: Run, renderer: ResponseRenderer) -> None:
    """Follow a background turn to its end and store the final response (a cancelled one stays so)."""
    with app.app_context():
        try:  # counted here, off the request's path, for a resumed stream's usage
            tokens = count_messages(renderer.answer.messages)
            streams.note_prompt_tokens(gw.redis, run.turn.completion_id, tokens)
            done = collect(gw, run, renderer.answer)
        except ApiError as exc:
            renderer.refused(exc)
            return
        except Exception as exc:
            log.warning(
                "event=background_collect_failed completion_id=%s", run.turn.completion_id, exc_info=True
            )
            renderer.refused(ApiError.from_exception(exc))
            return
        renderer.complete(done)


def polled(gw: Gateway, store: ResponseStore, owner: str, found: dict[str, Any]) -> dict[str, Any]:
    """A stored response as a poll sees it.

    `queued` becomes `in_progress` once a worker has the turn; a turn that ended but whose
    result is not stored yet (its collector is a moment behind, or its web process is gone)
    is folded from the log and stored now.
    """
    status, response_id = found.get("status"), str(found["id"])
    if status not in ("queued", "in_progress"):
        return found
    last = last_event(gw.redis, response_id)
    record = streams.load(gw.redis, response_id, owner)
    if last is not None and last.get("type") in TERMINAL and record is not None:
        replay.fold_finished(gw, record, _renderer(store, owner, found, record, after=None))
        return store.get(response_id, owner) or found
    if status == "queued" and (last is not None or gw.redis.exists(lease_key(response_id))):
        return {**found, "status": "in_progress"}
    return found


def _renderer(
    store: ResponseStore | None,
    owner: str,
    found: dict[str, Any],
    record: streams.StreamRecord,
    *,
    after: int | None,
) -> ResponseRenderer:
    """A renderer for a stored response with no request body: its objects built from the stored one."""
    response_id = str(found["id"])
    builder = StoredBuilder(found, message_item_id(response_id), prompt_tokens=record.prompt_tokens)
    answer = Answer((), prompt_tokens=record.prompt_tokens or 0)
    keep = keeper(store, owner, response_id, fresh=lambda: builder.response("in_progress"), items=list)
    return ResponseRenderer(builder, answer, keep=keep, storing=store is not None, starting_after=after)


def message_item_id(response_id: str) -> str:
    """The answer's message item id, fixed by the response id so a re-rendered stream matches."""
    return "msg_" + response_id.removeprefix("resp_")


def stream_stored(gw: Gateway, store: ResponseStore, owner: str, response_id: str) -> Response | None:
    """`GET /v1/responses/{id}?stream=true`: the response's events after `starting_after`; None: 404."""
    found = store.get(response_id, owner)
    record = streams.load(gw.redis, response_id, owner)
    if found is None or record is None or record.surface != "responses":
        return None
    after = _starting_after()

    # A background response's collector stores its result; a resumed stream's reader is the only one left.
    storing = None if record.background else store

    def make(run: Run, chat: ChatRequest) -> ResponseRenderer:
        return _renderer(storing, owner, found, record, after=after)

    return replay.stream_again(gw, record, make)


def _starting_after() -> int | None:
    raw = request.args.get("starting_after")
    if raw is None:
        return resume.last_event_id()
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(
            f"Invalid 'starting_after': expected an integer sequence number, got {raw[:40]!r}.",
            param="starting_after",
        ) from None
    return max(-1, value)


def keeper(
    store: ResponseStore | None,
    owner: str,
    response_id: str,
    *,
    fresh: Callable[[], dict[str, Any]],
    items: Callable[[], list[dict[str, Any]]],
    listed: str | None = None,
) -> Keep:
    """Stores the response with a change applied; a cancelled one stays cancelled; items are kept once.

    `fresh()` is the in-progress response to start from and `items()` the input items, both
    only built when nothing is stored yet; `listed` is the conversation the response is
    listed with (`ResponseStore.save`).
    """

    def keep(change: dict[str, Any], *, only_if_new: bool = False) -> None:
        if store is None:
            return
        current = store.get(response_id, owner)
        if current is not None and (only_if_new or current.get("status") == "cancelled"):
            return
        kept = store.input_items(response_id, owner) if current is not None else None
        store.save(owner, {**(current or fresh()), **change}, kept if kept is not None else items(), listed)

    return keep
