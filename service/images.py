"""Image inputs, below every wire format: checked once, parked in Redis, named in the job.

A surface (Chat Completions `image_url`, Responses `input_image`, Anthropic `image`
blocks) reduces each image part to an `ImageInput`: the decoded bytes of a `data:` URI,
or an http(s) URL the *worker* fetches (`workers.image_fetch`, SSRF-checked) when
IMAGE_URL_FETCH is on. Errors name the part exactly as the client wrote it
(`messages[1].content[2].image_url`).

Bytes never ride in the RQ job: the web tier stores them under `image:<sha256>` for
IMAGE_TTL seconds (the same bytes twice are one key) and the job carries an `ImageRef`
(part, digest, type, size). Only the last user message's images go upstream; images in
earlier messages are what the upstream already saw (continued conversation) or are
described as `[image]` in the injected history (a new, seeded upstream conversation):
re-uploading a whole history's screenshots would cost more than it would tell the model.

Formats are sniffed from the magic bytes (png, jpeg, gif, webp); the declared media type
is not trusted. This module is plain: no Flask, no websocket code.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re
from typing import Any

from redis import Redis
from redis.client import Pipeline

from service.errors import InvalidRequest

IMAGE_TTL = 600
"""Seconds parked image bytes live: longer than a turn waits in the queue and runs."""
MARKER = "[image]"
"""How an image shows in transcript text (history matching, injected history)."""
FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
_DATA_URI = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.I)


def sniff(data: bytes) -> str | None:
    """The image format from its magic bytes (a FORMATS key), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """IMAGE_MAX_BYTES, IMAGE_MAX_PER_MESSAGE and whether URLs may be fetched."""

    max_bytes: int = 10 * 1024 * 1024
    max_per_message: int = 4
    url_fetch: bool = False


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """One checked image part: its bytes (a data: URI) or the URL the worker will fetch."""

    part: str
    data: bytes = b""
    mime: str = ""
    url: str = ""


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """What the job payload carries for one image: where its bytes are, or the URL to fetch."""

    part: str
    digest: str = ""
    mime: str = ""
    size: int = 0
    url: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-plain, for the job argument."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRef:
        """Rebuild from the job argument."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def marked(text: str, images: int) -> str:
    """A message's transcript text: one `[image]` line per image, then its text."""
    return "\n".join([MARKER] * images + ([text] if text else []))


def check_bytes(data: bytes, part: str, limits: ImageLimits) -> str:
    """The media type of `data` (sniffed), or a 400 naming `part` (too big, not an image we take)."""
    if len(data) > limits.max_bytes:
        raise InvalidRequest(
            f"Invalid '{part}': the image is {len(data)} bytes; this gateway accepts images of at most "
            f"{limits.max_bytes} bytes (IMAGE_MAX_BYTES).",
            param=part,
            code="image_too_large",
        )
    kind = sniff(data)
    if kind is None:
        raise InvalidRequest(
            f"Invalid '{part}': the image is not PNG, JPEG, GIF or WebP (checked from its bytes, "
            "not its declared type).",
            param=part,
            code="invalid_image_format",
        )
    return FORMATS[kind]


