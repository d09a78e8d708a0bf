"""POST …/completions: OpenAI's Chat Completions surface on the shared turn pipeline.

Served on any path whose last segment is `completions` (`/v1/chat/completions`,
`/chat/completions`, `/openai/chat/completions`, …) because clients join base URLs in
every possible way. This module only parses (`chat.parse`) and names its renderer
(`chat.render.ChatRenderer`); the turn itself runs through `service.web.pipeline.submit`:

    auth (middleware) → read_body → parse_chat_request (bounds) → pipeline.submit
      → one `chat.completion` JSON, or SSE chunks
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug import exceptions as http

from service.web.chat import stored
from service.web.chat.parse import parse_chat_request
from service.web.chat.render import ChatRenderer
from service.web.http.body import read_body
from service.web.http.extension import gateway
from service.web.pipeline import resume
from service.web.pipeline.request import ChatRequest
from service.web.pipeline.run import Run
from service.web.pipeline.submit import parse_options, submit

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
    chat = parse_chat_request(raw, request.headers, **parse_options(gw))
    survives = resume.Resumable("chat", store=chat.store_completion, metadata=chat.metadata)
    return submit(gw, raw, chat, _renderer, resumable=survives)


@blueprint.get("/v1/chat/completions/<completion_id>")
@blueprint.get("/chat/completions/<completion_id>")
def get_chat_completion(completion_id: str) -> Response:
    """A stored completion, or (`?stream=true`) its stream resumed after `Last-Event-ID`."""
    return stored.get_completion(completion_id)


def _renderer(run: Run, chat: ChatRequest) -> ChatRenderer:
    # A retry attached to its earlier run resumes after the `Last-Event-ID` it sent, if any.
    return stored.renderer(run, chat, after=resume.last_event_id() if run.attached else None)
