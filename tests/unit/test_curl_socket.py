"""The lean curl_cffi websocket (`workers.upstream.curl_socket`) against the real simulator.

Answers of every frame size still arrive whole through the shared receive buffer (a frame
larger than the buffer is read in pieces and reassembled by curl_cffi, as before), two
turns read alternately on two sockets never see each other's bytes, and the private
curl_cffi attributes the module relies on still exist in the pinned version.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from curl_cffi.requests import WebSocket

from service.runtime.settings import Settings, load_settings
from tests.support.simulator import SimulatorProcess
from workers.upstream import Credentials, build_client, curl_socket
from workers.upstream.context import TurnInput
from workers.upstream.events import Done, Event

pytestmark = pytest.mark.timeout(60)


def _settings(sim: SimulatorProcess) -> Settings:
    return load_settings(
        {
            "UPSTREAM": "copilot",
            "COPILOT_URL": sim.copilot_url,
            "UPSTREAM_TRANSPORT": "browser",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "UPSTREAM_KEEP_SOCKETS": "0",
        }
    )


def _turn(sim: SimulatorProcess, name: str, text: str) -> Iterator[Event]:
    settings, account = _settings(sim), Credentials(name, cookies=f"_U={name}")
    handle = build_client(settings, account).create_conversation(account=name)
    return build_client(settings, account).stream_turn(handle, TurnInput(text), should_stop=lambda: False)


def test_the_pinned_curl_cffi_still_has_what_the_lean_socket_touches() -> None:
    ws = curl_socket.lean_websocket()
    for name in ("_sock_fd", "_read_selector", "_write_selector"):
        assert name in WebSocket.__slots__ or hasattr(ws, name), name
    curl = ws.curl
    for name in ("_curl", "_ws_recv_n_recv", "_ws_recv_p_frame", "_check_error"):
        assert hasattr(curl, name), name
    assert curl._ws_recv_buffer is None  # never allocated: the shared buffer is lent per read


@pytest.mark.parametrize("words", [1, 2_000, 40_000])  # one frame of ~10 B, ~12 KiB, ~270 KiB
def test_an_answer_in_one_frame_of_any_size_arrives_whole(sim: SimulatorProcess, words: int) -> None:
    sim.configure(words_per_update=10**6)  # the whole answer in one appendText frame
    events = list(_turn(sim, f"whole-{words}", f"[sim:long={words}] go"))
    assert isinstance(events[-1], Done)
    assert events[-1].text == " ".join(f"w{i}" for i in range(1, words + 1))
    assert not curl_socket._BUFFERS or len(curl_socket._BUFFERS) <= 2  # lent and given back


def test_two_turns_read_alternately_never_mix(sim: SimulatorProcess) -> None:
    sim.configure(words_per_update=1)
    first = _turn(sim, "mix-a", "alpha " * 40)
    second = _turn(sim, "mix-b", "beta " * 40)
    ends: dict[str, Done] = {}
    pending = {"a": first, "b": second}
    while pending:
        for key, events in list(pending.items()):
            event = next(events, None)
            if event is None:
                del pending[key]
            elif isinstance(event, Done):
                ends[key] = event
    assert "beta" not in ends["a"].text and ends["a"].text.count("alpha") == 40
    assert "alpha" not in ends["b"].text and ends["b"].text.count("beta") == 40
