"""The scripted "tool-using model": answers the gateway's tool instructions with calls.

The gateway emulates function calling by sending a `[gateway:tools]` block (one line
per function with its description and parameter schema), a `[gateway:tool_choice]` line
on each turn that offers tools, and reading `<tool_call>{…}</tool_call>` blocks back. It
sees only that text, as a real model would, and by default behaves like one:

- `tool_choice` required ("you must call at least one") or named ("you must call the
  function X"): it calls (X, or the tool the message is about, else the first), with
  arguments valid against the schema;
- `auto`: it calls a tool whose name or description words (4+ letters) appear in the
  user's own message ("weather in Paris?" → get_weather), else answers in text;
- after a batch of tool results under `auto` it answers in text, echoing the results.

A test scripts it exactly with `[sim:tools=N]` in a user message: the next N answers of
the conversation (the first one, and one after each batch of tool results) are calls;
then it answers in text, echoing the results. The style of the calls is chosen with
flags anywhere in the conversation:

    tool_prose      prose before the call and a sentence after it
    tool_fenced     the call as bare JSON in a ```json fence, without tags
    tool_parallel   one call per defined function (two calls of the one function if alone)
    tool_malformed  broken JSON (the gateway's repair turn gets a valid call)
    tool_invalid    arguments that violate the schema (the repair gets valid ones)
    tool_silent     never calls, not even when repaired

`[sim:use=NAME]` anywhere in the conversation picks the function it calls (default: the
first one defined), so a benchmark can script an agent CLI onto a harmless tool.

Asked for structured output (`response_format`, the `[gateway:format]` line), it answers
a value valid against the schema inside a code fence after a line of prose, as real
models do (`[sim:json_bad]` in the conversation: prose only, repairs too).

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
CHOICE = "[gateway:tool_choice]"
REQUIRED = "you must call at least one of the functions"
_COMMON = (
    "about after also and answer any are call called calls current data each file files from function "
    "functions give given have into its list make more name names only other over return returns some "
    "such than that the their them then there these this tool tools used user uses using value values "
    "what when which will with your"
)
STOPWORDS = frozenset(_COMMON.split())


def strip(prompt: str) -> str:
    """The user's own words: the prompt without the gateway's directives appended to it."""
    return prompt.split("\n\n[gateway:", 1)[0]


def tools_in(texts: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """The functions of the latest `[gateway:tools]` block among `texts`."""
    return [(name, schema) for name, _, schema in described_tools(texts)]


def described_tools(texts: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, description, parameter schema) of the latest `[gateway:tools]` block among `texts`
    (read on into the texts after it: a primed block arrives split over several parts)."""
    for index in range(len(texts) - 1, -1, -1):
        if "[gateway:tools]" in texts[index]:
            block = "\n".join(texts[index:])
            found = []
            for m in TOOL_LINE.finditer(block):
                description = m.group(0)[len(m.group(1)) + 4 :].rsplit(" parameters=", 1)[0]
                found.append((m.group(1), description, json.loads(m.group(2))))
            return found
    return []


def _words(text: str) -> set[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)  # camelCase names
    return {w for w in re.findall(r"[a-z]{4,}", spaced.lower()) if w not in STOPWORDS}


TAGGED = re.compile(r"<([A-Za-z_-]+)[^>]*>.*?</\1>", re.S)


def asked(message: str) -> str:
    """What the user asked: the message without tagged context blocks agent CLIs add
    (`<environment_context>`, `<system-reminder>`, …), its last paragraph."""
    paragraphs = [p.strip() for p in TAGGED.sub("", message).split("\n\n") if p.strip()]
    return paragraphs[-1] if paragraphs else ""


def relevant(tools: Sequence[tuple[str, str, dict[str, Any]]], message: str) -> list[str]:
    """Names of the tools whose name or description words appear in what the user asked."""
    said = _words(asked(message))
    return [name for name, description, _ in tools if said & (_words(name) | _words(description))]


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        return next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        return "object"
    return str(kind or "string")


SCALARS: dict[str, Any] = {
    "integer": lambda schema, index: max(2 + index, int(schema.get("minimum", 0))),
    "number": lambda schema, index: max(2.5 + index, float(schema.get("minimum", 0))),
    "boolean": lambda schema, index: True,
    "null": lambda schema, index: None,
    "string": lambda schema, index: "Paris",
}


def sample(schema: dict[str, Any], index: int = 0) -> Any:
    """A deterministic value valid for simple schemas (what the scripted model "chooses")."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    combined = next((schema[k] for k in ("anyOf", "oneOf", "allOf") if schema.get(k)), None)
    if combined:
        return sample(combined[0], index)
    kind = _kind(schema)
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: sample(sub, i) for i, (name, sub) in enumerate(props.items())}
    if kind == "array":
        return [sample(schema.get("items") or {}, i) for i in range(int(schema.get("minItems", 0)))]
    return SCALARS.get(kind, SCALARS["string"])(schema, index)


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
        return _as_a_model(text, texts)
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


def _as_a_model(text: str, texts: Sequence[str]) -> str | None:
    """The default: what a model does with the tool block and the tool-choice line it was sent."""
    offered = "[gateway:tools]" in text or CHOICE in text  # tool_choice none sends neither
    tools = described_tools(texts)
    if not tools or not (offered or REPAIR in text):
        return None
    schemas = [(name, schema) for name, _, schema in tools]
    if REPAIR in text:
        return _calls(schemas, text, set())
    forced = REQUIRED in text or NAMED.search(text) is not None
    about = relevant(tools, strip(text)) if RESULTS not in text else []
    if not forced and not about:
        return None  # auto, and the message is about none of the tools (or answers their results)
    preferred = schemas if NAMED.search(text) else [t for t in schemas if t[0] in about] or schemas
    return _calls(preferred, text, set())


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
