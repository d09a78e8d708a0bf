"""`TurnOptions`: what a request asks of the answer beyond its text, in one neutral shape.

Each surface parses its own spelling (Chat Completions `tools`/`tool_choice`/
`response_format`/`stop`/`max_tokens`, Responses `text.format`/`max_output_tokens`,
Anthropic `tools`/`stop_sequences`/`max_tokens`) into this; the worker reads only this.
It travels inside the job payload, so it is JSON-plain (`to_json`/`from_json`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

CHOICES = ("none", "auto", "required")


@dataclasses.dataclass(frozen=True)
class Tool:
    """One function the model may call: its name, what it does, its parameters' JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OutputFormat:
    """A structured-output request: `json_object`, or `json_schema` with its schema."""

    kind: str  # "json_object" | "json_schema"
    name: str = ""
    schema: dict[str, Any] | None = None
    strict: bool = False


@dataclasses.dataclass(frozen=True)
class TurnOptions:
    """Tools, the tool choice, structured output and the cuts (stop sequences, token limit).

    `choice` is "none", "auto", "required" or a tool's name.
    """

    tools: tuple[Tool, ...] = ()
    choice: str = "auto"
    parallel: bool = True
    output: OutputFormat | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None

    @property
    def calls_tools(self) -> bool:
        """Whether the answer is parsed for tool calls at all."""
        return bool(self.tools) and self.choice != "none"

    @property
    def empty(self) -> bool:
        """Nothing to do: the answer passes through untouched."""
        return self == TurnOptions()

    def tool(self, name: str) -> Tool | None:
        """The tool called `name`, if defined."""
        return next((tool for tool in self.tools if tool.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """JSON-plain form for the job payload; {} for the empty options."""
        return {} if self.empty else dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> TurnOptions:
        """Inverse of `to_json`; None or {} is the empty options."""
        if not data:
            return cls()
        output = data.get("output")
        return cls(
            tools=tuple(Tool(**tool) for tool in data.get("tools") or ()),
            choice=str(data.get("choice") or "auto"),
            parallel=bool(data.get("parallel", True)),
            output=OutputFormat(**output) if output else None,
            stop=tuple(data.get("stop") or ()),
            max_tokens=data.get("max_tokens"),
        )
