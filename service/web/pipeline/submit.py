"""The one turn pipeline every API surface feeds: admit → claim → resolve → subscribe+enqueue → watch.

A surface (Chat Completions, Responses, Anthropic Messages) parses its wire format into
a neutral `ChatRequest` and renders the relay's events back in its own shape; what
happens in between is the same for all of them and lives here:

    admission (429 when the account pool's line is too long) → Idempotency-Key
      (attach to an earlier run? `attach`) → resolve the conversation (new /
      continue / branch; lock) → subscribe to the relay (confirmed by Redis) →
      enqueue `workers.jobs.run_turn` (`enqueue`) → `respond.answer_turn` through the
      surface's renderer

A turn takes the short way: its admission, key quota, Idempotency-Key claim and its
conversation's lock (or the room for a new one) are checked by the enqueue's own script,
which parks its images too (`pipeline.gate`, `pipeline.gate_continue`), one Redis round trip in
all (two when a completion id or a history must first be looked up). What that script
cannot decide (a claimed key, a conversation gone, changed or busy) is decided the old
way once its checks passed (`_start`).

Subscribing before enqueueing means no event can be published before we listen. A
surface that makes its streams resumable (`resume.Resumable`) or answers in the
background (`answer=`) says so here; the rest is the same for every surface.
A surface calls `submit` once with its parsed request and a renderer factory and gets
the Flask response back; it never waits, holds or closes anything itself.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, TypedDict

from flask import Response, g

from service.images import ImageLimits, park
from service.models import Aliases
from service.runtime import trace
from service.runtime.logs import bind_turn
from service.state import idempotency
from service.turns import TurnRequest, new_completion_id
from service.web.http.extension import Gateway
from service.web.pipeline import admission, attach, quota, resume, turn_cost
from service.web.pipeline import conversation_limits as limits
from service.web.pipeline.enqueue import start
from service.web.pipeline.gate import ClaimTaken, Gate
from service.web.pipeline.gate import park as park_in_gate
from service.web.pipeline.gate import prepare as prepare_gate
from service.web.pipeline.gate_continue import Unresolved, aim
from service.web.pipeline.request import Bounds, ChatRequest
from service.web.pipeline.resolve import aimed, resolve
from service.web.pipeline.respond import MakeRenderer, answer_turn
from service.web.pipeline.run import Run

log = logging.getLogger(__name__)

Answerer = Callable[[Gateway, Run, ChatRequest, MakeRenderer], Response]
"""How the running turn is answered: `respond.answer_turn`, or a background response's answer."""


def submit(
    gw: Gateway,
    raw: bytes,
    chat: ChatRequest,
    make: MakeRenderer,
    *,
    completion_id: str | None = None,
    store: bool = True,
    resumable: resume.Resumable | None = None,
    answer: Answerer = answer_turn,
    param: str = "messages",
) -> Response:
    """Run `chat` as a turn (or attach to the run its Idempotency-Key names); `make` builds its renderer.

    `raw` is the body as `service.web.http.body.read_body` read it (its digest ties an
    Idempotency-Key to one request). `completion_id` lets a surface pick its own id
    prefix (`resp_`, `msg_`); `store` False asks the worker to keep nothing once the
    turn is over. `resumable` makes the stream survive a disconnect (`pipeline.resume`);
    `answer` answers the running turn (a background response returns at once).
    `param` is what a request over MAX_UPSTREAM_TURNS_PER_REQUEST names.
    """
    owner: str = g.owner  # the request's caller, read once here: helpers take it as an argument
    g.model = chat.model  # labels this request's metrics (service.web.http.telemetry)
    turns = turn_cost.check(chat, gw.settings, param=param)  # 400 over MAX_UPSTREAM_TURNS_PER_REQUEST
    group = admission.caller_group()  # the key's account group: its turns run on no other accounts
    key = attach.idempotency_key()
    target = aim(gw, chat, owner)  # a completion id or a history: one read
    gate: Gate | None = None
    if target is not None:
        # The door, the key's quota, the Idempotency-Key's claim, the conversation's lock (or the
        # room for a new one) are checked in the enqueue's own round trip (`pipeline.gate`); the
        # 403 and the empty group's 503 come from memory now.
        gate = prepare_gate(gw, owner, group, g.get("caller"), chat.model, turns, target)
    else:
        # A pointer that leads nowhere (its 404), or a history no conversation has (a new one,
        # maybe carrying a `store: false` digest): checked (and counted) first, as always.
        admission.admit(owner, group)  # 429 at once if the group's line is too long; 503 if it is empty
        trace.mark("admission")
        # The key's model access and limits (403/429), charged the turns the request surely costs,
        # with its conversation count in the same round trip.
        quota.keep(quota.admit(gw, g.get("caller"), chat.model, owner=owner, turns=turns))
        trace.mark("quota")
    completion_id, created = completion_id or new_completion_id(), int(time.time())
    mine = idempotency.Claim(completion_id, idempotency.body_digest(raw), created=created)
    try:
        run = _start(gw, owner, chat, key, mine, gate, store=store, group=group, resumable=resumable)
    except BaseException:
        if key is not None:  # nothing will fulfil the claim: a retry must run afresh at once
            attach.release_claim(gw, owner, key, completion_id)
        raise
    return _answer(gw, run, chat, make, answer)


