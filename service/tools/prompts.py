"""The text the gateway adds to a turn: tool instructions, repairs, tool results, transcripts.

The tool-call format is one strict, documented shape (also in docs/tools-and-images.md):

    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>

one block per call, nothing after the last block. The instruction block (tool
definitions + format) is sent once per upstream conversation and again only when the
tool set changes (`digest`); the tool-choice line goes with every turn because the
choice is per request. Everything stays compact (one line per tool). Copilot refuses a
message over about 10,240 characters: a longer message with its block (agent CLIs send
20-40 KB of tool schemas) is sent ahead in priming parts (`service.priming`), once per
upstream conversation; `INSTRUCTIONS_MAX_CHARS` is only a sanity bound, over which the
request is a 400 naming `tools` rather than sent cut.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from service.tools.options import OutputFormat, Tool, TurnOptions

OPEN, CLOSE = "<tool_call>", "</tool_call>"
INSTRUCTIONS_MAX_CHARS = 100_000
HEADER = "[gateway:tools]"
RESULTS_HEADER = "[gateway:tool_results]"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


DESCRIPTION_CHARS = 400
FIELD_DESCRIPTION_CHARS = 160


def _shorten(text: str, limit: int) -> str:
    """The first paragraph of a description, at most `limit` characters (ending in "…" if cut)."""
    first = " ".join(text.strip().split("\n\n", 1)[0].split())
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def _schema(value: Any) -> Any:
    """A parameter schema with its field descriptions shortened (the structure kept whole)."""
    if isinstance(value, dict):
        return {
            key: _shorten(item, FIELD_DESCRIPTION_CHARS)
            if key == "description" and isinstance(item, str)
            else _schema(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_schema(item) for item in value]
    return value


def tool_line(tool: Tool) -> str:
    """One tool as one line: name, description (first paragraph), parameter schema.

    Agent CLIs describe each tool in pages of usage notes; the model needs what the tool
    does and its exact parameters, so descriptions are cut to their first paragraph.
    """
    description = _shorten(tool.description, DESCRIPTION_CHARS)
    return (
        f"- {tool.name}: {description} parameters={_compact(_schema(tool.parameters) or {'type': 'object'})}"
    )


def instructions(tools: Sequence[Tool]) -> str:
    """The instruction block for a tool set (definitions and the exact call format)."""
    lines = [
        HEADER,
        "You can call these functions. The caller runs them and sends you their results.",
        *(tool_line(tool) for tool in tools),
        "To call a function, answer with exactly one line per call, in this form and nothing after:",
        f'{OPEN}{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}{CLOSE}',
        "The arguments must be a JSON object valid against the function's parameters. "
        "Do not invent results: wait for them. If no function is needed, answer normally.",
    ]
    return "\n".join(lines)


def digest(tools: Sequence[Tool]) -> str:
    """Identifies a tool set, so the block is re-sent only when it changed."""
    return hashlib.sha256(instructions(tools).encode()).hexdigest()[:16]


def choice_line(options: TurnOptions) -> str:
    """The per-turn directive for `tool_choice` and `parallel_tool_calls`."""
    parts = []
    if options.choice == "required":
        parts.append("For this message you must call at least one of the functions.")
    elif options.choice not in ("auto", "none"):
        parts.append(f"For this message you must call the function {options.choice}.")
    if not options.parallel:
        parts.append("Call at most one function at a time.")
    elif options.choice in ("auto", "required"):
        parts.append("You may call several functions at once, one block each.")
    return f"[gateway:tool_choice] {' '.join(parts)}" if parts else ""


def output_line(output: OutputFormat) -> str:
    """The instruction for structured output."""
    if output.kind == "json_schema" and output.schema is not None:
        return (
            "[gateway:format] Answer with one JSON value only (no prose, no code fence) that is valid "
            f"against this JSON schema: {_compact(output.schema)}"
        )
    return "[gateway:format] Answer with one JSON object only (no prose, no code fence)."


def turn_text(prompt: str, options: TurnOptions, *, send_tools: bool) -> str:
    """What goes upstream as the user's message: the prompt, then the gateway's directives."""
    extra = []
    if options.calls_tools:
        if send_tools:
            extra.append(instructions(options.tools))
        line = choice_line(options)
        if line:
            extra.append(line)
    if options.output is not None:
        extra.append(output_line(options.output))
    return "\n\n".join([prompt, *extra]) if extra else prompt


def repair_calls(problems: Iterable[str], options: TurnOptions) -> str:
    """The one repair turn for tool calls that were missing or invalid."""
    listed = "; ".join(problems)
    return (
        f"Your previous answer could not be used: {listed}. Answer again with only the function "
        f'call(s), each as {OPEN}{{"name": ..., "arguments": {{...}}}}{CLOSE}. {choice_line(options)}'
    ).strip()


def repair_output(problem: str, output: OutputFormat) -> str:
    """The one repair turn for a structured answer that was not valid."""
    return f"Your previous answer could not be used: {problem}. " + output_line(output).removeprefix(
        "[gateway:format] "
    )


def results_text(results: Sequence[tuple[str, str, str]], text: str = "") -> str:
    """Tool results (call id, function name, output) as the user's next message.

    Each result names the call it answers; a user message that came with them follows.
    """
    blocks = [RESULTS_HEADER]
    for call_id, name, output in results:
        blocks.append(f'<tool_result id="{call_id}" name="{name}">\n{output.strip()}\n</tool_result>')
    if text.strip():
        blocks.append(text.strip())
    return "\n".join(blocks)


def call_markup(name: str, arguments: str, call_id: str = "") -> str:
    """One call in the canonical format (arguments re-serialised, so equal calls are equal text)."""
    try:
        parsed: Any = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        parsed = arguments
    body = (
        {"id": call_id, "name": name, "arguments": parsed} if call_id else {"name": name, "arguments": parsed}
    )
    return f"{OPEN}{_compact(body)}{CLOSE}"


def assistant_text(prose: str, calls: Sequence[tuple[str, str, str]]) -> str:
    """The transcript text of an assistant turn: its prose, then its calls (id, name, arguments).

    The worker stores this and the web tier rebuilds the same text from the calls a
    client sends back, so history matching sees a tool-calling history as the
    continuation it is.
    """
    parts = [prose.strip()] if prose.strip() else []
    parts.extend(call_markup(name, arguments, call_id) for call_id, name, arguments in calls)
    return "\n".join(parts)
