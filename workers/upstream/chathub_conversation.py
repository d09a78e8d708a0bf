"""A ChatHub conversation, without I/O: its persistable handle and how it is created.

`parse_create_response` turns the conversation-create reply (A1.1) into a `BingHandle`,
the JSON-plain state another worker needs to continue the conversation (A4);
`result_error` words a non-Success ChatHub `result` (A3.2) as the right
`workers.upstream.errors` exception, for the create reply and for a turn's final result
alike; `parse_expiry` reads the `conversationExpiryTime` a turn reports. Pure data to
data, tested from recorded replies with no sockets.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from workers.upstream.errors import (
    CaptchaRequired,
    ConversationExpired,
    ProtocolError,
    Throttled,
    Unauthorized,
    UpstreamError,
)

CONVERSATION_LIFETIME = 6 * 3600.0  # "Conversations expire after 06:00:00" (A4)
THROTTLE_RETRY_AFTER = 60.0
COOKIE_HINT = "refresh the Bing cookies in UPSTREAM_COOKIES"


@dataclasses.dataclass
class BingHandle:
    """What it takes to resume a ChatHub conversation from another worker (A4).

    JSON-plain so the conversation store can persist it. `invocation` counts completed
    turns; `account` is the id of the pool's account, because a conversation only
    works with the cookies that created it.
    """

    conversation_id: str
    client_id: str
    conversation_signature: str | None
    encrypted_signature: str | None
    expires_at: float
    invocation: int = 0
    account: str = ""
    turns_used: int = 0
    turns_max: int = 0
    # sha256 → blob URL of images this conversation already has: never uploaded twice.
    images: dict[str, str] = dataclasses.field(default_factory=dict)

    dialect = "bing"

    @property
    def fresh(self) -> bool:
        """No turn has been sent yet: history and system prompt must be injected."""
        return self.invocation == 0

    @property
    def exhausted(self) -> bool:
        """The conversation reached its turn limit; the next turn needs a new one."""
        return self.turns_max > 0 and self.turns_used >= self.turns_max

    def to_json(self) -> dict[str, Any]:
        """The handle as a JSON-plain dict, tagged with its dialect."""
        return {"dialect": self.dialect, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BingHandle:
        """Rebuild a stored handle, ignoring keys a newer worker may have added."""
        names = {field.name for field in dataclasses.fields(cls)}
        fields = {key: value for key, value in data.items() if key in names}
        account = fields.get("account")
        if isinstance(account, int) and not isinstance(account, bool):
            fields["account"] = f"env-{account + 1}"  # stored before the pool: the index (0 = env-1)
        return cls(**fields)

    def is_expired(self, now: float, margin: float = 60.0) -> bool:
        """Whether the conversation is (nearly) gone; the margin covers a turn in flight."""
        return now >= self.expires_at - margin


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def result_error(value: str, message: str, *, conversation_id: str = "", account: str = "") -> UpstreamError:
    """The exception for a non-Success ChatHub `result` (A3.2 table), worded for the operator."""
    detail = f"{value}: {message}" if message else value
    if value == "Throttled":
        return Throttled(f"Bing throttled account #{account} ({detail})", retry_after=THROTTLE_RETRY_AFTER)
    if value == "CaptchaChallenge":
        if "BingProdUnAuthenticatedUsers" in conversation_id:
            return CaptchaRequired(
                "Bing is challenging anonymous use with a CAPTCHA; configure a signed-in Bing "
                "account's cookies in UPSTREAM_COOKIES"
            )
        return CaptchaRequired(
            f"Bing wants a CAPTCHA solved for account #{account}: open "
            "https://www.bing.com/turing/captcha/challenge in a browser signed in with that "
            f"account, solve it, then {COOKIE_HINT}"
        )
    if value == "InvalidSession":
        return ConversationExpired(message or "the Bing conversation expired")
    if value in ("UnauthorizedRequest", "Forbidden"):
        return Unauthorized(f"Bing rejected account #{account} ({detail}); {COOKIE_HINT}")
    return UpstreamError(f"Bing answered {detail}")


def parse_create_response(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float, account: str = ""
) -> BingHandle:
    """Turn the conversation-create reply (A1.1) into a handle, or raise why not.

    Since Oct 2023 the signatures come in `X-Sydney-*` headers; before, the body had
    `conversationSignature`. Bing reports bad cookies as HTTP 200 with a non-Success
    `result`, and rate limiting as HTTP 404 (g4f's reading).
    """
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    result = data.get("result") if isinstance(data, dict) else None
    if isinstance(result, dict) and result.get("value") not in (None, "Success"):
        raise result_error(str(result["value"]), str(result.get("message") or ""), account=account)
    if status == 404:
        raise Throttled(
            "Bing answered 404 to conversation create, which means rate limiting; "
            "make fewer requests or reuse conversations",
            retry_after=THROTTLE_RETRY_AFTER,
        )
    if status in (401, 403):
        raise Unauthorized(f"Bing refused conversation create with HTTP {status}; {COOKIE_HINT}")
    if status == 429:
        raise Throttled("Bing rate-limited conversation create (HTTP 429)", retry_after=THROTTLE_RETRY_AFTER)
    if status != 200:
        raise UpstreamError(f"Bing conversation create failed with HTTP {status}")
    if not isinstance(data, dict):
        kind = _header(headers, "Content-Type") or "unknown content type"
        raise UpstreamError(f"Bing conversation create returned a non-JSON body ({kind}, {len(body)} bytes)")
    conversation_id, client_id = data.get("conversationId"), data.get("clientId")
    if not conversation_id or not client_id:
        raise ProtocolError("Bing conversation create returned no conversationId/clientId")
    return BingHandle(
        conversation_id=str(conversation_id),
        client_id=str(client_id),
        conversation_signature=_header(headers, "X-Sydney-Conversationsignature")
        or data.get("conversationSignature"),
        encrypted_signature=_header(headers, "X-Sydney-Encryptedconversationsignature")
        or data.get("encryptedConversationSignature"),
        expires_at=now + CONVERSATION_LIFETIME,
        account=account,
    )


def parse_expiry(text: str | None) -> float | None:
    """Epoch seconds of an ISO `conversationExpiryTime` (7 fractional digits), or None."""
    if not text:
        return None
    value = text.strip().replace("Z", "+00:00")
    if "." in value:  # older Pythons accept at most 6 fractional digits
        head, _, tail = value.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        value = f"{head}.{tail[: min(digits, 6)]}{tail[digits:]}"
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
