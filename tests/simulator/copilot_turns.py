"""Copilot turn scripting: what the simulator sends in answer to one accepted `send`.

`CopilotTurnPlayer.play()` checks the send against the conversation (B4, B7.6) and
yields I/O-free actions (`actions`): a challenge, an error, or the answer of B7.1 —
`received` → `startMessage` → `appendText` deltas → `partCompleted` → `done` →
`titleUpdate` (first turn) → `suggestedFollowups` — with the faults its `[sim:…]`
prefixes select. Like ChatHub's `TurnPlayer` it is a lazy generator, so the turn is
recorded exactly when `done` is about to go out and a client that hangs up mid-answer
leaves nothing behind. Ordering rules (connected-first, duplicates, challenge answers)
belong to the socket and live in `copilot_session`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from tests.simulator import challenges, copilot, copilot_media, faults, primed, tool_model
from tests.simulator.accounts import ANONYMOUS
from tests.simulator.actions import Action, Close, Hang, Send, Sleep
from tests.simulator.challenges import Challenge
from tests.simulator.copilot_state import CopilotTurn, nanoid
from tests.simulator.state import SimulatorState

MID_STREAM_DELTAS = 3
"""How many `appendText` deltas the mid-stream faults (disconnect, drop) let through."""
THROTTLE_SECONDS = 120.0
"""`nextAvailableAt` of the throttle fault is this far ahead of the simulator clock."""
CHALLENGE_FAULTS = ("hashcash", "arithmetic", "captcha", "cloudflare")
"""Prefixes that draw a challenge (named like the `challenges.issue` kinds)."""
ERROR_FAULTS = {
    "unavailable": copilot.error("chat-service-unavailable"),
    "invalid_event": copilot.error("invalid-event", event_id=copilot.ERROR_ID),
    "unauthorized": copilot.error("unauthorized", message=copilot.UNAUTHORIZED_TEXT),
    "internal": copilot.error("internal-error", message=copilot.INTERNAL_TEXT),
    "text_too_long": copilot.error("text-too-long"),
}
"""Faults answered with one `error` event before anything is streamed."""
WORD = re.compile(r"\s*\S+")
"""A word with the whitespace before it."""
THOUGHTS = ("Let me think about what is being asked.", "I will answer briefly and clearly.")


@dataclasses.dataclass
class SocketInfo:
    """What a turn needs to know about the socket it arrived on."""

    owner: str
    client_session_id: str | None
    features: str | None
    account: str = ANONYMOUS
    """Whose limits and faults apply (`accounts.account_of`)."""
    seq: copilot.Sequence = dataclasses.field(default_factory=copilot.Sequence)
    set_options: dict[str, Any] | None = None
    local_consents: dict[str, Any] | None = None
    challenges: int = 0
    """Challenges issued on this socket so far (their ids count up: `challenges.challenge_id`)."""
    record: dict[str, Any] | None = None
    """This socket's entry in its account's `sockets` (`accounts.AccountBook.socket_opened`)."""

    def next_challenge(self) -> int:
        """The number of the next challenge issued on this socket."""
        self.challenges += 1
        return self.challenges


class CopilotTurnPlayer:
    """One accepted `send`'s answer, planned against the simulator state."""

    def __init__(
        self,
        state: SimulatorState,
        send: dict[str, Any],
        socket: SocketInfo,
        *,
        cleared: Challenge | None = None,
        stamp_clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.send = send
        self.socket = socket
        self.cleared = cleared
        self.stamp_clock = stamp_clock
        self.text = copilot.user_text(send)
        self.images = [
            str(part.get("url"))
            for part in send["content"]
            if isinstance(part, dict) and part.get("type") == "image"
        ]
        asked = copilot_media.IMAGE_REQUEST.match(self.text)
        self.draw = asked is not None
        """The user asked for a picture in plain words: this turn draws one."""
        if asked is not None:
            self.text = self.text[asked.end() :]
        self.mode = str(send["mode"])
        self.conversation_id = str(send["conversationId"])
        self.page = copilot.page_content(send)
        self.conversation = state.copilot_conversations.get(self.conversation_id)
        self.started = state.now()
        self.challenge: Challenge | None = None
        """The challenge this turn issued instead of answering (the session waits for its answer)."""

    def _violation(self, text: str) -> None:
        self.state.violation(f"copilot: {text}")

    def play(self) -> Iterator[Action]:
        """Validate the send, then challenge, reject or answer it."""
        conversation, config = self.conversation, self.state.config
        if self.cleared is None:  # a re-send after a solved challenge is the same turn
            refusal = self._account_refusal()
            if refusal is not None:
                yield from refusal
                return
        if conversation is None or not conversation.usable_by(self.socket.owner):
            yield Send(copilot.encode(copilot.error(config.copilot_unknown_conversation_code)))
            return
        if self.mode not in config.modes():
            yield Send(copilot.encode(copilot.error("unsupported-mode")))
            return
        limit = config.copilot_max_text  # B5a: ~10,240 characters (copilot.TEXT_LIMIT); 0 = off
        if limit and (len(self.text) > limit or len(self.page or "") > limit):
            yield Send(copilot.encode(copilot.error("text-too-long")))
            return
        script = faults.parse(primed.question(self.text), faults.COPILOT_FLAGS)  # a primed message's too
        for url in self.images:
            if url not in self.state.attachments:
                self._violation(f"send with an image part whose url was never uploaded: {url:.80}")
            else:
                self.state.attachments[url]["used"] += 1
        for problem in script.problems:
            self._violation(f"{problem} in a message to {conversation.id}")
        if self.page is not None and "edgepagecontext" not in (self.socket.features or ""):
            self._violation("context.edge sent on a socket without features=…edgepagecontext")
        kind = next((name for name in CHALLENGE_FAULTS if script.on(name)), None)
        if kind is not None and self.cleared is None:
            self.challenge = challenges.issue(
                kind,
                difficulty=config.hashcash_difficulty,
                variant=config.hashcash_variant,
                seed=config.hashcash_seed,
                number=self.socket.next_challenge(),
            )
            self.state.challenges.append(self.challenge)
            issued = self.challenge
            yield Send(copilot.encode(copilot.challenge(issued.method, issued.parameter, issued.id)))
            return
        for name, frame in ERROR_FAULTS.items():
            if script.on(name):
                yield Send(copilot.encode(frame))
                return
        if script.on("throttled"):
            yield from self._throttle(self.state.now() + THROTTLE_SECONDS)
            return
        if script.on("hang"):
            yield Hang()
            return
        yield from self._answer(script)

    def _account_refusal(self) -> Iterator[Action] | None:
        """The answer when the account is in a fault or over its rate (`accounts`), else None.

        Over the rate, or `throttled`: B7.3's `chatMessageError` with `nextAvailableAt` and
        its null challenge; `captcha`: the null challenge of B7.5; `cloudflare`: a
        cloudflare-method challenge (B5: an expired clearance shows up so); `region`:
        `chat-service-unavailable`; `unauthorized` (normally a 401 at the upgrade): the
        `unauthorized` error. Only admitted turns count toward the rate.
        """
        accounts, name = self.state.accounts, self.socket.account
        fault = accounts.fault(name)
        if fault is None:
            until = accounts.admit_turn(name, self.text)
            if until is None:
                return None
            return self._throttle(until)
        accounts.reject(name, fault)
        if fault == "throttled":
            return self._throttle(accounts.throttled_until(name))
        if fault in ("captcha", "cloudflare"):
            config = self.state.config
            self.challenge = challenges.issue(
                fault,
                difficulty=config.hashcash_difficulty,
                variant=config.hashcash_variant,
                number=self.socket.next_challenge(),
            )
            self.state.challenges.append(self.challenge)
            issued = self.challenge
            return iter([Send(copilot.encode(copilot.challenge(issued.method, issued.parameter, issued.id)))])
        frame = ERROR_FAULTS["unavailable" if fault == "region" else "unauthorized"]
        return iter([Send(copilot.encode(frame))])

    def _throttle(self, until: float) -> Iterator[Action]:
        """B7.3: the throttle and a null challenge in one websocket message."""
        self.challenge = challenges.null_challenge(copilot.ERROR_ID)
        self.state.challenges.append(self.challenge)
        yield Send(copilot.encode(copilot.throttled(until), copilot.challenge(None, None, self.challenge.id)))

    # -- answers ----------------------------------------------------------------------

    def _answer(self, script: faults.Script) -> Iterator[Action]:
        assert self.conversation is not None
        seq, now = self.socket.seq, self.state.now()
        delay = float(script.values.get("slow", self.state.config.token_delay))
        bot_id = nanoid()
        yield Send(copilot.encode(copilot.received(self.conversation_id, nanoid(), now, seq.next())))
        yield Send(copilot.encode(copilot.start_message(self.conversation_id, bot_id, now, seq.next())))
        if script.on("reasoning"):
            for thought in THOUGHTS:
                yield Sleep(delay)
                yield Send(copilot.encode(copilot.chain_of_thought(bot_id, thought, seq.next())))
        drawing = ("image", "image_close", "image_throttled")
        if (self.draw and not script.on("no_image")) or any(script.on(name) for name in drawing):
            yield from self._image(script, bot_id, delay)
            return

        items = self._items(script)
        total = sum(1 for kind, _ in items if kind != "cite")
        ending, limit = "final", total
        if script.on("disconnect") or script.on("drop"):
            ending = "disconnect" if script.on("disconnect") else "drop"
            limit = min(MID_STREAM_DELTAS, total)
        elif script.on("hang_after"):
            ending, limit = "hang", min(int(script.values["hang_after"]), total)

        sent, bot_text = 0, ""
        if limit and self.state.config.turn_seconds:  # the upstream's own time, less the streaming's
            yield Sleep(max(0.0, self.state.config.turn_seconds - (total - 1) * delay))
        for kind, value in items:
            if kind == "cite":
                title, url = value
                cite = copilot.citation(bot_id, title, url, copilot_media.icon_url(url), seq.next())
                yield Send(copilot.encode(cite))
                continue
            if sent == limit:
                break
            if sent:
                yield Sleep(delay)
            text = value if kind == "text" else f" {self.stamp_clock():.6f}"  # stamp: timed at send
            bot_text += text
            yield Send(copilot.encode(copilot.append_text(bot_id, text, seq.next())))
            sent += 1

        if ending == "disconnect":
            yield Close(code=1000, reason="")
        elif ending == "drop":
            yield Close(abrupt=True)
        elif ending == "hang":
            yield Hang()
        else:
            yield Send(copilot.encode(copilot.part_completed(bot_id, seq.next())))
            yield from self._finish(bot_id, bot_text, script.prompt)
            if script.on("late"):  # an event after the client stopped reading (B3: events may follow `done`)
                yield Sleep(float(script.values["late"]))
                yield Send(copilot.encode(copilot.title_update(self.conversation_id, "Late", seq.next())))

    def _items(self, script: faults.Script) -> list[tuple[str, Any]]:
        """The answer as ("text", delta) / ("stamp", None) / ("cite", (title, url)) steps."""
        step = self.state.config.words_per_update
        if script.on("stamp"):
            return [("stamp", None)] * int(script.values["stamp"])
        if script.on("search"):
            items: list[tuple[str, Any]] = []
            for text, source in copilot_media.cited_segments(script.prompt):
                items.extend(("text", delta) for delta in deltas(text, step))
                if source is not None:
                    items.append(("cite", source))
            return items
        return [("text", delta) for delta in deltas(self._answer_text(script), step)]

    def _answer_text(self, script: faults.Script) -> str:
        assert self.conversation is not None
        brief = primed.ack(self.text)  # a priming part: "OK", as the real model would
        if brief is not None:
            return brief
        memory, account = self.state.accounts, self.socket.account
        if script.on("memory"):  # the account's long-term memory (`accounts`), not this conversation's
            return faults.memory_answer(memory.recollect(account, self.conversation.id))
        memory.remember(account, self.conversation.id, script.prompt)
        seen = [*self.conversation.context, *([self.page] if self.page else [])]  # injected context
        scripted = tool_model.answer(self.text, [*seen, *(turn.user for turn in self.conversation.turns)])
        if scripted is not None:
            return scripted
        if script.on("recall"):
            earlier = [turn.user for turn in self.conversation.turns]
            pages = [*self.conversation.context, *([self.page] if self.page else [])]
            return faults.recall_answer(pages, earlier)
        if script.on("long"):
            return faults.long_answer(max(1, int(script.values["long"])))
        image_note = copilot_media.seen_images(self.images, self.state.attachments)
        asked = primed.question(tool_model.strip(script.prompt))
        return image_note + faults.default_answer(asked, len(self.conversation.turns) + 1)

    def _image(self, script: faults.Script, bot_id: str, delay: float) -> Iterator[Action]:
        """B7.7: a line of text, the image events, then `done` (or, for image_close, a bare close)."""
        seq, part = self.socket.seq, nanoid()
        yield Send(copilot.encode(copilot.append_text(bot_id, copilot_media.IMAGE_INTRO, seq.next())))
        yield Sleep(delay)
        started = copilot_media.generating_image(bot_id, part, script.prompt, seq.next())
        yield Send(copilot.encode(started))
        if script.on("image_throttled"):  # the image quota is spent: no image, only when to come back
            until = copilot.iso_offset(self.state.now() + THROTTLE_SECONDS)
            yield Send(copilot.encode(copilot_media.image_quota_exhausted(bot_id, part, until, seq.next())))
            yield Send(copilot.encode(copilot.done(bot_id, seq.next())))
            return
        for step in range(2):
            yield Sleep(delay)
            yield Send(copilot.encode(copilot_media.partial_image(bot_id, part, step, seq.next())))
        yield Sleep(delay)
        final = copilot_media.image_generated(bot_id, part, seq.next())
        yield Send(copilot.encode(final))
        # The image exists server-side once generated, so the turn counts even if the socket closes.
        image = {"prompt": script.prompt, "url": final["url"], "thumbnailUrl": final["thumbnailUrl"]}
        self._commit(copilot_media.IMAGE_INTRO, image=image)
        if script.on("image_close"):
            yield Close(code=1000, reason="")
        else:
            yield Send(copilot.encode(copilot.done(bot_id, seq.next())))

    # -- endings ----------------------------------------------------------------------

    def _finish(self, bot_id: str, bot_text: str, prompt: str) -> Iterator[Action]:
        """Record the turn, then `done`, a first-turn `titleUpdate` and `suggestedFollowups`."""
        assert self.conversation is not None
        seq = self.socket.seq
        titled = self.conversation.title is None
        self._commit(bot_text)
        yield Send(copilot.encode(copilot.done(bot_id, seq.next())))
        if titled:
            title = self.conversation.title = title_for(prompt)
            yield Send(copilot.encode(copilot.title_update(self.conversation_id, title, seq.next())))
        yield Send(copilot.encode(copilot.suggested_followups(bot_id, seq.next())))

    def _commit(self, bot_text: str, *, image: dict[str, Any] | None = None) -> None:
        """Record the turn as completed (only answers that reach `done` or an image get here)."""
        assert self.conversation is not None
        self.conversation.turns.append(
            CopilotTurn(
                user=self.text,
                bot=bot_text,
                mode=self.mode,
                context=self.send.get("context"),
                client_session_id=self.socket.client_session_id,
                set_options=self.socket.set_options,
                local_consents=self.socket.local_consents,
                challenge=self.cleared.as_json() if self.cleared else None,
                features=self.socket.features,
                image=image,
            )
        )
        if self.page is not None:
            self.conversation.context.append(self.page)
        self.state.stats.answered("copilot", self.state.now() - self.started)


def deltas(text: str, words_per_update: int) -> list[str]:
    """`text` cut into deltas of `words_per_update` words, each with the spaces before it.

    Concatenating the deltas gives `text` back exactly (Copilot's `appendText` is a delta).
    """
    words = WORD.findall(text)
    if not words:
        return [text] if text else []
    step = max(1, words_per_update)
    pieces = ["".join(words[start : start + step]) for start in range(0, len(words), step)]
    pieces[-1] += text[len("".join(words)) :]  # trailing whitespace, if any
    return pieces


def title_for(prompt: str) -> str:
    """A short deterministic title from the first prompt."""
    words = prompt.split()
    return " ".join(words[:6]) if words else "New conversation"
