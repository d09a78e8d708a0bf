"""One turn's upstream part: the account, roll-over and fail-over loop that gets an answer.

`UpstreamTurn.run` takes an account from the turn's `AccountLane`, creates an upstream
conversation when there is none (or the old one expired or reached its turn limit),
primes it when the seed is more than one upstream turn carries (`service.priming`),
streams the turn through the shaping (`workers.tooling`, a pure filter) and relays each
event as it arrives. Before any text streamed it rolls over once to a new upstream
conversation, or fails over to another account; after that a failure is the turn's.

This is the one module that drives the upstream client (including the shaping's repair
turn). Saving the turn is the runner's (`workers.turn`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

from service import events as relay
from service import priming
from service.models import ModelSpec
from service.runtime import trace
from service.runtime.settings import Settings
from service.state.conversations import Conversation
from service.state.relay_publisher import Publisher
from service.turns import TurnRequest
from workers import spare_conversations, turn_budget
from workers.account_pool import AccountLane
from workers.generated_image import fetch_b64
from workers.instrument import UpstreamTimer
from workers.relay_events import Relayed, to_relay
from workers.tooling import Shaping
from workers.upstream import Client, Credentials, Handle, build_client
from workers.upstream.context import TurnInput
from workers.upstream.errors import ConversationExpired, ConversationLimitReached, UpstreamError
from workers.upstream.events import Done, Event, Image, TextDelta

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Attempt:
    """What one try on one account got: the upstream conversation, the answer, if text streamed."""

    handle: Handle | None
    done: Done | None = None
    streamed: bool = False


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How the loop ended: the account (None: cancelled while waiting for one) and the answer."""

    account: Credentials | None
    handle: Handle | None
    done: Done | None
    drawn: bool  # an image generation (`kind="image"`) must end with an image


