"""Saying, once per response, which hosted tools the model was not offered (`service.tools.hosted`).

Every answer (JSON or stream, Responses or Messages) carries the header
`X-Gateway-Unoffered-Tools: web_search, local_shell, …`; a stream also starts with one SSE
comment line, `: gateway: hosted tools not offered to the model: …`, which SSE parsers
skip and a person reading the stream sees. Nothing is added when every tool was offered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from flask import Response

HEADER = "X-Gateway-Unoffered-Tools"


class _Prefixed:
    """A stream body with a first chunk in front; closing it closes the body (its clean-up runs)."""

    def __init__(self, first: bytes, body: Iterable[Any]) -> None:
        self.first = first
        self.body = body

    def __iter__(self) -> Iterator[Any]:
        yield self.first
        yield from self.body

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


def announce(response: Response, unoffered: tuple[str, ...]) -> Response:
    """`response` with the note of the tools left out (header; SSE comment on a stream)."""
    if not unoffered:
        return response
    listed = ", ".join(unoffered)
    response.headers[HEADER] = listed
    if response.mimetype == "text/event-stream" and response.is_streamed:
        comment = f": gateway: hosted tools not offered to the model: {listed}\n\n"
        # Bytes: a stream's body goes to the WSGI server as it is (`direct_passthrough`).
        response.response = _Prefixed(comment.encode(), response.response)
    return response
