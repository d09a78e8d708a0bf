"""Account groups through real processes: keys of different groups never share an upstream account.

The simulator models Copilot's long-term memory (`tests.simulator.accounts`): what a user
says in one conversation of an account comes back, on `[sim:memory]`, in any other
conversation of the same account. A secret planted under key A must therefore never reach
key B when their groups differ — and does when they share one, which proves the check can
fail.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from redis import Redis

from service.runtime.embedded_redis import EmbeddedRedis
from service.state.conversations import ConversationStore
from tests.integration.conftest import body
from tests.support.simulator import SimulatorProcess
from tests.support.stack import GunicornServer, WorkerProcess, gateway_env

ADMIN_KEY = "admin-key-groups-0123456789"
KEYS = {
    "a": "sk-group-a-0123456789abcdef",
    "b": "sk-group-b-0123456789abcdef",
    "c": "sk-shared-c-0123456789abcdef",
    "d": "sk-shared-d-0123456789abcdef",
    "e": "sk-nobody-e-0123456789abcdef",
}
GROUP_OF = {"a": "team-a", "b": "team-b", "c": "shared", "d": "shared", "e": "nobody"}
ASKS = 50


class Groups:
    """The running stack, its accounts (one per group) and chat helpers."""

    def __init__(self, url: str, redis: Redis, sim: SimulatorProcess) -> None:
        self.url, self.redis, self.sim = url, redis, sim
        self.account_ids: dict[str, str] = {}  # group -> account id
        self.names: dict[str, str] = {}  # group -> simulator account name

    def admin(self, method: str, path: str, json: Any = None) -> requests.Response:
        return requests.request(
            method,
            f"{self.url}{path}",
            json=json,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
        )

    def chat(self, who: str, content: str, key: str | None = None) -> requests.Response:
        return requests.post(
            f"{self.url}/v1/chat/completions",
            json=body(content),
            headers={"Authorization": f"Bearer {key or KEYS[who]}"},
            timeout=60,
        )

    def account_of(self, answer: requests.Response) -> str:
        conversation = ConversationStore(self.redis, ttl=60).get(answer.headers["X-Conversation-Id"])
        assert conversation is not None and conversation.handle is not None
        return str(conversation.handle["account"])

    def leaks(self, planter: str, asker: str) -> int:
        """Plant a secret under `planter`; of ASKS memory questions by `asker`, how many bring it back."""
        secret = f"my locker code is {uuid.uuid4().hex[:10]}"
        planted = self.chat(planter, secret)
        assert planted.status_code == 200, planted.text
        # The memory is real: the planter's own account brings it back in another conversation.
        own = self.chat(planter, "[sim:memory] what do you remember about me?")
        assert secret in own.json()["choices"][0]["message"]["content"]
        question = "[sim:memory] what do you remember about me?"
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # four at a time: the same asks, sooner
            answers = list(pool.map(lambda _: self.chat(asker, question), range(ASKS)))
        seen = 0
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert self.account_of(answer) == self.account_ids[GROUP_OF[asker]]
            seen += secret in answer.json()["choices"][0]["message"]["content"]
        return seen


@pytest.fixture(scope="module")
def groups(simulator: SimulatorProcess) -> Iterator[Groups]:
    with EmbeddedRedis() as server:
        env = gateway_env(server.url, simulator.http_url, UPSTREAM="bing", RQ_QUEUE="chat-groups")
        env.update(
            ADMIN_KEY=ADMIN_KEY,
            API_KEYS=",".join(f"{KEYS[who]}@{GROUP_OF[who]}" for who in KEYS),
        )
        web, worker = GunicornServer(env), WorkerProcess(env)
        client = Redis.from_url(server.url)
        stack = Groups(web.url, client, simulator)
        try:
            worker.start()
            web.start()
            for group in ("team-a", "team-b", "shared"):
                name = f"mem-{group}-{uuid.uuid4().hex[:6]}"
                created = stack.admin(
                    "POST",
                    "/admin/accounts",
                    {"cookies": f"_U={name}; MUID=x", "label": name, "group": group},
                )
                assert created.status_code == 201, created.text
                assert created.json()["group"] == group
                stack.account_ids[group], stack.names[group] = created.json()["id"], name
            yield stack
        finally:
            web.stop()
            worker.stop()
            client.close()


def test_a_secret_planted_under_one_group_never_reaches_another(groups: Groups) -> None:
    assert groups.leaks("a", "b") == 0
    assert groups.leaks("b", "a") == 0


def test_keys_sharing_a_group_share_the_accounts_memory(groups: Groups) -> None:
    # The same check on one shared group: the secret comes back, so the test above can fail.
    assert groups.leaks("c", "d") == ASKS


def test_an_empty_group_is_a_503_naming_it_on_every_surface(groups: Groups) -> None:
    answer = groups.chat("e", "hi")
    assert answer.status_code == 503, answer.text
    assert "'nobody'" in answer.json()["error"]["message"]
    response = requests.post(
        f"{groups.url}/v1/responses",
        json={"model": "Balanced", "input": "hi"},
        headers={"Authorization": f"Bearer {KEYS['e']}"},
        timeout=30,
    )
    assert response.status_code == 503 and "'nobody'" in response.json()["error"]["message"]
    metrics = requests.get(f"{groups.url}/metrics", timeout=30).text
    assert 'gateway_account_group_unavailable_total{group="nobody"} 2.0' in metrics


def test_a_managed_keys_group_and_the_admin_views(groups: Groups) -> None:
    created = groups.admin("POST", "/admin/keys", {"label": "b-app", "group": "team-b"})
    assert created.status_code == 201, created.text
    assert created.json()["group"] == "team-b"
    answer = groups.chat("b", "hello from a managed key", key=created.json()["key"])
    assert answer.status_code == 200, answer.text
    assert groups.account_of(answer) == groups.account_ids["team-b"]
    moved = groups.admin("PATCH", f"/admin/keys/{created.json()['id']}", {"group": "nobody"})
    assert moved.status_code == 200 and moved.json()["group"] == "nobody"
    assert groups.chat("b", "and now?", key=created.json()["key"]).status_code == 503
    bad = groups.admin("PATCH", f"/admin/keys/{created.json()['id']}", {"group": "Not A Group!"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group"
    listed = {k["id"]: k for k in groups.admin("GET", "/admin/keys").json()["data"]}
    assert {k["group"] for k in listed.values() if not k["managed"]} == set(GROUP_OF.values())
    accounts = {a["id"]: a for a in groups.admin("GET", "/admin/accounts").json()["data"]}
    assert accounts[groups.account_ids["shared"]]["group"] == "shared"
    assert {a["group"] for a in accounts.values() if a["id"].startswith("env-")} == {"default"}
