"""Conversations persisted in Redis, so any worker on any machine can serve the next turn.

A conversation is one JSON document under `conv:{id}`: its owner (the hashed API key),
the model, the transcript as the client saw it, and the upstream handle — the
dialect's opaque, JSON-plain record needed to continue the upstream conversation
(for ChatHub: conversationId, clientId, both signatures, invocation counter, expiry).

Every completion id maps to its conversation (`completion:{id}`), so a client can send
back the `id` of any response to continue. Turns are written only when they completed,
inside the same MULTI that publishes the turn's `done` event, so a failed or cancelled
turn leaves the conversation exactly as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

from redis import Redis
from redis.client import Pipeline


def owner_of(api_key: str | None) -> str:
    """The owner tag stored with a conversation: a hash, never the key itself."""
    return hashlib.sha256((api_key or "").encode()).hexdigest()[:32]


def conversation_key(conversation_id: str) -> str:
    """Where a conversation's document lives."""
    return f"conv:{conversation_id}"


def completion_key(completion_id: str) -> str:
    """Where a completion id points at its conversation."""
    return f"completion:{completion_id}"


@dataclasses.dataclass
class Conversation:
    """One client conversation and the upstream conversation that carries it."""

    id: str
    owner: str
    model: str
    messages: list[dict[str, str]] = dataclasses.field(default_factory=list)
    system: str = ""
    handle: dict[str, Any] | None = None
    created: float = dataclasses.field(default_factory=time.time)
    updated: float = dataclasses.field(default_factory=time.time)

    @property
    def turns(self) -> int:
        """Completed user turns."""
        return sum(1 for message in self.messages if message["role"] == "user")

    def to_json(self) -> str:
        """Serialised form stored in Redis."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Conversation:
        """Inverse of `to_json`."""
        data = json.loads(raw)
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


class ConversationStore:
    """Reads and writes conversations; the connection is passed in, never global."""

    def __init__(self, redis: Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    def resolve(self, raw_id: str) -> str | None:
        """Map a client-supplied id (conversation id or any completion id) to a conversation id."""
        if raw_id.startswith("chatcmpl-"):
            found = self.redis.get(completion_key(raw_id))
            return found.decode() if isinstance(found, bytes) else found
        return raw_id

    def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None if it does not exist (or expired)."""
        raw = self.redis.get(conversation_key(conversation_id))
        return Conversation.from_json(raw) if raw else None

    def get_owned(self, raw_id: str, owner: str) -> Conversation | None:
        """The caller's conversation; another owner's is reported as missing."""
        conversation_id = self.resolve(raw_id)
        if conversation_id is None:
            return None
        conversation = self.get(conversation_id)
        if conversation is None or conversation.owner != owner:
            return None
        return conversation

    def save(
        self, conversation: Conversation, pipe: Pipeline | None = None, completion_id: str | None = None
    ) -> None:
        """Write the conversation (and map `completion_id` to it), in `pipe` if given."""
        target = pipe if pipe is not None else self.redis.pipeline(transaction=True)
        conversation.updated = time.time()
        target.set(conversation_key(conversation.id), conversation.to_json(), ex=self.ttl)
        if completion_id is not None:
            target.set(completion_key(completion_id), conversation.id, ex=self.ttl)
        if pipe is None:
            target.execute()

    def delete(self, conversation_id: str) -> bool:
        """Forget a conversation; True if it existed."""
        return bool(self.redis.delete(conversation_key(conversation_id)))
