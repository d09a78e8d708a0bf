"""The two upstream transports behind one interface: the same tests, real sockets on loopback.

`plain` (requests + websocket-client) and `browser` (curl_cffi) must both carry the
account's identity, never follow a redirect, use the account's proxy whatever NO_PROXY
says, verify TLS against UPSTREAM_CA_BUNDLE, and tell a Cloudflare challenge apart; the
browser one must also keep the browser's header order and stay cooperative under gevent.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from service.accounts.identity import Identity, default_identity, resolve
from service.runtime.embedded_redis import free_port
from service.runtime.settings import load_settings
from tests.support.simulator import SimulatorProcess
from tests.support.socks_proxy import SocksProxy
from tests.support.stack import ROOT
from workers.upstream import Credentials, build_client
from workers.upstream.context import TurnInput
from workers.upstream.errors import ChallengeRequired, UpstreamError
from workers.upstream.events import Done
from workers.upstream.wire import build_transport

pytestmark = pytest.mark.timeout(60)
TRANSPORTS = ("plain", "browser")
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:147.0) Gecko/20100101 Firefox/147.0"


class Echo:
    """A raw HTTP/1.1 server: records each request head, answers with a fixed response after `delay`."""

    def __init__(self, response: bytes = b"", delay: float = 0.0) -> None:
        self.response = response or b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        self.delay = delay
        self.heads: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.heads.append(data.split(b"\r\n\r\n")[0].decode("latin-1"))
            time.sleep(self.delay)
            conn.sendall(self.response)

    def names(self, index: int = 0) -> list[str]:
        return [line.split(":")[0].lower() for line in self.heads[index].split("\r\n")[1:]]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.close()


@pytest.fixture(scope="module")
def tls_sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(tls=True) as process:
        yield process


def settings_for(sim_url: str, transport: str, **extra: str) -> Any:
    return load_settings(
        {
            "UPSTREAM": extra.pop("UPSTREAM", "copilot"),
            "COPILOT_URL": sim_url,
            "UPSTREAM_TRANSPORT": transport,
            "REDIS_URL": "redis://127.0.0.1:1/0",
            **extra,
        }
    )


def firefox() -> Identity:
    return resolve(FIREFOX, {}, "fr-FR,fr;q=0.9")[0]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_copilot_turn_carries_the_accounts_identity(sim: SimulatorProcess, kind: str) -> None:
    client = build_client(
        settings_for(sim.copilot_url, kind),
        Credentials(f"id-{kind}", cookies=f"_U=who-{kind}", identity=firefox()),
    )
    handle = client.create_conversation(account=f"id-{kind}")
    events = list(client.stream_turn(handle, TurnInput("hello"), should_stop=lambda: False))
    assert isinstance(events[-1], Done) and events[-1].text
    assert sim.accounts()[f"who-{kind}"]["user_agents"] == [FIREFOX]  # REST and the socket alike


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_bing_turn_runs_through_either_transport(sim: SimulatorProcess, kind: str) -> None:
    settings = settings_for(
        sim.copilot_url,
        kind,
        UPSTREAM="bing",
        BING_CREATE_URL=sim.create_url,
        BING_CHATHUB_URL=sim.chathub_url,
    )
    client = build_client(settings, Credentials("b", cookies=f"_U=bing-{kind}"))
    handle = client.create_conversation(account="b")
    events = list(client.stream_turn(handle, TurnInput("hello"), should_stop=lambda: False))
    assert isinstance(events[-1], Done) and events[-1].text
    assert sim.accounts()[f"bing-{kind}"]["user_agents"] == [default_identity().user_agent]


def test_the_browser_transport_sends_the_browsers_header_order_and_only_the_accounts_identity(
    echo: Echo,
) -> None:
    identity = default_identity()
    transport = build_transport("browser", identity=identity, key="order")
    reply = transport.request(
        "POST",
        f"http://127.0.0.1:{echo.port}/c/api/conversations",
        headers={"Accept": "application/json", "Cookie": "a=b", "User-Agent": "python-requests/2"},
        body=b"{}",
        timeout=5,
    )
    assert reply.status == 200 and reply.body == b"ok"
    head = echo.heads[0]
    assert "python" not in head and f"user-agent: {identity.user_agent}".lower() in head.lower()
    assert "h2c" not in head.lower()  # no browser upgrades plain http to HTTP/2
    names = echo.names()
    # libcurl-impersonate orders the headers it knows as the profile's browser does.
    order = ["sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "user-agent", "accept", "sec-fetch-site"]
    assert [names.index(name) for name in order] == sorted(names.index(name) for name in order)
    assert names.index("accept-language") < names.index("cookie")


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_redirects_are_never_followed(kind: str) -> None:
    server = Echo(
        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\n\r\n"
    )
    try:
        reply = build_transport(kind, key="redirect").request(
            "GET", f"http://127.0.0.1:{server.port}/", headers={"Cookie": "secret=1"}, timeout=5
        )
        assert reply.status == 302 and len(server.heads) == 1
    finally:
        server.close()


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_the_accounts_proxy_is_used_whatever_no_proxy_says(
    kind: str, echo: Echo, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "*")
    transport = build_transport(kind, proxy=f"http://127.0.0.1:{echo.port}", key=f"proxy-{kind}")
    reply = transport.request("GET", "http://upstream.invalid/c/api/user", headers={}, timeout=5)
    assert reply.status == 200
    assert echo.heads[0].startswith("GET http://upstream.invalid/c/api/user HTTP/1.1")


@pytest.mark.parametrize("scheme", ("socks5", "socks5h"))
@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_socks5_proxy_carries_every_connection_from_its_address(
    tls_sim: SimulatorProcess, kind: str, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "*")
    name = f"socks-{kind}-{scheme}"
    # socks5h: the proxy resolves the upstream's name. socks5: the gateway sends an address; the
    # upstream is named by its IPv4 one, since libcurl resolves "localhost" to ::1 first and the
    # proxy leaves from 127.0.0.2, which cannot reach ::1.
    base_url = tls_sim.https_url
    if scheme == "socks5":
        base_url = base_url.replace("localhost", "127.0.0.1")
    started = time.time()
    with SocksProxy(scheme=scheme, credentials=("op", "p@ss word")) as proxy:
        settings = settings_for(base_url, kind, UPSTREAM_CA_BUNDLE=tls_sim.ca_file)
        client = build_client(settings, Credentials(name, cookies=f"_U={name}", proxy=proxy.url))
        handle = client.create_conversation(account=name)
        events = list(client.stream_turn(handle, TurnInput("hello"), should_stop=lambda: False))
    assert isinstance(events[-1], Done) and events[-1].text
    target = base_url.removeprefix("https://")
    assert proxy.tunnels and {(t.target, t.authenticated, t.established) for t in proxy.tunnels} == {
        (target, True, True)
    }
    seen = [c for c in tls_sim.tls_connections() if c["at"] >= started]
    assert seen and {c["client"] for c in seen} == {"127.0.0.2"}  # REST and the websocket alike


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_socks5_proxy_refusing_the_credentials_is_an_upstream_error_without_them(
    tls_sim: SimulatorProcess, kind: str
) -> None:
    with SocksProxy(scheme="socks5h", credentials=("op", "right")) as proxy:
        wrong = proxy.url.replace(":right@", ":wrong-secret@")
        transport = build_transport(kind, proxy=wrong, ca_file=tls_sim.ca_file, key=f"socks-wrong-{kind}")
        with pytest.raises(UpstreamError) as rest:
            transport.request("GET", f"{tls_sim.https_url}/c/api/user", headers={}, timeout=5, retries=0)
        with pytest.raises(UpstreamError) as upgrade:
            transport.socket().open(f"{tls_sim.wss_url}/c/api/chat?api-version=2", headers={}, timeout=5)
    assert proxy.tunnels and not any(t.established for t in proxy.tunnels)
    for caught in (rest, upgrade):
        assert "wrong-secret" not in str(caught.value) and caught.value.__cause__ is None


def test_the_plain_websocket_refuses_an_https_proxy_rather_than_speak_to_it_in_clear(echo: Echo) -> None:
    transport = build_transport("plain", proxy=f"https://op:secret@127.0.0.1:{echo.port}", key="https-proxy")
    with pytest.raises(UpstreamError, match="through an https:// proxy") as caught:
        transport.socket().open("wss://upstream.invalid/c/api/chat?api-version=2", headers={}, timeout=5)
    assert echo.heads == [] and "secret" not in str(caught.value)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_tls_is_verified_against_the_defaults_plus_the_ca_bundle(
    tls_sim: SimulatorProcess, kind: str
) -> None:
    url = f"{tls_sim.https_url}/c/api/user"
    with pytest.raises(UpstreamError, match="cannot reach"):
        build_transport(kind, key=f"noca-{kind}").request("GET", url, headers={}, timeout=5, retries=0)
    reply = build_transport(kind, ca_file=tls_sim.ca_file, key=f"ca-{kind}").request(
        "GET", url, headers={}, timeout=5
    )
    assert reply.status in (200, 401)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_cloudflare_challenge_is_told_on_rest_and_on_the_upgrade(
    tls_sim: SimulatorProcess, kind: str
) -> None:
    tls_sim.configure_cloudflare(enabled=True, require_clearance=False)
    try:
        # plain: not a browser's TLS; browser: a Firefox UA on a Chrome fingerprint.
        identity = Identity(user_agent=FIREFOX, impersonate="chrome146")
        transport = build_transport(kind, identity=identity, ca_file=tls_sim.ca_file, key=f"cf-{kind}")
        with pytest.raises(ChallengeRequired, match="open the upstream in the browser whose identity"):
            settings = settings_for(tls_sim.https_url, kind)
            client = build_client(settings, Credentials("cf", cookies="_U=cf"), transport=transport)
            client.create_conversation(account="cf")
        socket_ = transport.socket()
        with pytest.raises(ChallengeRequired, match="websocket upgrade"):
            socket_.open(
                f"{tls_sim.wss_url}/c/api/chat?api-version=2", headers={"Cookie": "_U=cf"}, timeout=5
            )
        assert tls_sim.cloudflare()["last_reason"] in ("not-a-browser", "ua-mismatch")
    finally:
        tls_sim.configure_cloudflare(enabled=False)


def test_errors_never_carry_the_urls_query(kind: str = "browser") -> None:
    url = f"http://127.0.0.1:{free_port()}/c/api/chat?accessToken=SECRET-TOKEN"
    with pytest.raises(UpstreamError) as caught:
        build_transport(kind, key="errors").request("GET", url, headers={}, timeout=2, retries=0)
    assert "SECRET" not in str(caught.value) and caught.value.__cause__ is None
    with pytest.raises(UpstreamError) as refused:
        build_transport(kind, key="errors").socket().open(url.replace("http", "ws"), headers={}, timeout=2)
    assert "SECRET" not in str(refused.value)


def test_two_turns_interleave_under_gevent(sim: SimulatorProcess) -> None:
    sim.configure(token_delay=0.03)
    slow = Echo(delay=0.6)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.support.interleave_probe",
                f"http://127.0.0.1:{slow.port}/",
                sim.copilot_url,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        slow.close()
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # Two calls at once take about as long as one: neither waited for the other.
    assert figures["rest_two"] < figures["rest_one"] * 1.5, figures
    assert figures["turn_two"] < figures["turn_one"] * 1.5, figures
    # And the loop kept running meanwhile (a blocked loop would stall for a whole 0.6 s call).
    assert figures["max_gap"] < 0.25, figures


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_socket_outlives_its_handshake_timeout_and_reports_a_close(kind: str) -> None:
    from tests.support.scripted_ws import ScriptedServer
    from workers.upstream.errors import Interrupted

    def script(ws: Any) -> None:
        time.sleep(1.2)
        ws.send("late")
        ws.close()

    server = ScriptedServer(script)
    socket_ = build_transport(kind, key=f"late-{kind}").socket()
    try:
        socket_.open(f"ws://127.0.0.1:{server.port}/c/api/chat", headers={}, timeout=0.5)
        assert socket_.recv(0.2) is None  # nothing yet: None in time, not an error
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = socket_.recv(0.5)
        assert message == "late"
        with pytest.raises(Interrupted):
            for _ in range(10):
                socket_.recv(0.5)
    finally:
        socket_.close()
        server.stop()
