"""Shaping one turn's answer to the request's `TurnOptions`, inside the worker.

The turn runner hands its upstream stream to `Shaping.shape`, which

- adds the gateway's directives to the user's message (`prepare`): the tool block when
  the upstream conversation has not seen this tool set (digest kept on the handle; a
  block too long for one turn goes with the system text), the tool-choice line, the
  structured-output instruction;
- filters the answer (a pure filter over events: it never touches the upstream client):
  text before a tool call streams, the call's markup is held back and comes out as
  `service.events.ToolCall` events; a structured answer is held whole,
  extracted and validated; stop sequences and the token limit cut the answer and end
  the upstream turn (`cut` makes the runner's `should_stop` fire);
- asks the runner for ONE repair turn (the `repair` callable) in the same upstream
  conversation when the calls are invalid, missing under `required`/a named choice, or
  the JSON does not validate;
- then gives an honest result: tool calls (`finish_reason` "tool_calls"); under `auto`
  a text answer of the prose (calls that stayed invalid are dropped, `finish_reason`
  "stop"); under `required`/a named choice an error `tool_call_failed`; a structured
  answer that stays invalid is an error `structured_output_invalid` when `strict`,
  else the best text.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Generator, Iterator
from typing import Any

from service import events as relay
from service import turn_plan
from service.errors import ApiError
from service.tokens import count_text, encoding
from service.tools import parser, prompts, structured
from service.tools.options import TurnOptions
from service.turns import new_token
from workers.relay_events import Relayed
from workers.upstream.events import Done, Event, TextDelta

log = logging.getLogger(__name__)

DIGEST_KEY = "tools_digest"
SETTLE_TAIL = 256  # characters the token limit re-counts on each delta


class Cutter:
    """Stop sequences and the token limit, applied to the text the client sees."""

    def __init__(self, stop: tuple[str, ...], max_tokens: int | None) -> None:
        self.stop = tuple(s for s in stop if s)
        self.max_tokens = max_tokens
        self.shown = ""
        self.pending = ""
        self.finish: str | None = None
        self.matched: str | None = None  # the stop sequence the answer was cut at
        # Running counts, so each delta costs its own length, not the answer's (audit N12):
        # bytes shown, and the tokens of `shown[:settled]`, a prefix ending at a space (BPE
        # pieces never span one) that trails the end; only the text after it is re-counted.
        self._bytes = 0
        self._settled = 0
        self._settled_tokens = 0

    def feed(self, text: str) -> str:
        """Text to show now; sets `finish` ("stop"/"length") when the answer must end."""
        if self.finish is not None:
            return ""
        buffer = self.pending + text
        self.pending = ""
        hits = sorted((i, s) for s in self.stop if (i := buffer.find(s)) >= 0)
        if hits:
            buffer, self.finish, self.matched = buffer[: hits[0][0]], "stop", hits[0][1]
        else:
            hold = max((n for s in self.stop for n in range(1, len(s)) if buffer.endswith(s[:n])), default=0)
            buffer, self.pending = buffer[: len(buffer) - hold], buffer[len(buffer) - hold :]
        return self._limit(buffer)

    def flush(self) -> str:
        """At the end of the answer: what was held for a stop sequence that never came."""
        held, self.pending = self.pending, ""
        return self._limit(held) if self.finish is None else ""

    def _limit(self, text: str) -> str:
        limit = self.max_tokens
        size = len(text.encode())
        if limit is not None and self._bytes + size > limit:  # a token is at least one byte
            total = self.shown + text
            if self._settled_tokens + count_text(total[self._settled :]) > limit:
                kept = encoding().decode(encoding().encode(total, disallowed_special=())[:limit])  # once
                text, self.finish = kept[len(self.shown) :] if kept.startswith(self.shown) else "", "length"
                size = len(text.encode())
            else:
                self._settle(total)
        self.shown += text
        self._bytes += size
        return text

    def _settle(self, total: str) -> None:
        """Move the counted prefix up to a piece boundary at least SETTLE_TAIL characters behind the end."""
        cut = total.rfind(" ", self._settled, max(self._settled, len(total) - SETTLE_TAIL))
        # A lone space between two non-spaces starts a piece (" word"); in a run of spaces it may not.
        while cut > self._settled and (total[cut - 1].isspace() or total[cut + 1].isspace()):
            cut = total.rfind(" ", self._settled, cut)
        if cut > self._settled:
            self._settled_tokens += count_text(total[self._settled : cut])
            self._settled = cut


class Shaping:
    """One turn's directives and answer filter; see the module docstring."""

    def __init__(self, options: TurnOptions, *, handle: dict[str, Any] | None) -> None:
        self.options = options
        self.previous_digest = (handle or {}).get(DIGEST_KEY)
        self.digest = prompts.digest(options.tools) if options.calls_tools else None
        self.cutter = Cutter(options.stop, options.max_tokens)
        self.calls: list[dict[str, str]] = []
        self.stored_text: str | None = None
        self.sent_tools = False

    @property
    def cut(self) -> bool:
        """The answer was cut: the upstream turn should end now."""
        return self.cutter.finish is not None

    def prepare(
        self, prompt: str, system: str, *, fresh: bool, budget: int, max_context: int
    ) -> tuple[str, str]:
        """The user's message and the system text as sent upstream, with the gateway's directives.

        The tool block rides in the message when it fits the upstream's per-turn budget
        (models heed the message most); a long one (agent CLIs send 20-40 KB of schemas)
        joins the system text of a new upstream conversation, which priming carries in
        parts, if that stays within CONTEXT_MAX_CHARS (else the message itself is primed in
        parts). The tool-choice and format lines always ride in the message.
        """
        options = self.options
        self.sent_tools = options.calls_tools and (fresh or self.digest != self.previous_digest)
        return turn_plan.directives(
            prompt,
            system,
            options,
            send_tools=self.sent_tools,
            fresh=fresh,
            budget=budget,
            max_context=max_context,
        )

    def handle_extra(self) -> dict[str, Any]:
        """What to keep on the stored handle: the digest of the tool set the upstream has seen."""
        if self.sent_tools and not self.cut:
            return {DIGEST_KEY: self.digest}
        return {DIGEST_KEY: self.previous_digest} if self.previous_digest else {}

    def done_extra(self) -> dict[str, Any]:
        """Extra keys of the relay's `done` event: the calls, the stop sequence that cut the answer."""
        extra: dict[str, Any] = {"tool_calls": self.calls} if self.calls else {}
        if self.cutter.matched is not None:
            extra["stop_sequence"] = self.cutter.matched
        return extra

    def shape(self, events: Iterator[Event], repair: Callable[[str], Iterator[Event]]) -> Iterator[Relayed]:
        """The relay-ready events of the turn, ending with one `Done`; may run one repair turn."""
        if self.options.empty:
            yield from events
            return
        options = self.options
        if options.output is not None and not options.calls_tools:
            yield from self._structured(events, repair)
            return
        stream = parser.StreamFilter() if options.calls_tools else None
        done = yield from self._read(events, stream)
        if done is None:
            return  # cancelled: the runner notices, nothing is repaired or kept
        if stream is None or done.finish_reason != "stop" or self.cut:
            yield from self._finish(done)
            return
        parsed = yield from self._parse_or_repair(stream.text, repair)
        yield from self._answer(stream, parsed, done)

    def _parse_or_repair(
        self, text: str, repair: Callable[[str], Iterator[Event]]
    ) -> Generator[Relayed, None, parser.Parsed]:
        """The calls in the answer; a bad or missing required call gets one repair turn, else a 502."""
        options = self.options
        parsed = parser.parse(text, options)
        problems = list(parsed.problems)
        if not parsed.calls and options.choice not in ("auto", "none") and not problems:
            problems.append("it called no function")
        if problems and options.choice != "none":
            log.info("event=tool_repair problems=%d", len(problems))
            again = parser.StreamFilter()
            yield from self._read(repair(prompts.repair_calls(problems, options)), again, show=False)
            retry = parser.parse(again.text, options)
            if retry.calls and not retry.problems:
                parsed = dataclasses.replace(retry, prose=parsed.prose)
        if not parsed.calls and options.choice not in ("auto", "none"):
            raise ApiError(
                "The model did not produce a valid call of the required function, even after one "
                "repair turn (tool calls are emulated over a model without a function-calling API).",
                status=502,
                code="tool_call_failed",
            )
        return parsed

    def _answer(self, stream: parser.StreamFilter, parsed: parser.Parsed, done: Done) -> Iterator[Relayed]:
        """The prose still held back, the calls, and the `Done` that ends the turn."""
        rest = stream.rest(parsed)
        if rest:
            shown = self.cutter.feed(rest)
            if shown:
                yield TextDelta(shown)
        if self.options.choice == "none":
            parsed = dataclasses.replace(parsed, calls=())
        for call in parsed.calls:
            found = relay.ToolCall(f"call_{new_token()}", call.name, call.arguments)
            self.calls.append(found.call())
            yield found
        prose = self.cutter.shown + self.cutter.flush()
        if self.calls:
            self.stored_text = prompts.assistant_text(
                prose, [(c["id"], c["name"], c["arguments"]) for c in self.calls]
            )
            yield Done(text=prose, finish_reason="tool_calls")
            return
        yield from self._finish(Done(text=prose, finish_reason=done.finish_reason))

    def _read(
        self, events: Iterator[Event], stream: parser.StreamFilter | None, *, show: bool = True
    ) -> Generator[Relayed, None, Done | None]:
        """Relay one upstream answer through the filters; its `Done` (a cut makes one), None if cancelled."""
        done = None
        for event in events:
            if isinstance(event, TextDelta):
                if stream is not None:
                    visible = stream.feed(event.text)
                    text = visible if show else ""
                else:
                    text = event.text
                text = self.cutter.feed(text) if text else ""
                if text:
                    yield TextDelta(text)
            elif isinstance(event, Done):
                done = event
            elif show:
                yield event
        if done is None:
            if not self.cut:
                return None
            done = Done(text=self.cutter.shown, finish_reason=self.cutter.finish or "stop")
        return done

    def _finish(self, done: Done) -> Iterator[Relayed]:
        tail = self.cutter.flush()
        if tail:
            yield TextDelta(tail)
        reason = self.cutter.finish or done.finish_reason
        yield Done(text=self.cutter.shown, finish_reason=reason)

    def _structured(
        self, events: Iterator[Event], repair: Callable[[str], Iterator[Event]]
    ) -> Iterator[Relayed]:
        output = self.options.output
        assert output is not None
        held: list[str] = []
        done = None
        for event in events:
            if isinstance(event, TextDelta):
                held.append(event.text)
            elif isinstance(event, Done):
                done = event
            else:
                yield event
        if done is None:
            return
        text = "".join(held) or done.text
        value, problem = structured.check(text, output)
        if value is None:
            log.info("event=structured_repair problem=%s", problem)
            answer = repair(prompts.repair_output(problem, output))
            again = "".join(e.text for e in answer if isinstance(e, TextDelta))
            value, problem = structured.check(again, output)
        if value is None:
            if output.strict:
                raise ApiError(
                    f"The model's answer was not valid JSON for the requested schema, even after one "
                    f"repair turn: {problem}.",
                    status=502,
                    code="structured_output_invalid",
                )
            value = text
        shown = self.cutter.feed(value) + self.cutter.flush()
        if shown:
            yield TextDelta(shown)
        yield Done(text=shown, finish_reason=self.cutter.finish or done.finish_reason)
