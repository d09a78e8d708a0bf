"""Server-sent events: the one function every SSE byte goes through.

OpenAI streams `data: <json>\\n\\n` frames and ends with `data: [DONE]\\n\\n`. We also
send comment frames (`: text\\n\\n`), which every SSE parser ignores, for progress
notes and keep-alive heartbeats that stop proxies from closing an idle stream.
A newline inside a comment would end it early and turn the rest into a field line,
so comments are flattened to one line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
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
