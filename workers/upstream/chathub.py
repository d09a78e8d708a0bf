"""The Bing Chat "ChatHub" dialect, without I/O.

ChatHub is SignalR's JSON protocol over a websocket: every record is a JSON object
terminated by 0x1E, one socket carries one turn (handshake, ping, one type-4 "chat"
invocation, then type-1 updates, a type-2 result and a type-3 completion). See Part A
of shared/reference/upstream-protocols.md.

This module only turns data into data, so it is tested from recorded frames with no
sockets: it builds the outgoing records (`HANDSHAKE`, `PING`, `build_invocation`),
parses the conversation-create reply (`parse_create_response`) into a persistable
`BingHandle`, and decodes incoming records (`ChatHubDecoder`) into the dialect-neutral
events of `workers.upstream.events`, raising `workers.upstream.errors` for failures.
The clock, request ids and timestamps are passed in; `workers.upstream.transport`
owns the sockets and `workers.upstream.bing` combines the two.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from workers.upstream.errors import (
    CaptchaRequired,
    ConversationExpired,
    ConversationLimitReached,
    Interrupted,
    ProtocolError,
    Throttled,
    Unauthorized,
    UpstreamError,
)
from workers.upstream.events import Citation, Done, Event, Limits, Progress, Suggestions, TextDelta

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
    turns; `account` indexes the configured cookie pool, because a conversation only
    works with the cookies that created it.
    """

    conversation_id: str
    client_id: str
    conversation_signature: str | None
    encrypted_signature: str | None
    expires_at: float
    invocation: int = 0
    account: int = 0
    turns_used: int = 0
    turns_max: int = 0

    def to_json(self) -> dict[str, Any]:
        """The handle as a JSON-plain dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BingHandle:
        """Rebuild a stored handle, ignoring keys a newer worker may have added."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def is_expired(self, now: float, margin: float = 60.0) -> bool:
        """Whether the conversation is (nearly) gone; the margin covers a turn in flight."""
        return now >= self.expires_at - margin


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def result_error(value: str, message: str, *, conversation_id: str = "", account: int = 0) -> UpstreamError:
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
    status: int, headers: Mapping[str, str], body: bytes, *, now: float, account: int = 0
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


@dataclasses.dataclass(frozen=True)
class TurnInput:
    """One user turn as ChatHub needs it; history and system only matter on a new conversation."""

    text: str
    tone: str
    gpt4_turbo: bool = False
    history: tuple[tuple[str, str], ...] = ()
    system: str = ""
    max_context_chars: int = 32000


def flatten_context(history: Sequence[tuple[str, str]], system: str, max_chars: int) -> str:
    """Earlier messages as the `previousMessages` page text that ChatHub reads as context (A2).

    Over `max_chars`, the system block stays (cut only if it alone is too long) and the
    newest messages that fit are kept: the oldest whole messages go first, since the
    model needs the recent exchange most and a cut message reads as garbage.
    """
    system_block = f"[system](#additional_instructions)\n{system}" if system.strip() else ""
    blocks = []
    for role, content in history:
        if role not in ("user", "assistant"):
            raise ValueError(f"history role must be 'user' or 'assistant', not {role!r}")
        if content.strip():
            blocks.append(f"[{role}](#message)\n{content}")
    if len(system_block) >= max_chars:
        return system_block[:max_chars]
    kept: list[str] = []
    used = len(system_block)
    for block in reversed(blocks):
        cost = len(block) + (2 if used else 0)
        if used + cost > max_chars:
            break
        kept.append(block)
        used += cost
    kept.reverse()
    return "\n\n".join(([system_block] if system_block else []) + kept)


def option_sets(tone: str, gpt4_turbo: bool) -> list[str]:
    """The feature flags for a tone; the tone's core flag is what selects the model."""
    if tone not in TONE_OPTIONS:
        raise ValueError(f"tone must be one of {', '.join(TONES)}, not {tone!r}")
    options = [*COMMON_OPTIONS, TONE_OPTIONS[tone]]
    if gpt4_turbo:
        options.append(GPT4_TURBO_OPTION)
    return options


