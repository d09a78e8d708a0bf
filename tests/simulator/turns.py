"""Turn scripting: what the simulator sends in answer to one `chat` invocation.

`TurnPlayer.play()` validates the invocation against the conversation (A2, A3.2, A4) and
yields a plan of I/O-free actions — send this message, sleep, close, go silent — that the
server executes in order. Being a lazy generator, it runs each step only when the server
asks for the next action, so state changes (recording a completed turn) happen exactly
where the frames say they do, and a client that hangs up mid-answer leaves no turn behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from tests.simulator import chathub, faults, kblob, primed, search, tool_model
from tests.simulator.accounts import ANONYMOUS
from tests.simulator.actions import Action, Close, Hang, Send, Sleep
from tests.simulator.state import SimulatorState, Turn

MID_STREAM_UPDATES = 3
"""How many answer updates the mid-stream faults (disconnect, drop, apology) let through."""


class TurnPlayer:
    """One invocation's answer, planned against the simulator state."""

    def __init__(
        self,
        state: SimulatorState,
        record: dict[str, Any],
        access_token: str | None,
        *,
        account: str = ANONYMOUS,
        stamp_clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.access_token = access_token
        self.account = account
        self.stamp_clock = stamp_clock
        self.invocation_id = str(record.get("invocationId", ""))
        self.args: dict[str, Any] = record["arguments"][0]
        message = self.args.get("message") or {}
        self.text = str(message.get("text", ""))
        self.request_id = str(message.get("requestId") or self.args.get("requestId") or chathub.new_id())
        self.conversation_id = str(self.args.get("conversationId", ""))
        self.conversation = state.conversations.get(self.conversation_id)
        self.turn_number = len(self.conversation.turns) + 1 if self.conversation else 1
        previous = self.args.get("previousMessages")
        self.previous_messages: list[dict[str, Any]] | None = previous if isinstance(previous, list) else None
        self.descriptions = [
            str(item.get("description", ""))
            for item in self.previous_messages or []
            if isinstance(item, dict)
        ]
        self.started = state.now()

    # -- validation -------------------------------------------------------------------

    def play(self) -> Iterator[Action]:
        """Validate the invocation, then answer it (or reject it) as Bing would."""
        conversation, config = self.conversation, self.state.config
        refusal = self._account_refusal()
        if refusal is not None:
            yield from refusal
            return
        if conversation is None or self.state.expired(conversation):
            text = chathub.expired_text(self.conversation_id, config.expiry_seconds)
            yield from self._error("InvalidSession", text, coalesce=True)
            return
        if self.access_token != conversation.encrypted_signature:
            yield from self._error("UnauthorizedRequest", chathub.SIGNATURE_TEXT)
            return
        participant = (self.args.get("participant") or {}).get("id")
        if participant != conversation.client_id:
            self.state.violation(f"participant.id {participant!r} is not the clientId of {conversation.id}")
            yield from self._error("InvalidRequest", "participant.id does not match the conversation.")
            return
        expected = not conversation.turns
        if self.args.get("isStartOfSession") is not expected:
            self.state.violation(
                f"isStartOfSession={self.args.get('isStartOfSession')!r} but {conversation.id} has "
                f"{len(conversation.turns)} completed turn(s)"
            )
            yield from self._error("InvalidRequest", f"isStartOfSession must be {str(expected).lower()}.")
            return
        if conversation.disengaged or len(conversation.turns) >= config.max_turns:
            yield from self._turn_limit()
            return
        script = faults.parse(primed.question(self.text))  # a primed message's own prefixes count
        for problem in script.problems:
            self.state.violation(f"{problem} in a message to {conversation.id}")
        yield from self._answer(script)

    def _account_refusal(self) -> Iterator[Action] | None:
        """The answer when the account is in a fault or over its rate (`accounts`), else None.

        The turn counts toward the rate only when admitted. Faults answer as A3.2 lists
        them; `region` borrows create's `Forbidden` (ChatHub has no in-chat region error)
        and `cloudflare` (normally refused at the upgrade) ends the socket with type 7.
        """
        accounts = self.state.accounts
        fault = accounts.fault(self.account)
        if fault is None:
            if accounts.admit_turn(self.account, self.text) is None:
                return None
            fault = "throttled"  # over the rate: counted as a "rate" rejection by admit_turn
        else:
            accounts.reject(self.account, fault)
        if fault == "cloudflare":
            ending: list[Action] = [Send(chathub.encode(chathub.server_close())), Close()]
            return iter(ending)
        value, text = {
            "captcha": ("CaptchaChallenge", chathub.CAPTCHA_TEXT),
            "throttled": ("Throttled", chathub.THROTTLED_TEXT),
            "unauthorized": ("UnauthorizedRequest", chathub.LOGIN_TEXT),
            "region": ("Forbidden", chathub.REGION_TEXT),
        }[fault]
        return self._error(value, text)

    # -- answers ----------------------------------------------------------------------

    def _answer(self, script: faults.Script) -> Iterator[Action]:
        config = self.state.config
        for name, (value, text) in faults.ERROR_FAULTS.items():
            if script.on(name):
                if name == "invalid_session":
                    text = chathub.expired_text(self.conversation_id, config.expiry_seconds)
                yield from self._error(value, text, coalesce=True if name == "invalid_session" else None)
                return
        if script.on("hang"):
            yield Hang()
            return
        throttling = chathub.throttling(self.turn_number, config.max_turns)
        yield Send(chathub.encode(chathub.update({"throttling": throttling})))
        if script.on("disengaged"):
            yield from self._disengaged()
            return

        delay = float(script.values.get("slow", config.token_delay))
        cited = script.prompt if script.on("search") else None
        metas: list[dict[str, Any]] = []
        if cited is not None:
            yield from self._search_step(cited, metas, delay)

        if script.on("stamp"):
            total = int(script.values["stamp"])
            texts: Iterator[str] = self._stamps()
        else:
            prefixes = _prefixes(self._answer_text(script), config.words_per_update)
            total, texts = len(prefixes), iter(prefixes)

        ending, limit = "final", total
        if script.on("refuse"):
            ending, limit = "apology", 0
        elif script.on("apology"):
            ending, limit = "apology", min(MID_STREAM_UPDATES, max(1, total - 1))
        elif script.on("disconnect") or script.on("drop"):
            ending = "disconnect" if script.on("disconnect") else "drop"
            limit = min(MID_STREAM_UPDATES, total)
        elif script.on("hang_after"):
            ending, limit = "hang", min(int(script.values["hang_after"]), total)

        bot_id, text = chathub.new_id(), ""
        if limit and config.turn_seconds:  # the upstream's own time, less what streaming takes
            yield Sleep(max(0.0, config.turn_seconds - (total - 1) * delay))
        for index in range(limit):
            if index:
                yield Sleep(delay)
            text = next(texts)  # pulled after the sleep so `stamp` times the real send
            last = ending == "final" and index == total - 1
            yield self._update(self._answer_message(bot_id, text, final=last, cited=cited), cursor=index == 0)

        if ending == "disconnect":
            yield Send(chathub.encode(chathub.server_close()))
            yield Close()
        elif ending == "drop":
            yield Close(abrupt=True)
        elif ending == "hang":
            yield Hang()
        elif ending == "apology":
            if limit:
                yield Sleep(delay)
            apology = chathub.bot_message(
                text=chathub.APOLOGY_TEXT,
                message_id=bot_id,
                request_id=self.request_id,
                now=self.state.now(),
                offense="OffenseTrigger",
                content_origin="Apology",
            )
            yield self._update(apology, cursor=not limit)
            self._commit(chathub.APOLOGY_TEXT)
            yield from self._success([*metas, apology], used=self.turn_number)
        else:
            answer = self._answer_message(bot_id, text, final=True, cited=cited)
            tail = []
            if cited is not None:
                answer["adaptiveCards"][0]["body"].append(search.learn_more_block())
                tail.append(search.render_card_message(request_id=self.request_id, now=self.state.now()))
            self._commit(text)
            yield from self._success([*metas, answer, *tail], used=self.turn_number)

    def _answer_text(self, script: faults.Script) -> str:
        assert self.conversation is not None
        brief = primed.ack(self.text)  # a priming part: "OK", as the real model would
        if brief is not None:
            return brief
        memory = self.state.accounts
        if script.on("memory"):  # the account's long-term memory (`accounts`), not this conversation's
            return faults.memory_answer(memory.recollect(self.account, self.conversation.id))
        memory.remember(self.account, self.conversation.id, script.prompt)
        seen = [*self.conversation.context, *self.descriptions]  # injected context
        scripted = tool_model.answer(self.text, [*seen, *(turn.user for turn in self.conversation.turns)])
        if scripted is not None:
            return scripted
        if script.on("recall"):
            earlier = [turn.user for turn in self.conversation.turns]
            return faults.recall_answer([*self.conversation.context, *self.descriptions], earlier)
        if script.on("long"):
            return faults.long_answer(max(1, int(script.values["long"])))
        if script.on("search"):
            return search.answer_text(script.prompt)
        image_note = kblob.seen(self.state, self.args.get("message") or {})
        asked = primed.question(tool_model.strip(script.prompt))
        return image_note + faults.default_answer(asked, self.turn_number)

    def _answer_message(self, bot_id: str, text: str, *, final: bool, cited: str | None) -> dict[str, Any]:
        """One state of the streamed answer; the final one is complete and carries suggestions."""
        return chathub.bot_message(
            text=text,
            message_id=bot_id,
            request_id=self.request_id,
            now=self.state.now(),
            card_text=search.card_text(text) if cited is not None else None,
            offense="None" if final else "Unknown",
            source_attributions=search.attributions(cited) if cited is not None and final else None,
            suggestions=final,
        )

    def _update(self, message: dict[str, Any], *, cursor: bool = False) -> Send:
        """A type-1 update streaming `message` (the first text frame of a message carries a cursor)."""
        return Send(
            chathub.encode(chathub.message_update(message, request_id=self.request_id, cursor=cursor))
        )

    def _stamps(self) -> Iterator[str]:
        """Cumulative text where each update appends ` <send time>` (benchmarks measure latency)."""
        text = ""
        while True:
            text += f" {self.stamp_clock():.6f}"
            yield text

    def _search_step(self, prompt: str, metas: list[dict[str, Any]], delay: float) -> Iterator[Action]:
        """Stream the InternalSearchQuery / Result / Loader messages of A7.2."""
        now = self.state.now()
        streamed = [
            search.query_message(prompt, request_id=self.request_id, now=now),
            search.result_message(prompt, request_id=self.request_id, now=now),
            search.loader_message(request_id=self.request_id, now=now),
        ]
        for message in streamed:
            yield Send(chathub.encode(chathub.update({"messages": [message], "requestId": self.request_id})))
            yield Sleep(delay)
        grounded = search.result_message(prompt, request_id=self.request_id, now=now, final=True)
        metas.extend([streamed[0], {**streamed[1], "groundingInfo": grounded["groundingInfo"]}, streamed[2]])

    def _disengaged(self) -> Iterator[Action]:
        message = chathub.bot_message(
            text=chathub.DISENGAGED_TEXT,
            message_id=chathub.new_id(),
            request_id=self.request_id,
            now=self.state.now(),
            offense="None",
            message_type="Disengaged",
        )
        yield self._update(message)
        self._commit(chathub.DISENGAGED_TEXT, disengaged=True)
        yield from self._success([message], used=self.turn_number)

    def _turn_limit(self) -> Iterator[Action]:
        """A7.6: a successful type 2 whose bot message is the TurnLimiter notice; nothing recorded."""
        message = chathub.bot_message(
            text=chathub.TURN_LIMIT_TEXT,
            message_id=chathub.new_id(),
            request_id=self.request_id,
            now=self.state.now(),
            offense="None",
            content_origin="TurnLimiter",
        )
        yield from self._success([message], used=self.state.config.max_turns)

    # -- endings ----------------------------------------------------------------------

    def _commit(self, bot_text: str, *, disengaged: bool = False) -> None:
        """Record the turn as completed (only successful type 2s get here)."""
        assert self.conversation is not None
        self.conversation.turns.append(
            Turn(
                user=self.text,
                bot=bot_text,
                invocation_id=self.invocation_id,
                is_start_of_session=bool(self.args.get("isStartOfSession")),
                tone=self.args.get("tone"),
                options_sets=list(self.args.get("optionsSets") or []),
                previous_messages=self.previous_messages,
            )
        )
        self.conversation.context.extend(self.descriptions)
        self.state.stats.answered("chathub", self.state.now() - self.started)
        self.conversation.disengaged = self.conversation.disengaged or disengaged

    def _success(self, bot_messages: list[dict[str, Any]], *, used: int) -> Iterator[Action]:
        assert self.conversation is not None
        user = chathub.user_message(self.args, client_id=self.conversation.client_id, now=self.state.now())
        item = chathub.success_item(
            messages=[user, *bot_messages],
            conversation_id=self.conversation.id,
            request_id=self.request_id,
            expiry_time=self.conversation.created + self.state.config.expiry_seconds,
            started=self.started,
            used=used,
            max_turns=self.state.config.max_turns,
            prompt=faults.parse(self.text).prompt,
        )
        yield from self._finish(item)

    def _error(self, value: str, text: str, *, coalesce: bool | None = None) -> Iterator[Action]:
        item = chathub.error_item(
            value,
            text,
            conversation_id=self.conversation_id,
            request_id=self.request_id,
            started=self.started,
        )
        yield from self._finish(item, coalesce=coalesce)

    def _finish(self, item: dict[str, Any], *, coalesce: bool | None = None) -> Iterator[Action]:
        """Type 2 then type 3; in one websocket message on even turns so clients must split records."""
        records = (chathub.final(self.invocation_id, item), chathub.completion(self.invocation_id))
        if coalesce is None:
            coalesce = self.turn_number % 2 == 0
        if coalesce:
            yield Send(chathub.encode(*records))
        else:
            for record in records:
                yield Send(chathub.encode(record))


def _prefixes(text: str, words_per_update: int) -> list[str]:
    """The cumulative texts of the stream: `words_per_update` more words each time."""
    words = text.split(" ")
    step = max(1, words_per_update)
    return [" ".join(words[: min(end, len(words))]) for end in range(step, len(words) + step, step)]
