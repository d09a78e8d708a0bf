"""The upstream boundary: one client API over every dialect the gateway speaks.

    build_client(settings, account) -> Client      the configured dialect's client, as one account
    load_handle(settings, data)     -> Handle|None  a stored handle, if it is this dialect's

A `Client` creates upstream conversations and streams one turn as the dialect-neutral
events of `workers.upstream.events`; a `Handle` is the JSON-plain record needed to
continue a conversation from any worker. Everything above this boundary (the turn
runner, relay, web tier) is the same for every dialect.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from service.accounts.identity import Identity
from service.runtime.settings import Settings
from workers.upstream.context import TurnInput
from workers.upstream.events import Event

if TYPE_CHECKING:
    from workers.upstream.socket_park import SocketSlot


class Handle(Protocol):
    """A persisted upstream conversation."""

    dialect: str
    account: str

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

    def create_conversation(self, *, account: str = "") -> Any:
        """Start a new upstream conversation and return its handle."""

    def stream_turn(
        self, handle: Any, turn: TurnInput, *, should_stop: Callable[[], bool]
    ) -> Iterator[Event]:
        """Send one turn and yield its events through `Done`; raise on failure."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Who a client speaks as: the account's id, its browser identity and opened secrets (never printed)."""

    id: str
    cookies: str = dataclasses.field(default="", repr=False)
    access_token: str = dataclasses.field(default="", repr=False)
    user_agent: str = ""
    identity: Identity | None = None
    proxy: str = dataclasses.field(default="", repr=False)


def account_transport(settings: Settings, account: Credentials) -> Any:
    """The account's upstream transport (UPSTREAM_TRANSPORT), with its identity, proxy and the CA bundle."""
    from service.accounts.identity import default_identity
    from workers.upstream.copilot_browser import identity_for
    from workers.upstream.wire import build_transport

    identity = account.identity
    if identity is None:
        identity = identity_for(account.user_agent) if account.user_agent else default_identity()
    return build_transport(
        settings.upstream_transport,
        identity=identity,
        proxy=account.proxy,
        ca_file=settings.upstream_ca_bundle,
        key=account.id,
    )


def build_client(
    settings: Settings,
    account: Credentials,
    *,
    on_cookies: Callable[[str], None] | None = None,
    transport: Any = None,
) -> Client:
    """The client of the configured dialect, speaking as one account of the pool.

    `on_cookies(header)` receives the account's cookie header whenever the upstream changed
    it (Copilot's anonymous session, rotated cookies), so the pool can persist it for every
    worker (`workers.account_pool.Pool.cookie_sink`). `transport` replaces the account's own
    (`account_transport`): `workers.account_check` wraps it to record each call.
    """
    if settings.upstream == "bing":
        from workers.upstream.chathub_client import BingClient

        return BingClient(
            create_url=settings.bing_create_url,
            chathub_url=settings.bing_chathub_url,
            cookies=account.cookies,
            connect_timeout=settings.upstream_connect_timeout,
            first_token_timeout=settings.upstream_first_token_timeout,
            idle_timeout=settings.upstream_idle_timeout,
            transport=transport or account_transport(settings, account),
        )
    if settings.upstream == "copilot":
        from workers.upstream.copilot_client import USER_AGENT, CopilotClient

        own = transport is None  # a wrapped transport (`workers.account_check`) never shares sockets
        transport = transport or account_transport(settings, account)
        return CopilotClient(
            base_url=settings.copilot_url,
            cookies=account.cookies,
            access_token=account.access_token or settings.copilot_access_token,
            user_agent=transport.identity.user_agent or USER_AGENT,
            transport=transport,
            on_cookies=on_cookies,
            connect_timeout=settings.upstream_connect_timeout,
            first_token_timeout=settings.upstream_first_token_timeout,
            idle_timeout=settings.upstream_idle_timeout,
            sockets=socket_slot(settings, account, transport) if own else None,
        )
    raise ValueError(f"unknown upstream {settings.upstream!r}")


def socket_slot(settings: Settings, account: Credentials, transport: Any) -> SocketSlot | None:
    """The account's idle-socket slot in this process (UPSTREAM_KEEP_SOCKETS), or None when off.

    Its identity covers what the socket goes through besides its URL and headers: the
    transport, the browser identity (profile, client hints, language), proxy and CA bundle.
    """
    if not settings.upstream_keep_sockets:
        return None
    from workers.upstream.socket_park import SocketSlot, park_for

    through = (
        transport.name,
        transport.profile,
        repr(transport.identity),
        account.proxy,
        settings.upstream_ca_bundle,
    )
    return SocketSlot(park_for(settings.upstream_socket_idle_seconds), account.id, through)


def load_handle(settings: Settings, data: Mapping[str, Any] | None) -> Handle | None:
    """The stored handle if it belongs to the configured dialect; else None (start afresh)."""
    if not data:
        return None
    dialect = data.get("dialect", "bing")
    if dialect != settings.upstream:
        return None
    if dialect == "bing":
        from workers.upstream.chathub_conversation import BingHandle

        return BingHandle.from_json(data)
    if dialect == "copilot":
        from workers.upstream.copilot_conversation import CopilotHandle

        try:
            return CopilotHandle.from_json(data)
        except (TypeError, ValueError):
            return None  # a damaged record: a new upstream conversation is the safe answer
    return None
