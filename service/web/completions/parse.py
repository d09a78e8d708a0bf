"""A legacy Completions body (`model`, `prompt`, …) as the pipeline's neutral `ChatRequest`.

The prompt becomes the one user message of a stateless turn. Shared parameters are checked
as Chat Completions checks them (`service.tools.openai_params.chat_options`: `stop`,
`max_tokens`); fields that ask for what this upstream cannot give (`logprobs`, `suffix`,
`best_of` > 1, `n` > 1, several prompts, token-id prompts) are 400s naming the field, and a
`messages` body is told where it belongs.
"""

from __future__ import annotations

from typing import Any

from service.errors import InvalidRequest, NotFound
from service.limits import check_prompt
from service.models import Aliases, find_model, unknown_model_message
from service.tools.openai_params import chat_options
from service.web.pipeline.request import Bounds, ChatRequest, check_chars, parse_body

KNOBS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
ACCEPTED = {
    *KNOBS,
    "model",
    "prompt",
    "stream",
    "stream_options",
    "max_tokens",
    "stop",
    "n",
    "seed",
    "user",
    "logit_bias",
    "echo",
    "logprobs",
    "suffix",
    "best_of",
}


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, list):
        if value and all(isinstance(item, str) for item in value):
            raise _bad("prompt", "This gateway answers one prompt per request; send each prompt on its own.")
        raise _bad("prompt", "'prompt' must be a string (token-id prompts are not supported).")
    if not isinstance(value, str) or not value.strip():
        raise _bad("prompt", "'prompt' must be a non-empty string.")
    return value


def _refuse(body: dict[str, Any]) -> None:
    """What cannot be honoured, and fields the API does not have."""
    unknown = sorted(set(body) - ACCEPTED)
    if unknown:
        raise _bad(unknown[0], f"Unrecognized request argument supplied: {unknown[0]}")
    if body.get("logprobs") not in (None, 0):
        raise _bad(
            "logprobs", "This gateway cannot return logprobs (the upstream has none); omit 'logprobs'."
        )
    if body.get("suffix"):
        raise _bad("suffix", "This gateway does not support insertion; omit 'suffix'.")
    if body.get("best_of") not in (None, 1):
        raise _bad("best_of", "'best_of' must be 1 on this gateway.")
    if body.get("n") not in (None, 1):
        raise _bad("n", "'n' must be 1 on this gateway (the upstream answers once).")
    for name in KNOBS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _bad(name, f"'{name}' must be a number.")
    if not isinstance(body.get("echo", False), bool):
        raise _bad("echo", "'echo' must be a boolean.")


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _bad("stream", "'stream' must be a boolean.")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise _bad("stream_options", "'stream_options' must be an object with a boolean 'include_usage'.")
    return stream, bool(stream and options.get("include_usage"))


def parse_legacy_request(
    raw: bytes,
    *,
    upstream: str = "bing",
    bounds: Bounds | None = None,
    aliases: Aliases = (),
    tool_emulation: bool = True,
) -> tuple[ChatRequest, str]:
    """The request as a `ChatRequest` for the pipeline, and the text `echo` puts first."""
    bounds = bounds or Bounds()
    body = parse_body(raw)
    if "messages" in body:
        raise _bad(
            "messages",
            "This is the legacy Completions endpoint (`prompt`); send `messages` to /v1/chat/completions.",
        )
    if "prompt" not in body:
        raise _bad("prompt", "Missing required parameter: 'prompt'.")
    model = body.get("model")
    if not isinstance(model, str):
        raise _bad(
            "model", "Missing required parameter: 'model'." if model is None else "'model' must be a string."
        )
    _refuse(body)
    prompt = _prompt(body["prompt"])
    spec = find_model(model, upstream, aliases)
    if spec is None:
        raise NotFound(unknown_model_message(model), param="model", code="model_not_found")
    check_chars(len(prompt), bounds)
    check_prompt(prompt, upstream)
    stream, include_usage = _stream_flags(body)
    cuts: dict[str, Any] = {name: body[name] for name in ("stop", "max_tokens") if name in body}
    options = chat_options(cuts, tool_emulation=tool_emulation)
    chat = ChatRequest(
        model=spec.id,
        prompt=prompt,
        messages=({"role": "user", "content": prompt},),
        stream=stream,
        include_usage=include_usage,
        options=options.to_json(),
    )
    return chat, prompt if body.get("echo") is True else ""
