"""A Responses request's `input`: its items as neutral messages, and the last message's images.

`input` is a string or a list of items: messages (`user`, `assistant`, `system`,
`developer`; content a string or `input_text` / `output_text` parts), and the tool-call
items agent clients replay (`function_call`, `function_call_output`, folded by
`service.tools.history` as the worker stores them; `reasoning` items are skipped). Files
and audio are a 400 naming the part. The Conversations API reads its items the same way
(`input_item`). This module does no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from service import images
from service.errors import InvalidRequest
from service.images import ImageInput
from service.tools.history import fold
from service.web.http.schema_errors import missing as _missing
from service.web.http.schema_errors import wrong_type as _wrong_type
from service.web.pipeline.request import Bounds, check_count

TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "refusal")
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
INSTRUCTION_ROLES = ("system", "developer")


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _part_text(part: Any, where: str) -> str | None:
    if not isinstance(part, dict):
        raise _wrong_type(where, "an object", part)
    kind = part.get("type")
    if kind is None:
        raise _missing(f"{where}.type")
    if kind == "input_image":
        return None  # counted by `_content_text`; the last message's go upstream (`input_images`)
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


def input_images(body: dict[str, Any], bounds: Bounds, upstream: str) -> tuple[ImageInput, ...]:
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


def input_item(item: Any, where: str, *, last: bool = False) -> dict[str, Any] | None:
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


def input_messages(
    body: dict[str, Any], bounds: Bounds, known: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
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
            if (entry := input_item(item, f"input[{i}]", last=i == len(value) - 1)) is not None
        ]
        items = _fold(neutral, known or {})
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
