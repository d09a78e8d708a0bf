"""Copilot `/c/api/chat` frame building and client-frame reading (Part B of upstream-protocols.md).

Pure functions, no I/O and no state besides the per-socket `Sequence`: they build the
JSON events the server sends (B3, B7) and read the events a client sends (B2) leniently,
returning the protocol problems they saw so the session can record them as violations.
`copilot_turns` decides *which* events a turn sends; this module only knows *what they
look like*.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
from typing import Any

CLIENT_EVENTS = frozenset({"setOptions", "reportLocalConsents", "send", "challengeResponse"})
"""The events a client may send (B1.3, B2); anything else is a violation."""

FORBIDDEN_SEND_FIELDS = ("tone", "toneId", "messageId")
"""Fields a `send` must not carry (B2: a 2026 test asserts they are absent)."""

ERROR_ID = "0.0002"
"""The fractional id captured on `invalid-event` rejections and the throttle's null challenge."""

TEXT_LIMIT = 10_240
"""Longest user text (and, conservatively, page context) Copilot accepts: `text-too-long` above (B5a)."""
SUGGESTIONS = ("Can you show me what you can do?", "Tell me a fun fact")
UNAUTHORIZED_TEXT = "Invalid or expired access token"
INTERNAL_TEXT = "Something went wrong"


def encode(*events: dict[str, Any]) -> str:
    """One websocket text message: the events' JSON back to back, no separator (B7.3)."""
    return "".join(json.dumps(event, ensure_ascii=False, separators=(",", ":")) for event in events)


@dataclasses.dataclass
class Decoded:
    """What one client websocket message contained."""

    events: list[dict[str, Any]]
    problems: list[str]
    malformed: bool = False
    """Part of the message was not JSON at all (the server answers `invalid-event`)."""


def decode_client(message: str | bytes) -> Decoded:
    """Read one client message leniently: skip 0x1E and whitespace, split concatenated objects."""
    problems: list[str] = []
    if isinstance(message, bytes):
        problems.append("binary websocket message (Copilot events are text)")
        message = message.decode("utf-8", "replace")
    if "\x1e" in message:
        problems.append("0x1E record separator in a Copilot frame (that is ChatHub framing)")
        message = message.replace("\x1e", " ")
    decoder, position = json.JSONDecoder(), 0
    events: list[dict[str, Any]] = []
    while True:
        while position < len(message) and message[position].isspace():
            position += 1
        if position >= len(message):
            break
        try:
            value, position = decoder.raw_decode(message, position)
        except ValueError:
            problems.append(f"non-JSON client frame {message[position : position + 80]!r}")
            return Decoded(events, problems, malformed=True)
        if not isinstance(value, dict):
            problems.append(f"client frame is not a JSON object: {value!r:.80}")
            return Decoded(events, problems, malformed=True)
        events.append(value)
    if len(events) > 1:
        problems.append(f"{len(events)} events in one websocket message (send one per message)")
    return Decoded(events, problems)


def send_problems(event: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Check a `send` against B2: (fatal problems that stop the turn, harmless ones)."""
    fatal: list[str] = []
    soft: list[str] = []
    if not isinstance(event.get("conversationId"), str) or not event.get("conversationId"):
        fatal.append("send without a conversationId")
    content = event.get("content")
    if not isinstance(content, list) or not content:
        fatal.append("send without a content list")
    else:
        texts = [part for part in content if isinstance(part, dict) and part.get("type") == "text"]
        if not texts or not all(isinstance(part.get("text"), str) for part in texts):
            fatal.append("send without a text content part")
        elif len(texts) > 1:
            soft.append(f"send with {len(texts)} text parts (one user text per turn)")
        elif content[-1] is not texts[0]:
            soft.append("send with attachments after the text part (attachments go first)")
    if not isinstance(event.get("mode"), str):
        fatal.append("send without a mode")
    if "context" not in event:
        soft.append("send without a context object")
    elif not isinstance(event["context"], dict):
        fatal.append("send with a context that is not an object")
    for name in FORBIDDEN_SEND_FIELDS:
        if name in event:
            soft.append(f"send carries {name!r} (Copilot has no such field)")
    return fatal, soft


def user_text(event: dict[str, Any]) -> str:
    """The user's text of a (valid) `send`: its last text part."""
    parts = [part for part in event["content"] if isinstance(part, dict) and part.get("type") == "text"]
    return str(parts[-1]["text"])


def page_content(event: dict[str, Any]) -> str | None:
    """`context.edge.pageContent`, the page-context channel wrappers inject history through."""
    edge = (event.get("context") or {}).get("edge")
    content = edge.get("pageContent") if isinstance(edge, dict) else None
    return content if isinstance(content, str) and content else None


def iso_ms(epoch: float) -> str:
    """`createdAt` as captured: milliseconds and a `Z` (2025-05-02T10:00:00.000Z)."""
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_offset(epoch: float) -> str:
    """`nextAvailableAt` as captured: whole seconds and an explicit offset (…T15:17:13+00:00)."""
    return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).isoformat()


