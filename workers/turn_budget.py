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
from workers.upstream import Client
from workers.upstream.context import TurnInput
from workers.upstream.events import Event


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


class TurnCounter:
    """One request's upstream turns, every attempt together; `note` refuses the one past `cap`."""

    def __init__(self, cap: int, on_turn: Callable[[], None]) -> None:
        self.cap = cap
        self.sent = 0
        self._on_turn = on_turn

    def note(self) -> None:
        """One more turn is about to start: count it (and tell `on_turn`), or raise `exhausted`."""
        if self.sent >= self.cap:  # failovers primed again: the request's turns are spent
            raise exhausted(self.cap)
        self.sent += 1
        self._on_turn()


class CountedTurns:
    """An upstream client (`workers.upstream.Client`) whose every `stream_turn` first calls `on_turn`."""

    def __init__(self, client: Client, on_turn: Callable[[], None]) -> None:
        self._client = client
        self._on_turn = on_turn

    def create_conversation(self, *, account: str = "") -> Any:
        """The wrapped client's: a new upstream conversation is not a turn."""
        return self._client.create_conversation(account=account)

    def stream_turn(
        self, handle: Any, turn: TurnInput, *, should_stop: Callable[[], bool]
    ) -> Iterator[Event]:
        """The wrapped client's turn, counted before it starts."""
        self._on_turn()
        return self._client.stream_turn(handle, turn, should_stop=should_stop)
