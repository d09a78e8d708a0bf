"""Edge cases of the parked Copilot sockets (`workers.upstream.socket_park`), both transports.

A keep-alive ping that reaches a parked socket is answered and the socket kept; a reused
socket whose `send` draws `invalid-event` alone is replaced once, the turn accepted upstream
exactly once and the conversation kept; an account whose identity the admin API refreshed
loses its parked socket at the next sweep, with no turn needed. Real clients as the worker
builds them and the simulator over real loopback sockets (`test_socket_park` has the helpers).
"""

from __future__ import annotations

import logging
import time

import pytest
from redis import Redis

from tests.support.simulator import SimulatorProcess
from tests.support.stack import wait_for
from tests.unit.test_socket_park import TRANSPORTS, copilot, create, settings_for, turn, users
from workers.account_pool import Pool, usable_accounts
from workers.upstream import Credentials, socket_park
from workers.upstream.errors import ConversationExpired

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_ping_to_a_parked_socket_is_answered_and_the_socket_kept(sim: SimulatorProcess, kind: str) -> None:
    sim.configure(copilot_idle_ping=0.05)
    settings, account = settings_for(sim, kind), Credentials(f"ping-{kind}", cookies=f"_U=ping-{kind}")
    handle = create(settings, account)
    turn(settings, account, handle, "one")
    time.sleep(0.3)  # the server pings the parked socket; nobody reads it until the next turn

    assert turn(settings, account, handle, "two").text == "Hello! You said: two. This is turn 2."
    stats = copilot(sim)
    assert (stats["sockets"], stats["invocations"]) == (1, 2)  # kept: the same socket carried both
    record = lambda: sim.accounts()[account.id]["sockets"][0]  # noqa: E731
    assert wait_for(lambda: record().get("pongs", 0) >= 1)  # and the ping was answered


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_invalid_event_on_a_reused_socket_is_retried_once_on_a_fresh_one(
    sim: SimulatorProcess, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    sim.configure(copilot_refuse_reused=0.1)  # a socket idle 0.1 s refuses its next send
    settings, account = settings_for(sim, kind), Credentials(f"stale-{kind}", cookies=f"_U=stale-{kind}")
    handle = create(settings, account)
    turn(settings, account, handle, "one")
    time.sleep(0.2)
    with caplog.at_level(logging.INFO, logger="workers.upstream.copilot_client"):
        # The same conversation, not a rolled-over one: the refusal was the socket's, not the conversation's.
        assert turn(settings, account, handle, "two").text == "Hello! You said: two. This is turn 2."

    assert "event=copilot_parked_socket_refused action=reopen" in caplog.text
    assert "copilot_conversation_forgotten" not in caplog.text
    stats = copilot(sim)
    assert stats["sockets"] == 2
    assert stats["invocations"] == 3  # one, the refused send, and the one accepted on the fresh socket
    assert users(sim, handle) == ["one", "two"]  # the turn was taken exactly once


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_invalid_event_on_the_fresh_socket_too_is_not_retried_again(sim: SimulatorProcess, kind: str) -> None:
    settings, account = settings_for(sim, kind), Credentials(f"twice-{kind}", cookies=f"_U=twice-{kind}")
    handle = create(settings, account)
    turn(settings, account, handle, "one")
    with pytest.raises(ConversationExpired):  # refused on the reused socket, then on the fresh one
        turn(settings, account, handle, "[sim:invalid_event] two")
    stats = copilot(sim)
    assert (stats["sockets"], stats["invocations"]) == (2, 3)  # one retry, no more


def test_an_identity_refresh_closes_the_parked_socket_at_the_next_sweep(
    sim: SimulatorProcess, redis_url: str, redis_client: Redis
) -> None:
    settings = settings_for(sim, "plain", REDIS_URL=redis_url, SECRET_KEY="test-secret-key-0123456789")
    pool = Pool(settings, redis_client)
    usable = usable_accounts(pool)
    socket_park.keep_swept(sleep=lambda _: None, stop=lambda: True, usable=usable)  # as the worker starts it
    kept, refreshed = (pool.registry.add(cookies=f"_U={name}", account_id=name) for name in ("same", "new"))
    for account in (kept, refreshed):
        credentials = pool.credentials(account)
        turn(settings, credentials, create(settings, credentials), "one")
    assert copilot(sim)["idle_sockets"] == 2

    pool.registry.update(kept.id, label="renamed", max_concurrent=3)  # not its identity
    pool.registry.update(refreshed.id, cookies="_U=new; MUID=fresh")  # PATCH /admin/accounts/{id}
    sweeps: list[float] = []
    socket_park.keep_swept(sleep=sweeps.append, stop=lambda: bool(sweeps), usable=usable)
    assert wait_for(lambda: copilot(sim)["open_sockets"] == 1)  # the refreshed account's socket is gone
    again = pool.credentials(pool.registry.get(kept.id))
    turn(settings, again, create(settings, again), "two")
    assert copilot(sim)["sockets"] == 2  # the other account's socket was kept and carried its turn
