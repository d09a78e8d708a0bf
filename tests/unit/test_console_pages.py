"""The pages' blueprint and /admin/stats in the Flask app over a real Redis (no browser, no worker).

The browser tests (tests/browser) drive the pages; these pin what every response must say
(CSP, framing), when the pages exist at all, and what /admin/stats reads.
"""

from __future__ import annotations

import re
import time

import pytest
from flask import Flask
from redis import Redis

from service.runtime import livestats
from service.runtime.embedded_redis import free_port
from service.web import create_app
from service.web.console import CSP
from tests.unit.test_web_app import SECRET, MakeApp

ADMIN = "admin-key-0123456789abcdef"
KEY = "sk-pages-0123456789"


@pytest.fixture()
def make_app(redis_url: str) -> MakeApp:
    def make(**overrides: str) -> Flask:
        base = {"REDIS_URL": redis_url, "UPSTREAM": "bing", "SECRET_KEY": SECRET}
        return create_app({**base, **overrides})

    return make


def test_the_pages_need_no_key_and_forbid_framing_inline_code_and_other_origins(make_app: MakeApp) -> None:
    client = make_app(API_KEYS=KEY, ADMIN_KEY=ADMIN).test_client()
    for path in ("/", "/console"):
        page = client.get(path)
        assert page.status_code == 200 and page.mimetype == "text/html"
        assert page.headers["Content-Security-Policy"] == CSP
        assert "script-src 'self'" in CSP and "connect-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Cache-Control"] == "no-store"
        html = page.get_data(as_text=True)
        assert "<script>" not in html and "style=" not in html and not re.search(r"\son[a-z]+=", html)
        for asset in re.findall(r'(?:src|href)="(/_ui/[^"]+)"', html):
            served = client.get(asset)
            assert served.status_code == 200, asset
            assert served.headers["X-Content-Type-Options"] == "nosniff"
            assert served.headers["Cache-Control"] == "no-cache" and served.headers["ETag"]
    assert client.get("/v1/models").status_code == 401  # the API still wants its key
    assert client.get("/_ui/../../settings.py").status_code == 404


def test_the_console_is_absent_without_admin_key_and_the_playground_can_be_turned_off(
    make_app: MakeApp,
) -> None:
    keyed = make_app(API_KEYS=KEY).test_client()
    assert keyed.get("/").status_code == 200
    assert keyed.get("/console").status_code == 404
    assert keyed.get("/admin/stats").status_code == 404
    off = make_app(API_KEYS=KEY, PLAYGROUND="off", ADMIN_KEY=ADMIN).test_client()
    assert off.get("/").status_code == 404
    assert off.get("/console").status_code == 200
    nothing = make_app(API_KEYS=KEY, PLAYGROUND="off").test_client()
    assert nothing.get("/").status_code == 404 and nothing.get("/console").status_code == 404


