"""The Responses API (`POST …/responses` and the stored-response routes) on the shared turn pipeline.

Parsing is `responses.parse` (input items: `responses.input_items`), rendering `responses.render` (its
`ResponseRenderer`, over the objects of `responses.objects`); the turn
runs through `service.web.pipeline.submit` like every other surface. The response id (`resp_…`) is the
turn's completion id, so it is also the relay channel, the RQ job and — once the
turn is done — a pointer to its conversation: `previous_response_id` continues that
conversation through the ordinary conversation resolution (scoped to the API key; an
unknown or foreign id is a 404). Response objects are kept in `service.state.response_store`
for `GET`, `DELETE`, `input_items` and `cancel`, unless the request said `store: false`.
"""

from __future__ import annotations

import functools

from flask import Blueprint, Response, g, jsonify, request

from service.errors import NotFound
from service.state.response_store import ResponseStore
from service.turns import new_response_id, request_cancel
from service.web.http.body import read_body
from service.web.http.extension import Gateway, gateway
from service.web.http.paging import page
from service.web.pipeline import hosted_note, resume
from service.web.pipeline.answer import Answer
from service.web.pipeline.request import ChatRequest
from service.web.pipeline.respond import answer_turn
from service.web.pipeline.run import Run
from service.web.pipeline.submit import parse_options, submit
from service.web.responses import background
from service.web.responses.calls import previous_call_names
from service.web.responses.objects import ResponseBuilder
from service.web.responses.parse import ResponsesRequest, parse_responses_request
from service.web.responses.render import ResponseRenderer

blueprint = Blueprint("responses", __name__)


def _responses(gw: Gateway) -> ResponseStore:
    return ResponseStore(gw.redis, ttl=gw.settings.conversation_ttl)


def response_not_found(response_id: str, param: str | None = None) -> NotFound:
    """The 404 for a response that does not exist (any more) or belongs to another key."""
    code = "previous_response_not_found" if param == "previous_response_id" else "response_not_found"
    prefix = "Previous response" if param == "previous_response_id" else "Response"
    return NotFound(f"{prefix} with id '{response_id}' not found.", param=param, code=code)


@blueprint.post("/v1/responses")
@blueprint.post("/responses")
@blueprint.post("/<path:prefix>/responses")
def create_response(prefix: str = "") -> Response:
    """Run one turn and answer as a `response` object or its typed event stream."""
    gw = gateway()
    raw = read_body()
    req = parse_responses_request(
        raw,
        request.headers,
        **parse_options(gw),
        call_names=previous_call_names(_responses(gw), raw, g.owner),
    )
    make = functools.partial(_renderer, req, g.owner)
    survives = resume.Resumable(
        "responses", store=req.store, background=req.background, metadata=req.metadata
    )
    answer = background.answer if req.background else answer_turn
    try:
        answered = submit(
            gw,
            raw,
            req.chat,
            make,
            completion_id=new_response_id(),
            store=req.store,
            resumable=survives,
            answer=answer,
            param="input",
        )
        return hosted_note.announce(answered, req.unoffered)  # hosted tools left out: say so
    except NotFound as exc:
        if exc.code == "conversation_not_found" and req.previous_response_id:
            raise response_not_found(req.previous_response_id, "previous_response_id") from None
        raise


def _renderer(req: ResponsesRequest, owner: str, run: Run, chat: ChatRequest) -> ResponseRenderer:
    """The response's renderer, storing it unless `store` is false.

    The same run rendered again (a retry attached by Idempotency-Key, a grace's fold) gives
    the same objects: ids and creation time come from the turn. A retry resumes after the
    `Last-Event-ID` it sent (a sequence number), if any.
    """
    turn = run.turn
    builder = ResponseBuilder(
        turn.completion_id,
        background.message_item_id(turn.completion_id),
        req,
        model=req.echo["model"],
        conversation_id=turn.conversation_id,
        created_at=turn.created or None,
    )
    store = _responses(gateway()) if req.store else None
    fresh = functools.partial(builder.response, "in_progress")
    keep = background.keeper(
        store, owner, turn.completion_id, fresh=fresh, items=builder.input_items, listed=turn.conversation_id
    )
    after = resume.last_event_id() if run.attached else None
    return ResponseRenderer(
        builder, Answer(chat.messages), keep=keep, storing=store is not None, starting_after=after
    )


@blueprint.get("/v1/responses/<response_id>")
@blueprint.get("/responses/<response_id>")
def get_response(response_id: str) -> Response:
    """A stored response of the caller's, or (`?stream=true`) its events after `starting_after`."""
    gw = gateway()
    store = _responses(gw)
    if request.args.get("stream", "").lower() == "true":
        streamed = background.stream_stored(gw, store, g.owner, response_id)
        if streamed is None:
            raise response_not_found(response_id)
        return streamed
    found = store.get(response_id, g.owner)
    if found is None:
        raise response_not_found(response_id)
    return jsonify(background.polled(gw, store, g.owner, found))


@blueprint.delete("/v1/responses/<response_id>")
@blueprint.delete("/responses/<response_id>")
def delete_response(response_id: str) -> Response:
    """Forget a stored response (its conversation stays)."""
    if not _responses(gateway()).delete(response_id, g.owner):
        raise response_not_found(response_id)
    return jsonify({"id": response_id, "object": "response", "deleted": True})


@blueprint.get("/v1/responses/<response_id>/input_items")
@blueprint.get("/responses/<response_id>/input_items")
def list_input_items(response_id: str) -> Response:
    """The input items of a stored response, as OpenAI pages them (`order`, `limit`, `after`)."""
    items = _responses(gateway()).input_items(response_id, g.owner)
    if items is None:
        raise response_not_found(response_id)
    return page(items)


@blueprint.post("/v1/responses/<response_id>/cancel")
@blueprint.post("/responses/<response_id>/cancel")
def cancel_response(response_id: str) -> Response:
    """Stop a running response's turn; a finished one is returned as it is."""
    gw = gateway()
    store = _responses(gw)
    found = store.get(response_id, g.owner)
    if found is None:
        raise response_not_found(response_id)
    if found.get("status") in ("in_progress", "queued"):
        request_cancel(gw.redis, response_id)  # a queued turn sees it as it starts
        found = store.update(response_id, g.owner, status="cancelled") or found
    return jsonify(found)
