"""Turning a Responses API request body into the neutral `ChatRequest`, or a 400 naming the param.

`input` is a string or a list of items, read by `input_items` (messages, and the tool-call
items agent clients replay). `instructions` and system/developer messages become the
system prompt.

How the turn relates to stored state:

- `previous_response_id` or `conversation`: the turn continues that conversation, so
  every new input item goes upstream as the prompt and the stored transcript is the
  history (the two together are a 400, as at OpenAI);
- neither: the client sent the whole history, which history matching recognises
  exactly as for Chat Completions.

`tools`, `tool_choice`, `parallel_tool_calls`, `text.format` and `max_output_tokens` are
echoed on the response object and honoured (`service.tools`: emulated function calls,
structured output, the token cut); replayed `function_call` / `function_call_output`
items become the calls and results the worker stored, each result naming its call. Fields that
would change the answer's meaning and that the gateway cannot honour (files and audio in
the input, `background` without `store`) are a 400 naming them. The last message's `input_image` parts go
upstream as images (`service.images`); earlier ones are `[image]` lines. This module does no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from service.errors import InvalidRequest, NotFound
from service.limits import check_prompt
from service.models import Aliases, find_model, unknown_model_message
from service.tools import hosted
from service.tools.openai_params import check_emulation, parse_choice, parse_format, parse_tools
from service.tools.options import TurnOptions
from service.web.http.schema_errors import missing as _missing
from service.web.http.schema_errors import wrong_type as _wrong_type
from service.web.pipeline.request import Bounds, ChatRequest, check_chars, parse_body
from service.web.responses.input_items import INSTRUCTION_ROLES, input_images, input_messages

if TYPE_CHECKING:
    from service.web.http.auth import HeaderLookup


@dataclasses.dataclass(frozen=True)
class ResponsesRequest:
    """A validated Responses request: the neutral turn plus what the response object echoes."""

    chat: ChatRequest
    input_items: tuple[dict[str, Any], ...]
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | None = None
    store: bool = True
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    echo: dict[str, Any] = dataclasses.field(default_factory=dict)
    background: bool = False  # run detached (`responses.background`); needs `store`
    unoffered: tuple[str, ...] = ()  # hosted tools left out (service.tools.hosted)


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _options(body: dict[str, Any], *, tool_emulation: bool) -> TurnOptions:
    """`tools`, `tool_choice`, `parallel_tool_calls`, `text.format`, `max_output_tokens` as `TurnOptions`."""
    tools = parse_tools(body.get("tools"), nested=False, hosted=True)
    choice = parse_choice(body.get("tool_choice"), tools) if tools else "auto"
    text = body.get("text") or {}
    options = TurnOptions(
        tools=tools,
        choice=choice,
        parallel=body.get("parallel_tool_calls") is not False,
        output=parse_format(text.get("format"), "text.format"),
        max_tokens=body.get("max_output_tokens"),
    )
    check_emulation(options, enabled=tool_emulation)
    return options


def _optional(body: dict[str, Any], param: str, kind: type | tuple[type, ...], expected: str) -> Any:
    value = body.get(param)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
        raise _wrong_type(param, expected, value)
    return value


def parse_metadata(body: dict[str, Any]) -> dict[str, str]:
    metadata = _optional(body, "metadata", dict, "an object")
    if metadata is None:
        return {}
    if len(metadata) > 16:
        raise _invalid("Invalid 'metadata': too many properties. Expected at most 16.", "metadata")
    for key, value in metadata.items():
        if len(key) > 64:
            raise _invalid(f"Invalid 'metadata': key '{key[:64]}…' is longer than 64 characters.", "metadata")
        if not isinstance(value, str):
            raise _wrong_type(f"metadata.{key}", "a string", value)
        if len(value) > 512:
            raise _invalid(f"Invalid 'metadata.{key}': longer than 512 characters.", f"metadata.{key}")
    return dict(metadata)


def _conversation(body: dict[str, Any]) -> str | None:
    value = body.get("conversation")
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
        if not isinstance(value, str):
            raise _wrong_type("conversation.id", "a string", value)
    elif not isinstance(value, str):
        raise _wrong_type("conversation", "one of a string or object", value)
    return value.strip() or None


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """Accepted knobs, type-checked, as the response object echoes them."""
    max_output = _optional(body, "max_output_tokens", int, "an integer")
    if max_output is not None and max_output < 16:
        raise _invalid(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, "
            f"but got {max_output} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    tools = _optional(body, "tools", list, "an array")
    text = _optional(body, "text", dict, "an object")
    if text is not None and text.get("format") is not None and not isinstance(text["format"], dict):
        raise _wrong_type("text.format", "an object", text["format"])
    for param, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = _optional(body, param, (int, float), "a decimal")
        if value is not None and not low <= value <= high:
            raise _invalid(f"Invalid '{param}': expected a value between {low:g} and {high:g}.", param)
    parallel = _optional(body, "parallel_tool_calls", bool, "a boolean")
    return {
        "model": body["model"],
        "max_output_tokens": max_output,
        "tools": tools or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "text": {"format": {"type": "text"}, **(text or {})},
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "parallel_tool_calls": True if parallel is None else parallel,
        "reasoning": body.get("reasoning") if isinstance(body.get("reasoning"), dict) else None,
        "user": body.get("user") if isinstance(body.get("user"), str) else None,
    }


def _model(body: dict[str, Any], upstream: str, aliases: Aliases) -> str:
    """The catalog id of the requested `model`; 400 if it is not a string, 404 if there is none."""
    model_name = body.get("model")
    if model_name is None:
        raise _missing("model")
    if not isinstance(model_name, str):
        raise _wrong_type("model", "a string", model_name)
    spec = find_model(model_name, upstream, aliases)
    if spec is None:
        raise NotFound(
            unknown_model_message(model_name),
            param="model",
            code="model_not_found",
        )
    return spec.id


def _continuation(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """`previous_response_id` and `conversation`: at most one of them (a 400, as at OpenAI)."""
    previous = _optional(body, "previous_response_id", str, "a string")
    conversation = _conversation(body)
    if previous and conversation:
        raise _invalid(
            "Mutually exclusive parameters: Ensure you are only providing one of: "
            "'previous_response_id' or 'conversation'.",
            "previous_response_id",
            "mutually_exclusive_parameters",
        )
    return previous, conversation


def _split(
    items: list[dict[str, str]], instructions: str | None, *, continues: bool
) -> tuple[list[str], list[dict[str, str]], str, tuple[dict[str, str], ...]]:
    """The system parts, the turns, the prompt and the history of the input messages.

    A continued conversation's stored transcript is the history, so every new turn goes
    upstream as the prompt; otherwise the last turn is the prompt and the rest the history.
    """
    system_parts = [instructions.strip()] if instructions and instructions.strip() else []
    system_parts += [m["content"] for m in items if m["role"] in INSTRUCTION_ROLES and m["content"]]
    turns = [m for m in items if m["role"] not in INSTRUCTION_ROLES]
    if continues:
        return system_parts, turns, "\n\n".join(m["content"] for m in turns if m["content"]), ()
    return system_parts, turns, turns[-1]["content"], tuple(m for m in turns[:-1] if m["content"])


def parse_responses_request(
    raw: bytes,
    headers: HeaderLookup,
    *,
    upstream: str,
    bounds: Bounds | None = None,
    aliases: Aliases = (),
    tool_emulation: bool = True,
    call_names: Mapping[str, str] | None = None,
) -> ResponsesRequest:
    """Validate a Responses body into a `ResponsesRequest`; 400 naming the param, 404 for a model.

    The same size bounds as Chat Completions (`validation.Bounds`, nesting in `parse_body`,
    the upstream's per-message limit) apply, to `input` items and `instructions`.
    `call_names` names the calls of earlier, stored turns (`previous_response_id`), which a
    `function_call_output` answers without repeating the function's name.
    """
    bounds = bounds or Bounds()
    body = parse_body(raw)
    model = _model(body, upstream, aliases)
    background = _optional(body, "background", bool, "a boolean") or False
    stream = _optional(body, "stream", bool, "a boolean") or False
    store = _optional(body, "store", bool, "a boolean")
    if background and store is False:
        raise _invalid(
            "Background responses must be stored: set 'store' to true with 'background'.", "background"
        )
    instructions = _optional(body, "instructions", str, "a string")
    previous, conversation = _continuation(body)
    items = input_messages(body, bounds, call_names or {})
    found = input_images(body, bounds, upstream)
    echo = _echo(body)
    options = _options(body, tool_emulation=tool_emulation)
    continues = previous or conversation
    system_parts, turns, prompt, history = _split(items, instructions, continues=bool(continues))
    messages = tuple([{"role": "system", "content": s} for s in system_parts] + turns)
    check_chars(sum(len(m["content"]) for m in messages), bounds, param="input")
    check_prompt(prompt, upstream, param="input")
    chat = ChatRequest(
        model=model,
        prompt=prompt,
        system="\n\n".join(system_parts),
        history=history,
        messages=messages,
        stream=stream,
        conversation_id=continues or None,
        conversation_param=("previous_response_id" if previous else "conversation") if continues else None,
        options=options.to_json(),
        images=found,
    )
    return ResponsesRequest(
        chat=chat,
        input_items=tuple(items),
        instructions=instructions,
        previous_response_id=previous,
        conversation=conversation,
        store=True if store is None else store,
        metadata=parse_metadata(body),
        echo=echo,
        background=background,
        unoffered=hosted.unoffered(body.get("tools")),
    )
