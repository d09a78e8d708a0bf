"""OpenAI's images response, rendered from the relayed `image` events of an image turn.

`{"created": …, "data": [{"url" | "b64_json", "revised_prompt"}]}` exactly as the
Images API returns it; `revised_prompt` only when Copilot said which prompt it drew
(its `generatingImage.prompt`), as OpenAI omits it when the model did not revise.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any


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
