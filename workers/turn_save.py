"""Where a turn meets its stored conversation: loaded at the start, saved with `done`, fenced.

Step 3 of `workers.turn`: on `Done` the turn is saved and `done` published in ONE Redis
transaction, so a client that sends its next turn the moment it sees `done` finds the
turn stored, and a failed or cancelled turn never touches the stored conversation. The
transaction is fenced (`service.state.locks.fence`): it commits only while this turn's
token holds the conversation's lock and the conversation was not deleted. A turn that
reached a stored upstream conversation and then did not save forgets its handle the same
way (`forget_upstream`). Apart from the runner so `workers.turn` reads as the turn's
sequence and this module as the rules of what a turn may write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from service import events as relay
from service.errors import NotFound
from service.images import marked
from service.runtime.settings import Settings
from service.state import locks
from service.state.conversations import Conversation, ConversationStore, handle_key
from service.state.relay_publisher import Publisher
from service.turns import TurnRequest
from workers import continuation
from workers.tooling import Shaping
from workers.upstream import Handle
from workers.upstream.events import Done

log = logging.getLogger(__name__)

FENCE_ATTEMPTS = 5  # WATCH retries of a save (our own lock refresh can trip one)


class TurnSaver:
    """One turn's reads and fenced writes of its conversation."""

    def __init__(self, redis: Redis, settings: Settings, request: TurnRequest) -> None:
        self.redis = redis
        self.settings = settings
        self.request = request
        self.conversations = ConversationStore(
            redis, ttl=settings.conversation_ttl, handle_ttl=settings.upstream_handle_ttl
        )

    def load(self) -> Conversation:
        """The conversation the turn continues (its owner's), or a new one from the request's history."""
        request = self.request
        if not request.continues:
            # A new conversation starts from the history the client brought (if any).
            return Conversation(
                id=request.conversation_id,
                owner=request.owner,
                model=request.model,
                messages=list(request.history),
                system=request.system,
            )
        conversation = self.conversations.get(request.conversation_id)
        if conversation is None or conversation.owner != request.owner:
            raise NotFound(
                f"No conversation found with id '{request.conversation_id}'.",
                code="conversation_not_found",
                param="id",
            )
        return conversation

    def finish(
        self, publisher: Publisher, conversation: Conversation, done: Done, handle: Handle, shaping: Shaping
    ) -> None:
        """Add the exchange to `conversation`, then save it and publish `done` in one fenced transaction."""
        request = self.request
        conversation.messages = [
            *conversation.messages,
            {"role": "user", "content": marked(request.prompt, len(request.images))},
            {"role": "assistant", "content": shaping.stored_text or done.text},
        ]
        conversation.handle = {**handle.to_json(), **shaping.handle_extra()}
        self.fenced(
            lambda extra: publisher.finish(
                relay.Done(done.text, done.finish_reason, shaping.done_extra()), extra=extra
            ),
            # `store: false` (Responses): no transcript, only the digest entry of its history
            # (`service.state.ephemeral`); fenced all the same, so a turn that lost its lock
            # never reports success.
            (lambda pipe: self.conversations.save(conversation, pipe, request.completion_id))
            if request.store
            else (lambda pipe: continuation.remember(pipe, self.settings, request, conversation)),
        )

    def fenced(
        self, write: Callable[[Callable[[Pipeline], None]], None], queue: Callable[[Pipeline], object]
    ) -> None:
        """Run `write(extra)` whose `extra(pipe)` fences the transaction, then queues `queue(pipe)`.

        The save happens only while this turn's token holds the conversation's lock and
        the conversation was not deleted (`locks.fence`); a refresh of the lock by our own
        watcher also trips the WATCH, so a `WatchError` is retried and the fence then says
        whether it was benign.
        """
        request = self.request

        def extra(pipe: Pipeline) -> None:
            locks.fence(pipe, request.conversation_id, request.lock_token, exists=request.continues)
            queue(pipe)

        for attempt in range(FENCE_ATTEMPTS):
            try:
                write(extra)
                return
            except WatchError:
                if attempt == FENCE_ATTEMPTS - 1:
                    raise locks.LockLost() from None

    def forget_upstream(self) -> None:
        """Drop the stored upstream handle after a turn the upstream saw but we did not save.

        The upstream now holds a question (and perhaps part of an answer) that our
        transcript lacks; ChatHub would also see the same invocation id again. With the
        handle gone, the next turn starts a new upstream conversation seeded with our
        transcript, so both sides agree again. Fenced like a save: never another turn's handle.
        """
        try:
            self.fenced(
                lambda extra: _execute(self.redis, extra),
                lambda pipe: pipe.delete(handle_key(self.request.conversation_id)),
            )
            log.info("event=upstream_handle_forgotten reason=unsaved_turn")
        except Exception as exc:  # lock lost, deleted, or Redis down: nothing of ours to fix
            log.info("event=upstream_handle_kept error=%s", type(exc).__name__)


def _execute(redis: Redis, extra: Callable[[Pipeline], None]) -> None:
    with redis.pipeline(transaction=True) as pipe:
        extra(pipe)
        pipe.execute()
