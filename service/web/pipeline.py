"""The one turn pipeline every API surface feeds: claim → resolve → subscribe+enqueue → watch.

A surface (Chat Completions, Responses, Anthropic Messages) parses its wire format into
a neutral `ChatRequest` and renders the relay's events back in its own shape; what
happens in between is the same for all of them and lives here:

    Idempotency-Key (attach to an earlier run?) → resolve the conversation (new /
      continue / branch; lock) → subscribe to the relay (confirmed by Redis) →
      enqueue `workers.jobs.run_turn` → the surface's `respond(gw, run, chat)`

Subscribing before enqueueing means no event can be published before we listen. A
stream first holds up to STREAM_HOLD_SECONDS for the first event (`hold_first`) so
that a failure the worker reports at once (429 from the upstream, no worker at all)
still reaches the client as a real HTTP status instead of an error inside a 200 stream.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, g, request

from service import idempotency, locks
from service.errors import ApiError, InvalidRequest
from service.relay import TERMINAL, Subscription, last_event
from service.turns import TurnRequest, enqueue_turn, new_completion_id, request_cancel
from service.web.errors import redis_unavailable
from service.web.extension import Gateway
from service.web.openai_format import Answer
from service.web.resolve import resolve
from service.web.stream import watch
from service.web.validation import ChatRequest

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
ATTACH_POLL = 0.05


@dataclasses.dataclass
class Run:
    """One completion as this request serves it: a turn it started, or one it attached to."""

    turn: TurnRequest
    sub: Subscription
    idempotency_key: str | None = None
    attached: bool = False

    def close(self, gw: Gateway, terminal: dict[str, Any] | None) -> None:
        """Unsubscribe; cancel what nobody will read; free the claim of a failed turn.

        `terminal` is the event that ended the response, or None if the client went
        away first. A turn with an Idempotency-Key is not cancelled when its client
        disappears: the SDK's retry will attach to it.
        """
        turn = self.turn
        try:
            finished = terminal is not None and not terminal.get("synthetic")
            free_claim = terminal is not None and terminal.get("type") == "error"
            if not finished and not self.attached:
                if gw.queue.remove(turn.completion_id):
                    # Never started, and now never will: free what the turn held.
                    free_claim = True
                    if turn.lock_token:
                        locks.release(gw.redis, turn.conversation_id, turn.lock_token)
                elif self.idempotency_key is None or terminal is not None:
                    log.info("event=completion_abandoned completion_id=%s", turn.completion_id)
                    request_cancel(gw.redis, turn.completion_id)
            if self.idempotency_key and free_claim:
                idempotency.release(gw.redis, turn.owner, self.idempotency_key, turn.completion_id)
        except Exception:  # Redis is down: the job's own timeouts end it
            log.warning("event=cleanup_failed completion_id=%s", turn.completion_id, exc_info=True)
        finally:
            self.sub.close()


Respond = Callable[[Gateway, Run, ChatRequest], Response]


def submit(
    gw: Gateway,
    raw: bytes,
    chat: ChatRequest,
    respond: Respond,
    *,
    completion_id: str | None = None,
    store: bool = True,
) -> Response:
    """Run `chat` as a turn (or attach to the run its Idempotency-Key names); `respond` renders it.

    `completion_id` lets a surface pick its own id prefix (`resp_`, `msg_`); `store`
    False asks the worker to keep nothing once the turn is over.
    """
    key = _idempotency_key()
    completion_id, created = completion_id or new_completion_id(), int(time.time())
    mine = idempotency.Claim(completion_id, idempotency.body_digest(raw), created=created)
    if key is not None:
        attached = _claim_or_attach(gw, key, mine, chat, respond)
        if attached is not None:
            return attached
    resolution = resolve(gw, chat, g.owner)
    turn = TurnRequest(
        completion_id=completion_id,
        conversation_id=resolution.conversation_id,
        owner=g.owner,
        model=chat.model,
        prompt=chat.prompt,
        history=resolution.history,
        system=resolution.system,
        continues=resolution.continues,
        created=created,
        lock_token=resolution.lock_token,
        store=store,
        options=chat.options,
    )
    if key is not None:
        idempotency.record(
            gw.redis, g.owner, key, dataclasses.replace(mine, conversation_id=turn.conversation_id)
        )
    g.conversation_id = turn.conversation_id
    if resolution.turns_remaining is not None:
        g.turns_remaining = resolution.turns_remaining
    run = Run(turn, _start(gw, turn), idempotency_key=key)
    log.info(
        "event=completion_enqueued completion_id=%s conversation_id=%s model=%s stream=%s how=%s",
        turn.completion_id,
        turn.conversation_id,
        turn.model,
        chat.stream,
        resolution.how,
    )
    return respond(gw, run, chat)


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters.", param="Idempotency-Key")
    return key


def _claim_or_attach(
    gw: Gateway, key: str, mine: idempotency.Claim, chat: ChatRequest, respond: Respond
) -> Response | None:
    """Claim the Idempotency-Key for this request, or serve it from the run that has it."""
    earlier = idempotency.claim(gw.redis, g.owner, key, mine, ttl=gw.settings.replay_ttl)
    if earlier is None:
        return None
    if earlier.body != mine.body:
        raise InvalidRequest(
            "Keys for idempotent requests can only be used with the same parameters "
            "they were first used with.",
            param=None,
            code="idempotency_key_reused",
        )
    attached = _attach(gw, earlier, chat, key, respond)
    if attached is None:  # that run failed: this request runs afresh under the key
        idempotency.claim(gw.redis, g.owner, key, mine, ttl=gw.settings.replay_ttl)
    return attached


def _attach(
    gw: Gateway, earlier: idempotency.Claim, chat: ChatRequest, key: str, respond: Respond
) -> Response | None:
    """Serve a retry from the earlier run of the same request; None if that run failed."""
    deadline = time.monotonic() + gw.settings.job_timeout + gw.settings.queue_wait_timeout
    while not earlier.conversation_id:  # the first request is still resolving (e.g. queued on a lock)
        if time.monotonic() > deadline:
            return None
        time.sleep(ATTACH_POLL)
        refreshed = idempotency.lookup(gw.redis, g.owner, key)
        if refreshed is None or refreshed.completion_id != earlier.completion_id:
            return None  # released (that run failed): run afresh
        earlier = refreshed
    last = last_event(gw.redis, earlier.completion_id)
    if last is not None and last.get("type") == "error":
        idempotency.release(gw.redis, g.owner, key, earlier.completion_id)
        return None
    turn = TurnRequest(
        completion_id=earlier.completion_id,
        conversation_id=earlier.conversation_id,
        owner=g.owner,
        model=chat.model,
        prompt=chat.prompt,
        created=earlier.created,
    )
    g.conversation_id = turn.conversation_id
    sub = _subscribe(gw, turn.completion_id)
    sub.catch_up()
    log.info("event=completion_attached completion_id=%s", turn.completion_id)
    return respond(gw, Run(turn, sub, idempotency_key=key, attached=True), chat)


def _subscribe(gw: Gateway, completion_id: str) -> Subscription:
    """Subscribe to a completion's relay channel; 503 if Redis does not confirm."""
    try:
        return gw.hub.subscribe(completion_id)
    except TimeoutError as exc:
        raise redis_unavailable() from exc


