"""One idle Copilot socket per account between turns (`workers.upstream.socket_park`), both transports.

Real clients as the worker builds them (`build_client`, one per turn), the simulator over
real loopback sockets; what happened is read from the simulator's counters: `sockets`
(upgrades), `open_sockets`, `idle_sockets`, `invocations` (sends) and each conversation's turns.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis import Redis

from service.runtime.embedded_redis import free_port
from service.runtime.settings import Settings, load_settings
from tests.support.simulator import SimulatorProcess
from tests.support.stack import ROOT, wait_for
from workers.account_pool import Pool, usable_accounts
from workers.upstream import Credentials, build_client, socket_park
from workers.upstream.context import TurnInput
from workers.upstream.copilot_conversation import CopilotHandle
from workers.upstream.events import Done, Event

pytestmark = pytest.mark.timeout(60)
TRANSPORTS = ("plain", "browser")


def settings_for(sim: SimulatorProcess, transport: str, **extra: str) -> Settings:
    return load_settings(
        {
            "UPSTREAM": "copilot",
            "COPILOT_URL": sim.copilot_url,
            "UPSTREAM_TRANSPORT": transport,
            "REDIS_URL": "redis://127.0.0.1:1/0",
            **extra,
        }
    )


@contextlib.contextmanager
def relay(target: str, *, delay_ms: float) -> Iterator[str]:
    """`tests.support.latency_relay` in front of `target`, `delay_ms` each way; yields its base URL."""
    parts, port = urlsplit(target), free_port()
    args = ["127.0.0.1", str(port), parts.hostname or "", str(parts.port), str(delay_ms)]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.latency_relay", *args], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == b"READY"
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def turn(settings: Settings, account: Credentials, handle: CopilotHandle, text: str) -> Done:
    """One turn on a client built for it, as the worker does; the answer's `Done`."""
    client = build_client(settings, account)
    events = list(client.stream_turn(handle, TurnInput(text), should_stop=lambda: False))
    assert isinstance(events[-1], Done), events
    return events[-1]


def create(settings: Settings, account: Credentials) -> CopilotHandle:
    handle = build_client(settings, account).create_conversation(account=account.id)
    assert isinstance(handle, CopilotHandle)
    return handle


def copilot(sim: SimulatorProcess) -> dict[str, Any]:
    stats = sim.stats()
    assert stats["violations"] == []
    return dict(stats["copilot"])


def users(sim: SimulatorProcess, handle: CopilotHandle) -> list[str]:
    return [t["user"] for t in sim.conversation(handle.conversation_id)["turns"]]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_the_turns_of_one_account_share_one_socket(sim: SimulatorProcess, kind: str) -> None:
    settings, account = settings_for(sim, kind), Credentials(f"share-{kind}", cookies=f"_U=share-{kind}")
    first = create(settings, account)
    assert turn(settings, account, first, "one").text == "Hello! You said: one. This is turn 1."
    assert turn(settings, account, first, "two").text == "Hello! You said: two. This is turn 2."
    other = create(settings, account)  # another conversation, the same socket (B2: `send` names it)
    assert turn(settings, account, other, "three").text == "Hello! You said: three. This is turn 1."

    stats = copilot(sim)
    assert (stats["sockets"], stats["invocations"], stats["idle_sockets"]) == (1, 3, 1)
    assert (users(sim, first), users(sim, other)) == (["one", "two"], ["three"])
    # The preamble went out once, on the one socket the account opened.
    assert len(sim.accounts()[f"share-{kind}"]["sockets"]) == 1


