"""The simulator's per-account model (limits, faults, counters), over real loopback sockets.

Raw clients as in `test_simulator` (ChatHub) and `test_simulator_copilot` (Copilot), so
these tests check the simulator against upstream-protocols.md B5a and the dialects'
error shapes, not against the gateway's clients.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
import requests
import websocket

from tests.simulator.accounts import ANONYMOUS, account_of
from tests.support.simulator import SimulatorProcess
from tests.support.stack import wait_for
from tests.unit import test_simulator as hub
from tests.unit import test_simulator_copilot as cop


def hub_socket(sim: SimulatorProcess, conv: hub.Conv, cookie: str) -> websocket.WebSocket:
    """A ChatHub socket carrying the account's cookies, as real clients send them (A5), handshaken."""
    url = f"{sim.chathub_url}?sec_access_token={hub.quote(conv.encrypted, safe='')}"
    ws = websocket.create_connection(url, timeout=5, origin="https://www.bing.com", cookie=cookie)
    ws.send(hub.frame({"protocol": "json", "version": 1}))
    assert ws.recv() == "{}" + hub.RS
    return ws


def hub_turn(sim: SimulatorProcess, conv: hub.Conv, cookie: str, text: str = "hi") -> hub.Reply:
    """One ChatHub turn on its own socket, as `cookie`'s account."""
    ws = hub_socket(sim, conv, cookie)
    try:
        ws.send(hub.frame(hub.invocation(conv, text)))
        reply = hub.read(ws)
    finally:
        ws.close()
    if reply.ending == "type3" and reply.result["value"] == "Success":
        conv.turns += 1
    return reply


def refused_upgrade(connect: Any) -> websocket.WebSocketBadStatusException:
    """The exception a refused websocket upgrade raises."""
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        connect()
    return caught.value


def account(sim: SimulatorProcess, name: str) -> dict[str, Any]:
    """One account's counters."""
    return sim.accounts()[name]


# -- identity --------------------------------------------------------------------------------


def test_identity_rule_token_then_u_then_anon_cookie() -> None:
    jar = {"_U": "acct-1", "__Host-copilot-anon": "xyz", "MUID": "m"}

    assert account_of(jar, access_token="tok") == "tok"
    assert account_of(jar) == "acct-1"
    assert account_of({"__Host-copilot-anon": "xyz"}) == "anon:xyz"
    assert account_of({"MUID": "m"}) == account_of({}, access_token="") == ANONYMOUS


# -- concurrency: a 502 at the upgrade past max_concurrent (B5a) -----------------------------


def test_chathub_in_flight_limit_is_per_account(sim: SimulatorProcess) -> None:
    sim.configure_limits(max_concurrent=2)
    convs = [hub.create(sim, "_U=acct-a") for _ in range(3)]
    hung = [hub_socket(sim, conv, "_U=acct-a") for conv in convs[:2]]
    for ws, conv in zip(hung, convs[:2], strict=True):
        ws.send(hub.frame(hub.invocation(conv, "[sim:hang] hi")))

    refused = refused_upgrade(lambda: hub_socket(sim, convs[2], "_U=acct-a"))
    other = hub_turn(sim, hub.create(sim, "_U=acct-b"), "_U=acct-b")
    hung[0].close()
    wait_for(lambda: account(sim, "acct-a")["in_flight"] == 1)
    after = hub_turn(sim, convs[2], "_U=acct-a")
    hung[1].close()

    assert refused.status_code == 502
    assert other.result["value"] == "Success" and after.result["value"] == "Success"
    stats = account(sim, "acct-a")
    assert (stats["max_in_flight"], stats["rejections"], stats["max_concurrent"]) == (2, {"overload": 1}, 2)
    assert account(sim, "acct-b")["rejections"] == {}


def test_copilot_in_flight_limit_and_the_slot_frees_when_the_turn_ends(sim: SimulatorProcess) -> None:
    sim.configure_limits(max_concurrent=1)
    conversation_id = cop.create(sim, "_U=acct-c")
    first = cop.connect(sim, "_U=acct-c")
    cop.emit(first, *cop.PREAMBLE, cop.send_event(conversation_id, "[sim:hang] hi"))
    wait_for(lambda: sim.stats()["copilot"]["invocations"] == 1)

    refused = refused_upgrade(lambda: cop.connect(sim, "_U=acct-c"))
    elsewhere = cop.turn(sim, cop.create(sim, "_U=acct-d"), "hi", "_U=acct-d")
    first.close()
    wait_for(lambda: account(sim, "acct-c")["in_flight"] == 0)
    # A finished turn gives its slot back even while its socket lingers open.
    lingering = cop.connect(sim, "_U=acct-c")
    cop.emit(lingering, *cop.PREAMBLE, cop.send_event(conversation_id, "again"))
    assert cop.read(lingering).of("suggestedFollowups")
    wait_for(lambda: account(sim, "acct-c")["in_flight"] == 0)
    answer = cop.turn(sim, conversation_id, "third", "_U=acct-c")
    lingering.close()

    assert refused.status_code == 502
    assert elsewhere.text and answer.text
    assert account(sim, "acct-c")["rejections"] == {"overload": 1}
    assert account(sim, "acct-c")["max_in_flight"] == 1


