"""ChatHub frame building: the shapes Bing's `/sydney/ChatHub` puts on the wire.

Pure functions, no I/O and no state: they take plain values and return the JSON-ready
dicts (or the 0x1E-terminated text) that the reference document (Part A of
upstream-protocols.md) quotes from real captures. `turns` decides *which* frames a turn
sends; this module only knows *what they look like*, so a field-name fix happens here once.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

RS = "\x1e"
"""SignalR's record separator: every JSON record on the socket ends with it (A1.3)."""

SERVICE_VERSION = "20240203.103"
"""What the server reports as `result.serviceVersion`; clients never rely on it."""

APOLOGY_TEXT = (
    "Sorry! That's on me, I can't give a response to that right now. What else can I help you with?"
)
TURN_LIMIT_TEXT = "Thanks for this conversation! I've reached my limit, will you hit “New topic,” please?"
DISENGAGED_TEXT = (
    "I'm sorry but I prefer not to continue this conversation. "
    "I'm still learning so I appreciate your understanding and patience.🙏"
)
LOADER_TEXT = "Generating answers for you..."
SUGGESTIONS = ("Tell me more.", "Can you give me an example?", "What else can you do?")

# Error texts, exactly as captured (A3.2, A7.3–A7.5).
THROTTLED_TEXT = "Request is throttled."
CAPTCHA_TEXT = "User needs to solve CAPTCHA to continue."
REGION_TEXT = "Sorry, looks like your network settings are preventing access to this feature."
LOGIN_TEXT = "Sorry, you need to login first to access this service."
SIGNATURE_TEXT = (
    "The conversationSignature is not set and is required to ensure that you have permission "
    "to use our APIs. IsAuthenticated=False. App ID="
)
INTERNAL_TEXT = "ServiceClient failure for ChatGpt. Cancellation not requested"
CLOSE_ERROR_TEXT = "Connection closed with an error."


def encode(*records: dict[str, Any]) -> str:
    """One websocket text message carrying `records`, each terminated by 0x1E."""
    return "".join(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + RS for record in records)


def decode(message: str | bytes) -> list[dict[str, Any]]:
    """Split one received message into its JSON records, dropping empty pieces.

    Raises ValueError when a piece is not a JSON object, so the caller can record the
    violation: a real SignalR hub would drop such a client.
    """
    if isinstance(message, bytes):
        message = message.decode("utf-8")
    records = []
    for piece in message.split(RS):
        if not piece.strip():
            continue
        record = json.loads(piece)
        if not isinstance(record, dict):
            raise ValueError(f"record is not a JSON object: {piece[:80]!r}")
        records.append(record)
    return records


def iso(epoch: float) -> str:
    """A UTC timestamp the way Bing writes it: seven fractional digits and a `Z`."""
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def new_id() -> str:
    """A fresh message id (Bing uses uuids)."""
    return str(uuid.uuid4())


def throttling(used: int, max_turns: int) -> dict[str, int]:
    """The four-field `throttling` object of type-1 and type-2 frames."""
    return {
        "maxNumUserMessagesInConversation": max_turns,
        "numUserMessagesInConversation": used,
        "maxNumLongDocSummaryUserMessagesInConversation": 50,
        "numLongDocSummaryUserMessagesInConversation": 0,
    }


def text_card(text: str) -> dict[str, Any]:
    """The answer's adaptive card: one TextBlock mirroring the (markdown) text."""
    block = {"type": "TextBlock", "text": text, "wrap": True}
    return {"type": "AdaptiveCard", "version": "1.0", "body": [block]}


def progress_card(text: str) -> dict[str, Any]:
    """The card of a "meta" message (search query): a subtle italic TextRun."""
    inline = {"type": "TextRun", "isSubtle": True, "italic": True, "text": text}
    block = {"type": "RichTextBlock", "inlines": [inline]}
    return {"type": "AdaptiveCard", "version": "1.0", "body": [block]}


def _feedback() -> dict[str, Any]:
    return {"tag": None, "updatedOn": None, "type": "None"}


def bot_message(
    *,
    text: str,
    message_id: str,
    request_id: str,
    now: float,
    card_text: str | None = None,
    offense: str = "Unknown",
    content_origin: str = "DeepLeo",
    message_type: str | None = None,
    source_attributions: list[dict[str, Any]] | None = None,
    suggestions: bool = False,
) -> dict[str, Any]:
    """A bot message as streamed in type 1 and listed in type 2.

    The answer itself has no `messageType`; meta messages (search, loader, Disengaged)
    carry one. `card_text` defaults to `text` (it differs only when citations add
    reference lines).
    """
    message: dict[str, Any] = {
        "text": text,
        "author": "bot",
        "createdAt": iso(now),
        "timestamp": iso(now),
        "messageId": message_id,
        "requestId": request_id,
        "offense": offense,
        "adaptiveCards": [text_card(text if card_text is None else card_text)],
        "sourceAttributions": source_attributions or [],
        "feedback": _feedback(),
        "contentOrigin": content_origin,
        "privacy": None,
    }
    if message_type is not None:
        message["messageType"] = message_type
    if suggestions:
        message["suggestedResponses"] = [suggestion(text_, now) for text_ in SUGGESTIONS]
    return message


