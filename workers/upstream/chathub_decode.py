"""Decoding ChatHub's incoming records into dialect-neutral events, without I/O.

The answer text arrives cumulatively (every type-1 update repeats the whole message so
far), so the decoder keeps what it already emitted per message and yields only the new
suffix; it also notices retractions (an `Apology` replacing streamed text), search
progress, citations, suggestions, turn limits and every error result of A3.2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.upstream.chathub_conversation import result_error
from workers.upstream.errors import (
    ConversationLimitReached,
    Interrupted,
    ProtocolError,
    UpstreamError,
)
from workers.upstream.events import Citation, Done, Event, Limits, Progress, Suggestions, TextDelta


def _meta_text(message: Mapping[str, Any]) -> str:
    """A progress message's display text: `text`, else the card's first inline run."""
    text = message.get("text")
    if isinstance(text, str) and text:
        return text
    for card in message.get("adaptiveCards") or []:
        for block in card.get("body") or []:
            for inline in block.get("inlines") or []:
                if inline.get("text"):
                    return str(inline["text"])
    return ""


def _limits(throttling: Any) -> Limits | None:
    if not isinstance(throttling, dict):
        return None
    try:
        return Limits(
            used=int(throttling.get("numUserMessagesInConversation", 0)),
            max=int(throttling.get("maxNumUserMessagesInConversation", 0)),
        )
    except (TypeError, ValueError):
        return None


ANCHOR = 64  # trailing characters compared to tell an extension from a rewrite


class ChatHubDecoder:
    """Incoming ChatHub records of one turn → dialect-neutral events (A3).

    The answer arrives as cumulative text per bot message, so the decoder keeps what
    it already emitted and yields only the extension; `text` is everything emitted,
    which is the answer the client saw even when the server later rewrites or retracts
    it. Failures raise `UpstreamError` subclasses; `done` turns True with `Done`.
    """

    def __init__(self, *, account: str = "") -> None:
        self.account = account
        self.done = False
        self._parts: list[str] = []  # every delta emitted, joined only when asked for
        self.limits: Limits | None = None
        self.expiry_time: str | None = None
        self._message_id: object = None
        self._accumulated = ""  # the current message's text as far as it was emitted
        self._retracted = False
        self._refused = False
        self._announced: set[tuple[str, object]] = set()
        self._has_result = False

    @property
    def text(self) -> str:
        """All answer text emitted so far."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def feed(self, record: Mapping[str, Any]) -> list[Event]:
        """The events one incoming record yields (possibly none)."""
        kind = record.get("type")
        if kind == 1:
            return self._update(record)
        if kind == 2:
            return self._result(record)
        if kind == 3:
            if record.get("error") and not self.done:
                raise UpstreamError(f"ChatHub completed the turn with an error: {record['error']}")
            if not self._has_result:
                raise ProtocolError("ChatHub completed the turn without sending a result")
            return []
        if kind == 7 and not self.done:
            reason = record.get("error") or "the server closed the conversation"
            raise Interrupted(f"ChatHub closed mid-answer: {reason}", partial=self.text)
        return []  # 6 = ping; anything else is not ours to interpret

    def _update(self, record: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        for argument in record.get("arguments") or []:
            if not isinstance(argument, dict):
                continue
            limits = _limits(argument.get("throttling"))
            if limits:
                self.limits = limits
                events.append(limits)
            if "cursor" in argument:  # the server starts writing a fresh text block
                self._message_id, self._accumulated = None, ""
            for message in argument.get("messages") or []:
                events.extend(self._message(message))
        return events

    def _message(self, message: Mapping[str, Any]) -> list[Event]:
        if message.get("author") != "bot":
            return []
        message_type = message.get("messageType")
        if message_type in ("InternalSearchQuery", "InternalLoaderMessage"):
            kind = "search" if message_type == "InternalSearchQuery" else "loader"
            key = (kind, message.get("messageId"))
            text = _meta_text(message)
            if key in self._announced or not text:
                return []
            self._announced.add(key)
            return [Progress(kind, text)]
        if message_type or message.get("contentOrigin") == "TurnLimiter":
            return []  # tool calls, cards, limit notices: not answer text
        if message.get("contentOrigin") == "Apology":
            if self._parts and not self._refused:
                self._retracted = True  # keep what the client already has; stop there
                return []
            self._refused = True
        return self._stream(message)

    def _stream(self, message: Mapping[str, Any]) -> list[Event]:
        text = message.get("text")
        if self._retracted or not isinstance(text, str):
            return []
        message_id = message.get("messageId")
        if message_id != self._message_id:
            self._message_id, self._accumulated = message_id, ""
        seen = len(self._accumulated)
        anchor = max(0, seen - ANCHOR)
        if len(text) <= seen or text[anchor:seen] != self._accumulated[anchor:]:
            return []  # a rewrite: wait until the text extends what was emitted again
        # Only the anchor and the new suffix are touched, so a growing answer costs time
        # proportional to what is new, not to everything repeated in each update.
        delta = text[seen:]
        self._accumulated = text
        self._parts.append(delta)
        return [TextDelta(delta)]

    def _result(self, record: Mapping[str, Any]) -> list[Event]:
        self._has_result = True
        item = record.get("item") or {}
        self._check(item)
        answer = self._final_answer(item)
        events = self._catch_up(answer)
        finish = "content_filter" if self._retracted or self._refused else "stop"
        if finish == "stop":
            events.extend(_citations(answer.get("sourceAttributions")))
        suggestions = _suggestions(answer.get("suggestedResponses"))
        if suggestions:
            events.append(Suggestions(suggestions))
        limits = _limits(item.get("throttling"))
        if limits:
            self.limits = limits
            events.append(limits)
        events.append(Done(text=self.text, finish_reason=finish))
        self.done = True
        return events

    def _check(self, item: Mapping[str, Any]) -> None:
        """Keep the conversation's expiry; a result without a value or other than Success raises."""
        result = item.get("result") or {}
        value = result.get("value")
        if item.get("conversationExpiryTime"):
            self.expiry_time = str(item["conversationExpiryTime"])
        if value is None:
            raise ProtocolError("ChatHub sent a result without a value")
        if value != "Success":
            message = str(result.get("message") or result.get("error") or "")
            conversation_id = str(item.get("conversationId") or "")
            raise result_error(str(value), message, conversation_id=conversation_id, account=self.account)

    def _final_answer(self, item: Mapping[str, Any]) -> Mapping[str, Any]:
        """The bot's last answer in the result ({} if none); a turn-limit notice alone raises."""
        bots = [m for m in item.get("messages") or [] if isinstance(m, dict) and m.get("author") == "bot"]
        limiter = next((m for m in bots if _is_limit_notice(m)), None)
        if limiter is not None and not self._parts:
            raise ConversationLimitReached(
                str(limiter.get("text") or "the Bing conversation accepts no more turns")
            )
        answers = [m for m in bots if not m.get("messageType") and m.get("contentOrigin") != "TurnLimiter"]
        return answers[-1] if answers else {}

    def _catch_up(self, answer: Mapping[str, Any]) -> list[Event]:
        """Text the final answer has beyond the last update (or all of it if none streamed)."""
        if not answer:
            return []
        if answer.get("contentOrigin") == "Apology" and self._parts and not self._refused:
            self._retracted = True
            return []
        if answer.get("messageId") == self._message_id or not self._parts:
            if not self._parts and answer.get("contentOrigin") == "Apology":
                self._refused = True
            return self._stream(answer)
        return []


def _is_limit_notice(message: Mapping[str, Any]) -> bool:
    """Bing's "I've reached my limit" / "I prefer not to continue" messages (A3.2)."""
    return message.get("contentOrigin") == "TurnLimiter" or message.get("messageType") == "Disengaged"


def _suggestions(responses: Any) -> tuple[str, ...]:
    return tuple(str(s["text"]) for s in responses or [] if isinstance(s, dict) and s.get("text"))


def _citations(attributions: Any) -> list[Event]:
    """One `Citation` per distinct URL; the index stays the `[^N^]` marker's number."""
    events: list[Event] = []
    seen: set[str] = set()
    for position, source in enumerate(attributions or []):
        url = source.get("seeMoreUrl") if isinstance(source, dict) else None
        if not url or url in seen:
            continue
        seen.add(url)
        events.append(Citation(position + 1, str(url), str(source.get("providerDisplayName") or url)))
    return events
