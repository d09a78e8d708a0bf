"""`store: false` turns continue their upstream conversation by digest, and keep nothing readable.

OpenAI's `store: false` means no retrievable response object. Codex CLI always sends
it and re-sends the whole history each request, so without a memory of *which
upstream conversation* a history belongs to, every request would start and re-prime a
new upstream conversation (four upstream turns for Codex's instructions). The owner's
ruling: for a `store: false` turn keep no transcript, no response object and no text,
only a keyed digest of the canonical history (`conversations.fingerprint` of the
messages, HMAC'd with `SECRET_KEY` so a reader of Redis cannot test guessed
conversations against it), owned by the API key, pointing at the upstream handle and
a keyed digest of the instructions the upstream was given, for as long as the handle
lives. The next request whose history before its new input has that digest continues
the same upstream conversation with only its new items.

`take` removes the entry as it reads it (one MULTI): two requests with the same
history cannot both continue one upstream conversation, and a turn that fails after
taking it leaves nothing that disagrees with the upstream. The turn that completes
writes the entry for its own history (`remember`), inside its fenced save. No API
reads these keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline

from service.state.conversations import fingerprint, normalize


def _keyed(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def history_digest(secret: str, messages: Sequence[dict[str, str]]) -> str:
    """The keyed digest of a history's messages (the system prompt is not part of it)."""
    return _keyed(secret, fingerprint("", messages))


def instructions_digest(secret: str, system: str) -> str:
    """The keyed digest of a system prompt ("" for none), to notice when it changes."""
    text = normalize(system)
    return _keyed(secret, f"system:{text}") if text else ""


def digest_key(owner: str, digest: str) -> str:
    """Where a `store: false` history's upstream handle lives."""
    return f"digest:{owner}:{digest}"


@dataclasses.dataclass(frozen=True)
class Carried:
    """An unstored upstream conversation a turn continues: its handle and its instructions' digest."""

    handle: dict[str, Any]
    instructions: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-plain, for the job payload."""
        return {"handle": self.handle, "instructions": self.instructions}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Carried | None:
        """Inverse of `to_json`; None for an empty or malformed value."""
        if not data or not isinstance(data.get("handle"), dict):
            return None
        return cls(dict(data["handle"]), str(data.get("instructions") or ""))


def take(redis: Redis, owner: str, secret: str, history: Sequence[dict[str, str]]) -> Carried | None:
    """The upstream conversation `history` (the messages before the new input) left off in, removed."""
    if not history:
        return None
    key = digest_key(owner, history_digest(secret, history))
    with redis.pipeline(transaction=True) as pipe:
        pipe.get(key)
        pipe.delete(key)
        raw, _ = pipe.execute()
    if raw is None:
        return None
    try:
        return Carried.from_json(json.loads(raw))
    except ValueError:
        return None


def remember(
    pipe: Pipeline,
    owner: str,
    secret: str,
    messages: Sequence[dict[str, str]],
    carried: Carried,
    *,
    ttl: int,
    now: float | None = None,
) -> None:
    """Queue the entry for `messages` (the history after this turn) on `pipe`, for the handle's life."""
    expires_at = carried.handle.get("expires_at")
    if isinstance(expires_at, int | float):
        ttl = min(ttl, int(expires_at - (time.time() if now is None else now)))
    if ttl <= 0 or not messages:
        return
    key = digest_key(owner, history_digest(secret, messages))
    pipe.set(key, json.dumps(carried.to_json(), separators=(",", ":")), ex=ttl)
