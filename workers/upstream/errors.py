"""Upstream failures, raised by dialects and the transport, and what clients see of them.

    UpstreamError                 502 upstream_error: anything the upstream did wrong
     ├── Throttled                429 rate_limit_exceeded, retry_after seconds
     ├── ImageThrottled           429 image_quota_exceeded: the image quota only (chat still works)
     ├── AccountError             502, x-should-retry: false: the operator must act
     │    ├── CaptchaRequired     (ChatHub CaptchaChallenge)
     │    ├── ChallengeRequired   (Copilot Cloudflare / null-method challenge)
     │    ├── RegionBlocked       (Copilot chat-service-unavailable)
     │    └── Unauthorized        (UnauthorizedRequest, Forbidden, 401s)
     │         └── TokenExpired   (a signed-in Copilot access token refused: refresh it)
     ├── ConversationExpired      the upstream conversation is gone (InvalidSession); recoverable
     ├── ConversationLimitReached turn limit / Disengaged / TurnLimiter; recoverable
     ├── Interrupted              the socket dropped or closed mid-answer; `partial` text
     ├── Unreachable              502 upstream_unreachable: no connection (refused, no route, DNS)
 ├── UpstreamTimeout          504: no first frame, or silence mid-answer
     ├── InputTooLong             400 context_length_exceeded: the upstream refused the text's length
     └── ProtocolError            frames we cannot make sense of

Each class carries the attributes `service.errors.ApiError.from_exception` reads
(`status`, `error_type`, `code`, `param`, `should_retry`, `retry_after`): that is the only
coupling between these exceptions and the OpenAI error shape.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """The upstream failed this turn."""

    status: int = 502
    error_type: str = "api_error"
    code: str = "upstream_error"
    should_retry: bool | None = None
    retry_after: float | None = None


class Throttled(UpstreamError):
    """The upstream account hit its request cap."""

    status = 429
    error_type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 60.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ImageThrottled(UpstreamError):
    """Copilot's image quota is spent (`imageGenerated` with no image, only `nextAvailableAt`).

    Its own code, so the account pool does not cool the account: its chat still works.
    """

    status = 429
    error_type = "requests"
    code = "image_quota_exceeded"

    def __init__(self, message: str, *, retry_after: float = 60.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AccountError(UpstreamError):
    """The upstream account needs the operator's attention; retrying will not help."""

    code = "upstream_account_error"
    should_retry = False


class CaptchaRequired(AccountError):
    """The upstream wants a CAPTCHA solved in a browser with this account's cookies."""

    code = "upstream_captcha_required"


class ChallengeRequired(AccountError):
    """The upstream wants a browser-only challenge (Cloudflare/Turnstile) passed for this account."""

    code = "upstream_challenge_required"


class RegionBlocked(AccountError):
    """The upstream does not serve this account or egress region."""

    code = "upstream_region_unavailable"


class Unauthorized(AccountError):
    """The upstream rejected the account's credentials."""

    code = "upstream_unauthorized"


class TokenExpired(Unauthorized):
    """The account's signed-in access token was refused: expired (about hourly) or wrong audience.

    Distinct from bad cookies because the cure differs: the operator sends the account a
    fresh token (`PATCH /admin/accounts/{id}`); the message says so.
    """

    code = "upstream_token_expired"


class ConversationExpired(UpstreamError):
    """The upstream conversation no longer exists; start a new one."""

    code = "upstream_conversation_expired"


class ConversationLimitReached(UpstreamError):
    """The upstream conversation accepts no more turns; start a new one."""

    code = "upstream_conversation_limit"


class Interrupted(UpstreamError):
    """The upstream stopped mid-answer; `partial` is what had arrived."""

    code = "upstream_interrupted"

    def __init__(self, message: str, *, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial


class Unreachable(UpstreamError):
    """No connection to the upstream at all (refused, DNS, no route): repeated, it marks the account
    `unreachable` (service.accounts.health) so readiness and the admin listing say so."""

    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""

    status = 504
    code = "upstream_timeout"


class ProtocolError(UpstreamError):
    """The upstream sent something the dialect cannot interpret."""

    code = "upstream_protocol_error"


class InputTooLong(UpstreamError):
    """The upstream refused the message as too long (Copilot `text-too-long`).

    The gateway checks prompts against `service.limits` before enqueueing, so this
    arrives only if the upstream's limit moved: the client must shorten its messages.
    """

    status = 400
    error_type = "invalid_request_error"
    code = "context_length_exceeded"
    param = "messages"
    should_retry = False
