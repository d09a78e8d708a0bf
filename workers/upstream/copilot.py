"""The consumer Copilot `/c/api/chat` dialect, without I/O.

Copilot speaks plain JSON events over a websocket: no SignalR, no 0x1E, no invocation
ids. Conversations live on the server and are addressed by a short id alone, so a turn
is: open a socket, (wait for `connected`), send `setOptions`, `reportLocalConsents`
and one `send`, then read events until `done`. See Part B of
shared/reference/upstream-protocols.md; its confidence tags are quoted where a choice
rests on them.

This module only turns data into data: it builds the websocket URL and every outgoing
frame, splits incoming messages into events, and answers the proof-of-work challenges.
`workers.upstream.copilot_conversation` parses the conversation-create reply into a
persistable `CopilotHandle`; `workers.upstream.copilot_decode` turns the events into
dialect-neutral events;
`workers.upstream.transport` owns the sockets and `workers.upstream.copilot_client`
combines the three.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from service.limits import context_budget
from workers.upstream.context import TurnInput, flatten_context
from workers.upstream.errors import ProtocolError, UpstreamError

ORIGIN = "https://copilot.microsoft.com"
CHAT_PATH = "/c/api/chat"
CREATE_PATH = "/c/api/conversations"
ATTACHMENTS_PATH = "/c/api/attachments"
API_VERSION = "2"
# Edge-sidebar flags that switch on `context.edge` page context (B1.2); sent only when injecting.
PAGE_CONTEXT_FLAGS = "features=-,ncedge,edgepagecontext&setflight=-,ncedge,edgepagecontext&ncedge=1"
PAGE_TITLE = "Conversation so far"
PAGE_URL = "https://copilot.microsoft.com/"
THROTTLE_RETRY_AFTER = 60.0
CREDENTIALS_HINT = "refresh the account's cookies in UPSTREAM_COOKIES (or set COPILOT_ACCESS_TOKEN)"


def chat_url(
    base_url: str, *, client_session_id: str, access_token: str = "", with_page_context: bool = False
) -> str:
    """The websocket URL of one turn (B1.2): https→wss, http→ws, on the base URL's host and path.

    `clientSessionId` is a uuid4 new per socket (B1.2; the 2026 consumer_client draws one
    per socket, and each gpt4free call is one browser session with one socket, B5b), so a
    restarted anonymous session never carries an old one; 2026 servers may answer
    `invalid-event` without it. The access token rides here, never on REST by default (B1.1 [U]).
    """
    parts = urlsplit(base_url)
    schemes = {"https": "wss", "http": "ws"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"the Copilot base URL must be http(s)://host, not {base_url!r}")
    query = f"api-version={API_VERSION}&clientSessionId={quote(client_session_id, safe='')}"
    if access_token:
        query += f"&accessToken={quote(access_token, safe='')}"
    if with_page_context:
        query += f"&{PAGE_CONTEXT_FLAGS}"
    return f"{schemes[parts.scheme]}://{parts.netloc}{parts.path.rstrip('/')}{CHAT_PATH}?{query}"


def encode(event: Mapping[str, Any]) -> str:
    """One outgoing frame: compact JSON, one object per message, no delimiter (B1.2)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


SUPPORTED_FEATURES = (
    "partial-generated-images",
    "composer-prefill-conversation-action",
    "composer-send-conversation-action-v2",
    "side-by-side-comparison",
    "session-duration-nudge",
    "compose-email-html",
)
"""The browser's `setOptions.supportedFeatures` (B5b: WCA #20 capture, 2026-06-24)."""
SUPPORTED_CARDS = (
    "weather", "local", "image", "sports", "video", "ads", "safetyHelpline", "quiz", "finance", "recipe",
    "healthcareEntity", "healthcareInfo", "chart", "personal", "powerPointCreator", "createCalendarEvent",
    "flashcard",
)
"""The `supportedCards` the captures name (B1.3, B5b). The 2026 browser sends 28; the reference
records these 17 of them by name, so the rest cannot be sent without guessing [U]."""
AD_TYPES = ("text", "product", "multimedia", "tourActivity", "propertyPromotion")


def set_options() -> str:
    """The first preamble frame, as the 2026 browser sends it (B1.3, B5b): its features, cards and ad types.

    A client that announces only images stands out from every browser (whether the server
    reads it as a bot signal is unknown, B5b [U]); cards we cannot render arrive as events the
    decoder ignores. `supportedUIComponents` and `supportedActions` are sent empty, as newer
    captures have them (B1.3).
    """
    return encode(
        {
            "event": "setOptions",
            "supportedFeatures": list(SUPPORTED_FEATURES),
            "supportedCards": list(SUPPORTED_CARDS),
            "supportedUIComponents": {},
            "ads": {"supportedTypes": list(AD_TYPES)},
            "supportedActions": [],
        }
    )


def report_local_consents() -> str:
    """The second preamble frame (2025–2026 captures): no consents granted."""
    return encode({"event": "reportLocalConsents", "grantedConsents": []})