# -- rate: the dialect's throttle past rpm turns a minute -----------------------------------


def test_chathub_rate_limit_answers_throttled_and_recovers_after_a_minute(sim: SimulatorProcess) -> None:
    sim.configure_limits(rpm=2)
    conv = hub.create(sim, "_U=acct-a")
    replies = [hub_turn(sim, conv, "_U=acct-a") for _ in range(3)]
    other = hub_turn(sim, hub.create(sim, "_U=acct-b"), "_U=acct-b")
    sim.configure(clock_offset=61)
    later = hub_turn(sim, conv, "_U=acct-a")

    assert [reply.result["value"] for reply in replies] == ["Success", "Success", "Throttled"]
    assert replies[2].result == {
        "value": "Throttled",
        "message": "Request is throttled.",
        "error": "Request is throttled.",
        "serviceVersion": replies[2].result["serviceVersion"],
    }
    assert other.result["value"] == "Success" and later.result["value"] == "Success"
    stats = account(sim, "acct-a")
    assert (stats["turns"], stats["turns_last_minute"], stats["rejections"]) == (3, 1, {"rate": 1})
    assert stats["admitted"] == ["hi"] * 3  # the throttled turn never reached the account


def test_copilot_rate_limit_says_when_to_come_back_and_keeps_its_word(sim: SimulatorProcess) -> None:
    sim.configure_limits(rpm=2)
    conversation_id = cop.create(sim, "_U=acct-c")
    started = time.time()
    answers = [cop.turn(sim, conversation_id, f"turn {n}", "_U=acct-c") for n in range(2)]
    throttled = cop.turn(sim, conversation_id, "one too many", "_U=acct-c")

    error, challenge = throttled.messages[-1]
    available = dt.datetime.fromisoformat(error["errorDetail"]["nextAvailableAt"]).timestamp()
    sim.configure(clock_offset=available - time.time() - 1.5)  # before it (it is rounded up): throttled
    early = cop.turn(sim, conversation_id, "early", "_U=acct-c")
    sim.configure(clock_offset=available - time.time() + 0.01)  # at nextAvailableAt: admitted
    on_time = cop.turn(sim, conversation_id, "on time", "_U=acct-c")

    assert all(answer.of("done") for answer in answers)
    assert error["event"] == "chatMessageError" and error["errorCode"] == "throttled"
    assert error["errorDetail"]["type"] == "throttled"
    assert started + 59 <= available <= time.time() + 61
    assert challenge == {"event": "challenge", "method": None, "parameter": None, "id": "0.0002"}
    assert early.of("chatMessageError") and on_time.of("done")
    assert account(sim, "acct-c")["rejections"] == {"rate": 2}


def test_a_turn_resent_after_a_solved_challenge_counts_once(sim: SimulatorProcess) -> None:
    sim.configure_limits(rpm=1)
    sim.configure(hashcash_difficulty=4)

    _, reply, _ = cop.challenged_turn(
        sim, "[sim:hashcash] hi", lambda c: cop.solve_hashcash(c["parameter"], "bits")
    )

    assert reply.of("done")
    assert account(sim, "user-one")["turns"] == 1 and account(sim, "user-one")["rejections"] == {}


# -- faults ----------------------------------------------------------------------------------

HUB_FAULTS = {
    "captcha": ("CaptchaChallenge", "User needs to solve CAPTCHA to continue."),
    "throttled": ("Throttled", "Request is throttled."),
    "unauthorized": ("UnauthorizedRequest", "Sorry, you need to login first to access this service."),
    "region": ("Forbidden", "Sorry, looks like your network settings are preventing access to this feature."),
}


