"""The bytes of an image Copilot generated, for an images request that asked for `b64_json`.

The worker, not the web tier, fetches them: the web tier never talks to the upstream.
The image is fetched from the upstream's own origin (COPILOT_URL) with the path of the
URL Copilot gave, never from a client-named host, within FETCH_TIMEOUT and
MAX_IMAGE_BYTES; a failure is the turn's 502 `image_fetch_failed`.
"""

from __future__ import annotations

import base64
import logging
from urllib.parse import urlsplit

import requests

from service.errors import ApiError

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 20.0
MAX_IMAGE_BYTES = 20 * 1024 * 1024


def fetch_b64(copilot_url: str, url: str) -> str:
    """The generated image at `url`, fetched from COPILOT_URL's origin, base64-encoded."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        response = requests.get(f"{copilot_url.rstrip('/')}{path}", timeout=FETCH_TIMEOUT)
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
    return base64.b64encode(data).decode()
