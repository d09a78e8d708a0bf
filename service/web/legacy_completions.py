"""OpenAI's legacy Completions API (`prompt` → `text_completion`) on the shared turn pipeline.

`client.completions.create(model=…, prompt=…)` posts to `/v1/completions`. This module is
one parse + render pair, like every surface; the turn runs through `service.web.pipeline`:

    parse_legacy_request: `prompt` and the legacy-only fields are checked here, then the
      body is restated as a one-message Chat Completions body and validated by
      `validation.parse_chat_request` (model, stop, max_tokens, temperature, n, … are
      one code path with the same errors)
    render: `text_completion` objects, `choices[].text`; streamed as `text_completion`
      chunks, then a usage chunk if `stream_options.include_usage`, then `[DONE]`

A legacy completion is stateless, as OpenAI's is: it runs with `store: false` (nothing
is kept). `max_tokens` is honoured when given; OpenAI's default of 16 tokens is not
applied (an unset limit answers in full). `echo` puts the prompt ahead of the text.
Fields that ask for what this upstream cannot give (`logprobs`, `suffix`, `best_of` > 1,
several prompts, token-id prompts) are 400s naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from typing import Any

from flask import Response, jsonify, request

from service.errors import ApiError, InvalidRequest
from service.turns import new_token
from service.web.extension import Gateway, gateway
from service.web.openai_format import Answer
from service.web.pipeline import SSE_HEADERS, Run, bounds, collect, hold_first, submit
from service.web.sse import DONE, FrameStream, frame
from service.web.validation import ChatRequest, parse_body, parse_chat_request

OBJECT = "text_completion"
# Passed through to the Chat Completions validation under the same name.
SHARED = (
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "stop",
    "temperature",
    "top_p",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
    "logit_bias",
)


def is_legacy(path: str, raw: bytes) -> bool:
    """A request for this surface: a `…/completions` path that is not `…/chat/completions`,
    with a body that has no `messages` (a chat body sent there is served as chat, as before)."""
    if path.rstrip("/").endswith("chat/completions"):
        return False
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return True  # the legacy parser names what is wrong
    return not (isinstance(body, dict) and "messages" in body)


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, list):
        if value and all(isinstance(item, str) for item in value):
            raise InvalidRequest(
                "This gateway answers one prompt per request; send each prompt on its own.", param="prompt"
            )
        raise InvalidRequest(
            "'prompt' must be a string (token-id prompts are not supported).", param="prompt"
        )
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("'prompt' must be a non-empty string.", param="prompt")
    return value


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("logprobs") not in (None, 0):
        raise InvalidRequest("This gateway cannot return logprobs; omit 'logprobs'.", param="logprobs")
    if body.get("suffix"):
        raise InvalidRequest("This gateway does not support insertion; omit 'suffix'.", param="suffix")
    if body.get("best_of") not in (None, 1):
        raise InvalidRequest("'best_of' must be 1 on this gateway.", param="best_of")
    unknown = sorted(set(body) - {*SHARED, "prompt", "echo", "logprobs", "suffix", "best_of"})
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])


def parse_legacy_request(raw: bytes, gw: Gateway) -> tuple[ChatRequest, str]:
    """The request as a `ChatRequest` for the pipeline, and the text `echo` puts first."""
    body = parse_body(raw)
    if "prompt" not in body:
        raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt")
    prompt = _prompt(body["prompt"])
    _refuse_unsupported(body)
    chat = {name: body[name] for name in SHARED if name in body}
    chat["messages"] = [{"role": "user", "content": prompt}]
    parsed = parse_chat_request(
        json.dumps(chat).encode(),
        request.headers,
        upstream=gw.settings.upstream,
        bounds=bounds(gw),
        aliases=gw.settings.model_aliases,
        tool_emulation=gw.settings.tool_emulation,
    )
    return parsed, prompt if body.get("echo") is True else ""


def create(raw: bytes) -> Response:
    """POST /v1/completions (and /completions): one legacy completion, streamed or not."""
    gw = gateway()
    chat, echo = parse_legacy_request(raw, gw)

    def respond(gw: Gateway, run: Run, chat: ChatRequest) -> Response:
        return _stream(gw, run, chat, echo) if chat.stream else _complete(gw, run, chat, echo)

    return submit(gw, raw, chat, respond, completion_id=f"cmpl-{new_token()}", store=False)


def _choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def _object(run: Run, choices: list[dict[str, Any]], usage_: dict[str, int] | None = None) -> dict[str, Any]:
    turn = run.turn
    body: dict[str, Any] = {
        "id": turn.completion_id,
        "object": OBJECT,
        "created": turn.created,
        "model": turn.model,
        "choices": choices,
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def _finish(answer: Answer) -> str:
    return "length" if answer.finish_reason == "length" else "stop"


def _complete(gw: Gateway, run: Run, chat: ChatRequest, echo: str) -> Response:
    answer = run.answer = Answer(chat.messages)
    collect(gw, run, answer)
    return jsonify(_object(run, [_choice(echo + answer.content, _finish(answer))], answer.usage()))


def _stream(gw: Gateway, run: Run, chat: ChatRequest, echo: str) -> Response:
    events, first = hold_first(gw, run)
    run.answer = Answer(chat.messages)
    body = LegacyStream(
        events,
        first,
        run=run,
        echo=echo,
        include_usage=chat.include_usage,
        on_close=lambda terminal: run.close(gw, terminal),
    )
    return Response(body, status=200, mimetype="text/event-stream", headers=SSE_HEADERS)


class LegacyStream(FrameStream):
    """`text_completion` chunks: text as it comes, a finish chunk, the usage chunk if asked, `[DONE]`."""

    def __init__(
        self,
        events: Iterator[dict[str, Any] | None],
        first: dict[str, Any] | None,
        *,
        run: Run,
        echo: str,
        include_usage: bool,
        on_close: Any,
    ) -> None:
        self.run, self.echo, self.include_usage = run, echo, include_usage
        super().__init__(events, first, on_close=on_close)

    def _generate(self, events: Iterator[dict[str, Any] | None]) -> Generator[str, None, None]:
        run, answer = self.run, self.run.answer
        assert answer is not None
        try:
            if self.echo:
                yield frame(_object(run, [_choice(self.echo, None)]))
            for event in events:
                kind = event.get("type") if event is not None else None
                if event is None or kind in ("progress", "queued"):
                    yield frame(comment="keep-alive")
                elif kind == "delta":
                    answer.add(event)
                    yield frame(_object(run, [_choice(str(event.get("text", "")), None)]))
                elif kind == "done":
                    self.terminal = event
                    if not answer.deltas and event.get("text"):
                        yield frame(_object(run, [_choice(str(event["text"]), None)]))
                    answer.add(event)
                    yield frame(_object(run, [_choice("", _finish(answer))]))
                    if self.include_usage:
                        yield frame(_object(run, [], answer.usage()))
                    yield frame(DONE)
                    return
                elif kind == "error":
                    self.terminal = event
                    yield frame(ApiError.from_event(event.get("error") or {}).body())
                    yield frame(DONE)
                    return
                else:
                    answer.add(event)
        except Exception as exc:  # e.g. Redis failed mid-stream: tell the client, then end
            yield frame(ApiError.from_exception(exc).body())
            yield frame(DONE)
