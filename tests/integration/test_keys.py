"""Managed keys, per-key limits and usage on real processes: two gunicorn servers (as two web
hosts would run; the first with two web processes) sharing one RQ worker, the stack's
redis-server and the simulator. Limits must hold across all three web processes.

Each test creates its own keys through the admin API, so tests share the stack but no state.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests
from redis import Redis

from service.access.ratelimit import duration, turns_key
from service.runtime.embedded_redis import EmbeddedRedis
from service.tokens import count_messages
from tests.integration.conftest import body, sse_data
from tests.support.simulator import SimulatorProcess
from tests.support.stack import GunicornServer, WorkerProcess, gateway_env, wait_for
from tests.unit.test_keys import every_byte_in

ADMIN_KEY = "admin-key-0123456789abcdef"
STATIC_KEY = "sk-static-0123456789abcdef"
SLOW = "[sim:slow=0.25][sim:long=16] take your time"


@dataclasses.dataclass
class Gateway:
    url: str
    redis: Redis
    other_url: str  # the second gunicorn: another "host" on the same Redis

    def admin(self, method: str, path: str = "", json: Any = None, key: str = ADMIN_KEY) -> requests.Response:
        return requests.request(
            method,
            f"{self.url}/admin/keys{path}",
            json=json,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    def create(self, **limits: Any) -> tuple[str, str]:
        """A new managed key: (id, secret)."""
        created = self.admin("POST", json={"label": "test", **limits})
        assert created.status_code == 201, created.text
        return created.json()["id"], created.json()["key"]

    def chat(
        self, key: str, content: str = "hi", *, url: str | None = None, **extra: Any
    ) -> requests.Response:
        return requests.post(
            f"{url or self.url}/v1/chat/completions",
            json=body(content, **extra),
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )

    def usage(self, key_id: str) -> dict[str, Any]:
        answer = self.admin("GET", f"/{key_id}/usage?days=2")
        assert answer.status_code == 200, answer.text
        return answer.json()["data"][0]


@pytest.fixture(scope="module")
def gw(stack_redis: EmbeddedRedis, simulator: SimulatorProcess) -> Iterator[Gateway]:
    env = gateway_env(
        stack_redis.url,
        simulator.http_url,
        RQ_QUEUE="keys",
        ADMIN_KEY=ADMIN_KEY,
        API_KEYS=STATIC_KEY,
        SECRET_KEY="keys-test-secret-0123456789",
        KEY_DEFAULT_RPM="1000",
        UPSTREAM_IDLE_TIMEOUT="10",
    )
    worker = WorkerProcess(env)
    web, other = GunicornServer(env, workers=2), GunicornServer(env, workers=1)
    client = Redis.from_url(stack_redis.url)
    try:
        worker.start()
        web.start()
        other.start()
        yield Gateway(web.url, client, other.url)
    finally:
        other.stop()
        web.stop()
        worker.stop()
        client.close()


def test_create_use_revoke(gw: Gateway) -> None:
    assert gw.admin("GET", key="wrong-admin-key-0123456789").status_code == 401
    assert requests.get(f"{gw.url}/admin/keys", timeout=10).status_code == 401
    key_id, secret = gw.create()
    answer = gw.chat(secret)
    assert answer.status_code == 200, answer.text
    conversation = answer.headers["X-Conversation-Id"]
    read = requests.get(
        f"{gw.url}/v1/conversations/{conversation}", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )
    assert read.status_code == 200  # the key's owner tag is stable from one request to the next
    listed = {k["id"]: k for k in gw.admin("GET").json()["data"]}
    assert listed[key_id]["prefix"] == secret[:10] and listed[key_id]["last_used"] is not None
    assert "key" not in listed[key_id]
    assert secret.encode() not in every_byte_in(gw.redis)  # only its hash is stored, anywhere

    assert gw.admin("DELETE", f"/{key_id}").status_code == 200
    for url in (gw.url, gw.url, gw.other_url):  # revoked at once, whichever process answers
        refused = gw.chat(secret, url=url)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert (
        requests.get(
            f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=10
        ).status_code
        == 401
    )
    assert gw.admin("GET", f"/{key_id}").status_code == 404


def test_rpm_headers_count_down_and_retry_after_is_exact(gw: Gateway) -> None:
    _, secret = gw.create(rpm=3)
    answers = [gw.chat(secret) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0"]
    assert {a.headers["x-ratelimit-limit-requests"] for a in answers} == {"3"}
    refused = gw.chat(secret)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests"
    wait_ms = int(refused.headers["retry-after-ms"])
    assert 0 < wait_ms <= 60_000
    assert refused.headers["Retry-After"] == str(math.ceil(wait_ms / 1000))
    assert refused.headers["x-ratelimit-reset-requests"] == duration(wait_ms)
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_concurrent_turns_are_capped_across_web_processes(gw: Gateway) -> None:
    key_id, secret = gw.create(max_concurrent=2)
    barrier = threading.Barrier(6)

    def one(n: int) -> requests.Response:
        barrier.wait()  # half to each server: whatever serves them, only two may run
        return gw.chat(secret, SLOW, url=gw.url if n % 2 else gw.other_url)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 429, 429, 429, 429], [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.headers["Retry-After"] == "1"
    wait_for(lambda: gw.redis.zcard(turns_key(key_id)) == 0)  # every slot given back
    assert gw.chat(secret).status_code == 200


def test_rpm_is_shared_by_both_servers(gw: Gateway) -> None:
    _, secret = gw.create(rpm=2)
    first, second = gw.chat(secret), gw.chat(secret, url=gw.other_url)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert gw.chat(secret).status_code == 429 and gw.chat(secret, url=gw.other_url).status_code == 429


def test_daily_token_quota_is_insufficient_quota_and_not_retried(gw: Gateway) -> None:
    key_id, secret = gw.create(tokens_per_day=30)
    first = gw.chat(secret, "please answer " * 20)  # > 30 prompt tokens: this turn crosses the quota
    assert first.status_code == 200 and first.headers["x-ratelimit-remaining-tokens"] == "30"
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=secret, max_retries=2)
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model="Balanced", messages=[{"role": "user", "content": "hi"}])
    assert error.value.code == "insufficient_quota"
    assert error.value.response.headers["x-should-retry"] == "false"
    assert error.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert gw.usage(key_id)["rejected"] == 1  # the SDK did not retry


def test_allowed_models(gw: Gateway) -> None:
    _, secret = gw.create(models=["bal*"])
    assert gw.chat(secret, model="Balanced").status_code == 200
    refused = gw.chat(secret, model="Creative")
    assert refused.status_code == 403
    assert refused.json()["error"] | {"message": ""} == {
        "message": "", "type": "invalid_request_error", "param": "model", "code": "model_not_found"
    }  # fmt: skip


def test_usage_matches_the_requests_made(gw: Gateway) -> None:
    key_id, secret = gw.create()
    plain = [gw.chat(secret, f"question {n}") for n in range(2)]
    streamed = gw.chat(secret, "stream it", stream=True, stream_options={"include_usage": True})
    failed = gw.chat(secret, "[sim:internal] this one fails")
    assert [a.status_code for a in plain] == [200, 200] and streamed.status_code == 200
    assert failed.status_code >= 500
    usages = [a.json()["usage"] for a in plain] + [sse_data(streamed.text.splitlines())[-2]["usage"]]
    day = wait_for(lambda: (u := gw.usage(key_id)) and u["requests"] == 4 and u["errors"] == 1 and u)
    # The failed turn reached the upstream: its input is charged too (audit round 3, N3), no output.
    failed_input = count_messages([{"role": "user", "content": "[sim:internal] this one fails"}])
    assert day["input_tokens"] == sum(u["prompt_tokens"] for u in usages) + failed_input
    assert day["output_tokens"] == sum(u["completion_tokens"] for u in usages)
    assert day["rejected"] == 0


def test_static_keys_keep_working_with_default_limits(gw: Gateway) -> None:
    answer = gw.chat(STATIC_KEY)
    assert answer.status_code == 200
    assert answer.headers["x-ratelimit-limit-requests"] == "1000"  # KEY_DEFAULT_RPM
    [static] = [k for k in gw.admin("GET").json()["data"] if not k["managed"]]
    assert static["prefix"] == STATIC_KEY[:5] and static["limits"]["rpm"] == 1000
    assert static["last_used"] is not None and STATIC_KEY[5:].encode() not in every_byte_in(gw.redis)
    assert gw.usage(static["id"])["requests"] >= 1
    assert gw.chat("sk-gw-" + "x" * 43).status_code == 401  # managed-looking but unknown
