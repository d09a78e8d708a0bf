"""OpenAI's tool, structured-output and limit parameters → `TurnOptions`, or a 400 naming the param.

Chat Completions spells them `tools` (`{"type": "function", "function": {...}}`),
`tool_choice`, `parallel_tool_calls`, `response_format`, `stop`, `max_tokens` /
`max_completion_tokens`; `logprobs: true` cannot be honoured (the upstream gives no
token probabilities) and changes what the answer means to the client, so it is a 400.
Plain module: the web tier calls it, the worker never does.
"""

from __future__ import annotations

import json
from typing import Any

from service.errors import InvalidRequest
from service.tools import client_schema, prompts
from service.tools.hosted import is_hosted
from service.tools.options import CHOICES, OutputFormat, Tool, TurnOptions


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': {message}", param=param, code="invalid_value")


def parse_tools(
    value: Any, param: str = "tools", *, nested: bool = True, hosted: bool = False
) -> tuple[Tool, ...]:
    """Function tools; `nested` is Chat Completions' `{"type","function":{...}}` shape.

    `hosted` (Responses, Messages): tools of other types — the provider's own (web search,
    shell, code interpreter, MCP namespaces, freeform `custom` grammars) — are not offered
    to the model, since the gateway cannot run or emulate them; agent CLIs always send them,
    and refusing would lock them out. Chat Completions has no such tools: another type is a 400.
    """
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(param, "expected an array of tools.")
    tools = [
        tool
        for i, item in enumerate(value)
        if (tool := _tool(item, f"{param}[{i}]", nested=nested, hosted=hosted)) is not None
    ]
    if len(prompts.instructions(tools)) > prompts.INSTRUCTIONS_MAX_CHARS:
        raise InvalidRequest(
            f"Invalid '{param}': the tool definitions take more than {prompts.INSTRUCTIONS_MAX_CHARS} "
            "characters as instructions, over what the upstream accepts in one message; send fewer or "
            "shorter tools.",
            param=param,
            code="invalid_value",
        )
    return tuple(tools)


def _tool(item: Any, where: str, *, nested: bool, hosted: bool) -> Tool | None:
    """One entry of `tools` as a function `Tool`; None for a hosted tool that is not offered."""
    if not isinstance(item, dict):
        raise _bad(where, "expected an object.")
    if not _offered(item, where, hosted=hosted):
        return None
    spec = item.get("function") if nested else item
    if not isinstance(spec, dict):
        raise _bad(f"{where}.function" if nested else where, "expected an object.")
    inner = f"{where}.function" if nested else where  # where the function's own fields are
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad(f"{inner}.name", "a tool needs a name.")
    key = "parameters" if "parameters" in spec or "input_schema" not in spec else "input_schema"
    parameters = spec.get(key) or {}
    if not isinstance(parameters, dict):
        raise _bad(f"{inner}.{key}", "expected an object.")
    client_schema.check(parameters, f"{inner}.{key}")  # self-contained, bounded, RE2 patterns
    return Tool(name=name, description=str(spec.get("description") or ""), parameters=parameters)


def _offered(item: dict[str, Any], where: str, *, hosted: bool) -> bool:
    """A function tool is offered; a `hosted` surface's other tools are skipped; else a 400."""
    kind = item.get("type", "function")
    if hosted and is_hosted(item):
        return False  # named in the answer instead (service.tools.hosted, service.web.hosted_note)
    if kind not in ("function", "custom"):
        raise _bad(f"{where}.type", f"only function tools are supported, not {json.dumps(item.get('type'))}.")
    return True


def parse_choice(value: Any, tools: tuple[Tool, ...], param: str = "tool_choice") -> str:
    """`none`/`auto`/`required` or a named function (`{"type":"function","function":{"name"}}`)."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value not in CHOICES:
            raise _bad(param, f"expected one of 'none', 'auto', 'required', got {json.dumps(value)}.")
        return value
    if isinstance(value, dict):
        name = (value.get("function") or {}).get("name") if "function" in value else value.get("name")
        if isinstance(name, str) and any(tool.name == name for tool in tools):
            return name
        raise _bad(param, "names no function among 'tools'.")
    raise _bad(param, "expected a string or an object.")


def parse_format(value: Any, param: str = "response_format") -> OutputFormat | None:
    """`text` (None), `json_object`, or `json_schema` (Chat Completions' nested shape or flat)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(param, "expected an object.")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat(kind="json_object")
    if kind == "json_schema":
        spec = value.get("json_schema", value)
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise _bad(f"{param}.json_schema", "expected an object with a 'schema' object.")
        where = f"{param}.json_schema.schema" if spec is not value else f"{param}.schema"
        client_schema.check(spec.get("schema"), where)
        return OutputFormat(
            kind="json_schema",
            name=str(spec.get("name") or ""),
            schema=spec.get("schema") or {},
            strict=bool(spec.get("strict")),
        )
    raise _bad(f"{param}.type", f"expected 'text', 'json_object' or 'json_schema', got {json.dumps(kind)}.")


def parse_stop(value: Any, param: str = "stop") -> tuple[str, ...]:
    """Up to 4 stop sequences (a string or an array of strings)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _bad(param, "expected a string or an array of strings.")
    if len(items) > 4:
        raise _bad(param, "at most 4 stop sequences are allowed.")
    return tuple(s for s in items if s)


def parse_limit(body: dict[str, Any], *params: str) -> int | None:
    """The first token limit present among `params` (type-checked elsewhere or here)."""
    for param in params:
        value = body.get(param)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _bad(param, "expected an integer >= 1.")
        return value
    return None


def check_emulation(options: TurnOptions, *, enabled: bool, param: str = "tools") -> None:
    """With TOOL_EMULATION=off, a request that lets the model call tools is refused, naming `param`."""
    if options.calls_tools and not enabled:
        raise InvalidRequest(
            f"Invalid '{param}': tool calling is turned off on this gateway (TOOL_EMULATION=off); "
            "send the request without tools or with tool_choice 'none'.",
            param=param,
            code="tools_disabled",
        )


def chat_options(body: dict[str, Any], *, tool_emulation: bool = True) -> TurnOptions:
    """Chat Completions' parameters as `TurnOptions`."""
    if body.get("logprobs") is True:
        raise _bad("logprobs", "this gateway cannot return token log probabilities (the upstream has none).")
    if body.get("top_logprobs") not in (None, 0):
        raise _bad(
            "top_logprobs", "this gateway cannot return token log probabilities (the upstream has none)."
        )
    tools = parse_tools(body.get("tools"))
    choice = parse_choice(body.get("tool_choice"), tools) if tools else "auto"
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise _bad("parallel_tool_calls", "expected a boolean.")
    options = TurnOptions(
        tools=tools,
        choice=choice,
        parallel=parallel,
        output=parse_format(body.get("response_format")),
        stop=parse_stop(body.get("stop")),
        max_tokens=parse_limit(body, "max_completion_tokens", "max_tokens"),
    )
    check_emulation(options, enabled=tool_emulation)
    return options