def test_keep_sockets_off_opens_a_socket_per_turn(sim: SimulatorProcess) -> None:
    settings = settings_for(sim, "plain", UPSTREAM_KEEP_SOCKETS="0")
    account = Credentials("off", cookies="_U=off")
    handle = create(settings, account)
    for text in ("one", "two"):
        turn(settings, account, handle, text)

    assert wait_for(lambda: copilot(sim)["open_sockets"] == 0)
    assert (copilot(sim)["sockets"], copilot(sim)["invocations"]) == (2, 2)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_socket_the_server_closed_while_parked_is_replaced_without_a_second_send(
    sim: SimulatorProcess, kind: str
) -> None:
    sim.configure(copilot_idle_close=0.2)
    settings, account = settings_for(sim, kind), Credentials(f"closed-{kind}", cookies=f"_U=closed-{kind}")
    handle = create(settings, account)
    turn(settings, account, handle, "one")
    wait_for(lambda: copilot(sim)["open_sockets"] == 0)  # the server closed the idle socket

    assert turn(settings, account, handle, "two").text == "Hello! You said: two. This is turn 2."
    stats = copilot(sim)
    assert (stats["sockets"], stats["invocations"]) == (2, 2)
    assert users(sim, handle) == ["one", "two"]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_frame_that_arrived_while_parked_discards_the_socket(sim: SimulatorProcess, kind: str) -> None:
    settings, account = settings_for(sim, kind), Credentials(f"late-{kind}", cookies=f"_U=late-{kind}")
    handle = create(settings, account)
    turn(settings, account, handle, "[sim:late=0.1] one")  # a titleUpdate comes after the turn's end
    time.sleep(0.4)

    assert turn(settings, account, handle, "two").text == "Hello! You said: two. This is turn 2."
    stats = copilot(sim)
    assert (stats["sockets"], stats["invocations"], stats["open_sockets"]) == (2, 2, 1)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_an_identity_change_discards_the_parked_socket(sim: SimulatorProcess, kind: str) -> None:
    settings = settings_for(sim, kind)
    account = Credentials(f"who-{kind}", cookies=f"_U=who-{kind}; MUID=one")
    handle = create(settings, account)
    turn(settings, account, handle, "one")

    # Cloudflare's rotating bot cookie is not an identity: the socket is kept.
    rotated = Credentials(account.id, cookies=f"_U=who-{kind}; MUID=one; __cf_bm=fresh")
    turn(settings, rotated, handle, "two")
    assert copilot(sim)["sockets"] == 1

    # Credentials refreshed (new cookies, as PATCH /admin/accounts/{id} stores): a new socket.
    refreshed = Credentials(account.id, cookies=f"_U=who-{kind}; MUID=two")
    turn(settings, refreshed, handle, "three")
    assert wait_for(lambda: copilot(sim)["open_sockets"] == 1)  # the old socket was closed, not kept
    assert copilot(sim)["sockets"] == 2

    # Another browser identity (user agent) or access token: a new socket each time.
    agent = Credentials(account.id, cookies=refreshed.cookies, user_agent="Mozilla/5.0 (X11; Linux x86_64)")
    turn(settings, agent, handle, "four")
    token = Credentials(account.id, cookies=refreshed.cookies, user_agent=agent.user_agent, access_token="t")
    turn(settings, token, handle, "five")
    assert wait_for(lambda: copilot(sim)["open_sockets"] == 1)
    stats = copilot(sim)
    assert (stats["sockets"], stats["invocations"]) == (4, 5)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_concurrent_turns_each_get_a_socket_and_one_is_parked(sim: SimulatorProcess, kind: str) -> None:
    settings, account = settings_for(sim, kind), Credentials(f"both-{kind}", cookies=f"_U=both-{kind}")
    first, second = create(settings, account), create(settings, account)
    slow = build_client(settings, account).stream_turn(
        first, TurnInput("[sim:slow=0.05][sim:long=20] a"), should_stop=lambda: False
    )
    started: list[Event] = [next(slow)]  # the slow turn holds its socket, mid-answer
    assert turn(settings, account, second, "b").text  # meanwhile: a socket of its own, parked after
    started.extend(slow)
    assert isinstance(started[-1], Done)

    stats = copilot(sim)
    assert (stats["sockets"], stats["invocations"]) == (2, 2)
    assert wait_for(lambda: copilot(sim)["open_sockets"] == 1)  # the slot held one: the other closed
    turn(settings, account, first, "c")
    assert copilot(sim)["sockets"] == 2  # the parked one carried it


def test_a_socket_idle_past_the_limit_is_closed(sim: SimulatorProcess) -> None:
    settings = settings_for(sim, "plain", UPSTREAM_SOCKET_IDLE_SECONDS="0.3")
    account = Credentials("idle", cookies="_U=idle")
    handle = create(settings, account)
    turn(settings, account, handle, "one")
    time.sleep(0.4)

    turn(settings, account, handle, "two")
    assert wait_for(lambda: copilot(sim)["open_sockets"] == 1)
    assert copilot(sim)["sockets"] == 2


