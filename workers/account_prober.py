"""The periodic probe of accounts needing attention, run in every worker process.

`run_prober` is a worker greenlet: every ACCOUNT_PROBE_SECONDS it asks `health.probe_once`
to claim this round (one worker per round across the deployment) and probe each account
needing attention with `probe`, a cheap REST call as the account, never a chat turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import RedisError

from service.accounts import health
from service.runtime.settings import Settings
from workers.account_pool import pool_for
from workers.upstream import Credentials, account_transport
from workers.upstream.errors import Unauthorized, UpstreamError

log = logging.getLogger(__name__)


def probe(settings: Settings, credentials: Credentials) -> None:
    """A cheap REST call as the account (never a chat turn); raises the upstream error if it fails."""
    if settings.upstream == "bing":
        from workers.upstream.chathub_client import BingClient

        BingClient(
            create_url=settings.bing_create_url,
            chathub_url=settings.bing_chathub_url,
            cookies=credentials.cookies,
            connect_timeout=settings.upstream_connect_timeout,
            transport=account_transport(settings, credentials),
        ).create_conversation(account=credentials.id)
        return
    from workers.upstream.copilot_client import REST_BEARER
    from workers.upstream.copilot_session import AccountSession, raise_for_gate

    transport = account_transport(settings, credentials)
    session = AccountSession(
        base_url=settings.copilot_url,
        cookies=credentials.cookies,
        access_token=credentials.access_token,
        user_agent=transport.identity.user_agent,
        rest_bearer=REST_BEARER,
        timeout=settings.upstream_connect_timeout,
        transport=transport,
    )
    status, headers, body = session.request("GET", "/c/api/user")
    raise_for_gate(status, headers, "the account probe", body)
    if status in (401, 403):
        raise Unauthorized(f"Copilot still refuses account {credentials.id} (HTTP {status})")
    if status != 200:
        raise UpstreamError(f"Copilot's account probe answered HTTP {status}")


def run_prober(
    settings: Settings,
    redis: Redis,
    *,
    seeded: bool,
    stop: Callable[[], bool],
    sleep: Callable[[float], None],
) -> None:
    """Probe accounts needing attention every ACCOUNT_PROBE_SECONDS until `stop()` (a worker greenlet).

    `seeded` False (Redis was down at start-up): seed the pool first, retrying every few seconds.
    """
    pool = pool_for(settings, redis)
    every = settings.account_probe_seconds
    while not stop():
        sleep(min(every, 5.0) if not seeded else every)
        try:
            if not seeded:
                pool.seed()
                seeded = True
            health.probe_once(
                redis,
                pool.registry,
                lambda account: probe(settings, pool.credentials(account)),
                every=every,
                now=time.time(),
            )
        except RedisError as exc:  # Redis down: one line per round, no traceback; try again next round
            log.warning("event=account_probe_round_failed error=%s", exc.__class__.__name__)
        except Exception:  # a bug: try again next round
            log.warning("event=account_probe_round_failed", exc_info=True)
