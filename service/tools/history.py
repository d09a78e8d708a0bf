"""A client's history with tool calls and results, as the plain turns the upstream sees.

Clients send an agent loop back as: assistant messages carrying `tool_calls`, then one
tool-result message per call (Chat Completions `role: tool`, Responses
`function_call_output`, Anthropic `tool_result` blocks), maybe a user message after.
The upstream has only user and assistant turns, so:

- an assistant message with calls becomes `prompts.assistant_text` (its prose and the
  calls in the canonical format), exactly what the worker stored for that turn;
- a run of tool results, with a user message that directly follows it, becomes ONE
  user turn (`prompts.results_text`), each result naming the call it answers;

so the fingerprint of a history containing tool calls matches the transcript the
gateway stored, and a tool round continues the same upstream conversation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.tools import prompts


def fold(messages: Sequence[dict[str, Any]], known: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """Neutral messages (`role`, `content`, optional `tool_calls`/`tool_call_id`/`name`) → turns.

    `tool_calls` entries are `{"id", "name", "arguments"}`; a result's function name is
    looked up from the call it answers when the message does not carry one: in these
    messages, else in `known` (call id → name of calls made in earlier, stored turns).
    """
    names: dict[str, str] = dict(known or {})
    turns: list[dict[str, str]] = []
    results: list[tuple[str, str, str]] = []

    def close_results(text: str = "") -> None:
        if results:
            turns.append({"role": "user", "content": prompts.results_text(results, text)})
            results.clear()

    for message in messages:
        role = message["role"]
        if role in ("tool", "function"):
            call_id = str(message.get("tool_call_id") or "")
            name = str(message.get("name") or names.get(call_id, ""))
            results.append((call_id, name, str(message.get("content") or "")))
            continue
        if role == "user" and results:
            close_results(str(message.get("content") or ""))
            continue
        close_results()
        calls = message.get("tool_calls") or ()
        for call in calls:
            names[call["id"]] = call["name"]
        if role == "assistant" and calls:
            content = prompts.assistant_text(
                str(message.get("content") or ""), [(c["id"], c["name"], c["arguments"]) for c in calls]
            )
            turns.append({"role": "assistant", "content": content})
        else:
            turns.append({"role": role, "content": str(message.get("content") or "")})
    close_results()
    return turns
