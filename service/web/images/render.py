"""OpenAI's images response, rendered from the relayed `image` events of an image turn.

`{"created": …, "data": [{"url" | "b64_json", "revised_prompt"}]}` exactly as the
Images API returns it; `revised_prompt` only when Copilot said which prompt it drew
(its `generatingImage.prompt`), as OpenAI omits it when the model did not revise.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

from service.errors import ApiError
from service.events import Done, Image, RelayEvent
from service.turns import TurnRequest
from service.web.pipeline.answer import Answer
from service.web.pipeline.stream import Renderer

log = logging.getLogger(__name__)


def image_item(event: Mapping[str, Any], *, data: bytes | None = None) -> dict[str, Any]:
    """One `data` entry: the image's URL, or its bytes base64-encoded when `data` is given."""
    item: dict[str, Any]
    if data is not None:
        item = {"b64_json": base64.b64encode(data).decode()}
    elif event.get("b64_json"):  # the worker fetched the bytes (`response_format: b64_json`)
        item = {"b64_json": event["b64_json"]}
    else:
        item = {"url": event["url"]}
    prompt = str(event.get("prompt") or "").strip()
    if prompt:
        item["revised_prompt"] = prompt
    return item




def images_response(created: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole response body."""
    return {"created": created, "data": items}


class ImageAnswer(Answer):
    """An answer that also keeps the generated image's relay event as it came."""

    def __init__(self) -> None:
        super().__init__(())
        self.generated: Image | None = None

    def add(self, event: RelayEvent) -> None:
        super().add(event)
        if isinstance(event, Image):
            self.generated = event


class ImagesRenderer(Renderer):
    """An image generation through the pipeline: never streamed, one images response."""

    def __init__(self, turn: TurnRequest, response_format: str) -> None:
        super().__init__(ImageAnswer())
        self.turn = turn
        self.response_format = response_format

    def metered(self) -> Answer | None:
        return None  # an image costs no tokens of the key's budget

    def complete(self, done: Done) -> dict[str, Any]:
        generated = self.answer.generated if isinstance(self.answer, ImageAnswer) else None
        if generated is None:  # the worker fails such turns; this is a second line of defence
            raise ApiError("Copilot answered without an image.", status=502, code="no_image_generated")
        turn = self.turn
        log.info("event=image_generated completion_id=%s format=%s", turn.completion_id, self.response_format)
        return images_response(turn.created, [image_item(generated.to_json())])
