"""The Bing Chat "ChatHub" dialect, without I/O.

ChatHub is SignalR's JSON protocol over a websocket: every record is a JSON object
terminated by 0x1E, one socket carries one turn (handshake, ping, one type-4 "chat"
invocation, then type-1 updates, a type-2 result and a type-3 completion). See Part A
of shared/reference/upstream-protocols.md.

This module only turns data into data, so it is tested from recorded frames with no
sockets: it frames SignalR records and builds the outgoing ones (`HANDSHAKE`, `PING`,
`build_invocation`, the kblob image upload); `workers.upstream.chathub_conversation`
parses the conversation-create reply into a persistable `BingHandle` and words the
`result` failures; `workers.upstream.chathub_decode` turns incoming records into the
dialect-neutral events of `workers.upstream.events`, raising `workers.upstream.errors`
for failures.
The clock, request ids and timestamps are passed in; `workers.upstream.transport`
owns the sockets and `workers.upstream.chathub_client` combines the two.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

from workers.upstream.chathub_conversation import BingHandle
from workers.upstream.context import TurnInput, flatten_context
from workers.upstream.errors import ProtocolError, UpstreamError

RS = "\x1e"
TONES = ("Creative", "Balanced", "Precise")

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
