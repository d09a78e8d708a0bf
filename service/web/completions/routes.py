"""POST /v1/completions (and /completions): OpenAI's legacy Completions on the shared pipeline.

`client.completions.create(model=…, prompt=…)` posts here. Stateless, as OpenAI's is: the
turn runs with `store: false` (nothing kept). `max_tokens` is honoured when given (OpenAI's
default of 16 tokens is not applied: an unset limit answers in full); `echo` puts the prompt
ahead of the text. These exact paths win over Chat Completions' catch-all `…/completions`.
"""

from __future__ import annotations

import functools

from flask import Blueprint, Response

from service.turns import new_token
from service.web.completions.parse import parse_legacy_request
from service.web.completions.render import LegacyRenderer
from service.web.http.body import read_body
from service.web.http.extension import gateway
from service.web.pipeline.request import ChatRequest
from service.web.pipeline.run import Run
from service.web.pipeline.submit import parse_options, submit

blueprint = Blueprint("legacy_completions", __name__)


@blueprint.post("/v1/completions")
@blueprint.post("/completions")
def create_completion() -> Response:
    """One legacy completion, streamed or not."""
    gw = gateway()
    raw = read_body()
    chat, echo = parse_legacy_request(raw, **parse_options(gw))
    make = functools.partial(_renderer, echo)
    return submit(gw, raw, chat, make, completion_id=f"cmpl-{new_token()}", store=False)


def _renderer(echo: str, run: Run, chat: ChatRequest) -> LegacyRenderer:
    return LegacyRenderer(run.turn, chat.messages, echo=echo, include_usage=chat.include_usage)
