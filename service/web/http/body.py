"""Reading a request body within MAX_REQUEST_BYTES, whether it has a Content-Length or not.

Werkzeug refuses a declared Content-Length over `MAX_CONTENT_LENGTH` with a 413, but a
chunked body (no Content-Length; gunicorn sets `wsgi.input_terminated`) is only read up
to the limit and silently cut there: the client would get a confusing "not valid JSON"
400 for a body that was merely too large. Every API surface reads its body here.
"""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from service.web.pipeline.request import parse_body


def read_body() -> bytes:
    """The whole request body, or `RequestEntityTooLarge` (413) if it is over the limit."""
    data = request.get_data(cache=False)
    limit = request.max_content_length
    # Werkzeug stopped at the limit: one byte more on the raw stream means the body was longer.
    if limit is not None and len(data) >= limit and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return data


def read_json_or_none() -> dict[str, Any] | None:
    """The body as a JSON object through `pipeline.request.parse_body` (bounded depth and size, a
    400 for bad JSON), or None when it is empty; the admin API reads its bodies here."""
    raw = read_body()
    return parse_body(raw) if raw.strip() else None
