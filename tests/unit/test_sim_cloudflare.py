"""The simulator's TLS port and Cloudflare gate, against the real simulator process over real sockets.

Clients: `requests` and `websocket-client` (Python's `ssl`: not a browser) and curl_cffi
with browser profiles, exactly the two transports the gateway can use. The gate's verdicts
are read back from `GET /_sim/cloudflare`, so each challenge is checked for its reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket
from curl_cffi import CurlError
from curl_cffi import requests as curl_requests

from tests.support.connect_proxy import ConnectProxy
from tests.support.simulator import SimulatorProcess

ORIGIN = "https://copilot.microsoft.com"
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/146.0.0.0 Safari/537.36"
)
CHROME_HINTS = {
    "sec-ch-ua": '"Chromium";v="146", "Not-A.Brand";v="24", "Google Chrome";v="146"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Windows"',
}
CHROME = {"User-Agent": CHROME_UA, **CHROME_HINTS}
FIREFOX_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:147.0) Gecko/20100101 Firefox/147.0"
PASS_PATH = "/cdn-cgi/challenge-platform/sim-pass"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(tls=True) as process:
        yield process


@pytest.fixture(autouse=True)
def fresh(sim: SimulatorProcess) -> None:
    sim.reset()


def browser(sim: SimulatorProcess, target: str = "chrome146", **kwargs: Any) -> curl_requests.Session[Any]:
    """A curl_cffi session impersonating `target` that trusts the simulator's CA."""
    # curl_cffi types `verify` bool but takes a CA path too (it reads REQUESTS_CA_BUNDLE into it)
    return curl_requests.Session(impersonate=target, verify=sim.ca_file, timeout=10, **kwargs)  # type: ignore[arg-type]


def assert_challenge(response: Any) -> None:
    assert response.status_code == 403
    assert response.headers["cf-mitigated"] == "challenge"
    assert response.headers["content-type"].startswith("text/html")
    assert "Just a moment..." in response.text


def last(sim: SimulatorProcess) -> dict[str, Any]:
    """The gate's newest verdict."""
    return dict(sim.cloudflare()["events"][-1])


def test_tls_port_serves_both_dialects_and_records_hellos(sim: SimulatorProcess) -> None:
    assert sim.https_url.startswith("https://localhost:") and sim.ca_file.endswith("ca.pem")
    assert requests.get(f"{sim.https_url}/", verify=sim.ca_file, timeout=5).status_code == 200
    created = requests.get(f"{sim.https_url}/turing/conversation/create", verify=sim.ca_file, timeout=5)
    assert created.json()["result"]["value"] == "Success"
    assert browser(sim).get(f"{sim.https_url}/").status_code == 200
    *_, python, chrome = sim.tls_connections()
    assert python["alpn"] == ["http/1.1"] and python["client"] == "127.0.0.1" and python["sni"] == "localhost"
    assert python["ja4"].startswith("t13d") and "_8daaf6152771_" not in python["ja4"]
    assert chrome["ja4"] == "t13d1516h2_8daaf6152771_d8a2da3f94cd" and chrome["alpn"] == ["h2", "http/1.1"]
    assert len(chrome["ja3_hash"]) == 32 and chrome["ja3"].startswith("771,")
    sim.reset()
    assert sim.tls_connections() == []


def test_tls_port_refuses_what_is_not_tls(sim: SimulatorProcess) -> None:
    plain = sim.https_url.replace("https://", "http://", 1)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{plain}/_sim/health", timeout=5)
    assert requests.get(f"{sim.https_url}/_sim/health", verify=sim.ca_file, timeout=5).json() == {"ok": True}
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{sim.https_url}/", timeout=5)  # the test CA is not trusted by default


def test_gate_off_is_todays_behaviour(sim: SimulatorProcess) -> None:
    assert requests.get(f"{sim.http_url}/", timeout=5).status_code == 200
    assert (
        requests.post(f"{sim.https_url}/c/api/start", json={}, verify=sim.ca_file, timeout=5).status_code
        == 200
    )
    assert sim.cloudflare()["challenged"] == 0 and sim.cloudflare()["enabled"] is False


