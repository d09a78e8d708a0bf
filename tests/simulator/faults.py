"""Magic prompt prefixes and the conversation-memory answers.

A test picks a behaviour by starting the user message with `[sim:NAME]` or
`[sim:NAME=VALUE]` (chainable: `[sim:slow=0.3][sim:long=50] hi`); the rest of the text is
the prompt. Keeping the selector inside the prompt means a test drives a fault through
the whole gateway (HTTP → Redis → worker → websocket) without any side channel. Each
dialect has its vocabulary (`FLAGS` for ChatHub, `COPILOT_FLAGS` for Copilot); names that
mean the same thing are shared so gateway tests can be parametrized over dialects.

This module also reads the flattened history that clients inject via `previousMessages`
(`[user](#message)` / `[system](#additional_instructions)` blocks, A2) so the `recall`
answer can prove what context reached the upstream.
"""

from __future__ import annotations

import dataclasses
import re

from tests.simulator import chathub

PREFIX = re.compile(r"\[sim:([a-z_]+)(?:=([^\]]*))?\]")
BLOCK_HEADER = re.compile(r"(?m)^\[(user|assistant|system)\]\(#([A-Za-z_]+)\)[ \t]*\n")

TOOL_STYLES = (
    "tool_prose",
    "tool_fenced",
    "tool_parallel",
    "tool_malformed",
    "tool_invalid",
    "tool_silent",
    "json_bad",
)
"""The scripted tool-using model's call styles (`tests.simulator.tool_model`)."""

FLAGS = frozenset(
    {
        "throttled",
        "captcha",
        "invalid_session",
        "unauthorized",
        "internal",
        "disconnect",
        "drop",
        "apology",
        "refuse",
        "search",
        "hang",
        "disengaged",
        "recall",
        "memory",
        *TOOL_STYLES,
    }
)
"""ChatHub's prefixes that take no value."""

COPILOT_FLAGS = frozenset(
    {
        "throttled",
        "captcha",
        "cloudflare",
        "hashcash",
        "arithmetic",
        "unavailable",
        "invalid_event",
        "unauthorized",
        "internal",
        "text_too_long",
        "disconnect",
        "drop",
        "search",
        "image",
        "image_throttled",
        "no_image",
        "image_close",
        "reasoning",
        "hang",
        "recall",
        "memory",
        *TOOL_STYLES,
    }
)
"""Copilot's prefixes that take no value (no retraction, disengagement or expiry there)."""

NUMBERS = {"slow": float, "long": int, "hang_after": int, "stamp": int, "tools": int, "late": float}
"""Prefixes that take a numeric value, and its type (both dialects; `late`, a `titleUpdate`
that many seconds after the turn's last event, is Copilot's only)."""

ERROR_FAULTS = {
    "throttled": ("Throttled", chathub.THROTTLED_TEXT),
    "captcha": ("CaptchaChallenge", chathub.CAPTCHA_TEXT),
    "invalid_session": ("InvalidSession", ""),  # the text names the conversation; built by the caller
    "unauthorized": ("UnauthorizedRequest", chathub.LOGIN_TEXT),
    "internal": ("InternalError", chathub.INTERNAL_TEXT),
}
"""Faults answered with an error type 2 before anything is streamed: result value and message."""


@dataclasses.dataclass(frozen=True)
class Script:
    """The parsed user message: which faults are on and what the prompt is."""

    prompt: str
    flags: frozenset[str] = frozenset()
    values: dict[str, float | int] = dataclasses.field(default_factory=dict)
    problems: tuple[str, ...] = ()
    """Unknown or malformed prefixes, reported as violations (a typo must not pass silently)."""

    def on(self, name: str) -> bool:
        """Whether the flag or valued fault `name` was selected."""
        return name in self.flags or name in self.values


def parse(text: str, known: frozenset[str] = FLAGS) -> Script:
    """Strip leading `[sim:…]` prefixes off `text` and interpret them (`known`: the dialect's flags)."""
    flags: set[str] = set()
    values: dict[str, float | int] = {}
    problems: list[str] = []
    rest = text.lstrip()
    while match := PREFIX.match(rest):
        name, raw = match.group(1), match.group(2)
        rest = rest[match.end() :].lstrip()
        if name in known and raw is None:
            flags.add(name)
        elif name in NUMBERS and raw is not None:
            try:
                values[name] = NUMBERS[name](raw)
            except ValueError:
                problems.append(f"bad value in prefix [sim:{name}={raw}]")
        else:
            problems.append(f"unknown prefix [sim:{name}{'' if raw is None else '=' + raw}]")
    if not flags and not values and not problems:
        return Script(prompt=text)
    return Script(prompt=rest, flags=frozenset(flags), values=values, problems=tuple(problems))


@dataclasses.dataclass(frozen=True)
class Injected:
    """What one `previousMessages` description says about earlier turns."""

    users: tuple[str, ...]
    systems: tuple[str, ...]


def read_description(description: str) -> Injected:
    """Pick the user lines and system instructions out of a flattened history.

    Blocks start with a header line such as `[user](#message)` and run until the next
    header; trailing blank lines (the block separators) are dropped. Only
    `[user](#message)` and `[system](#additional_instructions)` count, as documented: a
    client that sends other headers will see them ignored by `recall`.
    """
    users: list[str] = []
    systems: list[str] = []
    pieces = BLOCK_HEADER.split(description)
    # re.split with two groups yields: preamble, role, tag, body, role, tag, body, ...
    for index in range(1, len(pieces) - 2, 3):
        role, tag, body = pieces[index], pieces[index + 1], pieces[index + 2].strip("\n")
        if role == "user" and tag == "message":
            users.append(body)
        elif role == "system" and tag == "additional_instructions":
            systems.append(body)
    return Injected(users=tuple(users), systems=tuple(systems))


def recall_answer(context: list[str], earlier_users: list[str]) -> str:
    """The `[sim:recall]` answer: injected user lines, then earlier turns' user texts."""
    users: list[str] = []
    systems: list[str] = []
    for description in context:
        injected = read_description(description)
        users.extend(injected.users)
        systems.extend(injected.systems)
    users.extend(earlier_users)
    answer = "Earlier you said: " + (" | ".join(users) if users else "nothing")
    if systems:
        answer += f" (system: {' | '.join(systems)})"
    return answer


def memory_answer(remembered: list[str]) -> str:
    """The `[sim:memory]` answer: what the account remembers from its other conversations."""
    return "From our other chats I remember: " + (" | ".join(remembered) if remembered else "nothing")


def default_answer(prompt: str, turn: int) -> str:
    """The deterministic answer to an ordinary prompt."""
    return f"Hello! You said: {prompt}. This is turn {turn}."


def long_answer(words: int) -> str:
    """`w1 w2 … wN`, for tests that need a long stream."""
    return " ".join(f"w{i}" for i in range(1, words + 1))
