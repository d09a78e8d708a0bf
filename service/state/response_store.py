"""Stored Responses API objects, so `GET/DELETE /v1/responses/{id}` and `input_items` work.

One key per response, `response:{id}`: the owner (the hashed API key; another key's
response is reported as missing), the `response` object as last rendered, and its
input items. Written by the web tier that serves the response: `in_progress` when
the turn is enqueued, then completed, failed or cancelled. Kept `CONVERSATION_TTL`,
as long as the conversation it continues. A `store: false` response is never written.

The conversation behind a response is found through the completion pointer the worker
writes with the turn (`service.state.conversations.completion_key`), so a response id works
wherever a conversation id does.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

from service.state.conversations import completion_key, extras_key


def response_key(response_id: str) -> str:
    """Where a stored response lives."""
    return f"response:{response_id}"


class ResponseStore:
    """Reads and writes stored responses; the connection is passed in, never global."""

    def __init__(self, redis: Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    def save(
        self,
        owner: str,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        conversation_id: str | None = None,
    ) -> None:
        """Write (or overwrite) a response object and its input items.

        With `conversation_id`, the response (and its id's pointer) is listed with the
        conversation, so a `DELETE` of the conversation takes the answer and the user's
        input items with it.
        """
        record = {"owner": owner, "response": response, "input_items": input_items}
        key = response_key(response["id"])
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, json.dumps(record, ensure_ascii=False), ex=self.ttl)
            if conversation_id:
                pipe.sadd(extras_key(conversation_id), key, completion_key(response["id"]))
                pipe.expire(extras_key(conversation_id), self.ttl)
            pipe.execute()

    def _record(self, response_id: str, owner: str) -> dict[str, Any] | None:
        raw = self.redis.get(response_key(response_id))
        if raw is None:
            return None
        record = json.loads(raw)
        return record if record.get("owner") == owner else None

    def get(self, response_id: str, owner: str) -> dict[str, Any] | None:
        """The caller's response object, or None (missing, expired or another key's)."""
        record = self._record(response_id, owner)
        return record["response"] if record else None

    def input_items(self, response_id: str, owner: str) -> list[dict[str, Any]] | None:
        """The caller's response's input items, oldest first, or None."""
        record = self._record(response_id, owner)
        return record["input_items"] if record else None

    def update(self, response_id: str, owner: str, **changes: Any) -> dict[str, Any] | None:
        """Change fields of a stored response (e.g. its status); the new object, or None."""
        record = self._record(response_id, owner)
        if record is None:
            return None
        response: dict[str, Any] = record["response"]
        response.update(changes)
        self.save(owner, response, record["input_items"])
        return response

    def delete(self, response_id: str, owner: str) -> bool:
        """Forget the caller's response, and its id as a way into the conversation; True if it was there."""
        if self._record(response_id, owner) is None:
            return False
        return bool(self.redis.delete(response_key(response_id), completion_key(response_id)))
