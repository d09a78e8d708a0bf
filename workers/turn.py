"""One chat turn, end to end inside the worker: conversation → upstream → relay → store.

`TurnRunner.run()` is what the RQ job delegates to. It

1. loads the conversation (if the client continues one) and its upstream handle;
2. hands the upstream part to `workers.upstream_turn.UpstreamTurn`: an account from the
   `AccountLane`, a new (seeded, maybe primed) upstream conversation when needed,
   roll-over and fail-over before any text, each event relayed as it arrives. Which
   upstream conversation it starts on, and whether changed instructions go first, is
   `workers.continuation`. A `store: false` turn (Responses) saves no transcript, only
   the digest of its history that lets the next request continue its upstream
   conversation (`service.state.ephemeral`), and its `done` is fenced like a save;
3. on `Done`, saves the turn and publishes `done` in ONE Redis transaction, so a
   client that sends its next turn the moment it sees `done` finds the turn stored,
   and a failed or cancelled turn never touches the stored conversation. The
   transaction is fenced (`service.state.locks.fence`): it commits only while this turn's
   token holds the conversation's lock and the conversation was not deleted
   (`workers.turn_save`, which also loads the conversation in step 1);
4. on failure publishes a terminal `Failed` event and re-raises, so RQ's failed-job
   registry tells the truth. A failed or cancelled turn that reached a stored upstream
   conversation forgets its handle (`TurnSaver.forget_upstream`): the upstream saw a message our
   transcript lacks, so the next turn starts a new one seeded with the transcript.

`workers.lease_watch` keeps the lease and lock alive and notices the cancel flag.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq.timeouts import JobTimeoutException

from service import events as relay
from service.errors import ApiError, NotFound
from service.models import ModelSpec, find_model
from service.runtime.settings import Settings
from service.state import locks
from service.state.conversations import Conversation
from service.state.relay_publisher import Publisher
from service.tools.options import TurnOptions
from service.turns import TurnRequest, lease_key
from workers import continuation
from workers.account_pool import AccountLane, pool_for
from workers.context import WorkerContext
from workers.dequeue_grants import Parked, granted_ahead, stored_ahead
from workers.gevent_job import WorkerShutdown
from workers.image_fetch import load_images
from workers.lease_watch import LeaseWatcher
from workers.tooling import Shaping
from workers.turn_save import TurnSaver
from workers.upstream import Handle
from workers.upstream.errors import (
    ProtocolError,
)
from workers.upstream_turn import UpstreamTurn

log = logging.getLogger(__name__)


class TurnRunner:
    """Runs one `TurnRequest`; see the module docstring for the sequence."""

    def __init__(self, context: WorkerContext, request: TurnRequest, *, clock: Any = time.time) -> None:
        self.settings: Settings = context.settings
        self.redis: Redis = context.redis
        self.request = request
        self.saver = TurnSaver(self.redis, self.settings, request)  # load, fenced save, forget
        self.clock = clock
        self.lane: AccountLane | None = None
        self.upstream: UpstreamTurn | None = None  # the account/upstream loop, once it runs
        self._update = ""  # changed instructions for a continued upstream conversation (workers.instructions)
        self.watcher = LeaseWatcher(self.redis, self.settings, request, lane=lambda: self.lane)
        self._cancelled = self.watcher.cancelled
        self._stopped = self.watcher.stopped
        self._lock_lost = self.watcher.lock_lost

    def run(self) -> dict[str, Any]:
        """Run the turn; returns a small summary, raises on failure."""
        publisher = Publisher(
            self.redis,
            self.request.completion_id,
            coalesce_ms=self.settings.coalesce_ms,
            replay_ttl=self.settings.replay_ttl,
        )
        # The process's one watching greenlet serves this turn too (`lease_watch`): no greenlet
        # of its own, and its round trips are not on the path to the first token (untraced).
        self.watcher.watch()
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
                    # How many turns the upstream saw: the key is charged the input they carried.
                    sent = self.upstream.turns.sent if self.upstream is not None else 0
                    publisher.finish(relay.Failed(error.to_event(), upstream_turns=sent))
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
        # Read with the job's dequeue when it continues a stored conversation (`workers.dequeue`).
        read = stored_ahead(request.completion_id)
        conversation = continuation.preloaded(request, read) or self.saver.load()
        # A stored handle is an upstream conversation the next turn would continue: if this
        # turn reaches it and then does not save, it must be forgotten (`forget_upstream`).
        # (`store: false` never touches the stored one, so has nothing to forget.)
        stored = request.store and conversation.handle is not None
        # The stored handle, the one a `store: false` history left, or none; and changed instructions.
        start = continuation.begin(self.settings, request, conversation)
        handle, self._update = start.handle, start.update
        seed = list(conversation.messages)  # what the client has seen: injected into a new upstream
        try:
            return self._converse(publisher, spec, conversation, handle, seed)
        except BaseException:
            if stored and self.reached_upstream:
                self.saver.forget_upstream()
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
        ahead = granted_ahead(request.completion_id)
        self.lane = lane = AccountLane(
            pool_for(self.settings, self.redis),
            request.owner,
            publisher,
            self._cancelled.is_set,
            request.group,
            ahead=ahead,
        )
        parked = Parked(self.redis, ahead.images if ahead is not None else {})  # read with the dequeue
        images = load_images(parked, self.settings, request.images)  # a bad URL fails before a slot
        # Tools, structured output and cuts (workers/tooling.py): directives in, answer shaped out.
        shaping = Shaping(TurnOptions.from_json(request.options), handle=conversation.handle)
        self.upstream = upstream = UpstreamTurn(
            self.settings,
            request,
            publisher,
            lane,
            should_stop=self._should_stop,
            clock=self.clock,
            update=self._update,
        )
        outcome = upstream.run(spec, conversation, handle, seed, images, shaping)
        account, done, drawn, handle = outcome.account, outcome.done, outcome.drawn, outcome.handle

        if self._lock_lost.is_set():
            raise locks.LockLost()
        if account is None:  # cancelled while waiting for an account
            log.info("event=turn_cancelled")
            return {"status": "cancelled"}
        if self._cancelled.is_set():
            log.info("event=turn_cancelled")
            if request.store and conversation.handle is not None and self.reached_upstream:
                self.saver.forget_upstream()
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
        self.saver.finish(publisher, conversation, done, handle, shaping)
        return {"status": "done", "conversation_id": conversation.id, "finish_reason": done.finish_reason}

    @property
    def reached_upstream(self) -> bool:
        """The upstream was contacted: a stored handle it continued may now disagree."""
        return self.upstream is not None and self.upstream.reached

    def _should_stop(self) -> bool:
        return self._cancelled.is_set() or self._lock_lost.is_set()


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
