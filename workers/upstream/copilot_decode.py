"""Decoding Copilot's incoming events into dialect-neutral events, without I/O.

Copilot already streams deltas (`appendText`), so unlike ChatHub there is nothing to
diff: the decoder filters text to the assistant message, numbers citations, turns the
image events into an `Image` plus a markdown link, and maps every failure of B3/B7.6
onto `workers.upstream.errors`. Challenges are not events: an answerable one is handed
to the client loop as `pending_challenge` (it must send a frame), an unanswerable one
raises `ChallengeRequired`. The end of the answer (`done`) is only marked here; the
client drains late suggestions and then asks `finish()` for the `Done` event.

Two exception classes are specific to this dialect and live here rather than in the
shared tree: `InvalidEvent` (a `ProtocolError` the client logs with the frames that
caused it) and `ModeNotAvailable` (a 400 `model_not_available`: the caller asked for a
model the account may not use, so it is the client's request that must change).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from workers.upstream.challenges import ANSWERABLE
from workers.upstream.cloudflare import OPERATOR_HINT
from workers.upstream.copilot import CREDENTIALS_HINT, THROTTLE_RETRY_AFTER
from workers.upstream.errors import (
    ChallengeRequired,
    ImageThrottled,
    InputTooLong,
    ProtocolError,
    RegionBlocked,
    Throttled,
    Unauthorized,
    UpstreamError,
)
from workers.upstream.events import Citation, Done, Event, Image, Progress, Suggestions, TextDelta

log = logging.getLogger(__name__)

CLEARANCE_HINT = "clearance required — " + OPERATOR_HINT
REGION_HINT = (
    "Copilot is not available to this account from this region: sign in (UPSTREAM_COOKIES / "
    "COPILOT_ACCESS_TOKEN) or use an egress in a supported region"
)
# Events that may still arrive after `done` and are worth waiting for (B3.2).
AFTER_DONE = ("suggestedFollowups", "titleUpdate")


class InvalidEvent(ProtocolError):
    """Copilot rejected one of our frames (`invalid-event`): wrong order, duplicate or malformed."""


class ModeNotAvailable(UpstreamError):
    """The requested Copilot mode is not allowed for this account (`unsupported-mode`)."""

    status = 400
    error_type = "invalid_request_error"
    code = "model_not_available"
    should_retry = False


@dataclasses.dataclass(frozen=True)
class Challenge:
    """An answerable challenge the client must reply to, then re-send its `send` (B2, B7.4)."""

    method: str
    parameter: str | None
    id: str | None


def retry_after(next_available_at: Any, now: float) -> float:
    """Seconds until an ISO `nextAvailableAt`, at least 1; the default when it cannot be read."""
    if not isinstance(next_available_at, str) or not next_available_at:
        return THROTTLE_RETRY_AFTER
    try:
        moment = datetime.fromisoformat(next_available_at.strip())
    except ValueError:
        return THROTTLE_RETRY_AFTER
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(1.0, moment.timestamp() - now)


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
            raise self._message_error(refusal)
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
            raise self._message_error(event)
        elif kind == "error":
            raise self._error(event)
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

    def _message_error(self, event: Mapping[str, Any]) -> UpstreamError:
        code = event.get("errorCode")
        raw_detail = event.get("errorDetail")
        detail: Mapping[str, Any] = raw_detail if isinstance(raw_detail, dict) else {}
        if code == "throttled" or detail.get("type") == "throttled":
            moment = detail.get("nextAvailableAt") or event.get("nextAvailableAt")
            wait = retry_after(moment, self._clock())
            until = f" until {moment}" if isinstance(moment, str) and moment else ""
            return Throttled(f"Copilot throttled account #{self.account}{until}", retry_after=wait)
        return UpstreamError(f"Copilot refused the message: {_describe(code, event)}")

    def _error(self, event: Mapping[str, Any]) -> UpstreamError:
        code = event.get("errorCode")
        if code == "invalid-event":
            return InvalidEvent(f"Copilot rejected a frame of ours: {_describe(code, event)}")
        if code == "chat-service-unavailable":
            return RegionBlocked(REGION_HINT)
        if code == "text-too-long":
            return InputTooLong(
                "Copilot refused the message as too long (text-too-long). "
                "Please reduce the length of the messages."
            )
        if code in ("unauthorized", "invalid-token"):
            return Unauthorized(f"Copilot rejected the account's credentials ({code}): {CREDENTIALS_HINT}")
        if code == "unsupported-mode":
            return ModeNotAvailable(
                f"Copilot does not allow mode {self.mode!r} for this account (unsupported-mode); "
                "choose another model or configure a signed-in account"
            )
        return UpstreamError(f"Copilot failed the turn: {_describe(code, event)}")


def _describe(code: object, event: Mapping[str, Any]) -> str:
    """`errorCode` plus any human text, which clients find in `message` or `error` (B3 [U])."""
    text = event.get("message") or event.get("error")
    parts = [str(code) if code else "unknown error", str(text) if isinstance(text, str) and text else ""]
    return ": ".join(part for part in parts if part)
