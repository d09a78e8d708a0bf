"""A browser-grade identity per account, through real processes, over TLS, with the Cloudflare gate on.

gunicorn, an RQ worker and redis-server in front of the simulator's TLS port, in both dialects,
with the simulator's Cloudflare gate on and clearance required. "The operator's browser" is
curl_cffi itself: it earns `cf_clearance` at the simulator's check page with one identity
(TLS fingerprint, User-Agent, hints, address), and the account is imported from the request
that browser would copy as cURL (or export as HAR). Then: the browser transport passes; the
plain transport is challenged and the account needs attention with the operator message; a
clearance replayed by another identity is challenged; an account behind a CONNECT proxy
reaches the upstream from the proxy's address (HTTP CONNECT and SOCKS5); `check` reports every step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import requests
from curl_cffi import requests as browser
from redis import Redis

from service.runtime.embedded_redis import EmbeddedRedis
from tests.integration.conftest import body
from tests.support.connect_proxy import ConnectProxy
from tests.support.simulator import SimulatorProcess
from tests.support.socks_proxy import SocksProxy
from tests.support.stack import ROOT, GunicornServer, WorkerProcess, gateway_env

pytestmark = pytest.mark.timeout(180)
ADMIN_KEY = "admin-key-identity-0123456789"
KEY = "sk-identity-0123456789abcdef"
QUEUE = "chat-identity"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/146.0.0.0 Safari/537.36"
)
CHROME_HINTS = {
    "sec-ch-ua": '"Chromium";v="146", "Not-A.Brand";v="24", "Google Chrome";v="146"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Windows"',
}
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:147.0) Gecko/20100101 Firefox/147.0"
OPERATOR_MESSAGE = "open the upstream in the browser whose identity the account uses"


class Stack:
    """The running gateway, its worker, and helpers to act as the operator and as a client."""

    def __init__(self, env: dict[str, str], url: str, sim: SimulatorProcess, redis: Redis) -> None:
        self.env, self.url, self.sim, self.redis = env, url, sim, redis
        self.worker: WorkerProcess | None = None

    def start_worker(self, **overrides: str) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.worker = WorkerProcess({**self.env, **overrides}).start()

    def admin(self, method: str, path: str = "", payload: Any = None) -> requests.Response:
        return requests.request(
            method,
            f"{self.url}/admin/accounts{path}",
            json=payload,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=120,
        )

    def accounts(self) -> dict[str, dict[str, Any]]:
        return {a["id"]: a for a in self.admin("GET").json()["data"]}

    def only(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Replace the pool with one account made from `payload`; its admin view."""
        for account_id in self.accounts():
            assert self.admin("DELETE", f"/{account_id}").status_code == 200
        created = self.admin("POST", payload=payload)
        assert created.status_code == 201, created.text
        return dict(created.json())

    def chat(self, content: str = "hi") -> requests.Response:
        return requests.post(
            f"{self.url}/v1/chat/completions",
            json=body(content),
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=120,
        )

    def earn(self, user_agent: str, hints: dict[str, str], profile: str, proxy: str = "") -> str:
        """Pass the simulated check as a browser (curl_cffi `profile`); the `cf_clearance` it earned."""
        answer = browser.get(
            f"{self.sim.https_url}/cdn-cgi/challenge-platform/sim-pass",
            impersonate=profile,
            headers={"User-Agent": user_agent, **hints},
            default_headers=False,
            verify=cast(Any, self.sim.ca_file),  # a CA file, which curl_cffi's stub does not admit
            proxy=proxy or None,
        )
        assert answer.status_code == 200, answer.text
        return str(answer.cookies["cf_clearance"])


def chrome_curl(url: str, cookies: str) -> str:
    """What Chrome's "Copy as cURL (bash)" gives for a request to `url`."""
    lines = [f"curl '{url}/c/api/user'", "  -H 'accept: */*'", "  -H 'accept-language: en-US,en;q=0.9'"]
    lines.append(f"  -b '{cookies}'")
    lines += [f"  -H '{name}: {value}'" for name, value in CHROME_HINTS.items()]
    lines.append(f"  -H 'user-agent: {CHROME}'")
    return " \\\n".join(lines)