def _start(gw: Gateway, turn: TurnRequest) -> Subscription:
    """Subscribe to the turn's relay channel, then enqueue it; on failure free its lock."""
    try:
        sub = _subscribe(gw, turn.completion_id)
        try:
            enqueue_turn(gw.queue, turn, gw.settings)
        except BaseException:
            sub.close()
            raise
    except BaseException:
        if turn.lock_token:
            locks.release(gw.redis, turn.conversation_id, turn.lock_token)
        raise
    return sub


def collect(gw: Gateway, run: Run, answer: Answer) -> dict[str, Any]:
    """Wait for the whole answer into `answer`; the `done` event, or raise the turn's error."""
    turn = run.turn
    terminal: dict[str, Any] | None = None
    try:
        for event in watch(run.sub, gw.redis, turn.completion_id, gw.settings):
            if event is None:
                continue
            if event["type"] in TERMINAL:
                terminal = event
            elif event["type"] == "limits":
                g.turns_remaining = max(0, int(event["max"]) - int(event["used"]))
            answer.add(event)
    finally:
        run.close(gw, terminal)
    if terminal is None or terminal["type"] == "error":  # watch only ends on a terminal event
        raise ApiError.from_event((terminal or {}).get("error") or {})
    return terminal


def hold_first(gw: Gateway, run: Run) -> tuple[Iterator[dict[str, Any] | None], dict[str, Any] | None]:
    """The turn's events and the first one, held for briefly before a stream commits to a 200.

    An error that arrives within the hold is raised, so the client gets a real status.
    """
    turn = run.turn
    hold = gw.settings.stream_hold_seconds
    events: Iterator[dict[str, Any] | None] = watch(
        run.sub, gw.redis, turn.completion_id, gw.settings, hold=hold if hold > 0 else None
    )
    first: dict[str, Any] | None = None
    if hold > 0:
        try:
            first = next(events)
        except BaseException:
            run.close(gw, None)
            raise
        if first is not None and first["type"] == "error":
            run.close(gw, first)
            raise ApiError.from_event(first.get("error") or {})
    return events, first
