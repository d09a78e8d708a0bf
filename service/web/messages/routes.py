"""Anthropic Messages (`POST /v1/messages`, `POST /v1/messages/count_tokens`) on the shared pipeline.

Parsing is `messages.parse`, rendering `messages.render` (its `MessageRenderer`); the turn runs through
`service.web.pipeline.submit` like every other surface, and errors on these routes are
rendered in Anthropic's shape by `service.web.http.errors`. Claude Code posts to
`/v1/messages?beta=true` (the query string does not affect routing) with an
`x-api-key` (see `service.web.http.auth`) and `anthropic-version` / `anthropic-beta`
headers, which are accepted: the gateway's answer does not depend on them.
"""

from __future__ import annotations

import functools

from flask import Blueprint, Response, g, jsonify, request

from service.tokens import count_messages
from service.turns import new_message_id
from service.web.http.body import read_body
from service.web.http.extension import gateway
from service.web.messages.parse import MessagesRequest, parse_messages_request
from service.web.messages.render import MessageBuilder, MessageRenderer
from service.web.pipeline import hosted_note
from service.web.pipeline.answer import Answer
from service.web.pipeline.request import ChatRequest
from service.web.pipeline.run import Run
from service.web.pipeline.submit import bounds, parse_options, submit

blueprint = Blueprint("messages", __name__)


@blueprint.post("/v1/messages")
@blueprint.post("/messages")
def create_message() -> Response:
    """Run one turn and answer as an Anthropic `message`, or its event stream."""
    gw = gateway()
    raw = read_body()
    req = parse_messages_request(raw, request.headers, **parse_options(gw))
    answer = submit(gw, raw, req.chat, functools.partial(_renderer, req), completion_id=new_message_id())
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
    g.model = req.chat.model  # labels this request's metrics (service.web.http.telemetry)
    return jsonify({"input_tokens": count_messages(req.chat.messages)})


def _renderer(req: MessagesRequest, run: Run, chat: ChatRequest) -> MessageRenderer:
    builder = MessageBuilder(run.turn.completion_id, model=req.model, messages=chat.messages)
    return MessageRenderer(builder, Answer(chat.messages))