def chrome_har(url: str, cookies: str) -> dict[str, Any]:
    headers = [{"name": ":authority", "value": url.split("://")[1]}, {"name": "cookie", "value": cookies}]
    headers += [{"name": name, "value": value} for name, value in CHROME_HINTS.items()]
    headers.append({"name": "user-agent", "value": CHROME})
    entry = {
        "startedDateTime": "2026-12-07T10:00:00.000Z",
        "request": {"method": "GET", "url": f"{url}/", "headers": headers},
    }
    return {"log": {"version": "1.2", "entries": [entry]}}


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module", params=("copilot", "bing"))
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with SimulatorProcess(tls=True) as sim, EmbeddedRedis() as server:
        env = gateway_env(server.url, sim.http_url, UPSTREAM=request.param, RQ_QUEUE=QUEUE)
        env.pop("ACCOUNT_HEALTH")  # health on: a challenge moves the account to needs_attention
        env.update(
            COPILOT_URL=sim.https_url,
            BING_CREATE_URL=f"{sim.https_url}/turing/conversation/create",
            BING_CHATHUB_URL=f"{sim.wss_url}/sydney/ChatHub",
            UPSTREAM_CA_BUNDLE=sim.ca_file,
            UPSTREAM_COOKIES="_U=seeded",
            ADMIN_KEY=ADMIN_KEY,
            API_KEYS=KEY,
            ACCOUNT_PROBE_SECONDS="3600",
            UPSTREAM_FIRST_TOKEN_TIMEOUT="20",
            UPSTREAM_IDLE_TIMEOUT="10",
            UPSTREAM_CONNECT_TIMEOUT="5",
            # The upstream is on loopback, which NO_PROXY exempts: an account's proxy must still be used.
            NO_PROXY="localhost,127.0.0.1",
            no_proxy="localhost,127.0.0.1",
        )
        sim.configure_cloudflare(enabled=True, require_clearance=True, require_hints=True)
        web = GunicornServer(env)
        client = Redis.from_url(server.url)
        running = Stack(env, web.url, sim, client)
        try:
            running.start_worker()
            web.start()
            yield running
        finally:
            web.stop()
            if running.worker is not None:
                running.worker.stop()
            client.close()


def test_an_account_imported_from_a_curl_copy_passes_with_the_identity_it_carried(stack: Stack) -> None:
    name = fresh("curl")
    clearance = stack.earn(CHROME, CHROME_HINTS, "chrome146")
    account = stack.only({"curl": chrome_curl(stack.sim.https_url, f"_U={name}; cf_clearance={clearance}")})
    assert account["warnings"] == []
    assert (account["user_agent"], account["impersonate"], account["has_proxy"]) == (
        "chrome 146",
        "chrome146",
        False,
    )
    assert account["client_hints"] == ["sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform"]
    answer = stack.chat()
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    seen = stack.sim.cloudflare()["by_account"][name]
    assert seen["passed"] >= 2 and seen["challenged"] == 0  # REST and the socket upgrade
    assert stack.sim.accounts()[name]["user_agents"] == [CHROME]


def test_a_firefox_account_passes_with_firefoxs_fingerprint(stack: Stack) -> None:
    name = fresh("firefox")
    clearance = stack.earn(FIREFOX, {}, "firefox147")
    copied = (
        f"curl '{stack.sim.https_url}/c/api/user' --compressed -H 'User-Agent: {FIREFOX}' -H 'Accept: */*' "
        f"-H 'Accept-Language: en-US,en;q=0.5' -H 'Cookie: _U={name}; cf_clearance={clearance}'"
    )
    account = stack.only({"curl": copied})
    assert (account["user_agent"], account["impersonate"], account["client_hints"]) == (
        "firefox 147",
        "firefox147",
        [],
    )
    answer = stack.chat()
    assert answer.status_code == 200, answer.text
    assert stack.sim.cloudflare()["by_account"][name]["challenged"] == 0


