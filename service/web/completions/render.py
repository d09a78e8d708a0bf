"""Legacy Completions' shapes: a `text_completion` object, or `text_completion` chunks then `[DONE]`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from service.errors import ApiError
from service.events import Done, ToolCall
from service.turns import TurnRequest
from service.web.pipeline.answer import Answer
from service.web.pipeline.sse import DONE, FrameTemplate, frame
from service.web.pipeline.stream import Renderer

OBJECT = "text_completion"


def _choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


class LegacyRenderer(Renderer):
    """`text_completion`: text as it comes, a finish chunk, the usage chunk if asked, `[DONE]`."""

    def __init__(
        self, turn: TurnRequest, messages: Iterable[Mapping[str, str]], *, echo: str, include_usage: bool
    ) -> None:
        super().__init__(Answer(messages))
        self.turn, self.echo, self.include_usage = turn, echo, include_usage
        self._text = FrameTemplate(lambda text: self._object([_choice(text, None)]))  # every delta's frame

    def _object(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        turn = self.turn
        body: dict[str, Any] = {
            "id": turn.completion_id,
            "object": OBJECT,
            "created": turn.created,
            "model": turn.model,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return body

    def _finish(self) -> str:
        return "length" if self.answer.finish_reason == "length" else "stop"

    def start(self) -> Iterator[str]:
        if self.echo:
            yield frame(self._object([_choice(self.echo, None)]))

    def text(self, text: str) -> Iterator[str]:
        yield self._text(text)

    def tool_call(self, call: ToolCall) -> Iterator[str]:
        return iter(())  # no tools on this surface: none are ever offered

    def done(self, event: Done) -> Iterator[str]:
        if not self.answer.deltas and event.text:
            yield from self.text(event.text)
        yield frame(self._object([_choice("", self._finish())]))
        if self.include_usage:
            yield frame(self._object([], self.answer.usage()))
        yield frame(DONE)

    def failed(self, error: ApiError) -> Iterator[str]:
        yield frame(error.body())
        yield frame(DONE)

    def complete(self, done: Done) -> dict[str, Any]:
        text = self.echo + self.answer.content
        return self._object([_choice(text, self._finish())], self.answer.usage())
