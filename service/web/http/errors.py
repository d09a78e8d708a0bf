"""The web tier's error handlers: every failure leaves as the surface's error JSON, never HTML.

Anthropic Messages routes (`/v1/messages…`) get Anthropic's shape (`ApiError.anthropic`);
every other route gets OpenAI's, described here.

SDKs parse `{"error": {"message", "type", "param", "code"}}` on every non-2xx
response and decide on retries from the status and the `Retry-After` /
`x-should-retry` headers, so the shape is the same whatever went wrong:

- `ApiError` (validation, auth, not found, relayed worker errors): its own status,
  `body()` and `headers()` — `service.errors` is the only place bodies are built;
- Redis unreachable: 503 `service_unavailable` with `Retry-After`, on every path;
- Redis full (`OOM command not allowed` at its maxmemory): 503 `storage_full`, on every path;
- werkzeug's routing errors: 404 `Invalid URL (POST /v1/foo)` as OpenAI words it, 405 alike;
- a body over MAX_REQUEST_BYTES: 413 `request_too_large`;
- anything else: a logged traceback and an opaque 500.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, g, jsonify, request
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service.errors import ApiError, ServiceUnavailable
from service.runtime import metrics

log = logging.getLogger(__name__)


def anthropic_surface() -> bool:
    """Whether this request is on the Anthropic Messages surface, whose errors have their own shape."""
    if request.blueprint == "messages":
        return True
    path = request.path.rstrip("/")
    if path.endswith("/models") and request.headers.get("anthropic-version"):
        return True  # Claude Code's model discovery (`service.web.model_list`)
    return path.endswith("/messages") or "/v1/messages/" in path


def error_response(error: ApiError) -> Response:
    """The JSON response for an `ApiError`: its status, body (in the surface's shape) and retry headers."""
    if anthropic_surface():
        status, body = error.anthropic()
        body["request_id"] = g.get("request_id")
        response = jsonify(body)
        response.status_code = status
    else:
        response = jsonify(error.body())
        response.status_code = error.status
    response.headers.update(error.headers())
    return response


REDIS_RETRY_AFTER = 5  # seconds; a Redis restart takes a few, and SDKs back off on their own too
REDIS_FULL_RETRY_AFTER = 30  # seconds; memory frees as keys expire or an operator acts, not at once
OUT_OF_MEMORY = "command not allowed when used memory"  # how Redis refuses a write at maxmemory (noeviction)


def redis_unavailable() -> ServiceUnavailable:
    """The error clients get when the gateway cannot reach its Redis (503, Retry-After)."""
    return ServiceUnavailable(
        "The gateway cannot reach its Redis right now; please retry shortly.",
        should_retry=True,
        retry_after=REDIS_RETRY_AFTER,
    )


def _api_error(error: ApiError) -> Response:
    if error.status >= 500:
        log.warning("event=request_failed status=%d code=%s", error.status, error.code)
    return error_response(error)


def out_of_memory(error: BaseException) -> bool:
    """Whether Redis refused a write because it is at its maxmemory (a command or a script's)."""
    return isinstance(error, OutOfMemoryError) or (
        isinstance(error, ResponseError) and OUT_OF_MEMORY in str(error)
    )


def redis_full() -> ServiceUnavailable:
    """The error clients get when Redis refuses writes at its `maxmemory` (503, Retry-After)."""
    return ServiceUnavailable(
        "The gateway's storage (Redis) is full: it reached its memory limit and refuses new data, "
        "so this request was not run or stored. Please retry later; operators: see "
        "docs/operating-redis.md.",
        code="storage_full",
        should_retry=True,
        retry_after=REDIS_FULL_RETRY_AFTER,
    )


def _redis_error(error: RedisError) -> Response:
    if out_of_memory(error):
        log.error("event=redis_out_of_memory detail=%s", str(error)[:200])
        metrics.REDIS_ERRORS.labels(tier="web").inc()
        return error_response(redis_full())
    log.warning("event=redis_unavailable error=%s detail=%s", error.__class__.__name__, error)
    metrics.REDIS_ERRORS.labels(tier="web").inc()
    return error_response(redis_unavailable())


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status == 404:
        message = f"Invalid URL ({request.method} {request.path})"
    elif status == 405:
        message = f"Invalid method for URL ({request.method} {request.path})"
    else:
        message = error.description or error.name
    api_error = ApiError(message, status=status, error_type="invalid_request_error" if status < 500 else None)
    response = error_response(api_error)
    allowed = getattr(error, "valid_methods", None)
    if status == 405 and allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def _too_large(error: RequestEntityTooLarge) -> Response:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    message = f"Request body too large: this gateway accepts at most {limit} bytes (MAX_REQUEST_BYTES)."
    return error_response(
        ApiError(message, status=413, error_type="invalid_request_error", code="request_too_large")
    )


def _unexpected(error: Exception) -> Response:
    log.exception("event=unhandled_exception path=%s", request.path)
    return error_response(ApiError("The server had an error while processing your request.", status=500))


def init_app(app: Flask) -> None:
    """Register the handlers; Flask picks the most specific one for each exception."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(RedisError, _redis_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(Exception, _unexpected)
