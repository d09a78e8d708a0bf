"""POST /v1/images/generations: a Copilot turn that asks for a picture and waits for it.

Not a second pipeline: the request goes through `pipeline.submit` like every surface
(admission, quota, Idempotency-Key, log binding) as an ordinary turn with `kind="image"`
and the prompt worded as a request to draw, on the same queue, relay and workers as chat.
The worker fails the turn unless Copilot delivered an `imageGenerated` (partial previews
are ignored); a spent image quota (`imageGenerated` with only `nextAvailableAt`) is a 429
with `Retry-After`. The view renders the relayed
`image` event as OpenAI's images response (`images.render`); for `b64_json` the worker
adds the bytes, fetched from the upstream's own origin (COPILOT_URL), to that event
(`workers.generated_image`), so the web tier never talks to the upstream.

Accepted: `prompt` (required), `n` (1 only: one turn draws one image), `size`,
`quality`, `style`, `user` (accepted; Copilot picks its own size and style), `model`
(optional: a catalog model, or an OpenAI image model name, which means `copilot`),
`response_format` `url` (default) or `b64_json`. ChatHub has no image creation this
gateway drives (Bing Image Creator is a separate site), so `UPSTREAM=bing` is a 400.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from service.errors import InvalidRequest, NotFound
from service.limits import check_prompt
from service.models import find_model, unknown_model_message
from service.web.http.body import read_body
from service.web.http.extension import gateway
from service.web.images.render import ImagesRenderer
from service.web.pipeline.request import ChatRequest, parse_body
from service.web.pipeline.run import Run
from service.web.pipeline.submit import submit

blueprint = Blueprint("images", __name__)

IMAGE_MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1")
"""OpenAI image model names clients send; each means the `copilot` model here."""
REQUEST_TEXT = "Create an image: {prompt}"
"""How the prompt is put to Copilot, which draws when asked in plain words (B6)."""
FORMATS = ("url", "b64_json")


@blueprint.route("/v1/images/generations", methods=["POST"])
@blueprint.route("/images/generations", methods=["POST"])
def generations() -> Response:
    """Generate one image for `prompt`."""
    gw = gateway()
    raw = read_body()
    prompt, model, response_format = _validate(parse_body(raw), gw.settings.upstream)
    # Bounded like a message: a prompt over one upstream turn would otherwise be primed in parts.
    check_prompt(REQUEST_TEXT.format(prompt=prompt), gw.settings.upstream, param="prompt")
    chat = ChatRequest(
        model=model, prompt=REQUEST_TEXT.format(prompt=prompt), kind="image", image_format=response_format
    )
    return submit(gw, raw, chat, _renderer)


def _renderer(run: Run, chat: ChatRequest) -> ImagesRenderer:
    return ImagesRenderer(run.turn, chat.image_format)


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
