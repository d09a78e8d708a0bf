"""The scripted "tool-using model": answers the gateway's tool instructions with calls.

The gateway emulates function calling by sending a `[gateway:tools]` block (one line
per function with its parameter schema) and reading `<tool_call>{…}</tool_call>`
blocks back. A test makes the simulator call tools with `[sim:tools=N]` in a user
message: the next N answers of the conversation (the first one, and one after each
batch of tool results) are calls; then it answers in text, echoing the results. The
style of the calls is chosen with flags anywhere in the conversation:

    tool_prose      prose before the call and a sentence after it
    tool_fenced     the call as bare JSON in a ```json fence, without tags
    tool_parallel   one call per defined function (two calls of the one function if alone)
    tool_malformed  broken JSON (the gateway's repair turn gets a valid call)
    tool_invalid    arguments that violate the schema (the repair gets valid ones)
    tool_silent     never calls, not even when repaired

`[sim:use=NAME]` anywhere in the conversation picks the function it calls (default: the
first one defined), so a benchmark can script an agent CLI onto a harmless tool.

Asked for structured output, it answers a value sampled from the schema inside a code
fence after a line of prose (`[sim:json_bad]` in the conversation: prose only, repairs too).

Pure: it reads texts and returns the answer text; both dialects' turn players call it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

COUNT = re.compile(r"\[sim:tools=(\d+)\]")
STYLES = ("tool_prose", "tool_fenced", "tool_parallel", "tool_malformed", "tool_invalid", "tool_silent")
TOOL_LINE = re.compile(r"(?m)^- ([A-Za-z0-9_.-]+): .*? parameters=(\{.*\})$")
NAMED = re.compile(r"you must call the function ([A-Za-z0-9_.-]+)\.")
USE = re.compile(r"\[sim:use=([A-Za-z0-9_.-]+)\]")
REPAIR = "Your previous answer could not be used"
RESULTS = "[gateway:tool_results]"
SCHEMA = re.compile(r"valid against this JSON schema: (\{.*\})$", re.M)
JSON_OBJECT = "Answer with one JSON object only"


def strip(prompt: str) -> str:
    """The user's own words: the prompt without the gateway's directives appended to it."""
    return prompt.split("\n\n[gateway:", 1)[0]


def tools_in(texts: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """The functions of the latest `[gateway:tools]` block among `texts` (read on into the texts
    after it: a primed block arrives split over several parts)."""
    for index in range(len(texts) - 1, -1, -1):
        if "[gateway:tools]" in texts[index]:
            block = "\n".join(texts[index:])
            return [(m.group(1), json.loads(m.group(2))) for m in TOOL_LINE.finditer(block)]
    return []


def sample(schema: dict[str, Any], index: int = 0) -> Any:
    """A deterministic value valid for simple schemas (what the scripted model "chooses")."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: sample(sub, i) for i, (name, sub) in enumerate(props.items())}
    if kind == "integer":
        return 2 + index
    if kind == "number":
        return 2.5 + index
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    return "Paris"


def call(name: str, arguments: Any) -> str:
    """One call in the gateway's strict format."""
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def answer(text: str, earlier: Sequence[str]) -> str | None:
    """The scripted answer to `text` (earlier user texts of the conversation given), or None."""
    structured = _structured(text, bad=any("[sim:json_bad]" in t for t in (*earlier, text)))
    if structured is not None:
        return structured
    texts = [*earlier, text]
    wanted = next((int(m.group(1)) for t in texts for m in [COUNT.search(t)] if m), None)
    if wanted is None:
        return None
    styles = {style for style in STYLES if any(f"[sim:{style}]" in t for t in texts)}
    tools = tools_in(texts)
    use = next((m.group(1) for t in texts for m in [USE.search(t)] if m), None)
    tools = [t for t in tools if t[0] == use] or tools if use else tools
    if REPAIR in text:
        if "tool_silent" in styles:
            return "I still prefer to answer without calling anything."
        return _calls(tools, text, styles - {"tool_malformed", "tool_invalid", "tool_prose"})
    rounds = sum(1 for t in earlier if RESULTS in t) + (1 if RESULTS in text else 0)
    if rounds >= wanted or not tools:
        return None
    if "tool_silent" in styles:
        return "I can answer that without any function."
    return _calls(tools, text, styles)


def _structured(text: str, *, bad: bool) -> str | None:
    """Asked for JSON: a value sampled from the schema, in a fence after a line of prose
    (what real models do); `[sim:json_bad]` answers prose first, so the repair is exercised."""
    schema = SCHEMA.search(text)
    if schema is None and JSON_OBJECT not in text:
        return None
    if bad:
        return "I would rather describe it in words."
    value = sample(json.loads(schema.group(1))) if schema else {"answer": "yes"}
    return "Here you go:\n```json\n" + json.dumps(value) + "\n```"


def _calls(tools: list[tuple[str, dict[str, Any]]], text: str, styles: set[str]) -> str:
    named = NAMED.search(text)
    chosen = [t for t in tools if named and t[0] == named.group(1)] or tools[:1]
    if "tool_parallel" in styles:
        chosen = tools if len(tools) > 1 else tools * 2
    blocks = []
    for index, (name, schema) in enumerate(chosen):
        arguments = sample(schema, index)
        if "tool_invalid" in styles:
            arguments = {}
        if "tool_fenced" in styles:
            blocks.append("```json\n" + json.dumps({"name": name, "arguments": arguments}) + "\n```")
        elif "tool_malformed" in styles:
            blocks.append(call(name, arguments)[:-15] + "</tool_call>")
        else:
            blocks.append(call(name, arguments))
    body = "\n".join(blocks)
    if "tool_prose" in styles:
        return f"Let me look that up for you.\n{body}\nI will continue once I have the result."
    return body
