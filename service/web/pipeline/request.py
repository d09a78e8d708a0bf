"""The neutral request every surface parses into, its size bounds, and the checks they share.

A surface (Chat Completions, Responses, Messages, Images) turns its wire body into a
`ChatRequest`; the pipeline acts on that alone. `parse_body` reads any surface's JSON
body within the depth and value-count limits; `check_count`/`check_chars` enforce
MAX_MESSAGES and MAX_INPUT_CHARS with the 400s every surface sends. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from service.errors import InvalidRequest
from service.images import ImageInput, ImageLimits
from service.web.http.schema_errors import invalid
from service.web.pipeline import unicode_check

PARSE_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The API expects a JSON payload, but what was sent was not valid JSON.)"
)

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted; OpenAI's own schemas need far less."""

TOO_DEEP = f"The JSON body of your request nests arrays or objects more than {MAX_DEPTH} levels deep."

MAX_VALUES = 25_000
"""Most JSON values (every string, number, array, object...) one body may hold.

Validation costs tens of microseconds per value on the web tier's event loop, so a
4 MiB body of tiny values could hold the loop for seconds; a 2048-message chat with
tools needs a fraction of this.
"""


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Size limits a request must stay within (MAX_MESSAGES, MAX_INPUT_CHARS)."""

    max_messages: int = 2048
    max_input_chars: int = 400_000
    images: ImageLimits = dataclasses.field(default_factory=ImageLimits)


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """A validated request, reduced to what the gateway acts on.

    `prompt` is the last user message's text; `system` the system/developer texts;
    `history` the earlier turns as `{"role": "user"|"assistant", "content": str}`;
    `messages` every message as `{"role", "content"[, "name"]}` text, for token counting.
    `conversation_param` names where `conversation_id` came from, so a not-found
    error can point at it.
    """

    model: str
    prompt: str
    system: str = ""
    history: tuple[dict[str, str], ...] = ()
    messages: tuple[dict[str, str], ...] = ()
    stream: bool = False
    include_usage: bool = False
    conversation_id: str | None = None
    conversation_param: str | None = None
    # The last user message's images (`service.images`); its `prompt` is the text alone.
    images: tuple[ImageInput, ...] = ()
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """`service.tools.options.TurnOptions.to_json()`: tools, structured output, stop, token limit."""
    kind: str = "chat"
    """"chat", or "image": an image generation that must end in an image (`service.turns`)."""
    image_format: str = "url"
    """For an image turn: "url", or "b64_json" (the worker fetches the bytes)."""
    store_completion: bool = False
    """Chat Completions `store: true`: keep the finished completion for `GET …/completions/{id}`."""
    metadata: dict[str, str] | None = None
    """The request's `metadata`, echoed by a stored completion."""


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the 400 OpenAI sends for an unparseable body.

    Nesting beyond MAX_DEPTH is a 400 too: Python's parser gives up with a
    RecursionError somewhere near a thousand levels, and any recursive walk of a
    body just under that would fail later, further from the cause.
    """

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        body = json.loads(raw, parse_constant=reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(PARSE_ERROR, param=None) from None
    except RecursionError:
        raise InvalidRequest(TOO_DEEP, param=None, code="invalid_value") from None
    if not isinstance(body, dict):
        raise InvalidRequest(PARSE_ERROR, param=None)
    _check_shape(body)
    unicode_check.check(body)  # a lone surrogate: a 400 naming the field, not a 500 later
    return body


def _check_shape(body: dict[str, Any]) -> None:
    """400 if the body nests deeper than MAX_DEPTH or holds more than MAX_VALUES values.

    Iterative, so a deep body can never exhaust the stack; the field that pushes the
    count over the limit is named.
    """
    count = 0
    for name, value in body.items():
        stack: list[tuple[Any, int]] = [(value, 2)]
        while stack:
            item, depth = stack.pop()
            count += 1
            if count > MAX_VALUES:
                raise InvalidRequest(
                    f"Invalid '{name}': the request body holds more than {MAX_VALUES} JSON values "
                    "(strings, numbers, arrays, objects...); this gateway accepts no more.",
                    param=name,
                    code="invalid_value",
                )
            if isinstance(item, dict | list):
                if depth > MAX_DEPTH:
                    raise InvalidRequest(TOO_DEEP, param=None, code="invalid_value")
                children: Iterable[Any] = item.values() if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in children)


def check_count(count: int, bounds: Bounds, *, param: str = "messages") -> None:
    """400 if a request carries more messages (or input items) than MAX_MESSAGES; every surface."""
    if count > bounds.max_messages:
        raise invalid(
            param,
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{bounds.max_messages}, but got an array with length {count} instead.",
            "array_above_max_length",
        )


def check_chars(total: int, bounds: Bounds, *, param: str = "messages") -> None:
    """400 if a request's message text is longer in total than MAX_INPUT_CHARS; every surface."""
    if total > bounds.max_input_chars:
        raise invalid(
            param,
            f"Your messages are longer than this gateway accepts: at most {bounds.max_input_chars} "
            "characters of message text per request (MAX_INPUT_CHARS). "
            "Please reduce the length of the messages.",
            "context_length_exceeded",
        )
