"""The content of Copilot's richer turns: the cited answer (B7.2) and the image turn (B7.7).

Pure frame content and fixed, deterministic data; `copilot_turns` decides when each
piece is sent. The two web sources are the same ones the ChatHub `[sim:search]` answer
cites, so gateway tests can assert on one set of URLs for both dialects.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import uuid
import zlib
from typing import Any
from urllib.parse import urlsplit

from websockets.http11 import Response

from tests.simulator.http_util import http_response, json_response
from tests.simulator.search import SOURCES

IMAGE_INTRO = "Sure, here it is."
PROGRESSION_TEXT = "Bringing your idea to life..."
IMAGE_BASE = "https://copilot.microsoft.com/th/id"
GENERATED_PATH = "/th/id/"
"""Where generated images are served (the path of IMAGE_BASE), so `b64_json` clients can fetch them."""
ATTACHMENT_BASE = "https://copilot.microsoft.com/c/api/attachments"
IMAGE_REQUEST = re.compile(r"^\s*(create|draw|generate|make)\b.{0,40}?\bimage\b[^:]*:\s*", re.I)
"""How a user asks for a picture in plain words ("Create an image: …"); such a turn draws one."""


def cited_segments(prompt: str) -> list[tuple[str, tuple[str, str] | None]]:
    """The answer as text segments, each followed by the source (title, url) it cites, if any.

    Copilot puts no footnote markers in the text; the `citation` event itself follows the
    words it supports (B7.2).
    """
    (first, second) = SOURCES
    return [
        (f"Here is what I found about {prompt}", first),
        (" and a second source agrees", second),
        (".", None),
    ]


def icon_url(url: str) -> str:
    """A favicon URL for a source, as `citation.iconUrl` carries."""
    return f"https://{urlsplit(url).hostname}/favicon.ico"


def generating_image(message_id: str, part_id: str, prompt: str, seq: str) -> dict[str, Any]:
    """Image generation has started for `prompt`."""
    return {
        "event": "generatingImage",
        "messageId": message_id,
        "partId": part_id,
        "prompt": prompt,
        "progressionText": PROGRESSION_TEXT,
        "id": seq,
    }


def partial_image(message_id: str, part_id: str, step: int, seq: str) -> dict[str, Any]:
    """A progressive preview; `content` is a (tiny, real) base64 PNG that gets lighter each step."""
    shade = min(255, 64 * (step + 1))
    return {
        "event": "partialImageGenerated",
        "messageId": message_id,
        "partId": part_id,
        "content": base64.b64encode(png(shade, 0, 0)).decode(),
        "id": seq,
    }


def image_generated(message_id: str, part_id: str, seq: str) -> dict[str, Any]:
    """The final image: a Copilot-shaped `BCO.<uuid>.png` URL and its thumbnail."""
    url = f"{IMAGE_BASE}/BCO.{uuid.uuid4()}.png"
    return {
        "event": "imageGenerated",
        "messageId": message_id,
        "partId": part_id,
        "url": url,
        "thumbnailUrl": f"{url}/?w=270&qlt=90",
        "nextAvailableAt": None,
        "id": seq,
    }


def png(red: int, green: int, blue: int) -> bytes:
    """A valid 1×1 RGB PNG, so a client that decodes previews gets a real image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes([0, red, green, blue]))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def image_quota_exhausted(message_id: str, part_id: str, next_available_at: str, seq: str) -> dict[str, Any]:
    """`imageGenerated` without an image: the image quota is spent until `nextAvailableAt` (B4 [S])."""
    return {
        "event": "imageGenerated",
        "messageId": message_id,
        "partId": part_id,
        "url": None,
        "thumbnailUrl": None,
        "nextAvailableAt": next_available_at,
        "id": seq,
    }


def serve_generated(path: str) -> Response:
    """`GET /th/id/BCO.<uuid>.png`: the generated image's bytes (a real PNG, the same for every id)."""
    name = path[len(GENERATED_PATH) :]
    if not re.fullmatch(r"BCO\.[0-9a-f-]{36}\.png", name):
        return json_response(404, {"error": "no such image"})
    return http_response(200, png(40, 120, 200), "image/png")


def attachment(body: bytes, content_type: str, account: str) -> tuple[str, dict[str, Any]]:
    """A new attachment URL for uploaded image bytes, and the record `/_sim/attachments` shows."""
    url = f"{ATTACHMENT_BASE}/{uuid.uuid4()}"
    record = {
        "url": url,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "contentType": content_type,
        "account": account,
        "used": 0,
    }
    return url, record


def seen_images(urls: list[str], attachments: dict[str, dict[str, Any]]) -> str:
    """What the model says it sees: one sentence per attached image."""
    return "".join(
        f"I see an image ({attachments[url]['bytes']} bytes). " if url in attachments else "I see no image. "
        for url in urls
    )
