"""POST …/completions: OpenAI's Chat Completions surface on the shared turn pipeline.

Served on any path whose last segment is `completions` (`/v1/chat/completions`,
`/chat/completions`, `/openai/chat/completions`, …) because clients join base URLs in
every possible way. This module only parses (`validation.parse_chat_request`) and
renders (`openai_format`, `sse.EventStream`); the turn itself runs through
`service.web.pipeline`:

    auth (middleware) → read_body → parse_chat_request (bounds) → pipeline.submit
      → one `chat.completion` JSON, or SSE chunks

`/v1/completions` with a `prompt` is the legacy Completions API (`legacy_completions`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug import exceptions as http

from service.web import legacy_completions
from service.web.body import read_body
from service.web.extension import Gateway, gateway
from service.web.openai_format import Answer, ChunkBuilder, completion
from service.web.pipeline import SSE_HEADERS, Run, bounds, collect, hold_first, submit
from service.web.sse import EventStream
from service.web.validation import ChatRequest, parse_chat_request

blueprint = Blueprint("completions", __name__)

ENDPOINT = "completions"


@blueprint.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def chat_completions(path: str) -> Response:
    """The Chat Completions endpoint; any other path that reaches here is a 404."""
    if path.rstrip("/").rsplit("/", 1)[-1] != ENDPOINT:
        raise http.NotFound()
    if request.method != "POST":
        raise http.MethodNotAllowed(valid_methods=["POST"])
    gw = gateway()
    raw = read_body()
    if legacy_completions.is_legacy(path, raw):  # /v1/completions with a `prompt`
        return legacy_completions.create(raw)
    chat = parse_chat_request(
        raw,
        request.headers,
        upstream=gw.settings.upstream,
        bounds=bounds(gw),
        aliases=gw.settings.model_aliases,
        tool_emulation=gw.settings.tool_emulation,
    )
    return submit(gw, raw, chat, _respond)


def _respond(gw: Gateway, run: Run, chat: ChatRequest) -> Response:
    return _stream(gw, run, chat) if chat.stream else _complete(gw, run, chat)


def _complete(gw: Gateway, run: Run, chat: ChatRequest) -> Response:
    """Wait for the whole answer and return one `chat.completion` (or the error)."""
    turn = run.turn
    answer = run.answer = Answer(chat.messages)
    collect(gw, run, answer)
    return jsonify(
        completion(
            turn.completion_id,
            model=turn.model,
            created=turn.created,
            content=answer.content,
            finish_reason=answer.finish_reason,
            annotations=answer.annotations(),
            usage=answer.usage(),
            images=answer.images,
            tool_calls=answer.tool_calls,
        )
    )


def _stream(gw: Gateway, run: Run, chat: ChatRequest) -> Response:
    """Hold briefly for the first event, then commit to a 200 SSE stream."""
    turn = run.turn
    events, first = hold_first(gw, run)

    def on_close(terminal: dict[str, Any] | None) -> None:
        run.close(gw, terminal)

    chunks = ChunkBuilder(
        turn.completion_id, model=turn.model, created=turn.created, include_usage=chat.include_usage
    )
    run.answer = Answer(chat.messages)
    body = EventStream(events, first, chunks=chunks, answer=run.answer, on_close=on_close)
    return Response(body, status=200, mimetype="text/event-stream", headers=SSE_HEADERS)
