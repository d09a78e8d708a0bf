"""Turning an Anthropic Messages request body into the neutral `ChatRequest`, or a 400 naming the field.

Anthropic clients are stateless: every request carries the whole conversation, so
history matching (`service.state.conversations`) is what gives them a real multi-turn
upstream conversation, exactly as for Chat Completions clients. `system` (a string or
text blocks) is the system prompt; `messages` hold `text` blocks, and the tool blocks
agent clients replay (`tool_use`, `tool_result`, shown to the upstream as text;
`thinking` blocks are skipped). The last message must be the user's: the gateway
answers it (an assistant prefill cannot be honoured, so it is a 400).

`max_tokens` is required as Anthropic requires it and honoured (the worker cuts the
answer there, `stop_reason: "max_tokens"`), like `stop_sequences`; `tools` and
`tool_choice` are emulated (`service.tools`): `tool_use` blocks the client replays are
the calls the gateway returned, `tool_result` blocks become the next turn, each naming
the call it answers. `thinking`, `metadata` and the sampling knobs are type-checked
and accepted. Images and documents are a 400. This module does no I/O.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from service import images
from service.errors import InvalidRequest, NotFound
from service.images import ImageInput
from service.limits import check_prompt
from service.models import MODEL_HELP, Aliases, find_model
from service.tools import hosted
from service.tools.history import fold
from service.tools.openai_params import check_emulation, parse_choice, parse_stop, parse_tools
from service.tools.options import TurnOptions
from service.web.pipeline.request import Bounds, ChatRequest, check_chars, check_count, parse_body

if TYPE_CHECKING:
    from service.web.http.auth import HeaderLookup

ROLES = ("user", "assistant", "system")


@dataclasses.dataclass(frozen=True)
class MessagesRequest:
    """A validated Messages request: the neutral turn plus the model name to echo."""

    chat: ChatRequest
    model: str
    max_tokens: int | None = None
    unoffered: tuple[str, ...] = ()  # hosted (server) tools left out (service.tools.hosted)


def _invalid(message: str) -> InvalidRequest:
    # Anthropic names the field inside the message (`messages.0.content: …`); `param` keeps it for logs.
    param = message.split(":", 1)[0]
    return InvalidRequest(message, param=param, code="invalid_value")


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "null" if value is None else "object"
    )


def _expect(value: Any, kind: type | tuple[type, ...], field: str, expected: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _invalid(f"{field}: Input should be {expected} (got {_type_name(value)})")
    return value


def _block_text(block: Any, field: str) -> str | None:
    _expect(block, dict, field, "a valid dictionary")
    kind = block.get("type")
    if kind == "text":
        return str(_expect(block.get("text"), str, f"{field}.text", "a valid string"))
    if kind in ("tool_use", "tool_result"):
        return None  # taken apart by `_message` into calls and results
    if kind in ("thinking", "redacted_thinking", "server_tool_use", "web_search_tool_result"):
        return None
    if kind == "image":
        return None  # counted by `_content_text`; the last message's go upstream (`_images`)
    if kind in ("document", "search_result", "container_upload"):
        raise _invalid(f"{field}.type: this gateway answers text only; '{kind}' blocks are not supported")
    raise _invalid(
        f"{field}.type: Input tag '{kind}' found using 'type' does not match any of the expected tags"
    )


def _content_text(content: Any, field: str, *, mark: bool = True) -> str:
    """The text of `content`; with `mark`, an `[image]` line per image block before it (the
    transcript's form). The new message's own images travel as images, so it is not marked."""
    if isinstance(content, str):
        return content.strip()
    _expect(content, list, field, "a valid string or list")
    texts = [t for j, block in enumerate(content) if (t := _block_text(block, f"{field}.{j}")) is not None]
    text = "\n".join(texts).strip()
    return images.marked(text, _image_blocks(content)) if mark else text


def _image_blocks(content: list[Any]) -> int:
    return sum(1 for block in content if isinstance(block, dict) and block.get("type") == "image")


def _images(body: dict[str, Any], bounds: Bounds, upstream: str) -> tuple[ImageInput, ...]:
    """The last message's image blocks, checked (`service.images`); 400s name the block."""
    index = len(body["messages"]) - 1
    content = body["messages"][index].get("content")
    found: list[ImageInput] = []
    for j, block in enumerate(content if isinstance(content, list) else []):
        if not isinstance(block, dict) or block.get("type") != "image":
            continue
        where = f"messages.{index}.content.{j}"
        if upstream == "bing" and found:
            raise InvalidRequest(
                f"{where}: Bing ChatHub takes one image per message (UPSTREAM=bing); "
                "send the others in separate messages",
                param=where,
                code="too_many_images",
            )
        images.check_count(len(found) + 1, where, bounds.images)
        found.append(images.anthropic_image(block, where, bounds.images))
    return tuple(found)


def _tool_parts(message: dict[str, Any], field: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A message's `tool_use` blocks as neutral calls and its `tool_result` blocks as tool messages."""
    content = message["content"]
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content if isinstance(content, list) else []):
        where = f"{field}.content.{j}"
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_use":
            name = _expect(block.get("name"), str, f"{where}.name", "a valid string")
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append({"id": str(block.get("id") or ""), "name": name, "arguments": arguments})
        elif block.get("type") == "tool_result":
            output = block.get("content", "")
            text = output if isinstance(output, str) else _content_text(output, f"{where}.content")
            if block.get("is_error"):
                text = f"(the tool reported an error) {text}"
            results.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": text}
            )
    return calls, results