def test_python_client_is_challenged_as_not_a_browser(sim: SimulatorProcess) -> None:
    sim.configure_cloudflare(enabled=True)
    response = requests.get(f"{sim.https_url}/", headers=CHROME, verify=sim.ca_file, timeout=5)
    assert_challenge(response)
    assert last(sim)["reason"] == "not-a-browser" and "no known browser" in last(sim)["detail"]
    assert_challenge(requests.get(f"{sim.http_url}/c/api/user", timeout=5))  # plain HTTP
    assert last(sim)["detail"] == "plain HTTP (no TLS)"
    # The control API stays open on both ports.
    assert requests.get(f"{sim.http_url}/_sim/health", timeout=5).json() == {"ok": True}
    counts = sim.cloudflare()
    assert (counts["challenged"], counts["passed"], counts["last_reason"]) == (2, 0, "not-a-browser")


def test_browser_with_matching_ua_and_hints_passes(sim: SimulatorProcess) -> None:
    sim.configure_cloudflare(enabled=True)
    assert browser(sim).get(f"{sim.https_url}/").status_code == 200  # curl_cffi's own macOS identity
    assert browser(sim).post(f"{sim.https_url}/c/api/start", json={}, headers=CHROME).status_code == 200
    edge = {**CHROME, "User-Agent": f"{CHROME_UA} Edg/146.0.3856.62"}
    edge["sec-ch-ua"] = '"Microsoft Edge";v="146", "Chromium";v="146", "Not?A_Brand";v="99"'
    assert browser(sim).get(f"{sim.https_url}/", headers=edge).status_code == 200
    assert browser(sim, "firefox147").get(f"{sim.https_url}/").status_code == 200
    assert browser(sim, "safari260").get(f"{sim.https_url}/").status_code == 200
    counts = sim.cloudflare()
    assert (counts["challenged"], counts["passed"]) == (0, 5)
    assert counts["by_account"]["anonymous"]["passed"] == 5


@pytest.mark.parametrize(
    ("target", "headers", "reason", "detail"),
    [
        ("chrome146", {"User-Agent": FIREFOX_UA}, "ua-mismatch", "says firefox, TLS says chromium"),
        ("firefox147", {"User-Agent": CHROME_UA}, "ua-mismatch", "says chrome, TLS says firefox"),
        ("chrome146", {"User-Agent": CHROME_UA.replace("146", "110")}, "ua-mismatch", "chrome 110"),
        ("chrome146", {"User-Agent": "python-requests/2.34.2"}, "ua-mismatch", "names no browser"),
        ("chrome146", {**CHROME, "sec-ch-ua": '"Chromium";v="120"'}, "hints-mismatch", "Chromium 120"),
        ("chrome146", {**CHROME, "sec-ch-ua-platform": '"Linux"'}, "hints-mismatch", "platform"),
        ("firefox147", {"sec-ch-ua": CHROME["sec-ch-ua"]}, "hints-mismatch", "firefox User-Agent with"),
    ],
)  # fmt: skip
def test_inconsistent_identity_is_challenged(
    sim: SimulatorProcess, target: str, headers: dict[str, str], reason: str, detail: str
) -> None:
    sim.configure_cloudflare(enabled=True)
    assert_challenge(browser(sim, target).get(f"{sim.https_url}/c/api/user", headers=headers))
    verdict = last(sim)
    assert (verdict["reason"], verdict["kind"], verdict["path"]) == (reason, "rest", "/c/api/user")
    assert detail in verdict["detail"]


def test_hints_may_be_required_of_chromium(sim: SimulatorProcess) -> None:
    sim.configure_cloudflare(enabled=True)
    bare = browser(sim, default_headers=False)
    assert bare.get(f"{sim.https_url}/", headers={"User-Agent": CHROME_UA}).status_code == 200
    assert sim.configure_cloudflare(require_hints=True)["require_hints"] is True
    assert_challenge(bare.get(f"{sim.https_url}/", headers={"User-Agent": CHROME_UA}))
    assert last(sim)["reason"] == "hints-mismatch" and "without client hints" in last(sim)["detail"]
    assert bare.get(f"{sim.https_url}/", headers=CHROME).status_code == 200
    firefox = browser(sim, "firefox147", default_headers=False)
    assert firefox.get(f"{sim.https_url}/", headers={"User-Agent": FIREFOX_UA}).status_code == 200


