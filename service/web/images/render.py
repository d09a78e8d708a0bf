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
    item: dict[str, Any] = (
        {"b64_json": base64.b64encode(data).decode()} if data is not None else {"url": event["url"]}
    )
    prompt = str(event.get("prompt") or "").strip()
    if prompt:
        item["revised_prompt"] = prompt
    return item


def image_generation_call(event: Mapping[str, Any], item_id: str, *, data: bytes | None) -> dict[str, Any]:
    """A Responses `image_generation_call` output item for a relayed `image` event.

    OpenAI's item carries the image as base64 in `result`; `data` is the fetched bytes, or
    None when they were not fetched (then `result` is null and the extension field `url`
    says where the image is). Responses renders chat-generated images with `data=None`:
    fetching every image's bytes inside a response would hold the answer up, and the URL
    is served by the upstream.
    """
    item: dict[str, Any] = {
        "type": "image_generation_call",
        "id": item_id,
        "status": "completed",
        "result": base64.b64encode(data).decode() if data is not None else None,
        "url": event.get("url"),
    }
    prompt = str(event.get("prompt") or "").strip()
    if prompt:
        item["revised_prompt"] = prompt
    return item


def images_response(created: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole response body."""
    return {"created": created, "data": items}
