"""One upstream conversation created ahead of need per account, so a new conversation's
first turn pays no create before its `send`.

A turn on a new conversation takes its account's spare inside the grant (the scheduler's
script GETDELs `…:spare:<account>` when asked: no round trip of its own) and, after it
started its own turn, creates the account's next spare in the background. A spare is one
per account for the whole deployment (SET NX), kept SPARE_SECONDS at most (well within
any upstream's expiry; a ChatHub handle also checks its own). The create is the same REST
call a turn would have made; the account's per-minute budget counts turns, not creates.
On by default for Copilot, off for ChatHub (UPSTREAM_SPARE_CONVERSATIONS).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from redis import Redis

from service.runtime.settings import Settings
from workers.upstream import Credentials, Handle, build_client, load_handle

log = logging.getLogger(__name__)

SPARE_SECONDS = 600
_refilling: set[str] = set()  # accounts whose spare this process is creating now
_guard = threading.Lock()


def prefix(registry_prefix: str) -> str:
    """The key prefix of the spares (the account id follows)."""
    return f"{registry_prefix}:spare:"


def use(settings: Settings, raw: bytes | None, account: str, now: float) -> Handle | None:
    """The spare taken with the slot, if it is usable for `account` (else None: create one)."""
    if not raw:
        return None
    try:
        handle = load_handle(settings, json.loads(raw))
    except (TypeError, ValueError):
        return None
    if handle is None or handle.account != account or handle.is_expired(now) or not handle.fresh:
        return None
    log.info("event=upstream_spare_used account=%s", account)
    return handle


def refill(
    settings: Settings,
    redis: Redis,
    registry_prefix: str,
    credentials: Credentials,
    on_cookies: Callable[[str], None] | None = None,
    current: Callable[[], Credentials] | None = None,
) -> None:
    """Create the account's next spare in the background (a thread: a greenlet under gevent).

    `current` reads the account's credentials as they are now (`credentials` are the turn's, as
    it began): a turn on an anonymous account starts the upstream session it reports through
    `on_cookies`, and a spare created with the cookies from before would start a second session
    and store its cookies over the first, whose conversations the upstream then refuses.
    """
    if not settings.upstream_spare_conversations:
        return
    with _guard:
        if credentials.id in _refilling:
            return
        _refilling.add(credentials.id)
    args = (settings, redis, prefix(registry_prefix) + credentials.id, credentials, on_cookies, current)
    threading.Thread(target=_refill, args=args, name="spare-conversation", daemon=True).start()


def _refill(
    settings: Settings,
    redis: Redis,
    key: str,
    credentials: Credentials,
    on_cookies: Callable[[str], None] | None,
    current: Callable[[], Credentials] | None,
) -> None:
    try:
        if redis.exists(key):
            return
        if current is not None:
            credentials = current()
        client = build_client(settings, credentials, on_cookies=on_cookies)
        handle = client.create_conversation(account=credentials.id)
        redis.set(key, json.dumps(handle.to_json()), nx=True, ex=SPARE_SECONDS)
        log.info("event=upstream_spare_created account=%s", credentials.id)
    except Exception as exc:  # the next turn creates its own, as without spares
        log.info("event=upstream_spare_failed account=%s error=%s", credentials.id, exc.__class__.__name__)
    finally:
        with _guard:
            _refilling.discard(credentials.id)


def now() -> float:
    """The clock spares are judged by (handles record wall time)."""
    return time.time()
