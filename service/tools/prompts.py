"""The text the gateway adds to a turn: tool instructions, repairs, tool results, transcripts.

The tool-call format is one strict, documented shape (also in the README):

    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>

one block per call, nothing after the last block. The instruction block (tool
definitions + format) is sent once per upstream conversation and again only when the
tool set changes (`digest`); the tool-choice line goes with every turn because the
choice is per request. Everything stays compact: Copilot refuses a message over about
10,240 characters, so `INSTRUCTIONS_MAX_CHARS` bounds the block and a request whose
tools do not fit is refused with a 400 naming `tools` rather than sent cut.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from service.tools.options import OutputFormat, Tool, TurnOptions

OPEN, CLOSE = "<tool_call>", "</tool_call>"
INSTRUCTIONS_MAX_CHARS = 6000
HEADER = "[gateway:tools]"
RESULTS_HEADER = "[gateway:tool_results]"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def tool_line(tool: Tool) -> str:
    """One tool as one line: name, description, parameter schema."""
    description = " ".join(tool.description.split())
    return f"- {tool.name}: {description} parameters={_compact(tool.parameters or {'type': 'object'})}"


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
    return " ".join(parts)


def output_line(output: OutputFormat) -> str:
    """The instruction for structured output."""
    if output.kind == "json_schema" and output.schema is not None:
        return (
            "Answer with one JSON value only (no prose, no code fence) that is valid against this "
            f"JSON schema: {_compact(output.schema)}"
        )
    return "Answer with one JSON object only (no prose, no code fence)."


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
    return f"Your previous answer could not be used: {problem}. {output_line(output)}"


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
