"""What a stream needs to outlive its connection: who owns it, how to render it again, its grace.

A completion that may be resumed (`store: true`, an Idempotency-Key, a background
response) gets a `StreamRecord` beside its replay log, kept as long (`REPLAY_TTL`): the
owner (another key's completion is reported as missing), and what a renderer needs to
rebuild the stream from the log alone (model, creation time, prompt token count,
`include_usage`). The events themselves are the relay's replay log
(`service.state.relay`); nothing here copies them.

When the client of such a stream goes away, a *grace* token is written
(`open_grace`); a client that comes back clears it (`end_grace`), and the web process
that saw the disconnect cancels the turn at the end of the grace only if its own token
is still there (`grace_holds`), so a later disconnect restarts the clock.

Stored chat completions (`store: true`, `GET /v1/chat/completions/{id}`) live here too:
the `chat.completion` object and its owner, kept `CONVERSATION_TTL`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from redis import Redis
from redis.client import Pipeline

from service.turns import new_token


def record_key(completion_id: str) -> str:
    """Where a resumable completion's record lives."""
    return f"stream:{completion_id}"


def grace_key(completion_id: str) -> str:
    """The token of the disconnect whose grace is running, if any."""
    return f"stream:{completion_id}:grace"


def wake_channel(completion_id: str) -> str:
    """Published when a grace should be decided now: a client came back, or the conversation moved on."""
    return f"stream:{completion_id}:wake"


def conversation_grace_key(conversation_id: str) -> str:
    """The completion whose grace holds this conversation's lock, if any."""
    return f"stream:conversation:{conversation_id}:grace"


def waiting_key(conversation_id: str) -> str:
    """Set while a new turn waits for this conversation's lock."""
    return f"stream:conversation:{conversation_id}:waiting"


def completion_key(completion_id: str) -> str:
    """Where a stored chat completion lives."""
    return f"chat_completion:{completion_id}"


@dataclasses.dataclass(frozen=True)
class StreamRecord:
    """One resumable completion: its owner and what re-rendering it from the log needs."""

    completion_id: str
    owner: str
    surface: str  # "chat" | "responses"
    model: str
    created: int
    prompt_tokens: int | None = None  # counted once the first client left (off its path)
    include_usage: bool = False
    idempotency_key: str = ""
    store: bool = False
    background: bool = False
    metadata: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamRecord:
        """Rebuild, ignoring keys a newer web tier may add."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def save(redis: Redis | Pipeline, record: StreamRecord, *, ttl: int) -> None:
    """Keep the record as long as the replay log it describes."""
    redis.set(record_key(record.completion_id), json.dumps(record.to_json()), ex=ttl)


def load(redis: Redis, completion_id: str, owner: str) -> StreamRecord | None:
    """The caller's record, or None (unknown, expired, or another key's: the same answer)."""
    raw = redis.get(record_key(completion_id))
    if raw is None:
        return None
    record = StreamRecord.from_json(json.loads(raw))
    return record if record.owner == owner else None


def note_prompt_tokens(redis: Redis, completion_id: str, tokens: int) -> None:
    """Record the prompt's token count on an existing record (a resumed stream reports usage)."""
    raw = redis.get(record_key(completion_id))
    if raw is None:
        return
    data = json.loads(raw)
    if data.get("prompt_tokens") is None:
        data["prompt_tokens"] = tokens
        redis.set(record_key(completion_id), json.dumps(data), keepttl=True)


def waited(redis: Redis, conversation_id: str) -> None:
    """The turn that waited for the conversation has it now."""
    redis.delete(waiting_key(conversation_id))


def forget(redis: Redis, completion_id: str) -> None:
    """Drop the record (its turn was cancelled: nothing is left to resume)."""
    redis.delete(record_key(completion_id), grace_key(completion_id))


def open_grace(
    redis: Redis, completion_id: str, *, seconds: float, conversation_id: str = ""
) -> tuple[str, bool]:
    """Start a grace for a disconnected stream: the token that owns it, and whether a new turn
    already waits for the conversation the stream's turn holds (then the grace ends at once)."""
    token = new_token()
    ttl = max(1, int(seconds) + 60)
    with redis.pipeline(transaction=False) as pipe:
        pipe.set(grace_key(completion_id), token, ex=ttl)
        if conversation_id:
            pipe.set(conversation_grace_key(conversation_id), completion_id, ex=ttl)
            pipe.exists(waiting_key(conversation_id))
        replies = pipe.execute()
    return token, bool(conversation_id and replies[-1])


def end_grace(redis: Redis, completion_id: str) -> None:
    """A client came back: no pending grace may cancel the turn (its waiter is woken to see so)."""
    if redis.delete(grace_key(completion_id)):
        redis.publish(wake_channel(completion_id), "resumed")


def preempt(redis: Redis, conversation_id: str, *, ttl: float) -> None:
    """A new turn waits for this conversation: a turn whose client left decides its grace now.

    The client that went away has moved on (or another took its place), so the turn it
    abandoned is cancelled at once instead of holding the conversation for the rest of
    its grace; if its client came back meanwhile, nothing happens. The wait is noted
    (`waiting_key`, until `waited`), so a drop the gateway notices only later ends its
    grace at once too.
    """
    with redis.pipeline(transaction=False) as pipe:
        pipe.get(conversation_grace_key(conversation_id))
        pipe.set(waiting_key(conversation_id), b"1", ex=max(1, int(ttl)))
        completion_id = pipe.execute()[0]
    if completion_id is not None:
        name = completion_id.decode() if isinstance(completion_id, bytes) else str(completion_id)
        redis.publish(wake_channel(name), "preempted")


def grace_holds(redis: Redis, completion_id: str, token: str) -> bool:
    """True if nobody came back (or left again) since the disconnect that wrote `token`."""
    current = redis.get(grace_key(completion_id))
    return current is not None and (current.decode() if isinstance(current, bytes) else current) == token


def save_completion(redis: Redis, owner: str, completion: dict[str, Any], *, ttl: int) -> None:
    """Keep a finished chat completion for its owner's `GET /v1/chat/completions/{id}`."""
    record = {"owner": owner, "completion": completion}
    redis.set(completion_key(completion["id"]), json.dumps(record, ensure_ascii=False), ex=ttl)


def stored_completion(redis: Redis, completion_id: str, owner: str) -> dict[str, Any] | None:
    """The caller's stored chat completion, or None (missing, expired or another key's)."""
    raw = redis.get(completion_key(completion_id))
    if raw is None:
        return None
    record = json.loads(raw)
    return record["completion"] if record.get("owner") == owner else None
