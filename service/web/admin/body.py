"""The JSON body of an admin request, whatever Content-Type the client sent.

The admin key already proves who is calling, so a `curl -d '{…}'` (which sends
`application/x-www-form-urlencoded`) must not be refused for its header: the body is
read as JSON under any content type, as the chat routes do. A body that is not JSON is
a 400 that names the content type it came with, so the caller sees what went wrong.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request

from service.errors import InvalidRequest
from service.web.http.body import read_body
from service.web.pipeline.request import TOO_DEEP, parse_body


def admin_json() -> Any:
    """The parsed body (None when empty), or a 400 naming the content type when it is not JSON."""
    raw = read_body()
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidRequest(TOO_DEEP, param=None, code="invalid_value") from None
    except (ValueError, UnicodeDecodeError):
        kind = request.content_type or "none"
        raise InvalidRequest(
            f"The body must be a JSON object; it is not valid JSON (Content-Type: {kind}).", param=None
        ) from None
    # An object is held to the API surfaces' bounds: depth, value count, lone surrogates (400s).
    return parse_body(raw) if isinstance(value, dict) else value