def test_livestats_keeps_an_hour_of_minutes(redis_client: Redis) -> None:
    now = 1_800_000_000.0
    livestats.record(redis_client, "q", counts={"turns:done": 2}, sums={"added": 0.010}, now=now - 120)
    livestats.record(redis_client, "q", counts={"turns:error": 1, "err:Throttled": 1}, now=now)
    livestats.record(redis_client, "q", counts={"http:429": 3}, sums={"added": 0.030}, now=now)
    livestats.record(redis_client, "q", sums={"added": 0.050}, now=now)
    livestats.record(redis_client, "q", counts={"turns:done": 9}, now=now - 3700)  # over an hour ago
    minutes = livestats.read(redis_client, "q", now=now)
    assert len(minutes) == 60 and minutes[-1]["start"] == int(now // 60) * 60
    assert minutes[-3]["turns"] == {"done": 2} and minutes[-3]["added_first_token_ms"] == 10.0
    assert minutes[-1]["turns"] == {"error": 1}
    assert minutes[-1]["errors"] == {"Throttled": 1, "HTTP 429": 3}
    assert minutes[-1]["added_first_token_ms"] == 40.0 and minutes[-1]["queue_wait_ms"] is None
    assert sum(sum(m["turns"].values()) for m in minutes) == 3
    assert 0 < redis_client.ttl(livestats.minute_key("q", int(now // 60))) <= livestats.TTL_SECONDS


def test_livestats_never_fails_a_turn(redis_client: Redis) -> None:
    livestats.bind(None, "q")
    livestats.record(counts={"turns:done": 1})  # nothing bound: nothing recorded, no error
    down = Redis(port=free_port(), socket_connect_timeout=0.2)
    livestats.bind(down, "q")
    livestats.record(counts={"turns:done": 1})  # Redis unreachable: logged, not raised
    livestats.bind(redis_client, "q")
    livestats.record(counts={"turns:done": 1})
    assert sum(sum(m["turns"].values()) for m in livestats.read(redis_client, "q")) == 1


def test_admin_stats_reads_queue_accounts_and_minutes(make_app: MakeApp, redis_client: Redis) -> None:
    app = make_app(API_KEYS=KEY, ADMIN_KEY=ADMIN, UPSTREAM_COOKIES="_U=a\n_U=b", QUEUE_WAIT_TIMEOUT="1")
    client = app.test_client()
    assert client.get("/admin/stats").status_code == 401
    queue = app.extensions["gateway"].settings.queue_name
    livestats.record(redis_client, queue, counts={"turns:done": 1}, sums={"wait": 0.2})
    headers = {"Authorization": f"Bearer {ADMIN}"}
    assert client.get("/admin/accounts", headers=headers).status_code == 200  # seeds the pool
    stats = client.get("/admin/stats", headers=headers).get_json()
    assert stats["object"] == "stats" and abs(stats["now"] - time.time()) < 5
    assert stats["workers"] == {"live": 0, "registered": 0}
    assert stats["queue"] == {"name": queue, "depth": 0, "oldest_wait_seconds": None}
    assert stats["accounts"]["total"] == 2 and stats["accounts"]["ready"] == 2
    recent = stats["minutes"][-2:]  # the record may fall in the minute before the read
    assert [m["turns"] for m in recent if m["turns"]] == [{"done": 1}]
    assert [m["queue_wait_ms"] for m in recent if m["queue_wait_ms"]] == [200.0]
    # A failed turn is counted under its HTTP status (no worker here: a 503 after QUEUE_WAIT_TIMEOUT).
    chat = {"model": "Balanced", "messages": [{"role": "user", "content": "hi"}]}
    failed = client.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {KEY}"})
    assert failed.status_code == 503
    stats = client.get("/admin/stats", headers=headers).get_json()
    assert [m["errors"] for m in stats["minutes"][-2:] if m["errors"]] == [{"HTTP 503": 1}]


PAGE_BUDGET = 64 * 1024  # bytes of HTML + JS + CSS per page, uncompressed (docs/console.md has the figures)


@pytest.mark.parametrize("path", ["/", "/console"])
def test_each_page_loads_only_its_own_small_files(make_app: MakeApp, path: str) -> None:
    client = make_app(API_KEYS=KEY, ADMIN_KEY=ADMIN).test_client()
    html = client.get(path).get_data(as_text=True)
    files = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)  # (#fragments are in-page links)
    assert files and all(f.startswith("/_ui/") for f in files)  # nothing from another origin
    sizes: dict[str, int] = {}
    todo = [f.split("?")[0] for f in files]
    while todo:  # the page's ES module graph, as the browser walks it
        asset = todo.pop()
        if asset in sizes:
            continue
        served = client.get(asset)
        assert served.status_code == 200, asset
        sizes[asset] = len(served.data)
        todo += [f"/_ui/{name}" for name in re.findall(r'from "\./([^"]+)"', served.get_data(as_text=True))]
    assert len(html.encode()) + sum(sizes.values()) < PAGE_BUDGET, sizes
