"""Conversations persisted in Redis, so any worker on any machine can serve the next turn.

A conversation is two keys with separate lifetimes:

- `conv:{id}`: owner (the hashed API key), model, system prompt and the transcript as
  the client saw it — kept `CONVERSATION_TTL` after the last turn;
- `conv:{id}:upstream`: the dialect's opaque, JSON-plain handle needed to continue the
  upstream conversation (ChatHub: conversationId, clientId, both signatures,
  invocation counter, expiry) — kept `UPSTREAM_HANDLE_TTL`, and never past the
  upstream's own expiry. When it is gone, the next turn starts a new upstream
  conversation seeded with the transcript; the client's id does not change.

Two indexes point at conversations: every completion id (`completion:{id}`), so a
client can send back the `id` of any response; and the fingerprint of every
transcript prefix a turn completed (`hist:{owner}:{sha256}`), so a stateless client
that re-sends the whole history is recognised (see `fingerprint`). The index is of
the messages only: a client that changes its system prompt between turns (Claude Code
does) still continues its conversation, and the worker sends the upstream the changed
instructions (`workers.instructions`) instead of starting over.

Turns are written only when they completed, inside the same MULTI that publishes the
turn's `done` event, so a failed or cancelled turn leaves the conversation as it was;
the worker fences that MULTI on its lock token and on the conversation still existing
(`service.state.locks.fence`), so a stalled turn or a DELETE in between cannot be overwritten.
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

COMPLETION_PREFIXES = ("chatcmpl-", "resp_", "msg_")  # ids of turns, whatever surface served them

_DELETE = """
local doc = redis.call('get', KEYS[1])
local existed = doc and 1 or 0
if doc then
  local ok, data = pcall(cjson.decode, doc)
  if ok and type(data) == 'table' and type(data['owner']) == 'string' then
    redis.call('zrem', ARGV[1] .. data['owner'], ARGV[2])
  end
end
local indexes = redis.call('smembers', KEYS[3])
for _, index in ipairs(redis.call('smembers', KEYS[4])) do table.insert(indexes, index) end
redis.call('del', unpack(KEYS))
for _, index in ipairs(indexes) do redis.call('del', index) end
return existed
"""

# Metadata lives in a key of its own, written alone: a metadata update never rewrites the
# transcript (a concurrent turn's save stays), and a turn's save never rewrites metadata.
_SET_METADATA = """
local ttl = redis.call('pttl', KEYS[1])
if ttl == -2 then return 0 end
if ttl > 0 then redis.call('set', KEYS[2], ARGV[1], 'px', ttl) else redis.call('set', KEYS[2], ARGV[1]) end
return 1
"""


def owner_of(api_key: str | None, *, secret: str) -> str:
    """The owner tag stored with a conversation and in key names: HMAC-SHA256 of the key.

    Keyed with the server's `SECRET_KEY`, so someone who reads Redis (a backup, a shared
    instance) cannot test guessed API keys against the tags, as they could a bare hash.
    Changing the secret changes every tag: existing conversations stop matching their keys.
    """
    return hmac.new(secret.encode(), (api_key or "").encode(), hashlib.sha256).hexdigest()[:32]


def conversation_key(conversation_id: str) -> str:
    """Where a conversation's document lives."""
    return f"conv:{conversation_id}"


def handle_key(conversation_id: str) -> str:
    """Where a conversation's upstream handle lives."""
    return f"conv:{conversation_id}:upstream"


def completion_key(completion_id: str) -> str:
    """Where a completion id points at its conversation."""
    return f"completion:{completion_id}"


def normalize(text: str) -> str:
    """Content as compared for matching: line endings unified, whitespace at the ends dropped.

    Clients trim, re-wrap line endings and turn strings into arrays of text parts (the
    web tier joins those before this); anything else they change is a real edit.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def fingerprint(system: str, messages: Sequence[dict[str, str]]) -> str:
    """A digest of what the client sees: the system prompt and each (role, content)."""
    canonical = [normalize(system), [[m["role"], normalize(m["content"])] for m in messages]]
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False).encode()).hexdigest()


OWNED_PREFIX = "owned:"


def count_owned_in(pipe: Pipeline, owner: str) -> None:
    """`ConversationStore.count_owned` as two commands of a pipeline; the count is the last reply."""
    pipe.zremrangebyscore(owned_key(owner), "-inf", time.time())
    pipe.zcard(owned_key(owner))


def owned_key(owner: str) -> str:
    """The owner's conversations (sorted set, scored by expiry): what KEY_MAX_CONVERSATIONS counts."""
    return f"{OWNED_PREFIX}{owner}"


def metadata_key(conversation_id: str) -> str:
    """Where a conversation's metadata lives once it was updated (`ConversationStore.set_metadata`)."""
    return f"conv:{conversation_id}:meta"


def extras_key(conversation_id: str) -> str:
    """The set of other keys to forget with a conversation (its stored Responses, their pointers)."""
    return f"conv:{conversation_id}:extras"


def digests_key(conversation_id: str) -> str:
    """The set of fingerprint index keys that point at a conversation (to forget them with it)."""
    return f"conv:{conversation_id}:hist"


def history_key(owner: str, digest: str) -> str:
    """Where a transcript fingerprint points at (conversation, turns at that point)."""
    return f"hist:{owner}:{digest}"


