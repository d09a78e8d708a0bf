"""Every upstream turn a request causes is counted, and capped, in the worker too.

The web tier refuses a request that would need more than MAX_UPSTREAM_TURNS_PER_REQUEST
(`service.web.turn_cost`), counting as for a new upstream conversation. The worker sends
by the same plan (`service.turn_plan`) and checks it again before the first turn goes
out, since what it plans can differ from the door's view (a stored conversation seeded
anew after a rollover or failover). And each turn it sends, priming parts and the repair
included, takes an entry of the account's sliding minute (`CountedTurns`), so the pool's
ACCOUNT_RPM sees what the upstream sees; the turns of every attempt add up to at most the
cap (`exhausted`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from service import turn_plan
from service.errors import ApiError
from service.tools.options import TurnOptions


def check(primers: int, options: TurnOptions, cap: int) -> None:
    """400 `context_length_exceeded` when the planned turns are over `cap`; nothing has gone upstream."""
    turns = primers + 1 + turn_plan.repairs(options)
    if turns > cap:
        raise turn_plan.too_many_turns(turns, cap)


def exhausted(cap: int) -> ApiError:
    """A request whose retries on other accounts would pass `cap` upstream turns in all: it stops.

    One attempt fits the cap (the door and `check` saw to that); only failing over to another
    account after turns were spent, priming again there, can reach it.
    """
    return ApiError(
        f"This request reached {cap} upstream turns (MAX_UPSTREAM_TURNS_PER_REQUEST) while retrying on "
        "other accounts after upstream failures; try again later.",
        status=503,
        error_type="server_error",
        code="upstream_turns_exhausted",
        should_retry=True,
    )


class CountedTurns:
    """An upstream client whose every `stream_turn` first calls `on_turn` (the account's ledger)."""

    def __init__(self, client: Any, on_turn: Callable[[], None]) -> None:
        self._client = client
        self._on_turn = on_turn

    def stream_turn(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """The wrapped client's turn, counted before it starts."""
        self._on_turn()
        return self._client.stream_turn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
