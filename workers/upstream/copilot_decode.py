"""Decoding Copilot's incoming events into dialect-neutral events, without I/O.

Copilot already streams deltas (`appendText`), so unlike ChatHub there is nothing to
diff: the decoder filters text to the assistant message, numbers citations, turns the
image events into an `Image` plus a markdown link, and maps every failure of B3/B7.6
onto `workers.upstream.errors`. Challenges are not events: an answerable one is handed
to the client loop as `pending_challenge` (it must send a frame), an unanswerable one
raises `ChallengeRequired`. The end of the answer (`done`) is only marked here; the
client drains late suggestions and then asks `finish()` for the `Done` event.
`workers.upstream.copilot_failures` words the failure events as exceptions.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from workers.upstream.challenges import ANSWERABLE
from workers.upstream.copilot_failures import CLEARANCE_HINT, message_error, retry_after, turn_error
from workers.upstream.errors import (
    ChallengeRequired,
    ImageThrottled,
)
from workers.upstream.events import Citation, Done, Event, Image, Progress, Suggestions, TextDelta

log = logging.getLogger(__name__)

# Events that may still arrive after `done` and are worth waiting for (B3.2).
AFTER_DONE = ("suggestedFollowups", "titleUpdate")


@dataclasses.dataclass(frozen=True)
class Challenge:
    """An answerable challenge the client must reply to, then re-send its `send` (B2, B7.4)."""

    method: str
    parameter: str | None
    id: str | None


def _markdown_image(prompt: str, url: str) -> str:
    alt = " ".join(prompt.split()).replace("[", "(").replace("]", ")")
    target = f"<{url}>" if any(c in url for c in " ()<>") else url
    return f"![{alt}]({target})"


CONTENT_EVENTS = frozenset(
    ("appendText", "chainOfThought", "citation", "suggestedFollowups", "generatingImage", "imageGenerated")
)
"""Copilot events that yield something for the client; the others change state or fail the turn."""


class CopilotDecoder:
    """Incoming Copilot events of one turn → dialect-neutral events (B3, B3.2).

    `text` is every delta emitted (the answer as the client saw it, image links
    included); `done` turns True at the server's `done`; `image` is the last generated
    image, which lets a bare close still count as success (B3.2).
    """

    def __init__(
        self,
        *,
        account: str = "",
        mode: str = "chat",
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self.account = account
        self.mode = mode
        self.done = False
        self.text = ""
        self.title = ""
        self.suggested = False
        self.image: Image | None = None
        self.partial_image = ""  # the last progressive preview (base64); kept, never emitted
        self.pending_challenge: Challenge | None = None
        self._clock = clock
        self._log = logger or log
        self._user_id: object = None
        self._message_id: object = None
        self._prompt = ""
        self._after_block = False  # the last delta was an image link: start new text on its own line
        self._sources: dict[str, int] = {}
        self._challenges: set[tuple[object, object]] = set()

    def feed_message(self, events: Sequence[Mapping[str, Any]]) -> list[Event]:
        """The events of one websocket message; a throttle in it wins over anything else (B7.3)."""
        refusal = next((e for e in events if e.get("event") == "chatMessageError"), None)
        if refusal is not None and not self.done:
            raise message_error(refusal, account=self.account, clock=self._clock)
        decoded: list[Event] = []
        for event in events:
            decoded.extend(self.feed(event))
        return decoded

    def feed(self, event: Mapping[str, Any]) -> list[Event]:
        """The events one incoming Copilot event yields (possibly none); failures raise."""
        kind = event.get("event")
        if self.done:
            return self._after_done(kind, event)
        if isinstance(kind, str) and kind in CONTENT_EVENTS:
            return self._content(kind, event)
        self._note(kind, event)
        return []

    def _content(self, kind: object, event: Mapping[str, Any]) -> list[Event]:
        """An event that carries something for the client: text, progress, a source, an image."""
        if kind == "appendText":
            return self._append(event)
        if kind == "chainOfThought":
            text = event.get("text")
            return [Progress("reasoning", text)] if isinstance(text, str) and text else []
        if kind == "citation":
            return self._citation(event)
        if kind == "suggestedFollowups":
            return self._suggestions(event)
        if kind == "generatingImage":
            self._prompt = str(event.get("prompt") or "")
            text = str(event.get("progressionText") or "Generating an image")
            return [Progress("image", text)]
        return self._image(event)  # imageGenerated

    def _note(self, kind: object, event: Mapping[str, Any]) -> None:
        """An event that only changes the turn's state (ids, title, the end, a challenge) or fails it."""
        if kind == "received":
            self._user_id = event.get("messageId")
        elif kind == "startMessage":
            self._message_id = event.get("messageId")
        elif kind == "replaceText":
            # Semantics uncertain (B3 [U]); guessing could garble the answer the client already has.
            self._log.debug("event=copilot_replace_text_ignored chars=%d", len(str(event.get("text") or "")))
        elif kind == "titleUpdate":
            self.title = str(event.get("title") or "")
        elif kind == "partialImageGenerated":
            self.partial_image = str(event.get("content") or "")
        elif kind == "done":
            self.done = True
        elif kind == "challenge":
            self._challenge(event)
        elif kind == "chatMessageError":
            raise message_error(event, account=self.account, clock=self._clock)
        elif kind == "error":
            raise turn_error(event, account=self.account, mode=self.mode)
        # connected, ping, partCompleted, telemetry and unknown events carry nothing for us

    def take_challenge(self) -> Challenge | None:
        """The challenge to answer now, if any; taking it clears it."""
        challenge, self.pending_challenge = self.pending_challenge, None
        return challenge

    def finish(self) -> Done:
        """The `Done` event: call once `done` arrived (and late events drained), or on an image close."""
        return Done(text=self.text, finish_reason="stop")

    def _after_done(self, kind: object, event: Mapping[str, Any]) -> list[Event]:
        if kind == "suggestedFollowups":
            return self._suggestions(event)
        if kind == "titleUpdate":
            self.title = str(event.get("title") or "")
        elif kind not in ("ping", "connected", "telemetry", "partCompleted"):
            self._log.debug("event=copilot_after_done_ignored kind=%s", kind)
        return []

    def _append(self, event: Mapping[str, Any]) -> list[Event]:
        text = event.get("text")
        message_id = event.get("messageId")
        if not isinstance(text, str) or not text:
            return []
        if self._message_id is None and message_id is not None and message_id != self._user_id:
            # No startMessage seen (never observed, but cheap to survive): adopt the first non-user id.
            self._message_id = message_id
        if message_id != self._message_id:
            return []  # another message's text (e.g. the user's own, echoed)
        if self._after_block and not text.startswith("\n"):
            text = "\n\n" + text
        self._after_block = False
        self.text += text
        return [TextDelta(text)]

    def _citation(self, event: Mapping[str, Any]) -> list[Event]:
        url = event.get("url")
        if not isinstance(url, str) or not url or url in self._sources:
            return []
        self._sources[url] = len(self._sources) + 1
        return [Citation(self._sources[url], url, str(event.get("title") or url))]

    def _suggestions(self, event: Mapping[str, Any]) -> list[Event]:
        items = tuple(str(s) for s in event.get("suggestions") or [] if isinstance(s, str) and s)
        if not items:
            return []
        self.suggested = True
        return [Suggestions(items)]

    def _image(self, event: Mapping[str, Any]) -> list[Event]:
        url = event.get("url")
        if not isinstance(url, str) or not url:
            moment = event.get("nextAvailableAt")
            if isinstance(moment, str) and moment:  # no image: the image quota is spent until then
                raise ImageThrottled(
                    f"Copilot's image quota for account #{self.account} is used up until {moment}",
                    retry_after=retry_after(moment, self._clock()),
                )
            return []
        prompt = str(event.get("prompt") or self._prompt)
        self.image = Image(url=url, prompt=prompt, thumbnail_url=str(event.get("thumbnailUrl") or ""))
        if not self.text or self.text.endswith("\n\n"):
            lead = ""
        else:
            lead = "\n" if self.text.endswith("\n") else "\n\n"
        link = lead + _markdown_image(prompt or "image", url)
        self.text += link
        self._after_block = True
        return [self.image, TextDelta(link)]

    def _challenge(self, event: Mapping[str, Any]) -> None:
        method, parameter = event.get("method"), event.get("parameter")
        key = (method, parameter)
        if key in self._challenges:
            self._log.debug("event=copilot_challenge_repeated method=%s", method)
            return  # the same challenge again: answering twice draws invalid-event
        if method not in ANSWERABLE:
            # `method: null` is a human check (Turnstile): an empty token draws invalid-event (B5b).
            kind = "human-check (Turnstile)" if method in (None, "cloudflare") else repr(method)
            raise ChallengeRequired(
                f"Copilot sent account #{self.account} a {kind} challenge: {CLEARANCE_HINT}"
            )
        if self._challenges:
            raise ChallengeRequired(
                f"Copilot sent account #{self.account} a second, different challenge ({method}) after "
                f"the first was answered: {CLEARANCE_HINT}"
            )
        self._challenges.add(key)
        challenge_id = event.get("id")
        self.pending_challenge = Challenge(
            method=str(method),
            parameter=None if parameter is None else str(parameter),
            id=None if challenge_id is None else str(challenge_id),
        )
