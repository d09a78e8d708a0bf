"""The Bing Chat "ChatHub" dialect, without I/O.

ChatHub is SignalR's JSON protocol over a websocket: every record is a JSON object
terminated by 0x1E, one socket carries one turn (handshake, ping, one type-4 "chat"
invocation, then type-1 updates, a type-2 result and a type-3 completion). See Part A
of shared/reference/upstream-protocols.md.

This module only turns data into data, so it is tested from recorded frames with no
sockets: it builds the outgoing records (`HANDSHAKE`, `PING`, `build_invocation`) and
parses the conversation-create reply (`parse_create_response`) into a persistable
`BingHandle`; `workers.upstream.chathub_decode` turns incoming records into the
dialect-neutral events of `workers.upstream.events`, raising `workers.upstream.errors`
for failures.
The clock, request ids and timestamps are passed in; `workers.upstream.transport`
owns the sockets and `workers.upstream.chathub_client` combines the two.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from workers.upstream.context import TurnInput, flatten_context
from workers.upstream.errors import (
    CaptchaRequired,
    ConversationExpired,
    ProtocolError,
    Throttled,
    Unauthorized,
    UpstreamError,
)

RS = "\x1e"
CONVERSATION_LIFETIME = 6 * 3600.0  # "Conversations expire after 06:00:00" (A4)
THROTTLE_RETRY_AFTER = 60.0
TONES = ("Creative", "Balanced", "Precise")
COOKIE_HINT = "refresh the Bing cookies in UPSTREAM_COOKIES"

# Flags every client sends whatever the tone (A2 table); unknown flags are accepted.
COMMON_OPTIONS = (
    "nlu_direct_response_filter",
    "deepleo",
    "disable_emoji_spoken_text",
    "responsible_ai_policy_235",
    "enablemm",
    "dv3sugg",
    "autosave",
    "iyxapbing",
    "iycapbing",
    "eredirecturl",
    "nojbfedge",
)
TONE_OPTIONS = {"Creative": "h3imaginative", "Balanced": "galileo", "Precise": "h3precise"}
GPT4_TURBO_OPTION = "gpt4tmncnp"
# Omitting a type suppresses those messages; we want progress and the limit signals.
ALLOWED_MESSAGE_TYPES = (
    "Chat",
    "InternalSearchQuery",
    "InternalSearchResult",
    "InternalLoaderMessage",
    "Disengaged",
    "GenerateContentQuery",
)
CONTEXT_MESSAGE_ID = "discover-web--page-ping-mriduna-----"
LOCALE, MARKET, REGION = "en-US", "en-US", "US"


def encode(record: dict[str, Any]) -> str:
    """One outgoing record: compact JSON terminated by the record separator."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False) + RS


def split_records(message: str | bytes) -> list[dict[str, Any]]:
    """Every record in one websocket message (the server coalesces several at times)."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    records = []
    for piece in message.split(RS):
        piece = piece.strip()
        if not piece:
            continue
        try:
            record = json.loads(piece)
        except ValueError as exc:
            raise ProtocolError(f"ChatHub sent a record that is not JSON: {piece[:80]!r}") from exc
        if not isinstance(record, dict):
            raise ProtocolError(f"ChatHub sent a record that is not an object: {piece[:80]!r}")
        records.append(record)
    return records


HANDSHAKE = encode({"protocol": "json", "version": 1})
PING = encode({"type": 6})


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


KBLOB_PATH = "/images/kblob"
BLOB_URL = "https://www.bing.com/images/blob?bcid={blob_id}"


def kblob_body(image: bytes, *, conversation_id: str, tone: str, boundary: str) -> tuple[bytes, str]:
    """The multipart body of an image upload to `/images/kblob` (A1.1) and its content type.

    Part `knowledgeRequest` (the JSON the public clients send) and part `imageBase64`.
    """
    request = {
        "imageInfo": {},
        "knowledgeRequest": {
            "invokedSkills": ["ImageById"],
            "subscriptionId": "Bing.Chat.Multimodal",
            "invokedSkillsRequestData": {"enableFaceBlur": True},
            "convoData": {"convoid": conversation_id, "convotone": tone},
        },
    }
    parts = [("knowledgeRequest", json.dumps(request).encode()), ("imageBase64", base64.b64encode(image))]
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
        for name, value in parts
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def parse_kblob_response(status: int, body: bytes) -> str:
    """The blob URL a kblob upload answered with (`blobId`), else an UpstreamError."""
    try:
        data = json.loads(body) if status == 200 else None
    except ValueError:
        data = None
    blob_id = data.get("blobId") if isinstance(data, dict) else None
    if not isinstance(blob_id, str) or not blob_id:
        raise UpstreamError(f"Bing did not accept the image upload (HTTP {status})")
    return BLOB_URL.format(blob_id=quote(blob_id, safe=""))


def option_sets(tone: str, gpt4_turbo: bool) -> list[str]:
    """The feature flags for a tone; the tone's core flag is what selects the model."""
    if tone not in TONE_OPTIONS:
        raise ValueError(f"tone must be one of {', '.join(TONES)}, not {tone!r}")
    options = [*COMMON_OPTIONS, TONE_OPTIONS[tone]]
    if gpt4_turbo:
        options.append(GPT4_TURBO_OPTION)
    return options


def build_invocation(
    handle: BingHandle,
    turn: TurnInput,
    *,
    request_id: str,
    trace_id: str,
    timestamp: str,
    image_url: str | None = None,
) -> str:
    """The type-4 `chat` record for one turn (A2, A7.1).

    History goes in `previousMessages` only when the conversation starts: after that
    the upstream has its own memory of the turns.
    """
    start = handle.invocation == 0
    argument: dict[str, Any] = {
        "source": "cib",
        "optionsSets": option_sets(turn.tone, turn.gpt4_turbo),
        "allowedMessageTypes": list(ALLOWED_MESSAGE_TYPES),
        "sliceIds": [],
        "verbosity": "verbose",
        "scenario": "SERP",
        "traceId": trace_id,
        "isStartOfSession": start,
        "requestId": request_id,
        "message": {
            "locale": LOCALE,
            "market": MARKET,
            "region": REGION,
            "timestamp": timestamp,
            "author": "user",
            "inputMethod": "Keyboard",
            "text": turn.text,
            "messageType": "Chat",
            "requestId": request_id,
            "messageId": request_id,
        },
        "tone": turn.tone,
    }
    if image_url:  # vision: the kblob upload's blob URL (A1.1)
        argument["message"]["imageUrl"] = argument["message"]["originalImageUrl"] = image_url
    if handle.conversation_signature:
        argument["conversationSignature"] = handle.conversation_signature
    argument["participant"] = {"id": handle.client_id}
    argument["conversationId"] = handle.conversation_id
    context = flatten_context(turn.history, turn.system, turn.max_context_chars) if start else ""
    if context:
        argument["previousMessages"] = [
            {
                "author": "user",
                "description": context,
                "contextType": "WebPage",
                "messageType": "Context",
                "messageId": CONTEXT_MESSAGE_ID,
            }
        ]
    return encode(
        {"arguments": [argument], "invocationId": str(handle.invocation), "target": "chat", "type": 4}
    )