def parse_image_url(url: Any, part: str, limits: ImageLimits) -> ImageInput:
    """A `data:` URI or an http(s) URL as an `ImageInput`, or a 400 naming `part`."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(f"Invalid '{part}': expected an image URL or data: URI.", param=part)
    url = url.strip()
    if url[:5].lower() == "data:":
        match = _DATA_URI.match(url)
        if match is None:
            raise InvalidRequest(
                f"Invalid '{part}': a data: URI must be base64 (data:image/png;base64,...).",
                param=part,
                code="invalid_image_url",
            )
        return from_base64(url[match.end() :], part, limits)
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise InvalidRequest(
            f"Invalid '{part}': expected a data: URI or an http(s) URL.", param=part, code="invalid_image_url"
        )
    if not limits.url_fetch:
        raise InvalidRequest(
            f"Invalid '{part}': this gateway does not fetch image URLs; send the image as a data: URI "
            "(data:image/png;base64,...), or ask the operator to set IMAGE_URL_FETCH=on.",
            param=part,
            code="image_url_fetch_disabled",
        )
    return ImageInput(part=part, url=url)


def from_base64(payload: Any, part: str, limits: ImageLimits) -> ImageInput:
    """Base64 image bytes (a data: URI's payload, Anthropic's `source.data`), checked; 400s name `part`."""
    if not isinstance(payload, str):
        raise InvalidRequest(f"Invalid '{part}': expected base64 image data.", param=part)
    if len(payload) > limits.max_bytes * 4 // 3 + 4:
        check_bytes(b"\0" * (limits.max_bytes + 1), part, limits)  # too large, said one way
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"Invalid '{part}': the image data is not valid base64.", param=part, code="invalid_image_url"
        ) from None
    return ImageInput(part=part, data=data, mime=check_bytes(data, part, limits))


def responses_image(part: Any, where: str, limits: ImageLimits) -> ImageInput:
    """A Responses `input_image` part (`image_url`: a data: URI or URL; `file_id` is not supported)."""
    if part.get("file_id") is not None and part.get("image_url") is None:
        raise InvalidRequest(
            f"Invalid '{where}.file_id': this gateway has no Files API; send 'image_url' as a data: URI.",
            param=f"{where}.file_id",
        )
    return parse_image_url(part.get("image_url"), f"{where}.image_url", limits)


def anthropic_image(block: Any, where: str, limits: ImageLimits) -> ImageInput:
    """An Anthropic `image` block: `source` `base64` (`data`) or `url` (`url`)."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        return from_base64(source.get("data"), f"{where}.source.data", limits)
    if kind == "url":
        return parse_image_url(source.get("url"), f"{where}.source.url", limits)
    raise InvalidRequest(
        f"{where}.source: expected a 'base64' or 'url' image source", param=f"{where}.source"
    )


def check_count(count: int, part: str, limits: ImageLimits) -> None:
    """A 400 naming the first image part over IMAGE_MAX_PER_MESSAGE."""
    if count > limits.max_per_message:
        raise InvalidRequest(
            f"Invalid '{part}': at most {limits.max_per_message} images per message (IMAGE_MAX_PER_MESSAGE).",
            param=part,
            code="too_many_images",
        )


def image_key(digest: str) -> str:
    """Where parked image bytes live in Redis."""
    return f"image:{digest}"


def park(redis: Redis, images: tuple[ImageInput, ...], ttl: int = IMAGE_TTL) -> list[ImageRef]:
    """Store each data: image's bytes (one pipeline) and return the refs the job carries."""
    with redis.pipeline(transaction=False) as pipe:
        refs = park_in(pipe, images, ttl)
        if refs:
            pipe.execute()
    return refs


def park_in(pipe: Pipeline, images: tuple[ImageInput, ...], ttl: int = IMAGE_TTL) -> list[ImageRef]:
    """`park`'s commands queued on `pipe`, not sent (the web tier's gate sends them in its script)."""
    refs: list[ImageRef] = []
    for image in images:
        if image.url:
            refs.append(ImageRef(part=image.part, url=image.url))
            continue
        digest = hashlib.sha256(image.data).hexdigest()
        pipe.set(image_key(digest), image.data, ex=ttl)
        refs.append(ImageRef(part=image.part, digest=digest, mime=image.mime, size=len(image.data)))
    return refs


def unpark(redis: Redis, ref: ImageRef) -> bytes:
    """The parked bytes of `ref`; a 400 naming its part if they expired before the turn ran."""
    data = redis.get(image_key(ref.digest))
    if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != ref.digest:
        raise InvalidRequest(
            f"Invalid '{ref.part}': the image expired before the turn ran; please send it again.",
            param=ref.part,
            code="image_expired",
        )
    return data
