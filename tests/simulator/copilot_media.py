"""The content of Copilot's richer turns: the cited answer (B7.2) and the image turn (B7.7).

Pure frame content and fixed, deterministic data; `copilot_turns` decides when each
piece is sent. The two web sources are the same ones the ChatHub `[sim:search]` answer
cites, so gateway tests can assert on one set of URLs for both dialects.
"""

from __future__ import annotations

import base64
import struct
import uuid
import zlib
from typing import Any
from urllib.parse import urlsplit

from tests.simulator.search import SOURCES

IMAGE_INTRO = "Sure, here it is."
PROGRESSION_TEXT = "Bringing your idea to life..."
IMAGE_BASE = "https://copilot.microsoft.com/th/id"


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