def _messages(body: dict[str, Any], bounds: Bounds) -> tuple[list[dict[str, str]], list[str]]:
    """The user/assistant turns, and the texts of `system` messages (instructions, e.g. Claude Code's
    environment block), which join the system prompt."""
    if "messages" not in body:
        raise _invalid("messages: Field required")
    messages = _expect(body["messages"], list, "messages", "a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    check_count(len(messages), bounds)
    result: list[dict[str, str]] = []
    neutral: list[dict[str, Any]] = []
    instructions: list[str] = []
    for i, message in enumerate(messages):
        field = f"messages.{i}"
        _expect(message, dict, field, "a valid dictionary")
        role = message.get("role")
        if role not in ROLES:
            raise _invalid(f"{field}.role: Input should be 'user', 'assistant' or 'system'")
        if "content" not in message:
            raise _invalid(f"{field}.content: Field required")
        last = i == len(messages) - 1
        text = _content_text(message["content"], f"{field}.content", mark=not last)
        if role == "system":
            if text:
                instructions.append(text)
            continue
        calls, results = _tool_parts(message, field)
        neutral.extend(results)
        neutral.append({"role": role, "content": text, **({"tool_calls": calls} if calls else {})})
    for turn in fold([m for m in neutral if m["role"] == "tool" or m["content"] or m.get("tool_calls")]):
        if result and result[-1]["role"] == turn["role"]:  # Anthropic merges consecutive turns of one role
            result[-1]["content"] = f"{result[-1]['content']}\n\n{turn['content']}".strip()
        else:
            result.append(turn)
    if not result or result[-1]["role"] != "user":
        raise _invalid(
            "messages: the last message must have role 'user': "
            "this gateway cannot continue an assistant prefill"
        )
    if not result[-1]["content"]:
        raise _invalid("messages: the last user message has no text")
    return result, instructions


def _system(body: dict[str, Any]) -> str:
    system = body.get("system")
    if system is None:
        return ""
    if isinstance(system, str):
        return system.strip()
    _expect(system, list, "system", "a valid string or list")
    return _content_text(system, "system")


def _knobs(body: dict[str, Any], *, count_only: bool) -> int | None:
    max_tokens = body.get("max_tokens")
    if max_tokens is None and not count_only:
        raise _invalid("max_tokens: Field required")
    if max_tokens is not None:
        _expect(max_tokens, int, "max_tokens", "a valid integer")
        if max_tokens < 1:
            raise _invalid("max_tokens: Input should be greater than or equal to 1")
    for field, low, high in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        value = body.get(field)
        if value is not None:
            _expect(value, (int, float), field, "a valid number")
            if not low <= value <= high:
                raise _invalid(f"{field}: Input should be between {low:g} and {high:g}")
    if body.get("top_k") is not None:
        _expect(body["top_k"], int, "top_k", "a valid integer")
    for field in ("metadata", "thinking", "tool_choice"):
        if body.get(field) is not None:
            _expect(body[field], dict, field, "a valid dictionary")
    if body.get("tools") is not None:
        _expect(body["tools"], list, "tools", "a valid list")
    return max_tokens


def _options(body: dict[str, Any], max_tokens: int | None, *, tool_emulation: bool) -> TurnOptions:
    """`tools`, `tool_choice`, `stop_sequences` and `max_tokens` as the worker's `TurnOptions`."""
    stops = body.get("stop_sequences")
    if stops is not None:
        _expect(stops, list, "stop_sequences", "a valid list")
    tools = parse_tools(body.get("tools"), nested=False, hosted=True)
    choice = body.get("tool_choice") or {}
    kind = choice.get("type", "auto")
    if kind not in ("auto", "any", "tool", "none"):
        raise _invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    named = parse_choice({"name": choice.get("name")}, tools, "tool_choice.name") if kind == "tool" else None
    options = TurnOptions(
        tools=tools,
        choice=named or {"any": "required"}.get(kind, kind),
        parallel=not choice.get("disable_parallel_tool_use", False),
        stop=parse_stop(stops, "stop_sequences"),
        max_tokens=max_tokens,
    )
    check_emulation(options, enabled=tool_emulation)
    return options


def parse_messages_request(
    raw: bytes,
    headers: HeaderLookup,
    *,
    upstream: str,
    bounds: Bounds | None = None,
    aliases: Aliases = (),
    count_only: bool = False,
    tool_emulation: bool = True,
) -> MessagesRequest:
    """Validate a Messages (or count_tokens) body; 400 naming the field, 404 for an unknown model.

    The same size bounds as Chat Completions (`validation.Bounds`, nesting in `parse_body`,
    the upstream's per-message limit) apply.
    """
    bounds = bounds or Bounds()
    body = parse_body(raw)
    model = body.get("model")
    if model is None:
        raise _invalid("model: Field required")
    _expect(model, str, "model", "a valid string")
    spec = find_model(model, upstream, aliases)
    if spec is None:
        raise NotFound(f"model: {model} ({MODEL_HELP})", param="model", code="model_not_found")
    messages, instructions = _messages(body, bounds)
    system = "\n\n".join(part for part in (_system(body), *instructions) if part)
    check_chars(len(system) + sum(len(m["content"]) for m in messages), bounds)
    if not count_only:
        check_prompt(messages[-1]["content"], upstream)
    found = _images(body, bounds, upstream)
    max_tokens = _knobs(body, count_only=count_only)
    options = _options(body, max_tokens, tool_emulation=tool_emulation)
    stream = body.get("stream")
    if stream is not None:
        _expect(stream, bool, "stream", "a valid boolean")
    chat = ChatRequest(
        model=spec.id,
        prompt=messages[-1]["content"],
        system=system,
        history=tuple(m for m in messages[:-1] if m["content"]),
        messages=tuple(([{"role": "system", "content": system}] if system else []) + messages),
        stream=bool(stream),
        options=options.to_json(),
        images=found,
    )
    return MessagesRequest(
        chat=chat, model=model, max_tokens=max_tokens, unoffered=hosted.unoffered(body.get("tools"))
    )
