"""Anthropic Messages (`POST /v1/messages`, `POST /v1/messages/count_tokens`) on the shared pipeline.

Parsing is `messages_request`, rendering `messages_format`; the turn runs through
`service.web.pipeline` like every other surface, and errors on these routes are
rendered in Anthropic's shape by `service.web.errors`. Claude Code posts to
`/v1/messages?beta=true` (the query string does not affect routing) with an
`x-api-key` (see `service.web.auth`) and `anthropic-version` / `anthropic-beta`
headers, which are accepted: the gateway's answer does not depend on them.
"""

from __future__ import annotations

import functools
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from service.tokens import count_messages
from service.turns import new_message_id
from service.web import hosted_note
from service.web.body import read_body
from service.web.extension import Gateway, gateway
from service.web.messages_format import MessageBuilder, MessageStream
from service.web.messages_request import MessagesRequest, parse_messages_request
from service.web.openai_format import Answer
from service.web.pipeline import SSE_HEADERS, Run, bounds, collect, hold_first, submit
from service.web.validation import ChatRequest

blueprint = Blueprint("messages", __name__)


@blueprint.post("/v1/messages")
@blueprint.post("/messages")
def create_message() -> Response:
    """Run one turn and answer as an Anthropic `message`, or its event stream."""
    gw = gateway()
    raw = read_body()
    req = parse_messages_request(
        raw,
        request.headers,
        upstream=gw.settings.upstream,
        bounds=bounds(gw),
        aliases=gw.settings.model_aliases,
        tool_emulation=gw.settings.tool_emulation,
    )
    answer = submit(gw, raw, req.chat, functools.partial(_respond, req), completion_id=new_message_id())
    return hosted_note.announce(answer, req.unoffered)  # server tools left out: say so


@blueprint.post("/v1/messages/count_tokens")
@blueprint.post("/messages/count_tokens")
def count_tokens() -> Response:
    """The request's input tokens, counted as for every answer's usage."""
    gw = gateway()
    req = parse_messages_request(
        read_body(),
        request.headers,
        upstream=gw.settings.upstream,
        bounds=bounds(gw),
        aliases=gw.settings.model_aliases,
        count_only=True,
    )
    g.model = req.chat.model  # labels this request's metrics (service.web.telemetry)
    return jsonify({"input_tokens": count_messages(req.chat.messages)})


def _respond(req: MessagesRequest, gw: Gateway, run: Run, chat: ChatRequest) -> Response:
    builder = MessageBuilder(run.turn.completion_id, model=req.model, messages=chat.messages)
    answer = run.answer = Answer(chat.messages)
    if not chat.stream:
        done = collect(gw, run, answer)
        return jsonify(builder.complete(answer, done))
    events, first = hold_first(gw, run)

    def on_close(terminal: dict[str, Any] | None) -> None:
        run.close(gw, terminal)

    body = MessageStream(events, first, builder=builder, answer=answer, on_close=on_close)
    return Response(body, status=200, mimetype="text/event-stream", headers=SSE_HEADERS)
