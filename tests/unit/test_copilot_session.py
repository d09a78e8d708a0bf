"""A Copilot account's cookie jar and anonymous session, against the simulator over loopback.

The gateway's own `CopilotClient` (with `workers.upstream.copilot_session`) talks to the
real simulator process; the simulator refuses anonymous conversations and sockets that
lack a `__Host-copilot-anon` it issued, so these tests fail if the bootstrap is missing.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
import requests
import websocket
from redis import Redis

from service.runtime.settings import Settings
from tests.support.simulator import SimulatorProcess
from workers.account_pool import Pool
from workers.upstream import Client, Credentials, build_client
from workers.upstream.context import TurnInput
from workers.upstream.copilot_browser import ANON_COOKIE, parse_cookie_header, parse_set_cookie
from workers.upstream.copilot_client import CopilotClient
from workers.upstream.copilot_session import AccountSession
from workers.upstream.errors import ChallengeRequired, RegionBlocked, TokenExpired, Unauthorized
from workers.upstream.events import Done

AGENT = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/135.0 test-agent"


def client(sim: SimulatorProcess, jar_updates: list[str], **options: Any) -> CopilotClient:
    """The gateway's Copilot client on the simulator, reporting its jar into `jar_updates`."""
    settings: dict[str, Any] = {
        "base_url": sim.copilot_url,
        "user_agent": AGENT,
        "on_cookies": jar_updates.append,
        "connect_timeout": 5.0,
        "first_token_timeout": 10.0,
        "idle_timeout": 10.0,
    }
    settings.update(options)
    return CopilotClient(**settings)


def chat(copilot: Client, handle: Any, text: str = "hello") -> str:
    """One turn; the answer's text."""
    events = list(copilot.stream_turn(handle, TurnInput(text), should_stop=lambda: False))
    assert isinstance(events[-1], Done)
    return events[-1].text


def test_without_a_session_the_simulator_refuses_anonymous_create_and_socket(sim: SimulatorProcess) -> None:
    create = requests.post(f"{sim.copilot_url}/c/api/conversations", timeout=5)
    forged = requests.post(
        f"{sim.copilot_url}/c/api/conversations", headers={"Cookie": f"{ANON_COOKIE}=made.up"}, timeout=5
    )
    with pytest.raises(websocket.WebSocketBadStatusException) as upgrade:
        websocket.create_connection(
            f"{sim.copilot_chat_url}?api-version=2&clientSessionId=x",
            timeout=5,
            origin="https://copilot.microsoft.com",
        )

    assert create.status_code == forged.status_code == upgrade.value.status_code == 401
    assert ANON_COOKIE in create.json()["message"]


def test_anonymous_account_bootstraps_a_session_and_chats(sim: SimulatorProcess) -> None:
    updates: list[str] = []
    copilot = client(sim, updates)

    handle = copilot.create_conversation()
    answer = chat(copilot, handle, "hi there")
    again = chat(copilot, handle, "and again")

    jar = parse_cookie_header(updates[-1])
    assert {ANON_COOKIE, "MUID", "_EDGE_S", "__cf_bm"} <= set(jar)
    assert answer == "Hello! You said: hi there. This is turn 1." and "turn 2" in again
    account = sim.accounts()[f"anon:{jar[ANON_COOKIE]}"]
    assert account["turns"] == 2 and account["user_agents"] == [AGENT]
    assert sim.accounts()["anonymous"]["user_agents"] == [AGENT]  # the landing page and start
    assert sim.conversation(handle.conversation_id)["identity"].startswith("anon:")


def test_a_session_handed_in_is_reused_not_restarted(sim: SimulatorProcess) -> None:
    first: list[str] = []
    handle = client(sim, first).create_conversation()
    later: list[str] = []

    answer = chat(client(sim, later, cookies=first[-1]), handle)

    assert answer.startswith("Hello!") and later == []  # nothing new to report


def test_a_refused_session_is_replaced_once(sim: SimulatorProcess) -> None:
    updates: list[str] = []
    copilot = client(sim, updates, cookies=f"{ANON_COOKIE}=stale.session; MUID=m")

    handle = copilot.create_conversation()

    new = parse_cookie_header(updates[-1])[ANON_COOKIE]
    assert new != "stale.session" and chat(copilot, handle).startswith("Hello!")


def test_a_restarted_anonymous_session_opens_its_socket_with_a_new_client_session_id(
    sim: SimulatorProcess,
) -> None:
    settings = Settings(upstream="copilot", copilot_url=sim.copilot_url)
    updates: list[str] = []
    first = build_client(settings, Credentials("env-1"), on_cookies=updates.append)
    handle = first.create_conversation(account="env-1")
    chat(first, handle)
    old_session = parse_cookie_header(updates[-1])[ANON_COOKIE]
    # The next worker's client for the same account finds its session refused and starts another.
    stale = f"{ANON_COOKIE}=stale.session; MUID=m"
    second = build_client(settings, Credentials("env-1", cookies=stale), on_cookies=updates.append)
    chat(second, second.create_conversation(account="env-1"))
    new_session = parse_cookie_header(updates[-1])[ANON_COOKIE]

    accounts = sim.accounts()
    [before] = accounts[f"anon:{old_session}"]["sockets"]
    [after] = accounts[f"anon:{new_session}"]["sockets"]
    assert old_session != new_session
    assert before["clientSessionId"] != after["clientSessionId"]  # B1.2: new per socket
    assert all(uuid.UUID(s["clientSessionId"]).version == 4 for s in (before, after))
    assert sim.stats()["violations"] == []