class Sequence:
    """A socket's event ids: "0", "1", … across every chat event on that socket (B3)."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next(self) -> str:
        """The next id, as a string."""
        return str(next(self._counter))


# -- server events (B3 table) ----------------------------------------------------------------


def connected() -> dict[str, Any]:
    """The first thing a 2026 server says (B1.3)."""
    return {"event": "connected"}


def received(conversation_id: str, message_id: str, now: float, seq: str) -> dict[str, Any]:
    """Ack of `send`; `messageId` is the *user* message's id."""
    return {
        "event": "received",
        "conversationId": conversation_id,
        "messageId": message_id,
        "createdAt": iso_ms(now),
        "id": seq,
    }


def start_message(conversation_id: str, message_id: str, now: float, seq: str) -> dict[str, Any]:
    """The assistant message begins; its `messageId` tags everything that follows."""
    return {
        "event": "startMessage",
        "conversationId": conversation_id,
        "messageId": message_id,
        "createdAt": iso_ms(now),
        "id": seq,
    }


def append_text(message_id: str, text: str, seq: str, part_id: str = "0") -> dict[str, Any]:
    """A text *delta* (not cumulative, unlike ChatHub)."""
    return {"event": "appendText", "messageId": message_id, "partId": part_id, "text": text, "id": seq}


def part_completed(message_id: str, seq: str, part_id: str = "0") -> dict[str, Any]:
    """End of one content part."""
    return {"event": "partCompleted", "messageId": message_id, "partId": part_id, "id": seq}


def done(message_id: str, seq: str) -> dict[str, Any]:
    """The assistant message is finished (events may still follow)."""
    return {"event": "done", "messageId": message_id, "id": seq}


def title_update(conversation_id: str, title: str, seq: str) -> dict[str, Any]:
    """The conversation got a title (sent after `done`)."""
    return {"event": "titleUpdate", "conversationId": conversation_id, "title": title, "id": seq}


def suggested_followups(message_id: str, seq: str) -> dict[str, Any]:
    """Follow-up prompts (sent after `done`)."""
    suggestions = list(SUGGESTIONS)
    return {"event": "suggestedFollowups", "messageId": message_id, "suggestions": suggestions, "id": seq}


def citation(message_id: str, title: str, url: str, icon_url: str, seq: str) -> dict[str, Any]:
    """A web source, interleaved with the text it supports (B7.2)."""
    return {
        "event": "citation",
        "messageId": message_id,
        "partId": "0",
        "title": title,
        "url": url,
        "iconUrl": icon_url,
        "id": seq,
    }


def chain_of_thought(message_id: str, text: str, seq: str) -> dict[str, Any]:
    """Reasoning text for the client's "thinking" channel, not the answer."""
    return {"event": "chainOfThought", "messageId": message_id, "text": text, "id": seq}


def challenge(method: str | None, parameter: str | None, challenge_id: str) -> dict[str, Any]:
    """A challenge the client must answer (hashcash, copilot) or must not (null, cloudflare)."""
    return {"event": "challenge", "method": method, "parameter": parameter, "id": challenge_id}


def error(code: str, *, event_id: str | None = None, message: str | None = None) -> dict[str, Any]:
    """A fatal `error` for the turn; `message` is the human text some errors carry."""
    frame: dict[str, Any] = {"event": "error", "errorCode": code}
    if message is not None:
        frame["message"] = message
    if event_id is not None:
        frame["id"] = event_id
    return frame


def throttled(next_available: float) -> dict[str, Any]:
    """The quota error of B7.3 (sent together with a null challenge)."""
    when = iso_offset(next_available)
    return {
        "event": "chatMessageError",
        "errorCode": "throttled",
        "errorDetail": {"type": "throttled", "nextAvailableAt": when},
    }
