"""The dialect-neutral events every upstream dialect decodes its frames into.

A dialect turns raw frames into this small closed set; the turn runner, the relay and
the web tier only ever see these. Failures are not events: dialects raise
`workers.upstream.errors.UpstreamError` subclasses. A normal end is the `Done` event,
so a consuming loop ends without try/except.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TextDelta:
    """New answer text, in order; concatenating all deltas gives the answer."""

    text: str


@dataclasses.dataclass(frozen=True)
class Progress:
    """Something the upstream is doing that is not answer text.

    `kind` is "search" (web search query), "loader" ("Generating answers…") or
    "reasoning"; `text` is what a person would be shown.
    """

    kind: str
    text: str


@dataclasses.dataclass(frozen=True)
class Citation:
    """A numbered source; `index` is the 1-based marker number (`[^1^]` ↔ 1)."""

    index: int
    url: str
    title: str


@dataclasses.dataclass(frozen=True)
class Suggestions:
    """Follow-up prompts the upstream suggests."""

    items: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Limits:
    """Turn counters of the upstream conversation after this turn."""

    used: int
    max: int


@dataclasses.dataclass(frozen=True)
class Image:
    """A generated image (Copilot): where it is, what it shows, and a small preview URL."""

    url: str
    prompt: str = ""
    thumbnail_url: str = ""


@dataclasses.dataclass(frozen=True)
class Done:
    """The answer finished.

    `text` is the whole answer as the client saw it (the concatenated deltas).
    `finish_reason` is "stop", or "content_filter" when the upstream retracted or
    refused the answer (ChatHub's Apology).
    """

    text: str
    finish_reason: str = "stop"


Event = TextDelta | Progress | Citation | Suggestions | Limits | Image | Done
