"""Turning a Responses API request body into the neutral `ChatRequest`, or a 400 naming the param.

`input` is a string or a list of items: messages (`user`, `assistant`, `system`,
`developer`; content a string or `input_text` / `output_text` parts), and the
tool-call items agent clients replay (`function_call`, `function_call_output`, shown
folded by `service.tools.history`; `reasoning` items are skipped). `instructions` and
system/developer messages become the system prompt.

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
would change the answer's meaning and that the gateway cannot honour (`background`,
files and audio in the input) are a 400 naming them. The last message's `input_image` parts go
upstream as images (`service.images`); earlier ones are `[image]` lines. This module does no I/O.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from service import images
from service.errors import InvalidRequest, NotFound
from service.images import ImageInput
from service.limits import check_prompt
from service.models import Aliases, find_model, unknown_model_message
from service.tools import hosted
from service.tools.history import fold
from service.tools.openai_params import check_emulation, parse_choice, parse_format, parse_tools
from service.tools.options import TurnOptions
from service.web.http.schema_errors import missing as _missing
from service.web.http.schema_errors import wrong_type as _wrong_type
from service.web.pipeline.request import Bounds, ChatRequest, check_chars, check_count, parse_body

if TYPE_CHECKING:
    from service.web.http.auth import HeaderLookup

TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "refusal")
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
INSTRUCTION_ROLES = ("system", "developer")


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
    unoffered: tuple[str, ...] = ()  # hosted tools left out (service.tools.hosted)


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _part_text(part: Any, where: str) -> str | None:
    if not isinstance(part, dict):
        raise _wrong_type(where, "an object", part)
    kind = part.get("type")
    if kind is None:
        raise _missing(f"{where}.type")
    if kind == "input_image":
        return None  # counted by `_content_text`; the last message's go upstream (`_images`)
    if kind in ("input_file", "input_audio"):
        raise _invalid(
            f"Invalid value: {json.dumps(kind)}. This gateway takes text and images only; "
            "send the content as 'input_text' or 'input_image'.",
            f"{where}.type",
        )
    if kind not in TEXT_PARTS:
        raise _invalid(
            f"Invalid value: {json.dumps(kind)}. Supported content parts are text parts.", f"{where}.type"
        )
    text = part.get("text", part.get("refusal"))
    if not isinstance(text, str):
        raise _wrong_type(f"{where}.text", "a string", text)
    return text


def _content_text(content: Any, where: str, *, mark: bool = True) -> str:
    """The text of `content`; with `mark`, an `[image]` line per image part before it (the
    transcript's form). The new message's own images travel as images, so it is not marked."""
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        raise _wrong_type(where, "one of a string or array of objects", content)
    texts = [t for j, part in enumerate(content) if (t := _part_text(part, f"{where}[{j}]")) is not None]
    text = "\n".join(texts).strip()
    count = sum(1 for part in content if part.get("type") == "input_image")
    return images.marked(text, count) if mark else text


def _images(body: dict[str, Any], bounds: Bounds, upstream: str) -> tuple[ImageInput, ...]:
    """The last input message's `input_image` parts, checked (`service.images`); 400s name the part."""
    value = body.get("input")
    if not isinstance(value, list) or not value or not isinstance(value[-1], dict):
        return ()
    index = len(value) - 1
    content = value[index].get("content")
    found: list[ImageInput] = []
    for j, part in enumerate(content if isinstance(content, list) else []):
        if not isinstance(part, dict) or part.get("type") != "input_image":
            continue
        where = f"input[{index}].content[{j}]"
        if upstream == "bing" and found:
            raise _invalid(
                f"Invalid '{where}': Bing ChatHub takes one image per message (UPSTREAM=bing); "
                "send the others in separate messages.",
                where,
                "too_many_images",
            )
        images.check_count(len(found) + 1, f"{where}.image_url", bounds.images)
        found.append(images.responses_image(part, where, bounds.images))
    return tuple(found)


def _item(item: Any, where: str, *, last: bool = False) -> dict[str, Any] | None:
    """One input item as a neutral message (`service.tools.history`); None if it says nothing."""
    if not isinstance(item, dict):
        raise _wrong_type(where, "an object", item)
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind is None:
        raise _missing(f"{where}.type")
    if kind == "message":
        role = item.get("role")
        if role is None:
            raise _missing(f"{where}.role")
        if role not in MESSAGE_ROLES:
            allowed = ", ".join(f"'{r}'" for r in MESSAGE_ROLES)
            raise _invalid(
                f"Invalid value: {json.dumps(role)}. Supported values are: {allowed}.", f"{where}.role"
            )
        if "content" not in item:
            raise _missing(f"{where}.content")
        return {"role": role, "content": _content_text(item["content"], f"{where}.content", mark=not last)}
    if kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else _content_text(output or [], f"{where}.output")
        return {"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": text}
    if kind == "function_call":
        name = item.get("name")
        if not isinstance(name, str):
            raise _wrong_type(f"{where}.name", "a string", name)
        arguments = item.get("arguments") or ""
        if not isinstance(arguments, str):
            raise _wrong_type(f"{where}.arguments", "a string", arguments)
        call = {"id": str(item.get("call_id") or ""), "name": name, "arguments": arguments}
        return {"role": "assistant", "content": "", "tool_calls": [call]}
    if kind in ("reasoning", "item_reference", "compaction"):
        return None  # nothing the upstream could read
    raise _invalid(
        f"Invalid value: {json.dumps(kind)}. This gateway does not support this item type.", f"{where}.type"
    )


def _input(body: dict[str, Any], bounds: Bounds, known: Mapping[str, str]) -> list[dict[str, str]]:
    """The input as `{"role", "content"}` turns: calls and their outputs folded as the worker stores them."""
    if "input" not in body or body["input"] is None:
        raise _missing("input")
    value = body["input"]
    if isinstance(value, str):
        items = [{"role": "user", "content": value.strip()}]
    elif isinstance(value, list):
        check_count(len(value), bounds, param="input")
        neutral = [
            entry
            for i, item in enumerate(value)
            if (entry := _item(item, f"input[{i}]", last=i == len(value) - 1)) is not None
        ]
        items = _fold(neutral, known)
    else:
        raise _wrong_type("input", "one of a string or array of objects", value)
    turns = [m for m in items if m["role"] not in INSTRUCTION_ROLES]
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"]:
        raise _invalid(
            "The input must end with a user message that has text: this gateway answers it.", "input"
        )
    return items


def _fold(neutral: list[dict[str, Any]], known: Mapping[str, str]) -> list[dict[str, str]]:
    """Fold tool calls and outputs into turns, keeping instruction messages where they stand.

    Consecutive `function_call` items are one assistant turn (one answer with several calls).
    """
    merged: list[dict[str, Any]] = []
    for entry in neutral:
        last = merged[-1] if merged else None
        if last and entry.get("tool_calls") and last["role"] == "assistant" and last.get("tool_calls"):
            last["tool_calls"] = [*last["tool_calls"], *entry["tool_calls"]]
        elif last and entry.get("tool_calls") and last["role"] == "assistant" and not last.get("tool_calls"):
            last["tool_calls"] = entry["tool_calls"]  # the prose of the answer that made the calls
        else:
            merged.append(dict(entry))
    result: list[dict[str, str]] = []
    run: list[dict[str, Any]] = []
    for entry in merged:
        if entry["role"] in INSTRUCTION_ROLES:
            result.extend(fold(run, known))
            run = []
            result.append(entry)
        else:
            run.append(entry)
    return result + fold(run, known)


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


def _metadata(body: dict[str, Any]) -> dict[str, str]:
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
    if body.get("background"):
        raise _invalid(
            "This gateway does not run responses in the background; set 'background' to false.", "background"
        )
    stream = _optional(body, "stream", bool, "a boolean") or False
    store = _optional(body, "store", bool, "a boolean")
    instructions = _optional(body, "instructions", str, "a string")
    previous = _optional(body, "previous_response_id", str, "a string")
    conversation = _conversation(body)
    if previous and conversation:
        raise _invalid(
            "Mutually exclusive parameters: Ensure you are only providing one of: "
            "'previous_response_id' or 'conversation'.",
            "previous_response_id",
            "mutually_exclusive_parameters",
        )
    items = _input(body, bounds, call_names or {})
    found = _images(body, bounds, upstream)
    echo = _echo(body)
    options = _options(body, tool_emulation=tool_emulation)
    system_parts = [instructions.strip()] if instructions and instructions.strip() else []
    system_parts += [m["content"] for m in items if m["role"] in INSTRUCTION_ROLES and m["content"]]
    turns = [m for m in items if m["role"] not in INSTRUCTION_ROLES]
    continues = previous or conversation
    if continues:
        # The stored conversation is the history; everything new goes upstream.
        prompt = "\n\n".join(m["content"] for m in turns if m["content"])
        history: tuple[dict[str, str], ...] = ()
    else:
        prompt = turns[-1]["content"]
        history = tuple(m for m in turns[:-1] if m["content"])
    messages = tuple([{"role": "system", "content": s} for s in system_parts] + turns)
    check_chars(sum(len(m["content"]) for m in messages), bounds, param="input")
    check_prompt(prompt, upstream, param="input")
    chat = ChatRequest(
        model=spec.id,
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
        metadata=_metadata(body),
        echo=echo,
        unoffered=hosted.unoffered(body.get("tools")),
    )