@pytest.mark.parametrize("fault", sorted(HUB_FAULTS))
def test_chathub_fault_fails_turns_and_the_create_probe_until_cleared(
    sim: SimulatorProcess, fault: str
) -> None:
    conv = hub.create(sim, "_U=acct-a")
    sim.set_account("acct-a", fault=fault)

    reply = hub_turn(sim, conv, "_U=acct-a")
    probe = requests.get(sim.create_url, headers={"Cookie": "_U=acct-a"}, timeout=5)
    other = hub_turn(sim, hub.create(sim, "_U=acct-b"), "_U=acct-b")
    sim.set_account("acct-a", fault=None)
    cleared = hub_turn(sim, conv, "_U=acct-a")

    value, message = HUB_FAULTS[fault]
    assert (reply.result["value"], reply.result["message"]) == (value, message)
    if fault == "throttled":
        assert probe.status_code == 404  # create's rate-limit answer (A1.1)
    else:
        assert probe.status_code == 200 and probe.json()["result"] == {"value": value, "message": message}
    assert other.result["value"] == "Success" and cleared.result["value"] == "Success"
    assert account(sim, "acct-a")["rejections"] == {fault: 2}


def test_chathub_cloudflare_fault_refuses_create_and_upgrade_with_the_challenge_page(
    sim: SimulatorProcess,
) -> None:
    conv = hub.create(sim, "_U=acct-a")
    sim.set_account("acct-a", fault="cloudflare")

    probe = requests.get(sim.create_url, headers={"Cookie": "_U=acct-a"}, timeout=5)
    refused = refused_upgrade(lambda: hub_socket(sim, conv, "_U=acct-a"))

    assert probe.status_code == 403 and probe.headers["cf-mitigated"] == "challenge"
    assert "Just a moment" in probe.text
    assert refused.status_code == 403
    assert account(sim, "acct-a")["rejections"] == {"cloudflare": 2}


def copilot_probe(sim: SimulatorProcess, cookie: str) -> requests.Response:
    """`GET /c/api/user`, the Copilot account probe."""
    return requests.get(f"{sim.copilot_url}/c/api/user", headers={"Cookie": cookie}, timeout=5)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("captcha", {"event": "challenge", "method": None, "parameter": None, "id": "0.0001"}),
        ("region", {"event": "error", "errorCode": "chat-service-unavailable"}),
    ],
)
def test_copilot_fault_answers_the_turn_and_the_probe(
    sim: SimulatorProcess, fault: str, expected: dict[str, Any]
) -> None:
    conversation_id = cop.create(sim, "_U=acct-c")
    sim.set_account("acct-c", fault=fault)

    reply = cop.turn(sim, conversation_id, "hi", "_U=acct-c")
    probe = copilot_probe(sim, "_U=acct-c")
    sim.set_account("acct-c", fault=None)
    cleared = cop.turn(sim, conversation_id, "hi", "_U=acct-c")

    assert reply.events == [expected]
    assert probe.status_code == 403
    if fault == "captcha":
        assert probe.headers["cf-mitigated"] == "challenge"
    else:
        assert probe.json()["errorCode"] == "chat-service-unavailable"
    assert copilot_probe(sim, "_U=acct-c").status_code == 200
    assert cleared.of("done")


def test_copilot_cloudflare_fault_gates_rest_and_challenges_the_chat(sim: SimulatorProcess) -> None:
    conversation_id = cop.create(sim, "_U=acct-c")
    sim.set_account("acct-c", fault="cloudflare")

    create = requests.post(
        f"{sim.copilot_url}/c/api/conversations", headers={"Cookie": "_U=acct-c"}, timeout=5
    )
    landing = requests.get(f"{sim.copilot_url}/", headers={"Cookie": "_U=acct-c"}, timeout=5)
    reply = cop.turn(sim, conversation_id, "hi", "_U=acct-c")

    assert create.status_code == landing.status_code == copilot_probe(sim, "_U=acct-c").status_code == 403
    assert create.headers["cf-mitigated"] == "challenge"
    [challenge] = reply.events
    assert (
        challenge["event"] == "challenge" and challenge["method"] == "cloudflare" and challenge["parameter"]
    )


def test_copilot_unauthorized_fault_is_a_401_at_the_upgrade_and_on_rest(sim: SimulatorProcess) -> None:
    sim.set_account("tok-1", fault="unauthorized")

    refused = refused_upgrade(lambda: cop.connect(sim, "", accessToken="tok-1"))
    bearer = requests.get(
        f"{sim.copilot_url}/c/api/user", headers={"Authorization": "Bearer tok-1"}, timeout=5
    )
    cookie_only = copilot_probe(sim, "_U=acct-c")  # another account of the same client is fine

    assert refused.status_code == 401 and bearer.status_code == 401 and cookie_only.status_code == 200
    assert account(sim, "tok-1")["rejections"] == {"unauthorized": 2}


