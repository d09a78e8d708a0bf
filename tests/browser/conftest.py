"""A real headless Chromium (Debian's `chromium` + `chromium-driver`, through Selenium) and a
gateway of real processes per upstream dialect: redis-server, the simulator, gunicorn, a worker.

The browser starts once per session with a fresh profile and no network of its own beyond
loopback; each test opens the pages it needs. Without the browser installed (deploy/test
installs it when it runs as root) the tests are skipped, saying so.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis

from service.runtime.embedded_redis import EmbeddedRedis
from tests.support.simulator import SimulatorProcess
from tests.support.stack import ROOT, GunicornServer, WorkerProcess, gateway_env

ADMIN_KEY = "admin-key-browser-0123456789"
API_KEY = "sk-browser-key-0123456789"
QUEUE = "chat-face"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
)


def _first(paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if Path(p).exists()), None)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (its console log is kept for CSP checks)."""
    binary, driver_path = _first(CHROMIUM), _first(CHROMEDRIVER)
    if binary is None or driver_path is None:
        pytest.skip(
            "headless Chromium is not installed (apt-get install chromium chromium-driver; "
            "deploy/test does this when it runs as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="face-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclasses.dataclass
class Face:
    """The running gateway, its simulator and admin helpers."""

    dialect: str
    url: str
    env: dict[str, str]
    redis: Redis
    sim: SimulatorProcess

    def admin(self, method: str, path: str, json: Any = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        return requests.request(method, f"{self.url}/admin{path}", json=json, headers=headers, timeout=30)

    def api(self, method: str, path: str, key: str = API_KEY, json: Any = None) -> requests.Response:
        return requests.request(
            method, f"{self.url}{path}", json=json, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def only_account(self, name: str) -> str:
        """Replace the pool with one account speaking as simulator account `name`; its id."""
        for door_key in self.redis.scan_iter(match=f"accounts:{QUEUE}:door*"):
            self.redis.delete(door_key)
        for account in self.admin("GET", "/accounts").json()["data"]:
            assert self.admin("DELETE", f"/accounts/{account['id']}").status_code == 200
        created = self.admin("POST", "/accounts", json={"cookies": f"_U={name}; MUID=x", "label": name})
        assert created.status_code == 201, created.text
        return str(created.json()["id"])


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session", params=("bing", "copilot"))
def face(request: pytest.FixtureRequest, simulator: SimulatorProcess) -> Iterator[Face]:
    """gunicorn + one worker with ADMIN_KEY, one static key and the account pool at its defaults."""
    with EmbeddedRedis() as server:
        env = gateway_env(server.url, simulator.http_url, UPSTREAM=request.param, RQ_QUEUE=QUEUE)
        for key in ("ACCOUNT_MAX_CONCURRENT", "ACCOUNT_RPM", "ACCOUNT_HEALTH"):
            env.pop(key)  # the pool's defaults, health on: a challenge moves an account to needs_attention
        env.update(
            ADMIN_KEY=ADMIN_KEY,
            API_KEYS=API_KEY,
            UPSTREAM_COOKIES="_U=face-seeded",
            ACCOUNT_PROBE_SECONDS="600",  # no background probe: only the operator's refresh ends attention
            UPSTREAM_FIRST_TOKEN_TIMEOUT="20",
            UPSTREAM_IDLE_TIMEOUT="10",
        )
        web = GunicornServer(env)
        worker = WorkerProcess(env)
        client = Redis.from_url(server.url)
        try:
            worker.start()
            web.start()
            yield Face(request.param, web.url, env, client, simulator)
        finally:
            client.close()
            web.stop()
            worker.stop()


def screenshot(driver: Any, name: str, width: int, height: int, *, mobile: bool = False) -> Path:
    """Save the page at a viewport size under tests/artifacts/ (ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        path = ARTIFACTS / f"{name}-{width}x{height}.png"
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path
