"""The upstream boundary: one client API over every dialect the gateway speaks.

    build_client(settings, account) -> Client      the configured dialect's client
    load_handle(settings, data)     -> Handle|None  a stored handle, if it is this dialect's

A `Client` creates upstream conversations and streams one turn as the dialect-neutral
events of `workers.upstream.events`; a `Handle` is the JSON-plain record needed to
continue a conversation from any worker. Everything above this boundary (the turn
runner, relay, web tier) is the same for every dialect.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from service.settings import Settings
from workers.upstream.context import TurnInput
from workers.upstream.events import Event


class Handle(Protocol):
    """A persisted upstream conversation."""

    dialect: str
    account: int

    @property
    def fresh(self) -> bool:
        """No turn sent yet: history and system prompt must be injected."""

    @property
    def exhausted(self) -> bool:
        """No more turns fit in this upstream conversation (its turn limit was reached)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-plain form, including `"dialect"`."""

    def is_expired(self, now: float) -> bool:
        """Whether the upstream has (nearly) forgotten the conversation."""


class Client(Protocol):
    """One account's connection to the upstream."""

    def create_conversation(self, *, account: int = 0) -> Any:
        """Start a new upstream conversation and return its handle."""

    def stream_turn(
        self, handle: Any, turn: TurnInput, *, should_stop: Callable[[], bool]
    ) -> Iterator[Event]:
        """Send one turn and yield its events through `Done`; raise on failure."""


def account_cookies(settings: Settings, account: int) -> str:
    """The Cookie header of account `account` of the pool ("" = anonymous)."""
    cookies = settings.upstream_cookies
    return cookies[account % len(cookies)] if cookies else ""


_COPILOT_JARS: dict[tuple[int, str], str] = {}
"""Each Copilot account's latest cookie header in this process, keyed by (account, configured
cookies), so an anonymous session and rotated cookies outlive one turn's client. Interim: the
account pool persists jars (encrypted, shared by every worker) through the same `on_cookies`."""


def build_client(settings: Settings, account: int) -> Client:
    """The client of the configured dialect, for one account of the cookie pool."""
    if settings.upstream == "bing":
        from workers.upstream.bing import BingClient

        return BingClient(
            create_url=settings.bing_create_url,
            chathub_url=settings.bing_chathub_url,
            cookies=account_cookies(settings, account),
            connect_timeout=settings.upstream_connect_timeout,
            first_token_timeout=settings.upstream_first_token_timeout,
            idle_timeout=settings.upstream_idle_timeout,
        )
    if settings.upstream == "copilot":
        from workers.upstream.copilot_client import USER_AGENT, CopilotClient

        key = (account, account_cookies(settings, account))
        return CopilotClient(
            base_url=settings.copilot_url,
            cookies=_COPILOT_JARS.get(key, key[1]),
            access_token=settings.copilot_access_token,
            user_agent=USER_AGENT,
            on_cookies=functools.partial(_COPILOT_JARS.__setitem__, key),
            connect_timeout=settings.upstream_connect_timeout,
            first_token_timeout=settings.upstream_first_token_timeout,
            idle_timeout=settings.upstream_idle_timeout,
        )
    raise ValueError(f"unknown upstream {settings.upstream!r}")


def load_handle(settings: Settings, data: Mapping[str, Any] | None) -> Handle | None:
    """The stored handle if it belongs to the configured dialect; else None (start afresh)."""
    if not data:
        return None
    dialect = data.get("dialect", "bing")
    if dialect != settings.upstream:
        return None
    if dialect == "bing":
        from workers.upstream.chathub import BingHandle

        return BingHandle.from_json(data)
    if dialect == "copilot":
        from workers.upstream.copilot import CopilotHandle

        try:
            return CopilotHandle.from_json(data)
        except (TypeError, ValueError):
            return None  # a damaged record: a new upstream conversation is the safe answer
    return None