@dataclasses.dataclass
class Conversation:
    """One client conversation and the upstream conversation that carries it."""

    id: str
    owner: str
    model: str
    messages: list[dict[str, str]] = dataclasses.field(default_factory=list)
    system: str = ""
    handle: dict[str, Any] | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    created: float = dataclasses.field(default_factory=time.time)
    updated: float = dataclasses.field(default_factory=time.time)

    @property
    def turns(self) -> int:
        """Completed user turns."""
        return sum(1 for message in self.messages if message["role"] == "user")

    def to_json(self) -> str:
        """Serialised document (without the handle, which has a lifetime of its own)."""
        data = dataclasses.asdict(self)
        del data["handle"]
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(
        cls, raw: str | bytes, handle: str | bytes | None = None, metadata: str | bytes | None = None
    ) -> Conversation:
        """Inverse of `to_json`, with the stored handle if it is still alive (and updated metadata)."""
        data = json.loads(raw)
        names = {field.name for field in dataclasses.fields(cls)} - {"handle"}
        conversation = cls(**{key: value for key, value in data.items() if key in names})
        conversation.handle = json.loads(handle) if handle else None
        if metadata:
            conversation.metadata = json.loads(metadata)
        return conversation


@dataclasses.dataclass(frozen=True)
class Match:
    """A conversation of the owner whose transcript, after `turns` turns, was the client's history.

    Only the index is read: whoever continues loads the conversation once, under its
    lock, and checks it is still the caller's and still at `turns`.
    """

    conversation_id: str
    turns: int


class ConversationStore:
    """Reads and writes conversations; the connection is passed in, never global."""

    def __init__(self, redis: Redis, *, ttl: int, handle_ttl: int = 6 * 3600) -> None:
        self.redis = redis
        self.ttl = ttl
        self.handle_ttl = handle_ttl

    def resolve(self, raw_id: str) -> str | None:
        """Map a client-supplied id (conversation id or any completion id) to a conversation id."""
        if raw_id.startswith(COMPLETION_PREFIXES):
            found = self.redis.get(completion_key(raw_id))
            return found.decode() if isinstance(found, bytes) else found
        return raw_id

    def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None if it does not exist (or expired)."""
        raw, handle, metadata = self.redis.mget(
            conversation_key(conversation_id), handle_key(conversation_id), metadata_key(conversation_id)
        )
        return Conversation.from_json(raw, handle, metadata) if raw else None

    def get_owned(self, raw_id: str, owner: str) -> Conversation | None:
        """The caller's conversation; another owner's is reported as missing."""
        conversation_id = self.resolve(raw_id)
        if conversation_id is None:
            return None
        conversation = self.get(conversation_id)
        if conversation is None or conversation.owner != owner:
            return None
        return conversation

    def match(self, owner: str, history: Sequence[dict[str, str]]) -> Match | None:
        """The owner's conversation whose transcript (at some turn) was exactly `history` (messages only)."""
        if not history:
            return None
        raw = self.redis.get(history_key(owner, fingerprint("", history)))
        if raw is None:
            return None
        entry = json.loads(raw)
        return Match(str(entry["conversation_id"]), int(entry["turns"]))

    def save(
        self, conversation: Conversation, pipe: Pipeline | None = None, completion_id: str | None = None
    ) -> None:
        """Write the conversation, its handle, its fingerprint and `completion_id`'s pointer."""
        target = pipe if pipe is not None else self.redis.pipeline(transaction=True)
        conversation.updated = time.time()
        target.set(conversation_key(conversation.id), conversation.to_json(), ex=self.ttl)
        target.expire(metadata_key(conversation.id), self.ttl)  # as long as the document, if updated
        target.zadd(owned_key(conversation.owner), {conversation.id: conversation.updated + self.ttl})
        target.expire(owned_key(conversation.owner), self.ttl)
        target.expire(extras_key(conversation.id), self.ttl)
        if conversation.handle is not None:
            ttl = self.handle_ttl
            expires_at = conversation.handle.get("expires_at")
            if isinstance(expires_at, int | float):
                ttl = min(ttl, int(expires_at - conversation.updated))
            if ttl > 0:
                target.set(handle_key(conversation.id), json.dumps(conversation.handle), ex=ttl)
            else:
                target.delete(handle_key(conversation.id))
        if completion_id is not None:
            target.set(completion_key(completion_id), conversation.id, ex=self.ttl)
        if conversation.messages:
            entry = json.dumps({"conversation_id": conversation.id, "turns": conversation.turns})
            index = history_key(conversation.owner, fingerprint("", conversation.messages))
            target.set(index, entry, ex=self.ttl)
            target.sadd(digests_key(conversation.id), index)
            target.expire(digests_key(conversation.id), self.ttl)
        if pipe is None:
            target.execute()

    def delete(self, conversation_id: str) -> bool:
        """Forget a conversation, its handle and every fingerprint pointing at it; True if it existed.

        One script, so a turn's save cannot slip a fingerprint in between reading the
        index set and deleting it. A turn in flight then finds the conversation gone in
        its fenced save (`service.state.locks.fence`) and does not re-create it: DELETE wins.
        """
        keys = (
            conversation_key(conversation_id),
            handle_key(conversation_id),
            digests_key(conversation_id),
            extras_key(conversation_id),
            metadata_key(conversation_id),
        )
        return bool(self.redis.eval(_DELETE, len(keys), *keys, OWNED_PREFIX, conversation_id))

    def count_owned(self, owner: str) -> int:
        """How many conversations `owner` keeps stored now (expired ones are dropped first)."""
        with self.redis.pipeline(transaction=True) as pipe:
            count_owned_in(pipe, owner)
            return int(pipe.execute()[-1])

    def set_metadata(self, conversation_id: str, metadata: dict[str, str]) -> bool:
        """Replace a conversation's metadata alone, atomically; False if it no longer exists.

        Only the metadata key is written, with the document's remaining lifetime, so a
        turn saving the transcript at the same moment loses nothing and is not fenced out.
        """
        keys = (conversation_key(conversation_id), metadata_key(conversation_id))
        value = json.dumps(metadata, ensure_ascii=False)
        return bool(self.redis.eval(_SET_METADATA, len(keys), *keys, value))