def test_rotated_cookies_reach_the_callback_and_the_next_request(sim: SimulatorProcess) -> None:
    sim.configure(copilot_rotate_cookie=True)
    updates: list[str] = []
    copilot = client(sim, updates, cookies="_U=acct-r; MUID=m")

    handle = copilot.create_conversation()
    first = parse_cookie_header(updates[-1])["__cf_bm"]
    copilot.create_conversation()
    second = parse_cookie_header(updates[-1])["__cf_bm"]

    assert len(updates) == 2 and first != second
    assert parse_cookie_header(updates[-1])["_U"] == "acct-r"
    assert chat(copilot, handle).startswith("Hello!")
    assert sim.accounts()["acct-r"]["user_agents"] == [AGENT]


@pytest.mark.parametrize("how", ["revoked token", "account fault"])
def test_a_refused_access_token_is_token_expired_with_the_cure(sim: SimulatorProcess, how: str) -> None:
    token = "revoked" if how == "revoked token" else "tok-expiring"
    if how == "account fault":
        sim.set_account(token, fault="unauthorized")
    copilot = client(sim, [], cookies="_U=acct-t", access_token=token)
    handle = copilot.create_conversation()  # REST is cookie-only (B1.1), so this works

    with pytest.raises(TokenExpired) as caught:
        chat(copilot, handle)

    assert isinstance(caught.value, Unauthorized)
    assert "PATCH /admin/accounts/" in str(caught.value) and token not in str(caught.value)


def test_a_cloudflare_gate_on_the_landing_page_needs_a_browser(sim: SimulatorProcess) -> None:
    sim.set_account("anonymous", fault="cloudflare")

    with pytest.raises(ChallengeRequired, match="clearance required"):
        client(sim, []).create_conversation()


def test_the_pool_keeps_an_anonymous_session_for_every_worker(
    sim: SimulatorProcess, redis_client: Redis
) -> None:
    settings = Settings(upstream="copilot", copilot_url=sim.copilot_url, secret_key="k" * 32)
    first = Pool(settings, redis_client)
    first.seed()  # one anonymous account, env-1
    account = first.registry.get("env-1")
    creator = build_client(settings, first.credentials(account), on_cookies=first.cookie_sink("env-1"))
    handle = creator.create_conversation(account="env-1")

    # Another worker process (another Pool) builds the next turn's client from the registry.
    other = Pool(settings, redis_client)
    stored = other.credentials(other.registry.get("env-1"))
    assert "__Host-copilot-anon=" in stored.cookies
    assert b"__Host-copilot-anon" not in (redis_client.dump(other.registry.key("env-1")) or b"")
    answer = chat(build_client(settings, stored, on_cookies=other.cookie_sink("env-1")), handle)

    assert answer.startswith("Hello!")


def test_cookie_values_never_reach_the_log(sim: SimulatorProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    updates: list[str] = []
    copilot = client(sim, updates)
    chat(copilot, copilot.create_conversation())

    values = [value for value in parse_cookie_header(updates[-1]).values() if len(value) >= 4]
    assert values and not [value for value in values if value in caplog.text]
    assert "copilot_anonymous_session_started" in caplog.text


@pytest.mark.parametrize(
    ("fault", "error"),
    [("captcha", ChallengeRequired), ("cloudflare", ChallengeRequired), ("region", RegionBlocked),
     ("unauthorized", Unauthorized)],
)  # fmt: skip
def test_probe_reflects_the_account_fault_and_passes_once_cleared(
    sim: SimulatorProcess, fault: str, error: type[Exception]
) -> None:
    copilot = client(sim, [], cookies="_U=acct-p")
    copilot.probe()
    sim.set_account("acct-p", fault=fault)

    with pytest.raises(error):
        copilot.probe()
    sim.set_account("acct-p", fault=None)
    copilot.probe()

    assert sim.accounts()["acct-p"]["rejections"] == {fault: 1}
    assert sim.stats()["invocations"] == 0  # a probe is never a chat turn


def test_probe_of_an_anonymous_account_starts_its_session(sim: SimulatorProcess) -> None:
    updates: list[str] = []

    client(sim, updates).probe()

    assert ANON_COOKIE in parse_cookie_header(updates[-1])


# -- the jar, without the network ------------------------------------------------------------


def test_set_cookie_lines_set_replace_and_delete() -> None:
    now = 1_800_000_000.0
    assert parse_set_cookie("a=1; Path=/; HttpOnly", now=now) == ("a", "1")
    assert parse_set_cookie('b="quoted"; Secure', now=now) == ("b", "quoted")
    assert parse_set_cookie("c=; Max-Age=0", now=now) == ("c", None)
    assert parse_set_cookie("d=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT", now=now) == ("d", None)
    assert parse_set_cookie("e=x; Max-Age=60; Expires=Thu, 01 Jan 1970 00:00:00 GMT", now=now) == ("e", "x")
    assert parse_set_cookie("garbage", now=now) is None
    assert parse_set_cookie("f=y; Expires=not a date", now=now) == ("f", "y")

    updates: list[str] = []
    session = AccountSession(
        cookies="a=0; c=old", user_agent=AGENT, on_cookies=updates.append, clock=lambda: now
    )
    assert session.merge(["a=1", "c=; Max-Age=0", "n=new"]) is True
    assert session.merge(["a=1"]) is False
    assert updates == ["a=1; n=new"] and session.cookies == "a=1; n=new"
    assert session.anonymous and not AccountSession(cookies="_U=x", user_agent=AGENT).anonymous
