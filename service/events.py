"""The relay's event vocabulary: what a worker tells the web tier about one turn.

One closed set of frozen dataclasses, each with `to_json` (the relay's wire object, key
order included) and `from_json`; `decode` turns any relay object back into its class.
The worker publishes only these (`service.state.relay_publisher.Publisher`); `Done` and `Failed`
are terminal, every other event says something happened on the way.

    Delta(text)                    answer text (the publisher coalesces bursts)
    Progress(kind, text)           reasoning/search/priming note: a comment, never text
    Queued(position)               waiting for an upstream account slot
    Citation(index, url, title)    a numbered source the text cites as [^n^]
    Image(url, prompt, thumbnail_url[, b64_json])   an image Copilot generated
    ToolCall(id, name, arguments)  one emulated function call
    Suggestions(items)             follow-up suggestions
    Limits(used, max)              the upstream conversation's turn count
    Done(text, finish_reason[, extra])   the answer ended (extra: tool_calls, parsed…)
    Failed(error[, synthetic])     the turn failed (`ApiError.to_event()`); synthetic: said
                                   by the web tier, not the worker

Plain module: both tiers import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, TypeAlias

TERMINAL = ("done", "error")


@dataclasses.dataclass(frozen=True)
class _Event:
    TYPE: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        """The relay's JSON object: `type` first, then the fields in declaration order."""
        return {"type": self.TYPE, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Any:
        """Rebuild from a relay object, ignoring keys a newer worker may add (and `seq`)."""
        names = _field_names(cls)
        return cls(**{key: value for key, value in data.items() if key in names})


_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type[_Event]) -> frozenset[str]:
    """A class's field names, looked up once: every relay message is decoded through them."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


@dataclasses.dataclass(frozen=True)
class Delta(_Event):
    TYPE: ClassVar[str] = "delta"
    text: str


@dataclasses.dataclass(frozen=True)
class Progress(_Event):
    TYPE: ClassVar[str] = "progress"
    kind: str
    text: str


@dataclasses.dataclass(frozen=True)
class Queued(_Event):
    TYPE: ClassVar[str] = "queued"
    position: int


@dataclasses.dataclass(frozen=True)
class Citation(_Event):
    TYPE: ClassVar[str] = "citation"
    index: int
    url: str
    title: str


@dataclasses.dataclass(frozen=True)
class Image(_Event):
    TYPE: ClassVar[str] = "image"
    url: str
    prompt: str = ""
    thumbnail_url: str = ""
    b64_json: str | None = None  # only for an image generation that asked for `b64_json`

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.b64_json is None:
            del data["b64_json"]
        return data


@dataclasses.dataclass(frozen=True)
class ToolCall(_Event):
    TYPE: ClassVar[str] = "tool_call"
    id: str
    name: str
    arguments: str

    def call(self) -> dict[str, str]:
        """The neutral call (`id`, `name`, `arguments`) stored and rendered by every surface."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclasses.dataclass(frozen=True)
class Suggestions(_Event):
    TYPE: ClassVar[str] = "suggestions"
    items: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "items": list(self.items)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Suggestions:
        return cls(tuple(data.get("items") or ()))


@dataclasses.dataclass(frozen=True)
class Limits(_Event):
    TYPE: ClassVar[str] = "limits"
    used: int
    max: int


@dataclasses.dataclass(frozen=True)
class Done(_Event):
    TYPE: ClassVar[str] = "done"
    text: str
    finish_reason: str = "stop"
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """What the turn's shaping adds (`tool_calls`, `parsed`…), sent beside text and finish_reason."""

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "text": self.text, "finish_reason": self.finish_reason, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Done:
        extra = {k: v for k, v in data.items() if k not in ("type", "text", "finish_reason", "seq")}
        return cls(str(data.get("text") or ""), str(data.get("finish_reason") or "stop"), extra)


@dataclasses.dataclass(frozen=True)
class Failed(_Event):
    TYPE: ClassVar[str] = "error"
    error: Mapping[str, Any]
    synthetic: bool = False
    upstream_turns: int = 0  # turns the upstream saw before the failure: the key is charged their input

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.TYPE, "error": dict(self.error)}
        if self.synthetic:
            data["synthetic"] = True
        if self.upstream_turns:
            data["upstream_turns"] = self.upstream_turns
        return data


RelayEvent: TypeAlias = (
    Delta | Progress | Queued | Citation | Image | ToolCall | Suggestions | Limits | Done | Failed
)
Terminal: TypeAlias = Done | Failed

_CLASSES: dict[str, type[_Event]] = {
    cls.TYPE: cls
    for cls in (Delta, Progress, Queued, Citation, Image, ToolCall, Suggestions, Limits, Done, Failed)
}


def decode(data: Mapping[str, Any]) -> RelayEvent:
    """The event class for a relay object; ValueError for a type this gateway does not know."""
    cls = _CLASSES.get(str(data.get("type")))
    if cls is None:
        raise ValueError(f"unknown relay event type {data.get('type')!r}")
    event: RelayEvent = cls.from_json(data)
    return event