class UpstreamTurn:
    """Gets one turn's answer from the upstream and relays it; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        request: TurnRequest,
        publisher: Publisher,
        lane: AccountLane,
        *,
        should_stop: Callable[[], bool],
        clock: Callable[[], float],
        update: str = "",
    ) -> None:
        self.settings = settings
        self.update = update  # changed instructions, sent first if the upstream conversation continues
        self.request = request
        self.publisher = publisher
        self.lane = lane
        self.should_stop = should_stop
        self.clock = clock
        self.reached = False  # the upstream was contacted (a stored handle may now disagree)
        self.drawn = False
        # Upstream turns started (priming parts, the turn, a repair; every account), each one an
        # entry of its account's minute; no more than MAX_UPSTREAM_TURNS_PER_REQUEST in all.
        self.turns = turn_budget.TurnCounter(settings.max_upstream_turns_per_request, lane.note_turn)

    def run(
        self,
        spec: ModelSpec,
        conversation: Conversation,
        handle: Handle | None,
        seed: list[dict[str, str]],
        images: tuple[Any, ...],
        shaping: Shaping,
    ) -> Outcome:
        """Try accounts (and one roll-over) until an answer, a failure, or a cancel."""
        lane = self.lane
        # A new upstream conversation takes its account's spare, if any, with the slot.
        wants_spare = handle is None and self.settings.upstream_spare_conversations
        account = lane.take(handle.account if handle else None, spare=wants_spare)
        rollovers = 0
        attempt = Attempt(handle)
        while account is not None:
            if handle is not None and handle.account != account.id:
                handle = None  # the conversation's account is gone or unwell: a new upstream one
            attempt = Attempt(handle)
            try:
                self._attempt(account, attempt, spec, conversation, seed, images, shaping)
            except (ConversationExpired, ConversationLimitReached) as exc:
                if attempt.streamed or rollovers:
                    raise
                rollovers += 1
                log.info("event=upstream_rollover reason=%s", exc.__class__.__name__)
                handle = None
                continue
            except UpstreamError as exc:
                if attempt.streamed or not lane.fail_over(exc):
                    raise
                log.info("event=account_failover from=%s reason=%s", account.id, exc.__class__.__name__)
                handle = attempt.handle
                account = lane.take(None)
                continue
            break
        return Outcome(account, attempt.handle, attempt.done, self.drawn)

    def _attempt(
        self,
        account: Credentials,
        attempt: Attempt,
        spec: ModelSpec,
        conversation: Conversation,
        seed: list[dict[str, str]],
        images: tuple[Any, ...],
        shaping: Shaping,
    ) -> None:
        """One try on `account`: its upstream conversation, priming, the shaped stream, relayed."""
        client: Client = turn_budget.CountedTurns(  # every turn is an entry of the account's minute
            build_client(self.settings, account, on_cookies=self.lane.pool.cookie_sink(account.id)),
            self.turns.note,
        )
        timer = UpstreamTimer(self.settings.upstream, self.request, account.id)  # metrics
        self.reached = True
        handle = attempt.handle
        created = handle is None or handle.is_expired(self.clock()) or handle.exhausted
        spare = False
        if handle is None or created:
            handle, spare = self._new_conversation(client, account, len(seed))
            attempt.handle = handle
        # More than one upstream turn can carry goes ahead in parts (service/priming.py),
        # on this account's new upstream conversation, inside the same account lane.
        turn, primers = self._turn_input(spec, handle.fresh, conversation, seed, images, shaping)
        try:
            self._prime(client, handle, turn, primers)
            for event in self._shaped(shaping, client, handle, turn, timer.watch):
                if not attempt.streamed and isinstance(event, TextDelta):
                    trace.mark("first_token")
                attempt.streamed = attempt.streamed or isinstance(event, TextDelta)
                self.drawn = self.drawn or isinstance(event, Image)
                if isinstance(event, Done):
                    attempt.done = event
                else:
                    self._relay(event)
        except UpstreamError as exc:
            if spare and not attempt.streamed and not isinstance(exc, ConversationExpired):
                # The upstream forgot the spare (or refused it): roll over to one created now.
                raise ConversationExpired("the account's spare conversation was refused") from exc
            raise
        if created:
            self._refill(account)  # after the turn's own stream: the create never delays a first token

    def _new_conversation(self, client: Client, account: Credentials, seeded: int) -> tuple[Handle, bool]:
        """The account's spare conversation (taken with the slot), else one created now; True if spare."""
        handle = spare_conversations.use(self.settings, self.lane.spare(), account.id, self.clock())
        if handle is not None:
            trace.mark("spare_used")
            return handle, True
        handle = client.create_conversation(account=account.id)
        trace.mark("upstream_created")
        log.info("event=upstream_conversation_created seeded_messages=%d", seeded)
        return handle, False

    def _refill(self, account: Credentials) -> None:
        """After a turn that used up (or never had) its account's spare: make the next one."""
        pool = self.lane.pool
        spare_conversations.refill(
            self.settings,
            pool.registry.redis,
            pool.registry.prefix,
            account,
            pool.cookie_sink(account.id),
            current=lambda: pool.credentials(pool.registry.get(account.id)),  # read in the background
        )

    def _shaped(
        self,
        shaping: Shaping,
        client: Client,
        handle: Handle,
        turn: TurnInput,
        watch: Callable[[Iterator[Event]], Iterator[Event]],
    ) -> Iterator[Relayed]:
        """Stream `turn` through the shaping; the repair turn it may ask for runs here too.

        This module is the one that drives the upstream client: the shaping is a pure
        filter over events. A cut or cancellation ends the upstream turn; `watch` wraps
        each upstream stream (the worker's metrics timer).
        """

        def stop() -> bool:
            return self.should_stop() or shaping.cut

        def repair(text: str) -> Iterator[Event]:
            again = dataclasses.replace(turn, text=text, history=(), system="", images=())
            return watch(client.stream_turn(handle, again, should_stop=stop))

        return shaping.shape(watch(client.stream_turn(handle, turn, should_stop=stop)), repair)

    def _prime(self, client: Client, handle: Handle, turn: TurnInput, primers: tuple[str, ...]) -> None:
        """Send the priming parts as turns of their own; their answers are not the client's."""
        for index, text in enumerate(primers, start=1):
            if self.should_stop():
                return
            note = f"Priming the upstream conversation with the context ({index}/{len(primers)})"
            self.publisher.event(relay.Progress("priming", note))
            part = dataclasses.replace(turn, text=text, history=(), system="")
            for _event in client.stream_turn(handle, part, should_stop=self.should_stop):
                pass
        if primers:
            log.info("event=upstream_primed parts=%d", len(primers))

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
        budget = self.settings.upstream_max_turn_chars
        if not fresh and self.update:  # a continued upstream conversation whose instructions changed
            primed = priming.update_plan(text, self.update, budget=budget)
        else:
            primed = priming.plan(
                text, history, system, budget=budget, max_context=self.settings.context_max_chars
            )
        turn_budget.check(len(primed.primers), shaping.options, self.settings.max_upstream_turns_per_request)
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

    def _relay(self, event: Relayed) -> None:
        """Publish one shaped upstream event as the relay's event (`service.events`)."""
        request = self.request
        if isinstance(event, Image) and request.kind == "image" and request.image_format == "b64_json":
            # An image generation that asked for `b64_json`: the worker, not the web tier, fetches it.
            data = fetch_b64(self.settings.copilot_url, event.url)
            self.publisher.event(relay.Image(event.url, event.prompt, event.thumbnail_url, b64_json=data))
            return
        relayed = to_relay(event)
        if relayed is not None:
            self.publisher.event(relayed)
