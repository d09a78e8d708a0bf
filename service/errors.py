"""The gateway's error tree and the one place errors become wire shapes (OpenAI's; Anthropic's too).

    ApiError                         any failure a client sees: status + OpenAI error body
     ├── InvalidRequest              400 invalid_request_error, names the offending `param`
     ├── AuthenticationFailed        401 invalid_api_key
     ├── NotFound                    404 (model_not_found, conversation_not_found, ...)
     ├── RateLimited                 429 rate_limit_exceeded, with Retry-After
     ├── ServiceUnavailable          503 (no worker picked the turn up, Redis down)
     └── UpstreamUnavailable         503 upstream_unavailable: no upstream account can take
                                     turns until the operator acts (x-should-retry: false)

Upstream failures are raised in the worker as `workers.upstream.errors.UpstreamError`
subclasses. They cross to the web tier as plain JSON (`ApiError.to_event()`), built by
`ApiError.from_exception`, which reads the class attributes every such exception carries
(`status`, `error_type`, `code`, `should_retry`, `retry_after`, optional `param`), so this module never
imports worker code. The web tier renders every error through `ApiError.body()`.
"""

from __future__ import annotations

import math
from typing import Any

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's error `type` for each status it uses."""


class ApiError(Exception):
    """A failure rendered to the client as OpenAI's `{"error": {...}}` body."""

    status: int = 500
    error_type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if error_type is not None:
            self.error_type = error_type
        if code is not None:
            self.code = code
        self.param = param
        self.retry_after = retry_after
        self.should_retry = should_retry

    def body(self) -> dict[str, Any]:
        """OpenAI's error object, exactly: message, type, param, code."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic(self) -> tuple[int, dict[str, Any]]:
        """The same failure in Anthropic's shape: (status, `{"type": "error", "error": {type, message}}`).

        Anthropic has one error type per status; where it would say the service is
        overloaded (our 503: no worker, upstream unavailable) it uses 529.
        """
        status = 529 if self.status == 503 else self.status
        kind = ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return status, {"type": "error", "error": {"type": kind, "message": self.message}}

    def headers(self) -> dict[str, str]:
        """Headers that tell SDKs whether and when to retry."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return headers

    def to_event(self) -> dict[str, Any]:
        """JSON-plain form for the relay; `from_event` inverts it."""
        return {
            "status": self.status,
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
            "param": self.param,
            "retry_after": self.retry_after,
            "should_retry": self.should_retry,
        }

    @classmethod
    def from_event(cls, data: dict[str, Any]) -> ApiError:
        """Rebuild an error that crossed the relay as `to_event()` output."""
        return cls(
            str(data.get("message") or "The upstream failed."),
            status=int(data.get("status") or 502),
            error_type=data.get("type") or "api_error",
            code=data.get("code"),
            param=data.get("param"),
            retry_after=data.get("retry_after"),
            should_retry=data.get("should_retry"),
        )

    @classmethod
    def from_exception(cls, exc: BaseException) -> ApiError:
        """Turn any exception into an ApiError; unknown ones become an opaque 500."""
        if isinstance(exc, ApiError):
            return exc
        status = getattr(exc, "status", None)
        if not isinstance(status, int):
            return cls("The gateway failed while running this turn.", status=500, code="internal_error")
        return cls(
            str(exc) or exc.__class__.__name__,
            status=status,
            error_type=getattr(exc, "error_type", "api_error"),
            code=getattr(exc, "code", None),
            param=getattr(exc, "param", None),
            retry_after=getattr(exc, "retry_after", None),
            should_retry=getattr(exc, "should_retry", None),
        )


class InvalidRequest(ApiError):
    """The request body or a parameter is invalid; `param` names it."""

    status = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None, code: str | None = None) -> None:
        super().__init__(message, param=param, code=code)


class AuthenticationFailed(ApiError):
    """Missing or unknown API key."""

    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(ApiError):
    """A model, conversation or route that does not exist (or is not the caller's)."""

    status = 404
    error_type = "invalid_request_error"


class RateLimited(ApiError):
    """Too many requests; `retry_after` seconds says when to come back."""

    status = 429
    error_type = "requests"
    code = "rate_limit_exceeded"


class ServiceUnavailable(ApiError):
    """The gateway cannot serve the turn now (no worker, Redis unreachable)."""

    status = 503
    error_type = "api_error"
    code = "service_unavailable"


class UpstreamUnavailable(ApiError):
    """No upstream account can take the turn until the operator acts; the message says what to do."""

    status = 503
    error_type = "api_error"
    code = "upstream_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, should_retry=False)