def suggestion(text: str, now: float) -> dict[str, Any]:
    """One suggested follow-up chip (A3.1)."""
    return {
        "text": text,
        "author": "user",
        "createdAt": iso(now),
        "timestamp": iso(now),
        "messageId": new_id(),
        "messageType": "Suggestion",
        "offense": "Unknown",
        "feedback": _feedback(),
        "contentOrigin": "SuggestionChipsFalconService",
        "privacy": None,
    }


def user_message(invocation: dict[str, Any], *, client_id: str, now: float) -> dict[str, Any]:
    """The user's message as the server echoes it first in a type-2 `messages` list."""
    sent = invocation.get("message") or {}
    request_id = sent.get("requestId") or invocation.get("requestId") or new_id()
    return {
        "text": sent.get("text", ""),
        "author": "user",
        "from": {"id": client_id, "name": None, "partnerId": None},
        "createdAt": iso(now),
        "timestamp": sent.get("timestamp") or iso(now),
        "locale": str(sent.get("locale", "en-us")).lower(),
        "market": str(sent.get("market", "en-us")).lower(),
        "region": str(sent.get("region", "us")).lower(),
        "messageId": sent.get("messageId") or request_id,
        "requestId": request_id,
        "offense": "None",
        "feedback": _feedback(),
        "contentOrigin": "cib",
        "privacy": None,
        "inputMethod": sent.get("inputMethod", "Keyboard"),
    }


def update(arguments: dict[str, Any]) -> dict[str, Any]:
    """A type-1 `update` push carrying `arguments` as its single argument."""
    return {"type": 1, "target": "update", "arguments": [arguments]}


def message_update(message: dict[str, Any], *, request_id: str, cursor: bool = False) -> dict[str, Any]:
    """A type-1 update streaming one bot message; the first text frame carries a `cursor`."""
    arguments: dict[str, Any] = {}
    if cursor:
        arguments["cursor"] = {"j": f"$['{message['messageId']}'].adaptiveCards[0].body[0].text", "p": -1}
    arguments["messages"] = [message]
    arguments["requestId"] = request_id
    return update(arguments)


def success_item(
    *,
    messages: list[dict[str, Any]],
    conversation_id: str,
    request_id: str,
    expiry_time: float,
    started: float,
    used: int,
    max_turns: int,
    prompt: str,
) -> dict[str, Any]:
    """The `item` of a successful type 2: the whole turn plus counters (A3.2, A7.1)."""
    return {
        "messages": messages,
        "firstNewMessageIndex": 1,
        "defaultChatName": None,
        "conversationId": conversation_id,
        "requestId": request_id,
        "conversationExpiryTime": iso(expiry_time),
        "shouldInitiateConversation": True,
        "telemetry": {"startTime": iso(started)},
        "throttling": throttling(used, max_turns),
        "result": {"value": "Success", "message": prompt, "serviceVersion": SERVICE_VERSION},
    }


def error_item(
    value: str, message: str, *, conversation_id: str, request_id: str, started: float
) -> dict[str, Any]:
    """The `item` of an error type 2, shaped like the capture for that error.

    InvalidSession follows A7.5 (no `error` field, `suggestedResponses: null`);
    CaptchaChallenge follows A7.4; the others follow A7.3.
    """
    item: dict[str, Any] = {"firstNewMessageIndex": None}
    if value == "InvalidSession":
        item["suggestedResponses"] = None
    if value == "CaptchaChallenge":
        item["defaultChatName"] = None
    item["conversationId"] = conversation_id
    item["requestId"] = request_id
    if value == "CaptchaChallenge":
        item["telemetry"] = {"startTime": iso(started), "userMessageRequestStartTime": None}
    else:
        item["telemetry"] = {"metrics": None, "startTime": iso(started)}
    result: dict[str, Any] = {"value": value, "message": message}
    if value != "InvalidSession":
        result["error"] = message
    result["serviceVersion"] = SERVICE_VERSION
    item["result"] = result
    return item


def final(invocation_id: str, item: dict[str, Any]) -> dict[str, Any]:
    """The type-2 record that ends a turn, echoing the request's invocationId."""
    return {"type": 2, "invocationId": invocation_id, "item": item}


def completion(invocation_id: str) -> dict[str, Any]:
    """The type-3 completion record that follows every type 2."""
    return {"type": 3, "invocationId": invocation_id}


def server_close() -> dict[str, Any]:
    """The type-7 record Bing sends before dropping a socket mid-answer (A3.3)."""
    return {"type": 7, "error": CLOSE_ERROR_TEXT, "allowReconnect": True}


def expired_text(conversation_id: str, expiry_seconds: float) -> str:
    """The InvalidSession message, with the lifetime written as Bing does (06:00:00)."""
    total = int(expiry_seconds)
    lifetime = f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"
    return (
        f"Conversation '{conversation_id}' doesn't exist or has expired. "
        f"Conversations expire after {lifetime}."
    )