def test_an_account_imported_from_a_har_passes(stack: Stack) -> None:
    name = fresh("har")
    clearance = stack.earn(CHROME, CHROME_HINTS, "chrome146")
    har = chrome_har(stack.sim.https_url, f"_U={name}; cf_clearance={clearance}")
    account = stack.only({"har": json.dumps(har), "label": "from a HAR"})
    assert (account["label"], account["impersonate"]) == ("from a HAR", "chrome146")
    assert stack.chat().status_code == 200
    assert stack.sim.cloudflare()["by_account"][name]["challenged"] == 0


def test_the_plain_transport_is_challenged_and_the_account_needs_attention(stack: Stack) -> None:
    name = fresh("plain")
    clearance = stack.earn(CHROME, CHROME_HINTS, "chrome146")
    account = stack.only({"curl": chrome_curl(stack.sim.https_url, f"_U={name}; cf_clearance={clearance}")})
    stack.start_worker(UPSTREAM_TRANSPORT="plain")
    try:
        for extra in [a for a in stack.accounts() if a != account["id"]]:  # the restart re-seeded env-1
            stack.admin("DELETE", f"/{extra}")
        answer = stack.chat()
        assert answer.status_code == 503, answer.text
        assert OPERATOR_MESSAGE in answer.json()["error"]["message"]
        state = stack.accounts()[account["id"]]
        assert state["state"] == "needs_attention"
        assert state["last_error"]["code"] == "upstream_challenge_required"
        assert (
            OPERATOR_MESSAGE in state["last_error"]["message"] and "as cURL" in state["last_error"]["message"]
        )
        assert stack.sim.cloudflare()["by_account"][name]["last_reason"] == "not-a-browser"
    finally:
        stack.start_worker()
    for extra in [a for a in stack.accounts() if a != account["id"]]:
        stack.admin("DELETE", f"/{extra}")
    # The cure the message names: refresh the account with a fresh copy; it is ready again and passes.
    refreshed = stack.admin(
        "PATCH",
        f"/{account['id']}",
        {"curl": chrome_curl(stack.sim.https_url, f"_U={name}; cf_clearance={clearance}")},
    )
    assert refreshed.json()["state"] == "ready"
    assert stack.chat().status_code == 200


def test_a_clearance_earned_by_another_identity_is_challenged(stack: Stack) -> None:
    name = fresh("replay")
    firefox_clearance = stack.earn(FIREFOX, {}, "firefox147")
    account = stack.only(
        {"curl": chrome_curl(stack.sim.https_url, f"_U={name}; cf_clearance={firefox_clearance}")}
    )
    answer = stack.chat()
    assert answer.status_code == 503, answer.text
    assert stack.sim.cloudflare()["by_account"][name]["last_reason"] == "clearance-other-identity"
    assert stack.accounts()[account["id"]]["state"] == "needs_attention"


@pytest.mark.parametrize("scheme", ("http", "socks5h"))
def test_an_account_behind_a_proxy_reaches_the_upstream_from_the_proxys_address(
    stack: Stack, scheme: str
) -> None:
    name = fresh("proxied")
    kind = SocksProxy if scheme == "socks5h" else ConnectProxy
    with kind(source_address="127.0.0.2", credentials=("op", "proxy-secret")) as proxy:
        assert proxy.url.startswith(f"{scheme}://")
        clearance = stack.earn(CHROME, CHROME_HINTS, "chrome146", proxy=proxy.url)  # earned from 127.0.0.2
        cookies = f"_U={name}; cf_clearance={clearance}"
        account = stack.only({"curl": chrome_curl(stack.sim.https_url, cookies), "proxy": proxy.url})
        assert account["has_proxy"] is True
        listing = stack.admin("GET").text
        assert "proxy-secret" not in listing and str(proxy.port) not in listing
        before = len(proxy.tunnels)
        answer = stack.chat()
        assert answer.status_code == 200, answer.text
        assert len(proxy.tunnels) > before and all(t.authenticated for t in proxy.tunnels)
        events = [e for e in stack.sim.cloudflare()["events"] if e.get("account") == name]
        assert events and {e["client"] for e in events} == {"127.0.0.2"}
        assert {e["kind"] for e in events} >= {"rest", "upgrade"}
    # Without the proxy the same cookies come from 127.0.0.1, which did not earn them.
    stack.admin("PATCH", f"/{account['id']}", {"proxy": ""})
    assert stack.chat().status_code == 503
    assert stack.sim.cloudflare()["by_account"][name]["last_reason"] == "clearance-other-identity"


