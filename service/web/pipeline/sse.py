"""Server-sent events: the one function every SSE byte goes through.

OpenAI streams `data: <json>\\n\\n` frames and ends with `data: [DONE]\\n\\n`. We also
send comment frames (`: text\\n\\n`), which every SSE parser ignores, for progress
notes and keep-alive heartbeats that stop proxies from closing an idle stream.
A newline inside a comment would end it early and turn the rest into a field line,
so comments are flattened to one line.

`FrameTemplate` is `frame` for the hot path: a text delta's frame differs from the one
before only in its text (and a sequence number), so the rest is encoded once, by `frame`
itself, and each delta encodes only its own values — byte for byte what `frame` writes.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring  # what json.dumps(ensure_ascii=False) writes a str with
from typing import Any

log = logging.getLogger(__name__)

DONE = "[DONE]"


def frame(
    data: Mapping[str, Any] | str | None = None,
    *,
    comment: str | None = None,
    event: str | None = None,
    id: int | None = None,
) -> str:
    """One SSE frame: a JSON `data:` frame, the literal `[DONE]` frame, or a comment.

    Pass a mapping for a JSON event, `DONE` for the terminator, or `comment=` for a
    comment line. `event=` adds an `event:` line (the Responses and Anthropic streams
    name every event); `id=` an `id:` line, the point a client resumes after (`Last-Event-ID`).
    """
    if comment is not None:
        flat = " ".join(comment.replace("\r", "\n").split("\n")).strip()
        return f": {flat}\n\n"
    if data == DONE:
        return f"data: {DONE}\n\n"
    if not isinstance(data, Mapping):
        raise TypeError("an SSE data frame needs a mapping or DONE")
    # json.dumps escapes control characters, so the payload is always one line.
    prefix = (f"id: {id}\n" if id is not None else "") + (f"event: {event}\n" if event else "")
    return f"{prefix}data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


class FrameTemplate:
    """`frame(build(*values), event=event, id=values[id_slot])`, with only the values encoded per call.

    `build` is called once with a unique marker string per value; `frame` encodes that,
    and the parts between the markers are kept. A call then joins the parts with its
    values encoded as `json.dumps` encodes them (a str, or an int). Anything else — or
    a `build` whose output does not hold each marker exactly once — takes `frame`'s own
    path, so the bytes never differ from it.
    """

    def __init__(
        self,
        build: Callable[..., Mapping[str, Any]],
        slots: int = 1,
        *,
        event: str | None = None,
        id_slot: int | None = None,
    ) -> None:
        self._build, self._event, self._id_slot = build, event, id_slot
        token = uuid.uuid4().hex
        markers = [f"\x00{token}:{index}\x00" for index in range(slots)]
        text = frame(build(*markers), event=event)
        quoted = [json.dumps(marker) for marker in markers]
        found = sorted((text.find(q), index) for index, q in enumerate(quoted))
        self._order: list[int] | None = [index for _, index in found]
        self._parts: list[str] = []
        if any(text.count(q) != 1 for q in quoted):
            self._order = None  # a value is used twice, or not as a JSON string: no template
            return
        start = 0
        for position, index in found:
            self._parts.append(text[start:position])
            start = position + len(quoted[index])
        self._parts.append(text[start:])

    def __call__(self, *values: Any) -> str:
        """The frame with `values` in their slots."""
        if self._order is None or not all(type(v) is str or type(v) is int for v in values):
            identity = values[self._id_slot] if self._id_slot is not None else None
            return frame(self._build(*values), event=self._event, id=identity)
        parts = self._parts
        pieces = [parts[0]]
        for number, index in enumerate(self._order, 1):
            value = values[index]
            pieces.append(encode_basestring(value) if type(value) is str else int.__repr__(value))
            pieces.append(parts[number])
        body = "".join(pieces)
        return body if self._id_slot is None else f"id: {values[self._id_slot]}\n{body}"
