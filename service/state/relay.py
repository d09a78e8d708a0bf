"""Carrying a turn's events from the worker to the web process that serves the client.

Worker side, `service.state.relay_publisher.Publisher`: every event gets a sequence
number and goes, in one Redis pipeline, onto the completion's pub/sub channel and its
short-lived replay log, text deltas coalesced.

Web side, `service.state.relay_hub.RelayHub`: one shared pub/sub connection per process,
dispatching messages to per-request `Subscription`s, which notice a lost message by its
sequence number and fill the gap from the replay log.

This module holds what both sides agree on: the names of a completion's channel and
replay log, and reading that log (a late reader, a resumed stream, a background
response's status). Events are `service.events` dataclasses; on the wire each is its
`to_json()` object plus "seq". `Done` and `Failed` ("done", "error") are terminal.
"""

from __future__ import annotations

import json
from json.decoder import scanstring  # type: ignore[attr-defined]  # the C string scanner json.loads uses
from typing import Any

from redis import Redis


def channel_name(completion_id: str) -> str:
    """The pub/sub channel of one completion."""
    return f"relay:{completion_id}"


def log_key(completion_id: str) -> str:
    """The replay log (a Redis list, index == seq) of one completion."""
    return f"relay:{completion_id}:log"


_DELTA = '{"type":"delta","text":"'
_SEQ = ',"seq":'


def decode_message(raw: bytes | str) -> dict[str, Any]:
    """One relay message (the publisher's `json.dumps`) back into its object.

    A text delta, nearly every message, is `{"type":"delta","text":"…","seq":N}` exactly
    as `Publisher._encode` writes it: its string is read by the json module's own string
    scanner and its number by `int`, without the general decoder (a tenth of the web
    tier's CPU per delta). Anything else, or any doubt, goes through `json.loads`.
    """
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        return dict(json.loads(raw))
    if text.startswith(_DELTA):
        value, end = scanstring(text, len(_DELTA))
        digits = text[end + len(_SEQ) : -1]
        if text.startswith(_SEQ, end) and text.endswith("}") and digits.isascii() and digits.isdigit():
            return {"type": "delta", "text": value, "seq": int(digits)}
    return dict(json.loads(text))


def read_log(redis: Redis, completion_id: str, start: int = 0) -> list[dict[str, Any]]:
    """Events of a completion from `start` on, from its replay log."""
    return [json.loads(raw) for raw in redis.lrange(log_key(completion_id), start, -1)]


def last_event(redis: Redis, completion_id: str) -> dict[str, Any] | None:
    """The latest event in a completion's replay log, if any."""
    raw = redis.lindex(log_key(completion_id), -1)
    return json.loads(raw) if raw is not None else None
