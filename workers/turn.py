"""One chat turn, end to end inside the worker: conversation → upstream → relay → store.

`TurnRunner.run()` is what the RQ job delegates to. It

1. loads the conversation (if the client continues one) and its upstream handle;
2. takes an upstream account (`AccountLane`) and creates an upstream conversation when
   there is none, or when the old one expired or reached its turn limit — seeded with
   the transcript so context survives; a seed longer than one upstream turn carries is
   *primed* over several turns first (`workers.priming`), on the same account. A
   `store: false` turn (Responses) runs on a new upstream conversation and saves
   nothing, but its `done` is fenced like a save;
3. streams the upstream's events onto the relay as they arrive;
4. on `Done`, saves the turn and publishes `done` in ONE Redis transaction, so a
   client that sends its next turn the moment it sees `done` finds the turn stored,
   and a failed or cancelled turn never touches the stored conversation. The
   transaction is fenced (`service.locks.fence`): it commits only while this turn's
   token holds the conversation's lock and the conversation was not deleted;
5. on failure publishes a terminal `error` event and re-raises, so RQ's failed-job
   registry tells the truth. A failed or cancelled turn that reached a stored upstream
   conversation forgets its handle (`_forget_upstream`): the upstream saw a message our
   transcript lacks, so the next turn starts a new upstream conversation seeded with
   the transcript rather than continue one that disagrees with it.

A watcher greenlet keeps the turn's liveness lease fresh (the web tier reports a dead
worker when it lapses) and polls the cancel flag the web tier sets when the client
disconnects; the upstream read loop checks it at least twice a second. A refresh that
finds the lock gone stops the turn too (it could not save anyway).
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError, WatchError
from rq.timeouts import JobTimeoutException

from service import locks
from service.conversations import Conversation, ConversationStore, handle_key
from service.errors import ApiError, NotFound
from service.images import marked
from service.models import ModelSpec, find_model
from service.relay import Publisher
from service.settings import Settings
from service.tools.options import TurnOptions
from service.turns import TurnRequest, cancel_key, lease_key
from workers import priming
from workers.account_pool import AccountLane, pool_for
from workers.context import WorkerContext
from workers.image_fetch import load_images
from workers.instrument import UpstreamTimer
from workers.pool import WorkerShutdown
from workers.tooling import Shaping
from workers.upstream import Handle, build_client, load_handle
from workers.upstream.context import TurnInput
from workers.upstream.errors import (
    ConversationExpired,
    ConversationLimitReached,
    ProtocolError,
    UpstreamError,
)
from workers.upstream.events import Citation, Done, Event, Image, Limits, Progress, Suggestions, TextDelta

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.3
WATCH_BACKOFF_MAX = 2.0  # longest pause between watcher retries while Redis is unreachable
FENCE_ATTEMPTS = 5  # WATCH retries of a save (our own lock refresh can trip one)


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
        self._lock_lost = threading.Event()
        self._reached_upstream = False
        self.lane: AccountLane | None = None

    def run(self) -> dict[str, Any]:
        """Run the turn; returns a small summary, raises on failure."""
        publisher = Publisher(
            self.redis,
            self.request.completion_id,
            coalesce_ms=self.settings.coalesce_ms,
            replay_ttl=self.settings.replay_ttl,
        )
        # In this turn's context, so its log lines carry the turn's ids too.
        watch = contextvars.copy_context().run
        watcher = threading.Thread(target=watch, args=(self._watch,), name="turn-watch", daemon=True)
        watcher.start()
        try:
            return self._run(publisher)
        except BaseException as exc:
            if not publisher.closed and not self._cancelled.is_set():
                error = ApiError.from_exception(_describe(exc))
                log.warning(
                    "event=turn_failed status=%s code=%s error_class=%s error=%s",
                    error.status,
                    error.code,
                    exc.__class__.__name__,
                    exc,
                )
                try:
                    publisher.finish({"type": "error", "error": error.to_event()})
                except RedisError:  # Redis is gone: the web tier notices the lease lapse instead
                    log.warning("event=turn_error_unpublished")
            raise
        finally:
            self._stopped.set()
            self._let_go()

    def _let_go(self) -> None:
        """Drop the lease and the lock; with Redis gone both simply expire (lease, then 2× lease)."""
        try:
            if self.lane is not None:
                self.lane.release()
            self.redis.delete(lease_key(self.request.completion_id))
            if self.request.lock_token:
                locks.release(self.redis, self.request.conversation_id, self.request.lock_token)
        except RedisError as exc:
            log.warning("event=turn_release_failed error=%s", exc.__class__.__name__)

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
        # A stored handle is an upstream conversation the next turn would continue: if this
        # turn reaches it and then does not save, it must be forgotten (`_forget_upstream`).
        # (`store: false` never touches the stored one, so has nothing to forget.)
        stored = request.store and conversation.handle is not None
        try:
            return self._converse(publisher, spec, conversation, handle, seed)
        except BaseException:
            if stored and self._reached_upstream:
                self._forget_upstream()
            raise

    def _converse(
        self,
        publisher: Publisher,
        spec: ModelSpec,
        conversation: Conversation,
        handle: Handle | None,
        seed: list[dict[str, str]],
    ) -> dict[str, Any]:
        """Steps 2–4 of the module docstring: account, upstream conversation, stream, fenced save."""
        request = self.request
        # The pool picks the account (waiting its turn if every slot is taken); an account
        # failure before any token moves the turn to another account, seeded like a rollover.
        self.lane = lane = AccountLane(
            pool_for(self.settings, self.redis), request.owner, publisher, self._cancelled.is_set
        )
        images = load_images(self.redis, self.settings, request.images)  # a bad URL fails before a slot
        # Tools, structured output and cuts (workers/tooling.py): directives in, answer shaped out.
        shaping = Shaping(TurnOptions.from_json(request.options), handle=conversation.handle)
        account = lane.take(handle.account if handle else None)
        rollovers = 0
        done = None
        drawn = False  # an image generation (`kind="image"`) must end with an image
        while account is not None:
            if handle is not None and handle.account != account.id:
                handle = None  # the conversation's account is gone or unwell: a new upstream one
            client = build_client(self.settings, account, on_cookies=lane.pool.cookie_sink(account.id))
            timer = UpstreamTimer(self.settings.upstream, request, account.id)  # metrics
            streamed = False
            self._reached_upstream = True
            try:
                if handle is None or handle.is_expired(self.clock()) or handle.exhausted:
                    handle = client.create_conversation(account=account.id)
                    log.info("event=upstream_conversation_created seeded_messages=%d", len(seed))
                # More than one upstream turn can carry goes ahead in parts (workers/priming.py),
                # on this account's new upstream conversation, inside the same account lane.
                turn, primers = self._turn_input(spec, handle.fresh, conversation, seed, images, shaping)
                self._prime(client, handle, turn, primers, publisher)
                done = None
                for event in shaping.run(
                    client, handle, turn, cancelled=self._should_stop, watch=timer.watch
                ):
                    streamed = streamed or isinstance(event, TextDelta)
                    drawn = drawn or isinstance(event, Image)
                    if isinstance(event, Done):
                        done = event
                    else:
                        self._relay(publisher, event)
            except (ConversationExpired, ConversationLimitReached) as exc:
                if streamed or rollovers:
                    raise
                rollovers += 1
                log.info("event=upstream_rollover reason=%s", exc.__class__.__name__)
                handle = None
                continue
            except UpstreamError as exc:
                if streamed or not lane.fail_over(exc):
                    raise
                log.info("event=account_failover from=%s reason=%s", account.id, exc.__class__.__name__)
                account = lane.take(None)
                continue
            break

        if self._lock_lost.is_set():
            raise locks.LockLost()
        if account is None:  # cancelled while waiting for an account
            log.info("event=turn_cancelled")
            return {"status": "cancelled"}
        if self._cancelled.is_set():
            log.info("event=turn_cancelled")
            if request.store and conversation.handle is not None and self._reached_upstream:
                self._forget_upstream()
            return {"status": "cancelled"}
        if done is None:
            raise ProtocolError("the upstream ended the turn without an answer")
        if request.kind == "image" and not drawn:
            raise ApiError(
                f"Copilot answered without generating an image: {done.text[:300]!r}",
                status=502,
                code="no_image_generated",
            )
        assert handle is not None  # the answer came on an upstream conversation
        conversation.messages = [
            *conversation.messages,
            {"role": "user", "content": marked(request.prompt, len(request.images))},
            {"role": "assistant", "content": shaping.stored_text or done.text},
        ]
        conversation.handle = {**handle.to_json(), **shaping.handle_extra()}
        self._fenced(
            lambda extra: publisher.finish(
                {
                    "type": "done",
                    "text": done.text,
                    "finish_reason": done.finish_reason,
                    **shaping.done_extra(),
                },
                extra=extra,
            ),
            # `store: false` (Responses): nothing of the turn is kept, but the done event is
            # fenced all the same, so a turn that lost its lock never reports success.
            (lambda pipe: self.store.save(conversation, pipe, request.completion_id))
            if request.store
            else (lambda pipe: None),
        )
        return {"status": "done", "conversation_id": conversation.id, "finish_reason": done.finish_reason}

    def _prime(
        self, client: Any, handle: Handle, turn: TurnInput, primers: tuple[str, ...], publisher: Publisher
    ) -> None:
        """Send the priming parts as turns of their own; their answers are not the client's."""
        for index, text in enumerate(primers, start=1):
            if self._should_stop():
                return
            note = f"Priming the upstream conversation with the context ({index}/{len(primers)})"
            publisher.event({"type": "progress", "kind": "priming", "text": note})
            part = dataclasses.replace(turn, text=text, history=(), system="")
            for _event in client.stream_turn(handle, part, should_stop=self._should_stop):
                pass
        if primers:
            log.info("event=upstream_primed parts=%d", len(primers))

    def _fenced(
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

    def _forget_upstream(self) -> None:
        """Drop the stored upstream handle after a turn the upstream saw but we did not save.

        The upstream now holds a question (and perhaps part of an answer) that our
        transcript lacks; ChatHub would also see the same invocation id again. With the
        handle gone, the next turn starts a new upstream conversation seeded with our
        transcript, so both sides agree again. Fenced like a save: never another turn's handle.
        """
        try:
            self._fenced(
                lambda extra: _execute(self.redis, extra),
                lambda pipe: pipe.delete(handle_key(self.request.conversation_id)),
            )
            log.info("event=upstream_handle_forgotten reason=unsaved_turn")
        except Exception as exc:  # lock lost, deleted, or Redis down: nothing of ours to fix
            log.info("event=upstream_handle_kept error=%s", type(exc).__name__)

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

    def _turn_input(
        self,
        spec: Any,
        fresh: bool,
        conversation: Conversation,
        seed: list[Any],
        images: tuple[Any, ...],
        shaping: Shaping,
    ) -> tuple[TurnInput, tuple[str, ...]]:
        """The turn as the dialect needs it, and the priming parts to send before it.

        A fresh upstream conversation gets the history injected; when that (or the
        prompt) is more than one upstream turn carries, it is primed instead.
        """
        history = tuple((m["role"], m["content"]) for m in seed) if fresh else ()
        # The gateway's directives (tools, format) go in before the text is planned into parts.
        text, system = shaping.prepare(
            self.request.prompt,
            conversation.system if fresh else "",
            fresh=fresh,
            budget=self.settings.upstream_max_turn_chars,
            max_context=self.settings.context_max_chars,
        )
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
            images=images,
        )
        return turn, primed.primers

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

    def _should_stop(self) -> bool:
        return self._cancelled.is_set() or self._lock_lost.is_set()

    def _watch(self) -> None:
        """Keep the lease (and the conversation lock) alive and notice cancellation.

        Redis being unreachable is waited out with a capped backoff and one warning:
        the turn itself fails as soon as it cannot publish, so there is nothing to
        gain from hammering Redis here (and it must never spin).
        """
        request = self.request
        lease_seconds = self.settings.worker_lease_seconds
        lease_every = max(1.0, lease_seconds / 3)
        last_lease = float("-inf")  # the first lease goes out at once, beside the upstream connect
        wait = 0.0
        failures = 0
        while not self._stopped.wait(wait):
            wait = CANCEL_POLL_SECONDS
            try:
                due = time.monotonic() - last_lease >= lease_every
                with self.redis.pipeline(transaction=False) as pipe:
                    pipe.exists(cancel_key(request.completion_id))
                    if due:
                        pipe.set(lease_key(request.completion_id), b"1", ex=lease_seconds)
                        if self.lane is not None:
                            self.lane.refresh(pipe)  # the account slot lives exactly as long as the turn
                        if request.lock_token:
                            # The conversation stays locked exactly as long as this turn lives.
                            locks.refresh(
                                pipe, request.conversation_id, request.lock_token, ttl=2 * lease_seconds
                            )
                    replies = pipe.execute()
                cancelled = replies[0]
                if due:
                    last_lease = time.monotonic()
                    if request.lock_token and not replies[-1]:
                        self._lock_lost.set()  # another turn may hold it now: stop, never save
            except Exception as exc:
                if failures == 0:
                    log.warning("event=turn_watch_failed error=%s", exc.__class__.__name__)
                failures += 1
                wait = min(WATCH_BACKOFF_MAX, CANCEL_POLL_SECONDS * 2**failures)
                continue
            if failures:
                log.info("event=turn_watch_recovered failures=%d", failures)
                failures = 0
            if cancelled:
                self._cancelled.set()
                return


def _execute(redis: Redis, extra: Callable[[Pipeline], None]) -> None:
    with redis.pipeline(transaction=True) as pipe:
        extra(pipe)
        pipe.execute()


def _describe(exc: BaseException) -> BaseException:
    """Give failures that are not upstream errors a client-facing meaning."""
    if isinstance(exc, JobTimeoutException):
        return ApiError("The turn took longer than JOB_TIMEOUT allows.", status=504, code="turn_timeout")
    if isinstance(exc, RedisError):
        return ApiError(
            "The gateway lost its Redis while running this turn; please retry.",
            status=503,
            code="service_unavailable",
            should_retry=True,
            retry_after=5,
        )
    if isinstance(exc, WorkerShutdown):
        return ApiError(
            "The worker restarted while running this turn; please retry.",
            status=503,
            code="worker_restarting",
            should_retry=True,
        )
    return exc