def test_an_unwell_account_loses_its_parked_socket(sim: SimulatorProcess) -> None:
    settings, account = settings_for(sim, "plain"), Credentials("unwell", cookies="_U=unwell")
    handle = create(settings, account)
    turn(settings, account, handle, "one")
    assert copilot(sim)["idle_sockets"] == 1

    socket_park.discard(account.id, "account_unwell")  # what AccountLane.fail_over does
    assert wait_for(lambda: copilot(sim)["open_sockets"] == 0)


def test_copilot_keeps_sockets_and_spares_by_default_chathub_no_spares() -> None:
    chosen_default = load_settings({"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert chosen_default.upstream == "copilot"
    assert (chosen_default.upstream_keep_sockets, chosen_default.upstream_spare_conversations) == (True, True)
    assert chosen_default.upstream_socket_idle_seconds == 120.0
    bing = load_settings({"REDIS_URL": "redis://127.0.0.1:1/0", "UPSTREAM": "bing"})
    assert bing.upstream_spare_conversations is False
    chosen = load_settings(
        {"REDIS_URL": "redis://127.0.0.1:1/0", "UPSTREAM": "bing", "UPSTREAM_SPARE_CONVERSATIONS": "on"}
    )
    assert chosen.upstream_spare_conversations is True


def test_the_sweep_closes_idle_sockets_when_no_turn_comes(sim: SimulatorProcess) -> None:
    settings = settings_for(sim, "plain", UPSTREAM_SOCKET_IDLE_SECONDS="0.2")
    account = Credentials("swept", cookies="_U=swept")
    turn(settings, account, create(settings, account), "one")
    assert copilot(sim)["idle_sockets"] == 1
    sweeps: list[float] = []

    def sleep(seconds: float) -> None:
        sweeps.append(seconds)
        time.sleep(seconds)

    socket_park.keep_swept(sleep=sleep, stop=lambda: sum(sweeps) >= 0.5)
    assert sweeps[0] == 0.05  # a quarter of the idle limit
    assert wait_for(lambda: copilot(sim)["open_sockets"] == 0)


def test_the_sweep_closes_the_socket_of_an_account_disabled_meanwhile(
    sim: SimulatorProcess, redis_url: str, redis_client: Redis
) -> None:
    settings = settings_for(sim, "plain", REDIS_URL=redis_url, SECRET_KEY="test-secret-key-0123456789")
    pool = Pool(settings, redis_client)
    kept, disabled = (pool.registry.add(cookies=f"_U={name}", account_id=name) for name in ("kept", "off"))
    for account in (kept, disabled):
        credentials = pool.credentials(account)
        turn(settings, credentials, create(settings, credentials), "one")
    assert copilot(sim)["idle_sockets"] == 2
    pool.registry.update(disabled.id, enabled=False)  # PATCH /admin/accounts/{id} {"enabled": false}

    sweeps: list[float] = []
    socket_park.keep_swept(sleep=sweeps.append, stop=lambda: bool(sweeps), usable=usable_accounts(pool))
    assert wait_for(lambda: copilot(sim)["open_sockets"] == 1)  # the disabled account's socket is gone
    again = pool.credentials(pool.registry.get(kept.id))
    turn(settings, again, create(settings, again), "two")
    assert copilot(sim)["sockets"] == 2  # the usable account's socket was kept and carried it


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_socket_closed_on_its_way_to_the_send_is_replaced_once_without_a_second_send(
    sim: SimulatorProcess, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Through a relay that delays each way 200 ms, the server's idle close is still on the wire
    # when the next turn takes the socket: it looks idle, the send goes out, the close comes back.
    sim.configure(copilot_idle_close=0.3)
    with relay(sim.copilot_url, delay_ms=200) as far:
        settings = settings_for(sim, kind, COPILOT_URL=far)
        account = Credentials(f"race-{kind}", cookies=f"_U=race-{kind}")
        handle = create(settings, account)
        turn(settings, account, handle, "one")
        wait_for(lambda: copilot(sim)["open_sockets"] == 0, interval=0.005)  # closed at the server's end
        with caplog.at_level(logging.INFO, logger="workers.upstream.copilot_client"):
            assert turn(settings, account, handle, "two").text == "Hello! You said: two. This is turn 2."

    assert "event=copilot_parked_socket_closed action=reopen" in caplog.text
    stats = copilot(sim)
    assert (stats["sockets"], stats["invocations"]) == (2, 2)
    assert users(sim, handle) == ["one", "two"]
