"""What a request will cost upstream, counted at the door before anything is enqueued.

One request can become several upstream turns: priming parts when its context is more
than one turn carries, the turn itself, and one repair turn when tools or a response
format are asked for (`service.turn_plan`, the same pure planning the worker sends
by). The door counts them as for a new upstream conversation, the most the request can
cost; above MAX_UPSTREAM_TURNS_PER_REQUEST it is a 400 `context_length_exceeded`, and
otherwise the turns it will surely cause (all but a repair that may not be needed) are what
the key's per-minute limit is charged (`quota.admit`).
"""

from __future__ import annotations

from service import turn_plan
from service.runtime.settings import Settings
from service.tools.options import TurnOptions
from service.web.pipeline.request import ChatRequest


def turns_of(chat: ChatRequest, settings: Settings) -> int:
    """Upstream turns `chat` costs on a new upstream conversation."""
    return turn_plan.upstream_turns(
        chat.prompt,
        [(m["role"], m["content"]) for m in chat.history],
        chat.system,
        TurnOptions.from_json(chat.options),
        budget=settings.upstream_max_turn_chars,
        max_context=settings.context_max_chars,
    )


def check(chat: ChatRequest, settings: Settings, *, param: str = "messages") -> int:
    """The turns `chat` will cost for certain (its priming parts and the turn; a repair turn only
    may follow), or the 400 naming `param` when the most it can cost is over the cap."""
    turns = turns_of(chat, settings)
    cap = settings.max_upstream_turns_per_request
    if turns > cap:
        raise turn_plan.too_many_turns(turns, cap, param=param)
    return turns - turn_plan.repairs(TurnOptions.from_json(chat.options))
