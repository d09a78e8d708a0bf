"""One chat turn, end to end inside the worker: conversation → upstream → relay → store.

`TurnRunner.run()` is what the RQ job delegates to. It

1. loads the conversation (if the client continues one) and its upstream handle;
2. creates an upstream conversation when there is none, or when the old one expired
   or reached its turn limit — seeded with the transcript so context survives;
3. streams the upstream's events onto the relay as they arrive;
4. on `Done`, saves the turn and publishes `done` in ONE Redis transaction, so a
   client that sends its next turn the moment it sees `done` finds the turn stored,
   and a failed or cancelled turn never touches the stored conversation;
5. on failure publishes a terminal `error` event and re-raises, so RQ's failed-job
   registry tells the truth.

A watcher greenlet keeps the turn's liveness lease fresh (the web tier reports a dead
worker when it lapses) and polls the cancel flag the web tier sets when the client
disconnects; the upstream read loop checks it at least twice a second.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from redis import Redis
from rq.timeouts import JobTimeoutException

from service import locks
from service.conversations import Conversation, ConversationStore
from service.errors import ApiError, NotFound
from service.models import find_model
from service.relay import Publisher
from service.settings import Settings
from service.tools.options import TurnOptions
from service.turns import TurnRequest, cancel_key, lease_key
from workers import priming
from workers.context import WorkerContext
from workers.pool import WorkerShutdown
from workers.tooling import Shaping
from workers.upstream import build_client, load_handle
from workers.upstream.context import TurnInput
from workers.upstream.errors import ConversationExpired, ConversationLimitReached, ProtocolError
from workers.upstream.events import Citation, Done, Event, Image, Limits, Progress, Suggestions, TextDelta

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.3


class TurnRunner:
    """Runs one `TurnRequest`; see the module docstring for the sequence."""

    def __init__(self, context: WorkerContext, request: TurnRequest, *, clock: Any = time.time) -> None:
        self.settings: Settings = context.settings
        self.redis: Redis = context.redis
        self.request = request
        self.store = ConversationStore(
            self.redis, ttl=self.settings.conversation_ttl, handle_ttl=self.settings.upstream_handle_ttl
        )
        self.clock = clock
        self._cancelled = threading.Event()
        self._stopped = threading.Event()

    def run(self) -> dict[str, Any]:
        """Run the turn; returns a small summary, raises on failure."""
        publisher = Publisher(
            self.redis,
            self.request.completion_id,
            coalesce_ms=self.settings.coalesce_ms,
            replay_ttl=self.settings.replay_ttl,
        )
        watcher = threading.Thread(target=self._watch, name="turn-watch", daemon=True)
        watcher.start()
        try:
            return self._run(publisher)
        except BaseException as exc:
            if not publisher.closed and not self._cancelled.is_set():
                error = ApiError.from_exception(_describe(exc))
                log.warning("event=turn_failed status=%s code=%s error=%s", error.status, error.code, exc)
                publisher.finish({"type": "error", "error": error.to_event()})
            raise
        finally:
            self._stopped.set()
            self.redis.delete(lease_key(self.request.completion_id))
            if self.request.lock_token:
                locks.release(self.redis, self.request.conversation_id, self.request.lock_token)

    def _run(self, publisher: Publisher) -> dict[str, Any]:
        request = self.request
        spec = find_model(request.model, self.settings.upstream)
        if spec is None:
            raise NotFound(
                f"The model `{request.model}` does not exist.", code="model_not_found", param="model"
            )
        conversation = self._load_conversation()
        # `store: false` keeps nothing, so it must not advance the stored upstream conversation
        # either: such a turn runs on a new one, seeded with the transcript.
        handle = load_handle(self.settings, conversation.handle) if request.store else None
        seed = list(conversation.messages)  # what the client has seen: injected into a new upstream
        account = handle.account if handle else self._pick_account()
        client = build_client(self.settings, account)
        shaping = Shaping(TurnOptions.from_json(request.options), handle=conversation.handle)

        for attempt in (1, 2):
            if handle is None or handle.is_expired(self.clock()) or handle.exhausted:
                handle = client.create_conversation(account=account)
                log.info(
                    "event=upstream_conversation_created attempt=%d seeded_messages=%d", attempt, len(seed)
                )
            fresh = handle.fresh
            history = tuple((m["role"], m["content"]) for m in seed) if fresh else ()
            text, system = shaping.prepare(
                request.prompt,
                conversation.system if fresh else "",
                fresh=fresh,
                budget=self.settings.upstream_max_turn_chars,
                max_context=self.settings.context_max_chars,
            )
            # More than one upstream turn can carry is sent ahead in parts (workers/priming.py).
            primed = priming.plan(
                text,
                history,
                system,
                budget=self.settings.upstream_max_turn_chars,
                max_context=self.settings.context_max_chars,
            )
            turn = TurnInput(
                text=primed.text,
                tone=spec.tone,
                gpt4_turbo=spec.gpt4_turbo,
                mode=spec.mode,
                history=history if primed.inject else (),
                system=system if primed.inject else "",
                max_context_chars=self.settings.context_max_chars,
            )
            streamed = False
            try:
                self._prime(client, handle, turn, primed.primers, publisher)
                done = None
                for event in shaping.run(client, handle, turn, cancelled=self._cancelled.is_set):
                    streamed = streamed or isinstance(event, TextDelta)
                    if isinstance(event, Done):
                        done = event
                    else:
                        self._relay(publisher, event)
            except (ConversationExpired, ConversationLimitReached) as exc:
                if streamed or attempt == 2:
                    raise
                log.info("event=upstream_rollover reason=%s", exc.__class__.__name__)
                handle = None
                continue
            break

        if self._cancelled.is_set():
            log.info("event=turn_cancelled")
            return {"status": "cancelled"}
        if done is None:
            raise ProtocolError("the upstream ended the turn without an answer")
        conversation.messages = [
            *conversation.messages,
            {"role": "user", "content": request.prompt},
            {"role": "assistant", "content": shaping.stored_text or done.text},
        ]
        conversation.handle = {**handle.to_json(), **shaping.handle_extra()}
        publisher.finish(
            {"type": "done", "text": done.text, "finish_reason": done.finish_reason, **shaping.done_extra()},
            # `store: false` (Responses): nothing of the turn is kept once it is over.
            extra=(lambda pipe: self.store.save(conversation, pipe, request.completion_id))
            if request.store
            else None,
        )
        return {"status": "done", "conversation_id": conversation.id, "finish_reason": done.finish_reason}

    def _prime(
        self, client: Any, handle: Any, turn: TurnInput, primers: tuple[str, ...], publisher: Publisher
    ) -> None:
        """Send the priming parts as turns of their own; their answers are not the client's."""
        for index, text in enumerate(primers, start=1):
            if self._cancelled.is_set():
                return
            note = f"Priming the upstream conversation with the context ({index}/{len(primers)})"
            publisher.event({"type": "progress", "kind": "priming", "text": note})
            part = dataclasses.replace(turn, text=text, history=(), system="")
            for _event in client.stream_turn(handle, part, should_stop=self._cancelled.is_set):
                pass
        if primers:
            log.info("event=upstream_primed parts=%d", len(primers))

    def _load_conversation(self) -> Conversation:
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
        conversation = self.store.get(request.conversation_id)
        if conversation is None or conversation.owner != request.owner:
            raise NotFound(
                f"No conversation found with id '{request.conversation_id}'.",
                code="conversation_not_found",
                param="id",
            )
        return conversation

    def _pick_account(self) -> int:
        """Round-robin new upstream conversations over the configured accounts."""
        accounts = len(self.settings.upstream_cookies)
        if accounts <= 1:
            return 0
        return int(self.redis.incr("upstream:accounts:next")) % accounts

    def _relay(self, publisher: Publisher, event: Event | dict[str, Any]) -> None:
        if isinstance(event, dict):  # already a relay event (a tool call, from the shaping)
            publisher.event(event)
        elif isinstance(event, TextDelta):
            publisher.delta(event.text)
        elif isinstance(event, Progress):
            publisher.event({"type": "progress", "kind": event.kind, "text": event.text})
        elif isinstance(event, Citation):
            publisher.event(
                {"type": "citation", "index": event.index, "url": event.url, "title": event.title}
            )
        elif isinstance(event, Suggestions):
            publisher.event({"type": "suggestions", "items": list(event.items)})
        elif isinstance(event, Limits):
            publisher.event({"type": "limits", "used": event.used, "max": event.max})
        elif isinstance(event, Image):
            publisher.event(
                {
                    "type": "image",
                    "url": event.url,
                    "prompt": event.prompt,
                    "thumbnail_url": event.thumbnail_url,
                }
            )

    def _watch(self) -> None:
        """Keep the lease (and the conversation lock) alive and notice cancellation."""
        request = self.request
        lease_seconds = self.settings.worker_lease_seconds
        lease_every = max(1.0, lease_seconds / 3)
        last_lease = float("-inf")  # the first lease goes out at once, beside the upstream connect
        while not self._stopped.wait(0 if last_lease < 0 else CANCEL_POLL_SECONDS):
            try:
                due = time.monotonic() - last_lease >= lease_every
                with self.redis.pipeline(transaction=False) as pipe:
                    pipe.exists(cancel_key(request.completion_id))
                    if due:
                        pipe.set(lease_key(request.completion_id), b"1", ex=lease_seconds)
                        if request.lock_token:
                            # The conversation stays locked exactly as long as this turn lives.
                            locks.refresh(
                                pipe, request.conversation_id, request.lock_token, ttl=2 * lease_seconds
                            )
                    cancelled = pipe.execute()[0]
                if due:
                    last_lease = time.monotonic()
            except Exception:
                log.warning("event=turn_watch_failed", exc_info=True)
                continue
            if cancelled:
                self._cancelled.set()
                return


def _describe(exc: BaseException) -> BaseException:
    """Give failures that are not upstream errors a client-facing meaning."""
    if isinstance(exc, JobTimeoutException):
        return ApiError("The turn took longer than JOB_TIMEOUT allows.", status=504, code="turn_timeout")
    if isinstance(exc, WorkerShutdown):
        return ApiError(
            "The worker restarted while running this turn; please retry.",
            status=503,
            code="worker_restarting",
            should_retry=True,
        )
    return exc
