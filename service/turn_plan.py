"""How many upstream turns one request costs, and the cap on them.

One request can become several upstream turns: priming parts when its context is more
than one turn carries (`service.priming`), the turn itself, and one repair turn when tools
or a response format are asked for. Every one costs the account a turn of its per-minute
budget, so a request may cause at most MAX_UPSTREAM_TURNS_PER_REQUEST of them. Both tiers
count with the same pure functions: the web tier refuses a request over the cap before
anything is enqueued (`service.web.pipeline.turn_cost`), and the worker plans what it
sends with `directives` and `priming.plan`, so the door's count is the worker's.
"""

from __future__ import annotations

from collections.abc import Sequence

from service import priming
from service.errors import InvalidRequest
from service.tools import prompts
from service.tools.options import TurnOptions


def directives(
    prompt: str,
    system: str,
    options: TurnOptions,
    *,
    send_tools: bool,
    fresh: bool,
    budget: int,
    max_context: int,
) -> tuple[str, str]:
    """The user's message and the system text as sent upstream, with the gateway's directives.

    The tool block rides in the message when it fits the upstream's per-turn budget
    (models heed the message most); a long one (agent CLIs send 20-40 KB of schemas)
    joins the system text of a new upstream conversation, which priming carries in
    parts, if that stays within CONTEXT_MAX_CHARS (else the message itself is primed in
    parts). The tool-choice and format lines always ride in the message.
    """
    text = prompts.turn_text(prompt, options, send_tools=send_tools)
    block = prompts.instructions(options.tools) if send_tools else ""
    if fresh and len(text) > budget and len(system) + len(block) + 2 <= max_context:
        text = prompts.turn_text(prompt, options, send_tools=False)
        system = "\n\n".join(part for part in (system, block) if part)
    return text, system


def repairs(options: TurnOptions) -> int:
    """Upstream turns a request's answer may need beyond the first: one repair with tools or a format."""
    return 1 if options.calls_tools or options.output is not None else 0


def upstream_turns(
    prompt: str,
    history: Sequence[tuple[str, str]],
    system: str,
    options: TurnOptions,
    *,
    budget: int,
    max_context: int,
) -> int:
    """Turns one request costs on a new upstream conversation (the most it can cost)."""
    text, system = directives(
        prompt,
        system,
        options,
        send_tools=options.calls_tools,
        fresh=True,
        budget=budget,
        max_context=max_context,
    )
    primed = priming.plan(text, history, system, budget=budget, max_context=max_context)
    return primed.turns + repairs(options)


def too_many_turns(turns: int, cap: int, *, param: str = "messages") -> InvalidRequest:
    """The `context_length_exceeded` 400 of a request that would take more than `cap` upstream turns."""
    return InvalidRequest(
        f"This request would take {turns} upstream turns (its context is carried over in parts), more "
        f"than this gateway allows for one request ({cap}, MAX_UPSTREAM_TURNS_PER_REQUEST). Please "
        "reduce the length of the messages, the tools or the response format.",
        param=param,
        code="context_length_exceeded",
    )
