"""The worker's one translation from upstream events to the relay's (`service.events`).

Dialects speak `workers.upstream.events`; the shaping adds `ToolCall`s; the web tier
reads only `service.events`. `Done` is not translated here: the turn runs its fenced
save first and publishes the relay's `Done` itself.
"""

from __future__ import annotations

from service import events as relay
from workers.upstream.events import Citation, Done, Event, Image, Limits, Progress, Suggestions, TextDelta

Relayed = Event | relay.ToolCall
"""What the shaping yields: upstream events, plus the tool calls it found in the text."""


def to_relay(event: Relayed) -> relay.RelayEvent | None:
    """The relay event for one shaped event (None for `Done`, which the turn publishes itself)."""
    if isinstance(event, relay.ToolCall):
        return event
    if isinstance(event, TextDelta):
        return relay.Delta(event.text)
    if isinstance(event, Progress):
        return relay.Progress(event.kind, event.text)
    if isinstance(event, Citation):
        return relay.Citation(event.index, event.url, event.title)
    if isinstance(event, Suggestions):
        return relay.Suggestions(tuple(event.items))
    if isinstance(event, Limits):
        return relay.Limits(event.used, event.max)
    if isinstance(event, Image):
        return relay.Image(event.url, event.prompt, event.thumbnail_url)
    assert isinstance(event, Done)
    return None
