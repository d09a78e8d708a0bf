"""Copilot 2026 details in the simulator (upstream-protocols.md B5b), over real loopback sockets.

Challenge ids count up per socket in the `"0.0001"` form; a `method: null` challenge is a
human check: answered with an empty token it draws `invalid-event`, unanswered the socket is
silent until `copilot_human_check_silence` runs out; each socket's `clientSessionId` and
`setOptions` lists are listed with its account.
"""

from __future__ import annotations

import time

from tests.simulator import challenges
from tests.support.simulator import SimulatorProcess
from tests.unit import test_simulator_copilot as cop

FEATURES = [
    "partial-generated-images",
    "composer-prefill-conversation-action",
    "composer-send-conversation-action-v2",
    "side-by-side-comparison",
    "session-duration-nudge",
    "compose-email-html",
]
"""The browser's `supportedFeatures` in WCA #20's capture (B5b)."""


def test_challenge_ids_count_up_per_socket(sim: SimulatorProcess) -> None:
    sim.configure(hashcash_difficulty=1)
    conversation_id = cop.create(sim)
    ws = cop.connect(sim)
    ids: list[str] = []
    for text in ("[sim:arithmetic] one", "[sim:hashcash] two"):
        sent = cop.send_event(conversation_id, text)
        cop.emit(ws, *(cop.PREAMBLE if not ids else ()), sent)
        challenge = cop.read(ws).events[-1]
        ids.append(challenge["id"])
        if challenge["method"] == "copilot":
            token = str(challenges.arithmetic_answer(int(challenge["parameter"])))
        else:
            token = cop.solve_hashcash(challenge["parameter"], "bits")
        answer = {"event": "challengeResponse", "token": token, "method": challenge["method"], "id": ids[-1]}
        cop.emit(ws, answer, sent)
        assert cop.read(ws).names[0] == "received"
    ws.close()
    assert ids == ["0.0001", "0.0002"]


def test_human_check_answered_with_an_empty_token_is_invalid(sim: SimulatorProcess) -> None:
    conversation_id = cop.create(sim)
    ws = cop.connect(sim)
    cop.emit(ws, cop.send_event(conversation_id, "[sim:captcha] hi"))
    challenge = cop.read(ws).events[-1]
    assert challenge == {"event": "challenge", "method": None, "parameter": None, "id": "0.0001"}
    cop.emit(ws, {"event": "challengeResponse", "token": "", "method": None, "id": "0.0001"})
    assert cop.read(ws).events == [cop.INVALID_EVENT]
    ws.close()


def test_unanswered_human_check_is_silent_then_closes(sim: SimulatorProcess) -> None:
    sim.configure(linger=0.2, copilot_human_check_silence=1.5)
    conversation_id = cop.create(sim)
    ws = cop.connect(sim)
    cop.emit(ws, cop.send_event(conversation_id, "[sim:captcha] hi"))
    assert cop.read(ws).events[-1]["method"] is None
    before = time.monotonic()
    silence = cop.read(ws, timeout=1.0)
    assert (silence.ending, silence.messages) == ("timeout", [])  # well past linger: nothing, no close
    assert cop.read(ws, timeout=3).ending == "close"
    assert time.monotonic() - before >= 1.4


def test_sockets_are_listed_with_their_session_id_and_options(sim: SimulatorProcess) -> None:
    conversation_id = cop.create(sim, "_U=acct-opt")
    ws = cop.connect(sim, "_U=acct-opt", clientSessionId="8c0e2f4e-1111-4c6b-9c7e-1d2f3a4b5c6d")
    options = {"event": "setOptions", "supportedFeatures": FEATURES, "supportedCards": ["quiz", "flashcard"]}
    cop.emit(ws, options, cop.send_event(conversation_id, "hi"))
    assert cop.read(ws).ending == "until"
    ws.close()
    (socket,) = sim.accounts()["acct-opt"]["sockets"]
    assert socket == {
        "clientSessionId": "8c0e2f4e-1111-4c6b-9c7e-1d2f3a4b5c6d",
        "supportedFeatures": FEATURES,
        "supportedCards": ["quiz", "flashcard"],
        "userAgent": None,
    }
    (turn,) = sim.conversation(conversation_id)["turns"]
    assert turn["clientSessionId"] == socket["clientSessionId"] and turn["setOptions"] == options


def test_a_client_session_id_reused_by_a_later_socket_is_a_violation_not_a_refusal(
    sim: SimulatorProcess,
) -> None:
    conversation_id = cop.create(sim, "_U=acct-reuse")
    session_id = "8c0e2f4e-2222-4c6b-9c7e-1d2f3a4b5c6d"
    for text in ("one", "two"):
        ws = cop.connect(sim, "_U=acct-reuse", clientSessionId=session_id)
        cop.emit(ws, *cop.PREAMBLE, cop.send_event(conversation_id, text))
        assert "done" in cop.read(ws).names  # served either way: the reference says no server checks it
        ws.close()
    assert [v for v in cop.violations(sim) if "clientSessionId" in v] == [
        "copilot: clientSessionId reused from an earlier socket of this account (new per socket, B1.2)"
    ]