def test_check_reports_each_step_without_secrets(stack: Stack) -> None:
    name = fresh("check")
    clearance = stack.earn(CHROME, CHROME_HINTS, "chrome146")
    account = stack.only({"curl": chrome_curl(stack.sim.https_url, f"_U={name}; cf_clearance={clearance}")})
    checked = stack.admin("POST", f"/{account['id']}/check")
    assert checked.status_code == 200, checked.text
    report = checked.json()
    assert report["ok"] is True and (report["transport"], report["tls_profile"]) == ("browser", "chrome146")
    assert report["clearance_age"] not in ("none", "unknown")
    rest = [step for step in report["steps"] if "status" in step and step["step"] != "websocket upgrade"]
    assert rest and all(step["cloudflare"] == "pass" for step in rest)
    [upgrade] = [step for step in report["steps"] if step["step"] == "websocket upgrade"]
    assert upgrade["status"] == 101 and upgrade["events"]
    assert report["steps"][-1]["step"] == "answer" and report["steps"][-1]["first_event"]
    assert clearance not in checked.text and name not in checked.text

    # A challenged account: the verdict is in the report and the account needs attention; the CLI says so.
    stack.admin("PATCH", f"/{account['id']}", {"curl": chrome_curl(stack.sim.https_url, f"_U={name}")})
    cli = subprocess.run(
        [sys.executable, "-m", "service.admin", "check", account["id"]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=stack.env,
        timeout=120,
    )
    assert cli.returncode == 1, cli.stderr
    assert "TLS profile chrome146" in cli.stdout and "cloudflare challenge" in cli.stdout
    assert "FAILED (upstream_challenge_required)" in cli.stdout and name not in cli.stdout
    assert stack.accounts()[account["id"]]["state"] == "needs_attention"


def test_a_challenged_account_fails_over_to_one_that_passes(stack: Stack) -> None:
    good, bad = fresh("good"), fresh("bad")
    chrome_clearance = stack.earn(CHROME, CHROME_HINTS, "chrome146")
    firefox_clearance = stack.earn(FIREFOX, {}, "firefox147")
    bad_id = stack.only(
        {"curl": chrome_curl(stack.sim.https_url, f"_U={bad}; cf_clearance={firefox_clearance}")}
    )["id"]
    created = stack.admin(
        "POST",
        payload={"curl": chrome_curl(stack.sim.https_url, f"_U={good}; cf_clearance={chrome_clearance}")},
    )
    good_id = created.json()["id"]
    # New conversations go to the ready account with the most headroom: within a few turns the bad
    # one is tried, challenged, and its turn moves to the good one; no turn fails meanwhile.
    for n in range(8):
        answer = stack.chat(f"turn {n}")
        assert answer.status_code == 200, answer.text
        if stack.sim.cloudflare()["by_account"].get(bad, {}).get("challenged"):
            break
    assert stack.sim.cloudflare()["by_account"][bad]["challenged"] >= 1
    accounts = stack.accounts()
    assert accounts[good_id]["state"] == "ready"
    assert accounts[bad_id]["state"] == "needs_attention"
    assert OPERATOR_MESSAGE in accounts[bad_id]["last_error"]["message"]