def test_sim_pass_issues_a_bound_clearance(sim: SimulatorProcess) -> None:
    sim.configure_cloudflare(enabled=True, require_clearance=True)
    session = browser(sim)
    assert_challenge(session.get(f"{sim.https_url}/", headers=CHROME))
    assert last(sim)["reason"] == "no-clearance"
    passed = session.get(f"{sim.https_url}{PASS_PATH}", headers=CHROME)
    assert passed.status_code == 200
    cookie = passed.headers["set-cookie"]
    assert cookie.startswith("cf_clearance=") and "; Path=/" in cookie
    assert "; Secure" in cookie and "; HttpOnly" in cookie
    assert session.get(f"{sim.https_url}/", headers=CHROME).status_code == 200
    # A Python client cannot earn one.
    assert_challenge(
        requests.get(f"{sim.https_url}{PASS_PATH}", headers=CHROME, verify=sim.ca_file, timeout=5)
    )
    counts = sim.cloudflare()
    assert counts["issued"] == 1 and counts["reasons"] == {"no-clearance": 1, "not-a-browser": 1}


def earn(sim: SimulatorProcess) -> str:
    """A clearance earned by curl_cffi chrome146 with CHROME from 127.0.0.1."""
    passed = browser(sim).get(f"{sim.https_url}{PASS_PATH}", headers=CHROME)
    assert passed.status_code == 200
    return str(passed.cookies["cf_clearance"])


@pytest.mark.parametrize("require_clearance", [True, False])
def test_clearance_replayed_by_another_identity_is_challenged(
    sim: SimulatorProcess, require_clearance: bool
) -> None:
    sim.configure_cloudflare(enabled=True, require_clearance=require_clearance)
    token = earn(sim)
    url = f"{sim.https_url}/c/api/user"
    jar = {"Cookie": f"cf_clearance={token}"}
    assert browser(sim).get(url, headers={**CHROME, **jar}).status_code == 200
    other_ua = {**CHROME, "User-Agent": CHROME_UA.replace("146.0.0.0", "146.0.7680.80")}
    assert_challenge(browser(sim).get(url, headers={**other_ua, **jar}))
    assert last(sim)["reason"] == "clearance-other-identity" and last(sim)["detail"].endswith("user-agent")
    firefox = browser(sim, "firefox147")
    assert_challenge(firefox.get(url, headers=jar))  # its own consistent UA, another TLS fingerprint
    assert "tls fingerprint" in last(sim)["detail"] and "user-agent" in last(sim)["detail"]
    assert_challenge(browser(sim).get(url, headers={**CHROME, **jar}, interface="127.0.0.2"))
    assert last(sim)["detail"].endswith("another client address") and last(sim)["client"] == "127.0.0.2"
    assert_challenge(browser(sim).get(url, headers={**CHROME, "Cookie": "cf_clearance=forged"}))
    assert last(sim)["reason"] == "clearance-invalid"


def test_clearance_through_a_proxy_belongs_to_the_proxy_address(sim: SimulatorProcess) -> None:
    sim.configure_cloudflare(enabled=True, require_clearance=True)
    with ConnectProxy(source_address="127.0.0.2") as proxy:
        session = browser(sim, proxy=proxy.url)
        assert session.get(f"{sim.https_url}{PASS_PATH}", headers=CHROME).status_code == 200
        assert session.get(f"{sim.https_url}/c/api/user", headers=CHROME).status_code == 200
        assert proxy.targets[-1] == f"localhost:{sim.https_url.rsplit(':', 1)[1]}"
    assert sim.tls_connections()[-1]["client"] == "127.0.0.2"
    token = session.cookies["cf_clearance"]
    assert_challenge(
        browser(sim).get(f"{sim.https_url}/", headers={**CHROME, "Cookie": f"cf_clearance={token}"})
    )
    assert last(sim)["reason"] == "clearance-other-identity" and last(sim)["client"] == "127.0.0.1"