def test_copilot_throttled_fault_carries_next_available_at_and_lapses_by_itself(
    sim: SimulatorProcess,
) -> None:
    conversation_id = cop.create(sim, "_U=acct-c")
    until = int(time.time()) + 300
    sim.set_account("acct-c", fault="throttled", next_available_at=until)

    reply = cop.turn(sim, conversation_id, "hi", "_U=acct-c")
    start_url = f"{sim.copilot_url}/c/api/start"
    start = requests.post(
        start_url, json={"startNewConversation": True}, headers={"Cookie": "_U=acct-c"}, timeout=5
    )
    sim.configure(clock_offset=301)
    later = cop.turn(sim, conversation_id, "hi", "_U=acct-c")

    error = reply.of("chatMessageError")[0]
    assert dt.datetime.fromisoformat(error["errorDetail"]["nextAvailableAt"]).timestamp() == until
    assert start.json()["isBlocked"] is True
    assert dt.datetime.fromisoformat(start.json()["banExpiresAt"]).timestamp() == until
    assert later.of("done") and account(sim, "acct-c")["fault"] is None


# -- control API and counters ----------------------------------------------------------------


def test_accounts_counters_in_stats_and_reset_clears_them(sim: SimulatorProcess) -> None:
    conversation_id = cop.create(sim, "_U=acct-c")
    cop.turn(sim, conversation_id, "hi", "_U=acct-c")
    cop.turn(sim, conversation_id, "again", "_U=acct-c")
    sim.set_account("acct-e", fault="captcha", rpm=3)

    view = sim.accounts()
    stats = sim.stats()
    sim.reset()

    sockets = view["acct-c"].pop("sockets")
    assert [(s["supportedFeatures"], s["supportedCards"], s["userAgent"]) for s in sockets] == [
        (["partial-generated-images"], ["image"], None)  # cop.PREAMBLE's setOptions; no UA on the socket
    ] * 2
    assert len({s["clientSessionId"] for s in sockets}) == 2  # one per socket, from its URL
    assert view["acct-c"] == {
        "turns": 2,
        "turns_last_minute": 2,
        "in_flight": 0,
        "max_in_flight": 1,
        "rejections": {},
        "user_agents": [requests.utils.default_user_agent()],  # websocket-client sends none
        "admitted": ["hi", "again"],  # in the order the turns reached the account
        "fault": None,
        "next_available_at": None,
        "max_concurrent": 0,
        "rpm": 0,
    }
    assert (view["acct-e"]["fault"], view["acct-e"]["rpm"]) == ("captcha", 3)
    assert stats["accounts"]["acct-c"]["sockets"] == sockets
    assert {name: {**a, "sockets": []} for name, a in stats["accounts"].items()} == {
        name: {**a, "sockets": []} for name, a in view.items()
    }
    assert sim.accounts() == {}


@pytest.mark.parametrize(
    "body",
    [
        {"fault": "sleepy"},
        {"rpm": -1},
        {"max_concurrent": "many"},
        {"bogus": 1},
        {"next_available_at": "soon"},
    ],
)
def test_bad_account_settings_are_400_and_change_nothing(sim: SimulatorProcess, body: dict[str, Any]) -> None:
    response = requests.post(
        f"{sim.http_url}/_sim/accounts/acct-x", json={"fault": "region", **body}, timeout=5
    )

    assert response.status_code == 400 and response.json()["error"]
    assert "acct-x" not in sim.accounts()


def test_limits_are_configurable_and_none_means_unlimited(sim: SimulatorProcess) -> None:
    assert sim.configure_limits(max_concurrent=4, rpm=15)["account_rpm"] == 15
    response = requests.post(f"{sim.http_url}/_sim/config", json={"account_rpm": None}, timeout=5)
    assert response.json()["account_rpm"] == 0
    assert (
        requests.post(f"{sim.http_url}/_sim/config", json={"account_rpm": -2}, timeout=5).status_code == 400
    )
    sim.reset()
    assert requests.get(f"{sim.http_url}/_sim/config", timeout=5).json()["account_max_concurrent"] == 0


def test_cli_defaults_are_the_b5a_figures() -> None:
    from tests.simulator.__main__ import parse_args

    args = parse_args([])

    assert (args.account_max_concurrent, args.account_rpm) == (4, 15)


def test_a_reset_while_a_socket_is_open_keeps_its_slot_counted(sim: SimulatorProcess) -> None:
    sim.configure_limits(max_concurrent=1)
    conversation_id = cop.create(sim, "_U=acct-c")
    ws = cop.connect(sim, "_U=acct-c")
    cop.emit(ws, *cop.PREAMBLE, cop.send_event(conversation_id, "[sim:hang] hi"))
    wait_for(lambda: account(sim, "acct-c")["in_flight"] == 1)

    sim.reset()
    held = account(sim, "acct-c")["in_flight"]
    ws.close()
    wait_for(lambda: account(sim, "acct-c")["in_flight"] == 0)

    assert held == 1
    assert json.dumps(sim.accounts()["acct-c"]["rejections"]) == "{}"