def send(
    conversation_id: str, text: str, mode: str, context: Mapping[str, Any], images: Sequence[str] = ()
) -> str:
    """The `send` frame of one turn (B2); no `tone`/`messageId`, which the server does not take.

    Attachments (uploaded image URLs) go before the text part, as the public bridges send them.
    """
    return encode(
        {
            "event": "send",
            "conversationId": conversation_id,
            "content": [*({"type": "image", "url": url} for url in images), {"type": "text", "text": text}],
            "mode": mode,
            "context": dict(context),
        }
    )


def parse_attachment_response(status: int, body: bytes) -> str:
    """The URL of an uploaded image (`POST /c/api/attachments` → `{"url": …}`), else an UpstreamError."""
    try:
        data = json.loads(body) if status == 200 else None
    except ValueError:
        data = None
    url = data.get("url") if isinstance(data, dict) else None
    if not isinstance(url, str) or not url:
        raise UpstreamError(f"Copilot did not accept the image attachment (HTTP {status})")
    return url


def challenge_response(method: str, token: str, challenge_id: str | None) -> str:
    """The answer to a `challenge`, echoing its `id` (2026 servers; older ones sent none)."""
    frame: dict[str, Any] = {"event": "challengeResponse", "token": token, "method": method}
    if challenge_id is not None:
        frame["id"] = challenge_id
    return encode(frame)


def turn_context(turn: TurnInput, *, fresh: bool) -> dict[str, Any]:
    """The `context` of a `send`: earlier messages as Edge page context on a fresh conversation.

    Copilot has no role or system channel; `context.edge` is its analogue of ChatHub's
    `previousMessages` WebPage context (B2 [S]). Later turns send `{}`: the server
    remembers the conversation.
    """
    if not fresh:
        return {}
    text = flatten_context(turn.history, turn.system, context_budget("copilot", turn.max_context_chars))
    if not text:
        return {}
    return {"edge": {"pageTitle": PAGE_TITLE, "pageContent": text, "pageUrl": PAGE_URL}}


_DECODER = json.JSONDecoder()
_SKIP = " \t\r\n\x1e"
_LITERALS = ("true", "false", "null")
MAX_CARRY = 1 << 20  # an object cut across messages may wait this long for its end


def split_events(message: str | bytes) -> list[dict[str, Any]]:
    """Every JSON object in one websocket message, in order.

    Servers normally send one object per message, but several concatenated objects
    (B7.3) and stray 0x1E/whitespace occur (B1.2); anything else is a `ProtocolError`.
    """
    events, _ = _scan(_text(message), partial_ok=False)
    return events


class EventStream:
    """`split_events` across messages: a trailing object cut off by the server waits for its end.

    The 2026 clients read the socket with a streaming JSON decoder for this reason
    (B1.2); a cut that never completes, or grows past `MAX_CARRY`, is a `ProtocolError`.
    """

    def __init__(self, *, max_carry: int = MAX_CARRY) -> None:
        self._carry = ""
        self._max_carry = max_carry

    def feed(self, message: str | bytes) -> list[dict[str, Any]]:
        """The complete events so far, keeping an unfinished trailing object for the next message."""
        events, self._carry = _scan(self._carry + _text(message), partial_ok=True)
        if len(self._carry) > self._max_carry:
            raise ProtocolError(f"Copilot sent an event longer than {self._max_carry} characters")
        return events


def _text(message: str | bytes) -> str:
    return message.decode("utf-8", errors="replace") if isinstance(message, bytes) else message


def _scan(text: str, *, partial_ok: bool) -> tuple[list[dict[str, Any]], str]:
    """The events in `text` and, if `partial_ok`, an unfinished trailing object."""
    events: list[dict[str, Any]] = []
    position = 0
    while True:
        while position < len(text) and text[position] in _SKIP:
            position += 1
        if position == len(text):
            return events, ""
        try:
            event, position = _DECODER.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            if partial_ok and _unfinished(text, position, exc):
                return events, text[position:]
            raise ProtocolError(
                f"Copilot sent a message that is not JSON: {text[position : position + 80]!r}"
            ) from exc
        if not isinstance(event, dict):
            raise ProtocolError(f"Copilot sent an event that is not an object: {event!r:.80}")
        events.append(event)


def _unfinished(text: str, start: int, error: json.JSONDecodeError) -> bool:
    """Whether the object at `start` is merely cut off (more text could complete it), not garbage."""
    if text[start] != "{":
        return False
    rest = text[error.pos :]
    return (
        error.pos >= len(text)
        or error.msg.startswith("Unterminated string")
        or any(literal.startswith(rest) for literal in _LITERALS)
    )


_SECRET_FIELD = re.compile(
    r'("(?:accessToken|access_token|authorization|cookie|set-cookie)"\s*:\s*)"(?:[^"\\]|\\.)*"', re.IGNORECASE
)


def redact_frame(frame: str, secrets: Iterable[str] = (), *, limit: int = 300) -> str:
    """A frame safe to log: secret-named fields and known secret values blanked, then cut."""
    text = _SECRET_FIELD.sub(r'\1"<redacted>"', frame)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "<redacted>")
    return text if len(text) <= limit else text[:limit] + "…"