def test_granted_clearance_and_expiry(sim: SimulatorProcess) -> None:
    sim.configure_cloudflare(enabled=True, require_clearance=True, clearance_ttl=60)
    token = sim.grant_clearance(ja4="t13d1516h2_8daaf6152771_d8a2da3f94cd", user_agent=CHROME_UA)
    cleared = {**CHROME, "Cookie": f"cf_clearance={token}"}
    assert browser(sim).get(f"{sim.https_url}/", headers=cleared).status_code == 200
    sim.configure(clock_offset=61)
    response = browser(sim).get(f"{sim.https_url}/", headers=cleared)
    assert_challenge(response)
    assert last(sim)["reason"] == "clearance-expired"
    bad = requests.post(f"{sim.http_url}/_sim/clearance", json={"ja4": "x"}, timeout=5)
    assert bad.status_code == 400 and "user_agent, client" in bad.json()["error"]
    bad = requests.post(f"{sim.http_url}/_sim/config", json={"cloudflare": {"enabled": "yes"}}, timeout=5)
    assert bad.status_code == 400 and "cloudflare.enabled" in bad.json()["error"]
    bad = requests.post(f"{sim.http_url}/_sim/config", json={"cloudflare": {"on": True}}, timeout=5)
    assert bad.status_code == 400 and "unknown cloudflare key 'on'" in bad.json()["error"]
    bad = requests.post(f"{sim.http_url}/_sim/config", json={"cloudflare": {"status": 500}}, timeout=5)
    assert bad.status_code == 400 and "403 or 503" in bad.json()["error"]
    assert requests.get(f"{sim.http_url}/_sim/config", timeout=5).json()["cloudflare"]["clearance_ttl"] == 60


def test_challenge_status_503(sim: SimulatorProcess) -> None:
    assert sim.configure_cloudflare(enabled=True, status=503)["status"] == 503
    response = requests.get(f"{sim.https_url}/c/api/user", verify=sim.ca_file, timeout=5)
    assert response.status_code == 503 and response.headers["cf-mitigated"] == "challenge"
    assert "Just a moment..." in response.text


def copilot_socket_url(sim: SimulatorProcess) -> str:
    return f"{sim.wss_url}/c/api/chat?api-version=2&clientSessionId={uuid.uuid4()}"


def test_websocket_upgrade_is_gated_in_both_dialects(sim: SimulatorProcess) -> None:
    sim.configure(copilot_anon_required=False)
    sim.configure_cloudflare(enabled=True)
    ssl_options = {"ca_certs": sim.ca_file}
    for url in (copilot_socket_url(sim), f"{sim.wss_url}/sydney/ChatHub"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(
                url, origin=ORIGIN, header=[f"User-Agent: {CHROME_UA}"], sslopt=ssl_options
            )
        assert refused.value.status_code == 403
        assert (refused.value.resp_headers or {})["cf-mitigated"] == "challenge"
        assert (last(sim)["kind"], last(sim)["reason"]) == ("upgrade", "not-a-browser")
    # curl_cffi's chrome146 websocket passes (its hello offers only http/1.1: another JA4, the same browser).
    socket = browser(sim).ws_connect(copilot_socket_url(sim), headers={"Origin": ORIGIN, **CHROME})
    assert json.loads(socket.recv()[0]) == {"event": "connected"}
    socket.close()
    assert (last(sim)["kind"], last(sim)["verdict"]) == ("upgrade", "pass")
    assert sim.tls_connections()[-1]["alpn"] == ["http/1.1"]
    chathub = browser(sim).ws_connect(f"{sim.wss_url}/sydney/ChatHub", headers=CHROME)
    chathub.send(b'{"protocol":"json","version":1}\x1e')
    assert chathub.recv()[0] == b"{}\x1e"
    chathub.close()
    assert (last(sim)["kind"], last(sim)["path"], last(sim)["verdict"]) == (
        "upgrade",
        "/sydney/ChatHub",
        "pass",
    )
    with pytest.raises(CurlError, match="403"):
        browser(sim).ws_connect(copilot_socket_url(sim), headers={"Origin": ORIGIN, "User-Agent": FIREFOX_UA})
    assert last(sim)["reason"] == "ua-mismatch"


def test_clearance_earned_on_rest_covers_the_websocket(sim: SimulatorProcess) -> None:
    sim.configure(copilot_anon_required=False)
    sim.configure_cloudflare(enabled=True, require_clearance=True)
    session = browser(sim)
    with pytest.raises(CurlError, match="403"):
        session.ws_connect(copilot_socket_url(sim), headers={"Origin": ORIGIN, **CHROME})
    assert last(sim)["reason"] == "no-clearance"
    assert session.get(f"{sim.https_url}{PASS_PATH}", headers=CHROME).status_code == 200
    socket = session.ws_connect(copilot_socket_url(sim), headers={"Origin": ORIGIN, **CHROME})
    assert json.loads(socket.recv()[0]) == {"event": "connected"}
    socket.close()