def _start(
    gw: Gateway,
    owner: str,
    chat: ChatRequest,
    key: str | None,
    mine: idempotency.Claim,
    gate: Gate | None,
    **begin: Any,
) -> Run:
    """The turn's run, or the earlier run its Idempotency-Key names (`Run.attached`).

    Through the gate first; what its script could not decide (the key claimed already, a
    conversation gone, changed or busy) is then decided the old way, its checks passed.
    """
    if gate is not None:
        try:
            return _begin(gw, owner, chat, key, mine, gate=gate, **begin)
        except ClaimTaken as taken:
            assert key is not None
            attached = attach.attach_to(gw, owner, key, taken.earlier, mine, chat)
            if attached is not None:
                return attached
            return _begin(gw, owner, chat, key, mine, **begin)  # that run failed: claimed afresh
        except Unresolved:
            trace.mark("unresolved")
    if key is not None:
        attached = attach.claim_or_attach(gw, owner, key, mine, chat)
        if attached is not None:
            return attached
        trace.mark("claim")
    return _begin(gw, owner, chat, key, mine, **begin)


def _answer(
    gw: Gateway, run: Run, chat: ChatRequest, make: MakeRenderer, answer: Answerer = answer_turn
) -> Response:
    """`answer` (`answer_turn`), then the turns left that a collected answer's limits event reported."""
    try:
        return answer(gw, run, chat, make)
    finally:
        if run.turns_remaining is not None:
            g.turns_remaining = run.turns_remaining


def bounds(gw: Gateway) -> Bounds:
    """The request size limits of this gateway's settings, for every surface's parser."""
    settings = gw.settings
    limits = ImageLimits(settings.image_max_bytes, settings.image_max_per_message, settings.image_url_fetch)
    return Bounds(settings.max_messages, settings.max_input_chars, limits)


class ParseOptions(TypedDict):
    """What every surface's parser takes from the settings (`parse(raw, headers, **options)`)."""

    upstream: str
    bounds: Bounds
    aliases: Aliases
    tool_emulation: bool


def parse_options(gw: Gateway) -> ParseOptions:
    """The settings a surface's parser needs: upstream dialect, bounds, model aliases, tools."""
    settings = gw.settings
    return ParseOptions(
        upstream=settings.upstream,
        bounds=bounds(gw),
        aliases=settings.model_aliases,
        tool_emulation=settings.tool_emulation,
    )


def _begin(
    gw: Gateway,
    owner: str,
    chat: ChatRequest,
    key: str | None,
    mine: idempotency.Claim,
    *,
    store: bool,
    group: str,
    resumable: resume.Resumable | None,
    gate: Gate | None = None,
) -> Run:
    """Resolve the conversation and start the turn (the claim, if any, is taken, or with `gate` is
    taken by its script)."""
    completion_id, created = mine.completion_id, mine.created
    if gate is None:
        refs = park(gw.redis, chat.images)  # before the lock: nothing to free if Redis fails here
    else:
        refs, gate = park_in_gate(gw, gate, chat.images)  # parked by the gate's script
    trace.mark("park")
    if gate is not None and gate.target.conversation_id:  # checked and locked by the gate's script
        resolution = aimed(chat, gate.target.conversation_id, gate.target.how)
    else:
        resolution = resolve(gw, chat, owner)
    trace.mark("resolve")
    if not resolution.continues and gate is None:  # a new conversation: within KEY_MAX_CONVERSATIONS?
        limits.check_room(gw, owner)
        trace.mark("room")
    turn = TurnRequest(
        completion_id=completion_id,
        conversation_id=resolution.conversation_id,
        owner=owner,
        model=chat.model,
        prompt=chat.prompt,
        history=resolution.history,
        system=resolution.system,
        continues=resolution.continues,
        created=created,
        lock_token=resolution.lock_token,
        request_id=g.request_id,
        store=store,
        images=[ref.to_json() for ref in refs],
        options=chat.options,
        kind=chat.kind,
        image_format=chat.image_format,
        instructions=resolution.instructions,
        carried=resolution.carried.to_json() if resolution.carried else {},
        group=group,
        trace=trace.current() is not None,
    )
    if key is not None and gate is not None:  # claimed by the gate's script, conversation known
        gate = dataclasses.replace(
            gate,
            claim=(
                idempotency.claim_key(owner, key),
                dataclasses.replace(mine, conversation_id=turn.conversation_id),
            ),
        )
    elif key is not None:
        idempotency.record(
            gw.redis, owner, key, dataclasses.replace(mine, conversation_id=turn.conversation_id)
        )
        trace.mark("record")
    g.conversation_id = turn.conversation_id
    g.conversation_new = resolution.how in ("new", "branched")  # nothing kept if this turn fails
    bind_turn(job_id=turn.completion_id, conversation_id=turn.conversation_id)  # on every log line
    if resolution.turns_remaining is not None:
        g.turns_remaining = resolution.turns_remaining
    grace, record = resume.remember(gw, turn, chat, key, resumable)
    run = Run(
        turn,
        start(gw, turn, record, gate),
        idempotency_key=key,
        ticket=quota.take_ticket(),
        grace=grace,
        detached=resumable is not None and resumable.background,
    )
    log.info(
        "event=completion_enqueued completion_id=%s conversation_id=%s model=%s stream=%s how=%s",
        turn.completion_id,
        turn.conversation_id,
        turn.model,
        chat.stream,
        resolution.how,
    )
    return run
