"""Hosted tool types the gateway does not offer to the model, named so the answer can say so.

Agent clients send the provider's own tools beside their functions: Codex CLI
`web_search`, `local_shell`, freeform `custom` tools (`apply_patch` as a grammar),
Claude Code Anthropic server tools (`web_search_20250305`, `code_execution_…`). The
gateway can neither run nor emulate them, and refusing them would lock the clients
out, so `service.tools.openai_params.parse_tools` leaves them out of what the model is
offered. Leaving them out silently would hide that from the client, so the surfaces
say it once per response (`service.web.hosted_note`): a header on every answer and an
SSE comment at the start of a stream. Pure.
"""

from __future__ import annotations

from typing import Any


def is_hosted(item: dict[str, Any]) -> bool:
    """A tool of the provider's own (not a function, and not a `custom` tool with a JSON schema)."""
    kind = item.get("type", "function")
    return kind not in ("function", None) and not (kind == "custom" and "input_schema" in item)


def unoffered(value: Any) -> tuple[str, ...]:
    """Labels of the hosted tools in a `tools` array, in order, without repeats: `type` or `type:name`."""
    if not isinstance(value, list):
        return ()
    labels: list[str] = []
    for item in value:
        if not isinstance(item, dict) or not is_hosted(item):
            continue
        kind, name = str(item.get("type")), item.get("name")
        label = f"{kind}:{name}" if isinstance(name, str) and name and name != kind else kind
        if label not in labels:
            labels.append(label)
    return tuple(labels)