def build_invocation(
    handle: BingHandle, turn: TurnInput, *, request_id: str, trace_id: str, timestamp: str
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


def _meta_text(message: Mapping[str, Any]) -> str:
    """A progress message's display text: `text`, else the card's first inline run."""
    text = message.get("text")
    if isinstance(text, str) and text:
        return text
    for card in message.get("adaptiveCards") or []:
        for block in card.get("body") or []:
            for inline in block.get("inlines") or []:
                if inline.get("text"):
                    return str(inline["text"])
    return ""


def _limits(throttling: Any) -> Limits | None:
    if not isinstance(throttling, dict):
        return None
    try:
        return Limits(
            used=int(throttling.get("numUserMessagesInConversation", 0)),
            max=int(throttling.get("maxNumUserMessagesInConversation", 0)),
        )
    except (TypeError, ValueError):
        return None


class ChatHubDecoder:
    """Incoming ChatHub records of one turn → dialect-neutral events (A3).

    The answer arrives as cumulative text per bot message, so the decoder keeps what
    it already emitted and yields only the extension; `text` is everything emitted,
    which is the answer the client saw even when the server later rewrites or retracts
    it. Failures raise `UpstreamError` subclasses; `done` turns True with `Done`.
    """

    def __init__(self, *, account: int = 0) -> None:
        self.account = account
        self.done = False
        self.text = ""
        self.limits: Limits | None = None
        self.expiry_time: str | None = None
        self._message_id: object = None
        self._accumulated = ""  # the current message's text as far as it was emitted
        self._retracted = False
        self._refused = False
        self._announced: set[tuple[str, object]] = set()
        self._has_result = False

    def feed(self, record: Mapping[str, Any]) -> list[Event]:
        """The events one incoming record yields (possibly none)."""
        kind = record.get("type")
        if kind == 1:
            return self._update(record)
        if kind == 2:
            return self._result(record)
        if kind == 3:
            if record.get("error") and not self.done:
                raise UpstreamError(f"ChatHub completed the turn with an error: {record['error']}")
            if not self._has_result:
                raise ProtocolError("ChatHub completed the turn without sending a result")
            return []
        if kind == 7 and not self.done:
            reason = record.get("error") or "the server closed the conversation"
            raise Interrupted(f"ChatHub closed mid-answer: {reason}", partial=self.text)
        return []  # 6 = ping; anything else is not ours to interpret

    def _update(self, record: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        for argument in record.get("arguments") or []:
            if not isinstance(argument, dict):
                continue
            limits = _limits(argument.get("throttling"))
            if limits:
                self.limits = limits
                events.append(limits)
            if "cursor" in argument:  # the server starts writing a fresh text block
                self._message_id, self._accumulated = None, ""
            for message in argument.get("messages") or []:
                events.extend(self._message(message))
        return events

    def _message(self, message: Mapping[str, Any]) -> list[Event]:
        if message.get("author") != "bot":
            return []
        message_type = message.get("messageType")
        if message_type in ("InternalSearchQuery", "InternalLoaderMessage"):
            kind = "search" if message_type == "InternalSearchQuery" else "loader"
            key = (kind, message.get("messageId"))
            text = _meta_text(message)
            if key in self._announced or not text:
                return []
            self._announced.add(key)
            return [Progress(kind, text)]
        if message_type or message.get("contentOrigin") == "TurnLimiter":
            return []  # tool calls, cards, limit notices: not answer text
        if message.get("contentOrigin") == "Apology":
            if self.text and not self._refused:
                self._retracted = True  # keep what the client already has; stop there
                return []
            self._refused = True
        return self._stream(message)

    def _stream(self, message: Mapping[str, Any]) -> list[Event]:
        text = message.get("text")
        if self._retracted or not isinstance(text, str):
            return []
        message_id = message.get("messageId")
        if message_id != self._message_id:
            self._message_id, self._accumulated = message_id, ""
        if len(text) <= len(self._accumulated) or not text.startswith(self._accumulated):
            return []  # a rewrite: wait until the text extends what was emitted again
        delta = text[len(self._accumulated) :]
        self._accumulated = text
        self.text += delta
        return [TextDelta(delta)]

    def _result(self, record: Mapping[str, Any]) -> list[Event]:
        self._has_result = True
        item = record.get("item") or {}
        result = item.get("result") or {}
        value = result.get("value")
        if item.get("conversationExpiryTime"):
            self.expiry_time = str(item["conversationExpiryTime"])
        if value is None:
            raise ProtocolError("ChatHub sent a result without a value")
        if value != "Success":
            message = str(result.get("message") or result.get("error") or "")
            conversation_id = str(item.get("conversationId") or "")
            raise result_error(str(value), message, conversation_id=conversation_id, account=self.account)
        bots = [m for m in item.get("messages") or [] if isinstance(m, dict) and m.get("author") == "bot"]
        limiter = next((m for m in bots if _is_limit_notice(m)), None)
        if limiter is not None and not self.text:
            raise ConversationLimitReached(
                str(limiter.get("text") or "the Bing conversation accepts no more turns")
            )
        answers = [m for m in bots if not m.get("messageType") and m.get("contentOrigin") != "TurnLimiter"]
        answer = answers[-1] if answers else {}
        events = self._catch_up(answer)
        finish = "content_filter" if self._retracted or self._refused else "stop"
        if finish == "stop":
            events.extend(_citations(answer.get("sourceAttributions")))
        suggestions = _suggestions(answer.get("suggestedResponses"))
        if suggestions:
            events.append(Suggestions(suggestions))
        limits = _limits(item.get("throttling"))
        if limits:
            self.limits = limits
            events.append(limits)
        events.append(Done(text=self.text, finish_reason=finish))
        self.done = True
        return events

    def _catch_up(self, answer: Mapping[str, Any]) -> list[Event]:
        """Text the final answer has beyond the last update (or all of it if none streamed)."""
        if not answer:
            return []
        if answer.get("contentOrigin") == "Apology" and self.text and not self._refused:
            self._retracted = True
            return []
        if answer.get("messageId") == self._message_id or not self.text:
            if not self.text and answer.get("contentOrigin") == "Apology":
                self._refused = True
            return self._stream(answer)
        return []


def _is_limit_notice(message: Mapping[str, Any]) -> bool:
    """Bing's "I've reached my limit" / "I prefer not to continue" messages (A3.2)."""
    return message.get("contentOrigin") == "TurnLimiter" or message.get("messageType") == "Disengaged"


def _suggestions(responses: Any) -> tuple[str, ...]:
    return tuple(str(s["text"]) for s in responses or [] if isinstance(s, dict) and s.get("text"))


def _citations(attributions: Any) -> list[Event]:
    """One `Citation` per distinct URL; the index stays the `[^N^]` marker's number."""
    events: list[Event] = []
    seen: set[str] = set()
    for position, source in enumerate(attributions or []):
        url = source.get("seeMoreUrl") if isinstance(source, dict) else None
        if not url or url in seen:
            continue
        seen.add(url)
        events.append(Citation(position + 1, str(url), str(source.get("providerDisplayName") or url)))
    return events
