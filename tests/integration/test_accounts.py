"""The account pool through real processes: gunicorn, two workers, redis-server, the simulator.

The pool runs at its defaults here (ACCOUNT_MAX_CONCURRENT=2, ACCOUNT_RPM=12, health on),
unlike the shared stack. Each test builds the accounts it needs through the admin API under
fresh simulator account names (`_U=<name>`), so rate budgets and faults never leak between
tests; the simulator counts per account what actually reached it.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import requests
from redis import Redis

from service.accounts.registry import Registry
from service.accounts.scheduler import Scheduler
from service.runtime.embedded_redis import EmbeddedRedis
from service.state.conversations import ConversationStore
from service.web import create_app
from tests.integration.conftest import body
from tests.support.http import text_lines
from tests.support.simulator import SimulatorProcess
from tests.support.stack import ROOT, GunicornServer, WerkzeugServer, WorkerProcess, gateway_env, wait_for

ADMIN_KEY = "admin-key-0123456789abcdef"
KEY_ONE, KEY_TWO = "sk-key-one-0123456789", "sk-key-two-0123456789"
QUEUE = "chat-accounts"


class Pool:
    """The running stack plus admin and chat helpers."""

    def __init__(self, env: dict[str, str], url: str, redis: Redis, sim: SimulatorProcess) -> None:
        self.env, self.url, self.redis, self.sim = env, url, redis, sim
        self.workers: list[WorkerProcess] = []

    def admin(self, method: str, path: str = "", json: Any = None, key: str = ADMIN_KEY) -> requests.Response:
        return requests.request(
            method,
            f"{self.url}/admin/accounts{path}",
            json=json,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    def accounts(self) -> dict[str, dict[str, Any]]:
        return {a["id"]: a for a in self.admin("GET").json()["data"]}

    def only(self, *names: str, **limits: Any) -> list[str]:
        """Replace the pool with one account per simulator name; returns their ids.

        The door's claims and promises were made for the pool being replaced: a test starts
        with none, whatever the tests before it admitted or refused.
        """
        for door_key in self.redis.scan_iter(match=f"accounts:{QUEUE}:door*"):
            self.redis.delete(door_key)
        for account_id in self.accounts():
            assert self.admin("DELETE", f"/{account_id}").status_code == 200
        ids = []
        for name in names:
            created = self.admin("POST", json={"cookies": f"_U={name}; MUID=x", "label": name, **limits})
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        return ids

    def chat(self, content: str, key: str = KEY_ONE, **extra: Any) -> requests.Response:
        return requests.post(
            f"{self.url}/v1/chat/completions",
            json=body(content, **extra),
            headers={"Authorization": f"Bearer {key}"},
            timeout=90,
        )

    def account_of(self, response: requests.Response) -> str:
        conversation = ConversationStore(self.redis, ttl=60).get(response.headers["X-Conversation-Id"])
        assert conversation is not None and conversation.handle is not None
        return str(conversation.handle["account"])


def scored(redis: Redis, key: str) -> list[tuple[bytes, float]]:
    """A sorted set's members with their scores (redis-py types ZRANGE's two forms as one)."""
    return cast("list[tuple[bytes, float]]", redis.zrange(key, 0, -1, withscores=True))


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module", params=("bing", "copilot"))
def pool_stack(request: pytest.FixtureRequest, simulator: SimulatorProcess) -> Iterator[Pool]:
    with EmbeddedRedis() as server:
        env = gateway_env(server.url, simulator.http_url, UPSTREAM=request.param, RQ_QUEUE=QUEUE)
        for key in ("ACCOUNT_MAX_CONCURRENT", "ACCOUNT_RPM", "ACCOUNT_HEALTH"):
            env.pop(key)  # the defaults: 2 in flight, 12 a minute, health on
        env.update(
            ADMIN_KEY=ADMIN_KEY,
            API_KEYS=f"{KEY_ONE},{KEY_TWO}",
            UPSTREAM_COOKIES="_U=seeded-account",
            ACCOUNT_PROBE_SECONDS="1",
            UPSTREAM_FIRST_TOKEN_TIMEOUT="20",
            UPSTREAM_IDLE_TIMEOUT="10",
        )
        web = GunicornServer(env)
        client = Redis.from_url(server.url)
        stack = Pool(env, web.url, client, simulator)
        try:
            stack.workers = [WorkerProcess(env).start(), WorkerProcess(env).start()]
            web.start()
            yield stack
        finally:
            web.stop()
            for worker in stack.workers:
                worker.stop()
            client.close()


@pytest.fixture()
def pool(pool_stack: Pool, sim: SimulatorProcess) -> Pool:
    return pool_stack


def test_accounts_are_seeded_from_the_environment_and_listed_without_secrets(pool: Pool) -> None:
    listed = pool.admin("GET")
    assert listed.status_code == 200
    assert pool.admin("GET", key="wrong-key").status_code == 401
    for account in listed.json()["data"]:
        assert set(account) >= {"id", "label", "state", "in_flight", "turns_last_minute", "next_available_at"}
        assert "cookies" not in account and "access_token" not in account
    [account_id] = pool.only(fresh("secret"))
    pool.admin("PATCH", f"/{account_id}", json={"cookies": "_U=x; SRCHUSR=cookie-secret-value"})
    assert "cookie-secret-value" not in pool.admin("GET").text
    for key in pool.redis.scan_iter("*"):
        assert b"cookie-secret-value" not in (pool.redis.dump(key) or b"")


def test_limits_hold_across_two_worker_processes_and_waiting_turns_are_served(pool: Pool) -> None:
    name = fresh("limits")
    pool.only(name)
    prompts = [f"[sim:slow=0.15][sim:long=8] turn {n}" for n in range(5)]

    def stream() -> list[str]:
        with requests.post(
            f"{pool.url}/v1/chat/completions",
            json=body("[sim:slow=0.1] streamed", stream=True),
            headers={"Authorization": f"Bearer {KEY_ONE}"},
            stream=True,
            timeout=90,
        ) as response:
            return [line for line in text_lines(response) if line]

    with concurrent.futures.ThreadPoolExecutor(6) as executor:
        futures = [executor.submit(pool.chat, prompt) for prompt in prompts]
        wait_for(lambda: pool.sim.accounts().get(name, {}).get("in_flight") == 2, timeout=30)
        lines = executor.submit(stream).result()  # behind the others: it waits its turn
        results = [future.result() for future in futures]
    assert [r.status_code for r in results] == [200] * 5
    seen = pool.sim.accounts()[name]
    assert seen["max_in_flight"] == 2, seen  # used to the limit, never past it
    assert seen["turns"] == 6 and not seen["rejections"], seen
    assert lines[-1] == "data: [DONE]"
    assert any(line.startswith(": queued, position ") for line in lines), lines
    from rq.job import Job

    ran_on = {Job.fetch(r.json()["id"], connection=pool.redis).worker_name for r in results}
    assert len(ran_on) == 2, "both worker processes ran turns of the one account"


def test_a_conversation_stays_on_its_account(pool: Pool) -> None:
    first_id, second_id = pool.only(fresh("one"), fresh("two"))
    first = pool.chat("hello")
    home = pool.account_of(first)
    for n in range(3):
        pool.chat(f"again {n}", conversation_id=first.headers["X-Conversation-Id"])
        assert pool.account_of(first) == home
    other = pool.chat("a new conversation while the first is idle")
    assert pool.account_of(other) in (first_id, second_id)


def test_a_throttled_account_cools_and_new_conversations_move(pool: Pool) -> None:
    hot, cool = fresh("hot"), fresh("cool")
    hot_id, cool_id = pool.only(hot, cool)
    pool.sim.set_account(hot, fault="throttled", next_available_at=time.time() + 120)
    replies = [pool.chat(f"new conversation {n}") for n in range(3)]
    assert [r.status_code for r in replies] == [200] * 3  # the one that hit `hot` moved transparently
    assert {pool.account_of(r) for r in replies} == {cool_id}
    assert pool.sim.accounts()[hot]["rejections"]
    state = pool.accounts()[hot_id]
    assert state["state"] == "cooling" and state["next_available_at"] > time.time() + 30
    assert state["last_error"]["code"] == "rate_limit_exceeded"


def test_all_accounts_cooling_is_429_until_the_earliest_end(pool: Pool) -> None:
    name = fresh("cooling")
    pool.only(name)
    pool.sim.set_account(name, fault="throttled", next_available_at=time.time() + 120)
    assert pool.chat("hi").status_code == 429  # the turn that found out
    response = pool.chat("hi again")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    [account] = pool.accounts().values()
    assert account["state"] == "cooling"
    until = account["next_available_at"] - time.time()  # what the upstream said (ChatHub: 60 s)
    assert until - 3 <= int(response.headers["Retry-After"]) <= until + 3


def test_a_captchad_accounts_conversation_rolls_over_with_context_to_another_account(pool: Pool) -> None:
    first, second = fresh("first"), fresh("second")
    first_id, second_id = pool.only(first, second)
    pool.admin("PATCH", f"/{second_id}", json={"enabled": False})
    opening = pool.chat("remember kiwi")
    conversation_id = opening.headers["X-Conversation-Id"]
    assert pool.account_of(opening) == first_id
    pool.admin("PATCH", f"/{second_id}", json={"enabled": True})
    pool.sim.set_account(first, fault="captcha")
    reply = pool.chat("[sim:recall] fruit?", conversation_id=conversation_id)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "Earlier you said: remember kiwi"
    assert reply.headers["X-Conversation-Id"] == conversation_id
    assert pool.account_of(reply) == second_id
    state = pool.accounts()[first_id]
    assert state["state"] == "needs_attention"
    assert state["last_error"]["code"] in ("upstream_captcha_required", "upstream_challenge_required")


def test_all_accounts_down_is_503_with_the_operator_message_and_a_refresh_brings_it_back(pool: Pool) -> None:
    name = fresh("broken")
    [account_id] = pool.only(name)
    pool.sim.set_account(name, fault="captcha")
    pool.chat("hi")  # finds out
    down = pool.chat("hi")
    assert down.status_code == 503
    assert down.headers["x-should-retry"] == "false"
    error = down.json()["error"]
    assert error["code"] == "upstream_unavailable"
    operator_note = pool.accounts()[account_id]["last_error"]["message"]
    assert account_id in error["message"] and operator_note in error["message"]
    assert "PATCH /admin/accounts" in error["message"]

    # Refresh through the admin API: new cookies (a new simulator identity, without the fault).
    refreshed = pool.admin("PATCH", f"/{account_id}", json={"cookies": f"_U={fresh('fixed')}"})
    assert refreshed.json()["state"] == "ready"
    assert pool.chat("hi").status_code == 200

    # Break it again, then refresh through the CLI.
    [current] = [n for n, a in pool.sim.accounts().items() if n.startswith("fixed-") and a["turns"]]
    pool.sim.set_account(current, fault="unauthorized")
    assert pool.chat("hi").status_code in (502, 503)
    assert pool.accounts()[account_id]["state"] == "needs_attention"
    cli = subprocess.run(
        [sys.executable, "-m", "service.admin", "update", account_id, "--cookies", "-"],
        input=f"_U={fresh('cli')}\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=pool.env,
        timeout=30,
    )
    assert cli.returncode == 0, cli.stderr
    assert '"state": "ready"' in cli.stdout and "_U=" not in cli.stdout
    final = pool.chat("hi")
    assert final.status_code == 200, (final.text, pool.accounts()[account_id], cli.stdout)


def test_a_successful_probe_ends_needs_attention(pool: Pool) -> None:
    name = fresh("probed")
    [account_id] = pool.only(name)
    pool.sim.set_account(name, fault="captcha")
    pool.chat("hi")
    assert pool.accounts()[account_id]["state"] == "needs_attention"
    pool.sim.set_account(name, fault=None)  # solved in a browser; the probe (ACCOUNT_PROBE_SECONDS=1) sees it
    wait_for(lambda: pool.accounts()[account_id]["state"] == "ready", timeout=20, interval=0.3)
    assert pool.chat("hi").status_code == 200


def test_one_key_flooding_does_not_starve_another(pool: Pool) -> None:
    # What the scheduler decides is the order in which turns get the account's slot; with one slot a
    # turn reaches the upstream only after the previous one ended, so the simulator's list of admitted
    # turns is that order. (The order replies reach the clients also depends on the machine's load.)
    name = fresh("fair")
    [account_id] = pool.only(name, max_concurrent=1, rpm=100)
    line = f"accounts:{QUEUE}:line"
    # Another gateway's turn holds the only slot while the line forms: who goes next is then decided
    # by the line alone, however slowly the machine brings each request into it.
    registry = Registry(pool.redis, namespace=QUEUE, secret_key=pool.env["SECRET_KEY"])
    elsewhere = Scheduler(registry, max_concurrent=1, rpm=100, lease_seconds=120)
    held = elsewhere.acquire("another-gateway")
    assert held is not None and held.account.id == account_id
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as executor:
            flood = [executor.submit(pool.chat, f"[sim:slow=0.05] flood {n}") for n in range(6)]
            wait_for(lambda: pool.redis.zcard(line) == 6, timeout=30)
            other = executor.submit(pool.chat, "[sim:slow=0.05] me too", key=KEY_TWO)
            wait_for(lambda: pool.redis.zcard(line) == 7, timeout=30)
            # Each worker's view of the pool may still be from before `only` (a second at most).
            wait_for(lambda: set(pool.redis.hvals(f"{line}:want")) == {account_id.encode()}, timeout=30)
            elsewhere.release(held)
            held = None
            replies = [other.result(), *(f.result() for f in flood)]
    finally:
        if held is not None:
            elsewhere.release(held)
    assert [r.status_code for r in replies] == [200] * 7, [r.text for r in replies]
    admitted = pool.sim.accounts()[name]["admitted"]
    # First come, first served would admit it last; the fair line tags it like the flood's first
    # waiting turn, which arrived earlier and goes first.
    turns = ["other" if "me too" in text else "flood" for text in admitted]
    assert turns == ["flood", "other", "flood", "flood", "flood", "flood", "flood"], admitted


def test_admission_answers_429_at_once_with_a_retry_after_from_the_pools_rate(pool: Pool) -> None:
    pool.only(fresh("admission"), rpm=2)
    started = time.time()
    assert [pool.chat(f"turn {n}").status_code for n in range(2)] == [200, 200]
    refused = pool.chat("one too many")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    # The third turn could start a minute after the first: the client is sent back a few
    # seconds (PROMISE_LEAD) before then, when its place is kept.
    expected = started + 60 - time.time() - 5
    assert expected - 3 <= int(refused.headers["Retry-After"]) <= expected + 3


def test_admission_applies_to_every_surface(pool: Pool) -> None:
    pool.only(fresh("admission-surfaces"), rpm=1)
    assert pool.chat("turn 1").status_code == 200
    headers = {"Authorization": f"Bearer {KEY_ONE}"}
    responses = requests.post(
        f"{pool.url}/v1/responses", json={"model": "gpt-4o", "input": "hi"}, headers=headers, timeout=30
    )
    assert responses.status_code == 429, responses.text
    assert responses.json()["error"]["code"] == "rate_limit_exceeded"
    messages = requests.post(
        f"{pool.url}/v1/messages",
        json={
            "model": "claude-sonnet-4-5",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers=headers,
        timeout=30,
    )
    assert messages.status_code == 429, messages.text
    assert messages.json()["error"]["type"] == "rate_limit_error"  # Anthropic's shape on its route
    assert int(messages.headers["Retry-After"]) > 0


def test_a_crashed_workers_slot_frees_itself(pool: Pool) -> None:
    env = dict(pool.env, RQ_QUEUE=f"{QUEUE}-crash", ACCOUNT_MAX_CONCURRENT="1", WORKER_LEASE_SECONDS="2")
    server = WerkzeugServer(create_app(env)).start()
    doomed = WorkerProcess(env).start()
    survivor: WorkerProcess | None = None
    try:
        headers = {"Authorization": f"Bearer {KEY_ONE}"}
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            lost = executor.submit(
                requests.post,
                f"{server.url}/v1/chat/completions",
                json=body("[sim:slow=1][sim:long=60] a long answer"),
                headers=headers,
                timeout=90,
            )
            wait_for(lambda: pool.sim.accounts().get("seeded-account", {}).get("in_flight") == 1, timeout=30)
            doomed.kill()
            assert lost.result().status_code == 502  # worker_lost
        survivor = WorkerProcess(env).start()
        response = requests.post(
            f"{server.url}/v1/chat/completions", json=body("after the crash"), headers=headers, timeout=60
        )
        assert response.status_code == 200, response.text
    finally:
        server.stop()
        doomed.kill()
        if survivor is not None:
            survivor.stop()


def test_no_admin_api_without_an_admin_key(pool: Pool) -> None:
    env = dict(pool.env, ADMIN_KEY="", RQ_QUEUE=f"{QUEUE}-noadmin")
    server = WerkzeugServer(create_app(env)).start()
    try:
        response = requests.get(
            f"{server.url}/admin/accounts", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
    finally:
        server.stop()
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_disabling_or_removing_an_account_moves_its_conversations_with_context(pool: Pool) -> None:
    first_id, second_id, third_id = pool.only(fresh("a"), fresh("b"), fresh("c"))
    for other in (second_id, third_id):
        pool.admin("PATCH", f"/{other}", json={"enabled": False})
    opening = pool.chat("remember plum")
    conversation_id = opening.headers["X-Conversation-Id"]
    assert pool.account_of(opening) == first_id

    pool.admin("PATCH", f"/{second_id}", json={"enabled": True})
    pool.admin("PATCH", f"/{first_id}", json={"enabled": False})
    moved = pool.chat("[sim:recall] fruit?", conversation_id=conversation_id)
    assert moved.json()["choices"][0]["message"]["content"] == "Earlier you said: remember plum"
    assert pool.account_of(moved) == second_id

    pool.admin("PATCH", f"/{third_id}", json={"enabled": True})
    assert pool.admin("DELETE", f"/{second_id}").status_code == 200
    again = pool.chat("[sim:recall] and now?", conversation_id=conversation_id)
    assert again.json()["choices"][0]["message"]["content"] == (
        "Earlier you said: remember plum | [sim:recall] fruit?"
    )
    assert pool.account_of(again) == third_id
    assert pool.admin("DELETE", f"/{second_id}").status_code == 404


def test_a_long_turn_keeps_its_slot_past_the_lease_time(pool: Pool) -> None:
    name = fresh("long")
    [account_id] = pool.only(name, max_concurrent=1)
    leases = f"accounts:{QUEUE}:leases:{account_id}"
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        long_turn = executor.submit(pool.chat, "[sim:slow=0.3][sim:long=24] a long answer")
        wait_for(lambda: pool.redis.zcard(leases) == 1, timeout=30)
        [(_, first_expiry)] = scored(pool.redis, leases)
        # The watcher pushes the expiry out while the turn runs (WORKER_LEASE_SECONDS=3: lease 6 s).
        wait_for(lambda: scored(pool.redis, leases)[0][1] > first_expiry, timeout=10)
        second = executor.submit(pool.chat, "second")
        assert long_turn.result().status_code == 200 and second.result().status_code == 200
    assert pool.sim.accounts()[name]["max_in_flight"] == 1
