"""Copilot's failure events as exceptions, without I/O (B3, B7.3, B7.6).

`message_error` words a `chatMessageError` (a throttle carries its `nextAvailableAt`,
read by `retry_after`), `turn_error` an `error` event by its `errorCode`; both return
an exception of the `workers.upstream.errors` tree for `CopilotDecoder` to raise, with
a hint the operator can act on.

Two exception classes are specific to this dialect and live here rather than in the
shared tree: `InvalidEvent` (a `ProtocolError` the client logs with the frames that
caused it) and `ModeNotAvailable` (a 400 `model_not_available`: the caller asked for a
model the account may not use, so it is the client's request that must change).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from workers.upstream.cloudflare import OPERATOR_HINT
from workers.upstream.copilot import CREDENTIALS_HINT, THROTTLE_RETRY_AFTER
from workers.upstream.errors import (
    InputTooLong,
    Interrupted,
    ProtocolError,
    RegionBlocked,
    Throttled,
    Unauthorized,
    UpstreamError,
)

CLEARANCE_HINT = "clearance required — " + OPERATOR_HINT
REGION_HINT = (
    "Copilot is not available to this account from this region: sign in (UPSTREAM_COOKIES / "
    "COPILOT_ACCESS_TOKEN) or use an egress in a supported region"
)


class InvalidEvent(ProtocolError):
    """Copilot rejected one of our frames (`invalid-event`): wrong order, duplicate or malformed."""


class ModeNotAvailable(UpstreamError):
    """The requested Copilot mode is not allowed for this account (`unsupported-mode`)."""

    status = 400
    error_type = "invalid_request_error"
    code = "model_not_available"
    should_retry = False


def retry_after(next_available_at: Any, now: float) -> float:
    """Seconds until an ISO `nextAvailableAt`, at least 1; the default when it cannot be read."""
    if not isinstance(next_available_at, str) or not next_available_at:
        return THROTTLE_RETRY_AFTER
    try:
        moment = datetime.fromisoformat(next_available_at.strip())
    except ValueError:
        return THROTTLE_RETRY_AFTER
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(1.0, moment.timestamp() - now)


def message_error(event: Mapping[str, Any], *, account: str, clock: Callable[[], float]) -> UpstreamError:
    """The exception for a `chatMessageError`: a throttle with its wait, else a refused message."""
    code = event.get("errorCode")
    raw_detail = event.get("errorDetail")
    detail: Mapping[str, Any] = raw_detail if isinstance(raw_detail, dict) else {}
    if code == "throttled" or detail.get("type") == "throttled":
        moment = detail.get("nextAvailableAt") or event.get("nextAvailableAt")
        wait = retry_after(moment, clock())
        until = f" until {moment}" if isinstance(moment, str) and moment else ""
        return Throttled(f"Copilot throttled account #{account}{until}", retry_after=wait)
    return UpstreamError(f"Copilot refused the message: {_describe(code, event)}")


def turn_error(event: Mapping[str, Any], *, account: str, mode: str) -> UpstreamError:
    """The exception for an `error` event, by its `errorCode` (B3, B7.6)."""
    code = event.get("errorCode")
    if code == "invalid-event":
        return InvalidEvent(f"Copilot rejected a frame of ours: {_describe(code, event)}")
    if code == "chat-service-unavailable":
        return RegionBlocked(REGION_HINT)
    if code == "text-too-long":
        return InputTooLong(
            "Copilot refused the message as too long (text-too-long). "
            "Please reduce the length of the messages."
        )
    if code in ("unauthorized", "invalid-token"):
        return Unauthorized(f"Copilot rejected the account's credentials ({code}): {CREDENTIALS_HINT}")
    if code == "unsupported-mode":
        return ModeNotAvailable(
            f"Copilot does not allow mode {mode!r} for this account (unsupported-mode); "
            "choose another model or configure a signed-in account"
        )
    return UpstreamError(f"Copilot failed the turn: {_describe(code, event)}")


def _describe(code: object, event: Mapping[str, Any]) -> str:
    """`errorCode` plus any human text, which clients find in `message` or `error` (B3 [U])."""
    text = event.get("message") or event.get("error")
    parts = [str(code) if code else "unknown error", str(text) if isinstance(text, str) and text else ""]
    return ": ".join(part for part in parts if part)


def refused_unheard(exc: UpstreamError, heard: int) -> bool:
    """Whether a parked socket's turn failed before the server took its `send` (retry on a fresh one).

    The socket closed before any frame (`heard` 0: dropped while parked), or its only frame
    was `invalid-event`: Copilot refuses a frame it will not act on (out of order, duplicate,
    a socket state it no longer holds) and never answers it, so the fresh socket's `send` is
    the turn's only accepted one.
    """
    if isinstance(exc, InvalidEvent):
        return heard == 1
    return not heard and isinstance(exc.__cause__, Interrupted)
