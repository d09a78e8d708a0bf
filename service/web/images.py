"""POST /v1/images/generations: a Copilot turn that asks for a picture and waits for it.

Not a second pipeline: the request becomes an ordinary turn job (`TurnRequest` with
`kind="image"`, a new conversation, the prompt worded as a request to draw) on the same
queue, relay and workers as chat. The worker fails the turn unless Copilot delivered an
`imageGenerated` (partial previews are ignored); a spent image quota (`imageGenerated`
with only `nextAvailableAt`) is a 429 with `Retry-After`. The view renders the relayed
`image` event as OpenAI's images response (`images_format`); for `b64_json` it fetches
the image bytes from the upstream's own origin (COPILOT_URL), never a client-named host.

Accepted: `prompt` (required), `n` (1 only: one turn draws one image), `size`,
`quality`, `style`, `user` (accepted; Copilot picks its own size and style), `model`
(optional: a catalog model, or an OpenAI image model name, which means `copilot`),
`response_format` `url` (default) or `b64_json`. ChatHub has no image creation this
gateway drives (Bing Image Creator is a separate site), so `UPSTREAM=bing` is a 400.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Response, g, jsonify

from service.errors import ApiError, InvalidRequest, NotFound
from service.models import find_model, unknown_model_message
from service.relay import TERMINAL
from service.turns import TurnRequest, new_completion_id, new_conversation_id
from service.web import admin, quota
from service.web.body import read_body
from service.web.extension import Gateway, gateway
from service.web.images_format import image_item, images_response
from service.web.pipeline import Run, _start
from service.web.stream import watch
from service.web.validation import parse_body

log = logging.getLogger(__name__)

blueprint = Blueprint("images", __name__)

IMAGE_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1")
"""OpenAI image model names clients send; each means the `copilot` model here."""
REQUEST_TEXT = "Create an image: {prompt}"
"""How the prompt is put to Copilot, which draws when asked in plain words (B6)."""
FORMATS = ("url", "b64_json")
FETCH_TIMEOUT = 20.0
MAX_IMAGE_BYTES = 20 * 1024 * 1024


@blueprint.route("/v1/images/generations", methods=["POST"])
@blueprint.route("/images/generations", methods=["POST"])
def generations() -> Response:
    """Generate one image for `prompt`."""
    gw = gateway()
    body = parse_body(read_body())
    prompt, model, response_format = _validate(body, gw.settings.upstream)
    g.model = model
    admin.admit()
    quota.admit(gw, model)  # the key's model access and limits, as for every turn
    created = int(time.time())
    turn = TurnRequest(
        completion_id=new_completion_id(),
        conversation_id=new_conversation_id(),
        owner=g.owner,
        model=model,
        prompt=REQUEST_TEXT.format(prompt=prompt),
        created=created,
        request_id=g.request_id,
        kind="image",
    )
    g.conversation_id = turn.conversation_id
    run = Run(turn, _start(gw, turn))
    image = _wait(gw, run)
    data = fetch_generated(gw, image["url"]) if response_format == "b64_json" else None
    log.info("event=image_generated completion_id=%s format=%s", turn.completion_id, response_format)
    return jsonify(images_response(created, [image_item(image, data=data)]))


def _validate(body: dict[str, Any], upstream: str) -> tuple[str, str, str]:
    """(prompt, model id, response_format), or a 400/404 naming the param."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest(
            "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter"
        )
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
        raise InvalidRequest(
            f"Invalid 'n': this gateway generates exactly one image per request, so 'n' must be 1, "
            f"but got {n!r} instead.",
            param="n",
        )
    response_format = body.get("response_format") or "url"
    if response_format not in FORMATS:
        raise InvalidRequest(
            f"Invalid 'response_format': expected 'url' or 'b64_json', but got {response_format!r}.",
            param="response_format",
        )
    for name in ("size", "quality", "style", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise InvalidRequest(f"Invalid '{name}': expected a string.", param=name)
    if upstream != "copilot":
        raise InvalidRequest(
            "Image generation needs UPSTREAM=copilot: this gateway does not drive Bing Image Creator "
            "for the ChatHub dialect.",
            param=None,
            code="image_generation_unsupported",
        )
    name = body.get("model") or "copilot"
    if not isinstance(name, str):
        raise InvalidRequest("Invalid 'model': expected a string.", param="model")
    spec = find_model("copilot" if name.strip().lower() in IMAGE_MODELS else name, upstream)
    if spec is None:
        raise NotFound(
            unknown_model_message(name),
            param="model",
            code="model_not_found",
        )
    return prompt.strip(), spec.id, response_format


def _wait(gw: Gateway, run: Run) -> dict[str, Any]:
    """The turn's generated image event; the turn's error if it failed."""
    image: dict[str, Any] | None = None
    terminal: dict[str, Any] | None = None
    try:
        for event in watch(run.sub, gw.redis, run.turn.completion_id, gw.settings):
            if event is None:
                continue
            if event["type"] in TERMINAL:
                terminal = event
            elif event["type"] == "image":
                image = event
    finally:
        run.close(gw, terminal)
    if terminal is None or terminal["type"] == "error":
        raise ApiError.from_event((terminal or {}).get("error") or {})
    if image is None:  # the worker fails such turns; this is a second line of defence
        raise ApiError("Copilot answered without an image.", status=502, code="no_image_generated")
    return image


def fetch_generated(gw: Gateway, url: str) -> bytes:
    """The image's bytes from the upstream's own origin (COPILOT_URL), for `b64_json`."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        response = requests.get(f"{gw.settings.copilot_url.rstrip('/')}{path}", timeout=FETCH_TIMEOUT)
        data = response.content if response.status_code == 200 else None
    except requests.RequestException as exc:
        log.warning("event=image_fetch_failed error=%s", type(exc).__name__)
        data = None
    if not data or len(data) > MAX_IMAGE_BYTES:
        raise ApiError(
            "Copilot generated the image but its bytes could not be fetched; ask for response_format "
            "'url' instead.",
            status=502,
            code="image_fetch_failed",
        )
    return data
