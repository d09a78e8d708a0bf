"""Redis round trips on the path to the first token, counted per side from a real turn's trace.

A real gunicorn web process and a real worker (account pool admission on, a key with
limits) against the simulator; the turn is sent with `X-Gateway-Trace: 1` and each side's
trace (`service.runtime.trace`) counts every command or pipeline its connections sent
from the request's start (web) or the job's dequeue (worker) to each phase. The counts
are asserted exactly, so a new round trip on the path fails here (and an honest cut
lowers the numbers below).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from redis import Redis
from rq.job import Job, JobStatus

from service.runtime import trace
from service.runtime.embedded_redis import EmbeddedRedis
from tests.integration.test_images import screenshot_png
from tests.support.simulator import SimulatorProcess
from tests.support.stack import GunicornServer, WorkerProcess, gateway_env, wait_for

KEY = "sk-round-trips-0123456789"

# Round trips before the web tier hands the turn to the queue (through "enqueue"), and
# before the worker's `send` frame (dequeue included), for a new conversation. Before
# issue #20 they were 6 (door calendar read, door script, key quota, conversation room,
# SUBSCRIBE, enqueue) and 8 (BLMOVE, job read, RQ's execution, RQ's job start, PERSIST,
# grant, door claim end, credentials read); then 3 and 4 (door, quota + room, enqueue;
# BLMOVE, HGETALL, RQ's bookkeeping, grant + claim end + credentials).
WEB_ROUND_TRIPS = 1  # door + quota + room + RQ's enqueue in one script (SUBSCRIBE overlaps it)
WORKER_ROUND_TRIPS = 1  # BLMOVE + the script that starts the job (RQ's bookkeeping) and grants its account


@pytest.fixture(scope="module")
def traced_stack(simulator: SimulatorProcess) -> Iterator[tuple[str, Redis]]:
    """A copilot stack that keeps traces, with a limited key, the pool's admission and spares on."""
    with EmbeddedRedis() as server:
        env = gateway_env(
            server.url,
            simulator.http_url,
            UPSTREAM="copilot",
            TRACE_REQUESTS="1",
            API_KEYS=KEY,
            KEY_DEFAULT_RPM="1000",
            KEY_DEFAULT_CONCURRENT="10",
            KEY_DEFAULT_TOKENS_PER_DAY="10000000",
            ACCOUNT_MAX_CONCURRENT="4",
            ACCOUNT_RPM="600",
            QUEUE_MAX_WAIT_SECONDS="30",
            UPSTREAM_SPARE_CONVERSATIONS="1",
        )
        worker = WorkerProcess(env).start()
        web = GunicornServer(env)
        client = Redis.from_url(server.url)
        try:
            web.start()
            yield web.url, client
        finally:
            client.close()
            web.stop()
            worker.stop()


def _turn(url: str, prompt: str, *, traced: bool) -> str:
    headers = {"Authorization": f"Bearer {KEY}"}
    if traced:
        headers[trace.HEADER] = "1"
    body: dict[str, Any] = {
        "model": "Balanced",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }
    with requests.post(
        f"{url}/v1/chat/completions", json=body, headers=headers, stream=True, timeout=30
    ) as r:
        assert r.status_code == 200, r.text
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == b"data: [DONE]"
    first = next(line for line in lines if line.startswith(b"data: {")).decode().removeprefix("data: ")
    return str(json.loads(first)["id"])


def _at(side: dict[str, Any], phase: str) -> int:
    for name, _when, round_trips in side["marks"]:
        if name == phase:
            return int(round_trips)
    raise AssertionError(f"no {phase!r} in {side['marks']}")


def test_round_trips_to_the_first_token(traced_stack: tuple[str, Redis], sim: SimulatorProcess) -> None:
    url, redis = traced_stack
    for n in range(2):  # warm: the pools' connections exist, the account has run turns
        _turn(url, f"warm {n}", traced=False)
    completion_id = _turn(url, "count my round trips", traced=True)
    sides = wait_for(
        lambda: (lambda s: s if {"web", "worker"} <= s.keys() else None)(trace.load(redis, completion_id))
    )
    web, worker = sides["web"], sides["worker"]
    print("web", web["marks"], web["commands"], "\nworker", worker["marks"], worker["commands"])
    assert (_at(web, "enqueue"), _at(worker, "send")) == (WEB_ROUND_TRIPS, WORKER_ROUND_TRIPS)
    # The trace's phases are in order and the first byte comes after the worker's send.
    web_sends = [names.split() for names in web["commands"]]
    assert [names[0] for names in web_sends[:2]] == [
        "~SUBSCRIBE",  # not waited for before the enqueue
        # The door (which reads the pool's load itself: its snapshot is kept warm off the path),
        # the key's quota, its room for a new conversation and RQ's enqueue, in one script.
        "EVALSHA",
    ]
    job = Job.fetch(completion_id, connection=redis)  # an ordinary RQ job, finished by RQ's worker
    wait_for(lambda: job.get_status() == JobStatus.FINISHED)  # recorded just after the last event
    assert job.origin and job.enqueued_at is not None and job.started_at is not None
    # The BLMOVE and, behind it in the same send, the script that reads the job, writes RQ's start
    # (execution, started registry, worker busy, job started) and grants the account (workers.dequeue).
    assert worker["commands"][0].split()[:2] == ["BLMOVE", "EVALSHA"]
    assert worker["marks"][0][0] == "dequeued" and _at(worker, "credentials") == 1
    # After the enqueue only the replay-log read that backs the overlapped SUBSCRIBE.
    assert _at(web, "first_byte") == _at(web, "enqueue") + 1
    send_at = next(when for name, when, _ in worker["marks"] if name == "send")
    first_byte_at = next(when for name, when, _ in web["marks"] if name == "first_byte")
    assert send_at <= first_byte_at + 0.5  # different processes, same clock


def test_a_new_conversation_takes_its_accounts_spare(
    traced_stack: tuple[str, Redis], sim: SimulatorProcess
) -> None:
    """No create before the `send` once the account has a spare; the next spare follows the turn."""
    url, redis = traced_stack
    spare_key = "accounts:chat:spare:env-1"
    # A spare the upstream forgot (the simulator was just reset) is refused: the turn rolls over.
    redis.set(
        spare_key,
        json.dumps({"dialect": "copilot", "conversation_id": "gone", "account": "env-1"}),
    )
    _turn(url, "a turn that leaves a spare behind", traced=False)
    spare = wait_for(lambda: redis.get(spare_key))
    completion_id = _turn(url, "a new conversation on the spare", traced=True)
    sides = wait_for(lambda: (lambda s: s if "worker" in s else None)(trace.load(redis, completion_id)))
    phases = [name for name, _when, _ in sides["worker"]["marks"]]
    assert "spare_used" in phases and "upstream_created" not in phases
    assert _at(sides["worker"], "send") == WORKER_ROUND_TRIPS  # the spare came with the grant
    used = json.loads(spare)["conversation_id"]
    last = sim.last_send()
    assert last is not None and last["conversationId"] == used
    renewed = wait_for(lambda: redis.get(spare_key))  # made again, after that turn's stream
    assert json.loads(renewed)["conversation_id"] != used


def test_the_door_reads_the_pool_once_with_turns_in_flight(
    traced_stack: tuple[str, Redis], sim: SimulatorProcess
) -> None:
    """A slot held by a running turn does not cost the door a second read of the pool."""
    url, redis = traced_stack
    long_turn = threading.Thread(
        target=_turn, args=(url, "[sim:long=4] keep a slot busy"), kwargs={"traced": False}
    )
    long_turn.start()
    try:
        wait_for(lambda: redis.zcard("accounts:chat:leases:env-1"))
        completion_id = _turn(url, "count my round trips beside a running turn", traced=True)
        sides = wait_for(lambda: (lambda s: s if "web" in s else None)(trace.load(redis, completion_id)))
        assert _at(sides["web"], "enqueue") == WEB_ROUND_TRIPS
    finally:
        long_turn.join(timeout=30)


# The same count for the common requests that are not a plain new conversation: a conversation
# continued by its id, by a completion's id, by the client's whole history, and a new one with
# an Idempotency-Key (its retry attaches to the first run instead of starting a turn).
def _post(url: str, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """A traced streamed chat turn; (its completion id, its conversation id)."""
    sent = {"Authorization": f"Bearer {KEY}", trace.HEADER: "1", **(headers or {})}
    with requests.post(
        f"{url}/v1/chat/completions",
        json={"model": "Balanced", "stream": True, **body},
        headers=sent,
        stream=True,
        timeout=30,
    ) as r:
        assert r.status_code == 200, r.text
        conversation_id = r.headers["X-Conversation-Id"]
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == b"data: [DONE]"
    first = next(line for line in lines if line.startswith(b"data: {")).decode().removeprefix("data: ")
    return str(json.loads(first)["id"]), conversation_id


def _sides(redis: Redis, completion_id: str, *, worker: bool = True) -> dict[str, Any]:
    want = {"web", "worker"} if worker else {"web"}
    found = wait_for(lambda: (lambda s: s if want <= s.keys() else None)(trace.load(redis, completion_id)))
    return dict(found)


def _counts(redis: Redis, completion_id: str) -> tuple[int, int]:
    sides = _sides(redis, completion_id)
    print("web", sides["web"]["commands"], "\nworker", sides["worker"]["commands"])
    return _at(sides["web"], "enqueue"), _at(sides["worker"], "send")


def _first(url: str, prompt: str) -> tuple[str, str, list[dict[str, str]]]:
    """A new conversation's first turn: (completion id, conversation id, the history it leaves)."""
    messages = [{"role": "user", "content": prompt}]
    with requests.post(
        f"{url}/v1/chat/completions",
        json={"model": "Balanced", "messages": messages},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    ) as r:
        assert r.status_code == 200, r.text
        body = r.json()
    answer = {"role": "assistant", "content": body["choices"][0]["message"]["content"]}
    return body["id"], r.headers["X-Conversation-Id"], [*messages, answer]


@pytest.mark.parametrize("by", ["conversation_id", "completion_id", "history"])
def test_round_trips_of_a_continued_conversation(
    traced_stack: tuple[str, Redis], sim: SimulatorProcess, by: str
) -> None:
    url, redis = traced_stack
    counts = []
    for n in range(2):  # the second is counted: the first loads this kind's script into Redis
        completion, conversation, history = _first(url, f"start conversation {n} to continue by {by}")
        follow = {"role": "user", "content": f"and continue it by {by}"}
        bodies: dict[str, dict[str, Any]] = {
            "conversation_id": {"messages": [follow], "conversation_id": conversation},
            "completion_id": {"messages": [follow], "id": completion},
            "history": {"messages": [*history, follow]},
        }
        completion_id, continued = _post(url, bodies[by])
        assert continued == conversation
        counts.append(_counts(redis, completion_id))
    assert counts[-1] == (CONTINUED_WEB[by], WORKER_ROUND_TRIPS)


def test_round_trips_with_an_idempotency_key(traced_stack: tuple[str, Redis], sim: SimulatorProcess) -> None:
    url, redis = traced_stack
    for n in range(2):  # the second is counted: the first loads its script into Redis
        body = {"messages": [{"role": "user", "content": f"count my round trips, idempotently {n}"}]}
        key = {"Idempotency-Key": f"round-trips-{n}"}
        completion_id, _ = _post(url, body, headers=key)
        counted = _counts(redis, completion_id)
        again, _ = _post(url, body, headers=key)  # the retry attaches to the first run (its own trace)
        assert again == completion_id
        replay = _sides(redis, completion_id, worker=False)["web"]
        print("replay", replay["commands"])
    assert counted == (WEB_ROUND_TRIPS, WORKER_ROUND_TRIPS)
    # The retry: the gate's script (door, quota: counted as before; the claim found), then the
    # attach's reads (the run's last event, its stream record, its grace, SUBSCRIBE, replay log).
    assert _at(replay, "first_byte") == REPLAY_WEB


# A conversation id is checked, read and locked by the enqueue's own script (1). A completion
# id or a history is a pointer read first, which the job's arguments need (its conversation id),
# then the same script: 2. Before, they were 6, 7 and 6 (door, quota + room, the pointer or
# match, the lock, the conversation under the lock, the enqueue), and the worker 3 (BLMOVE +
# script, the conversation, the grant of its account).
REPLAY_WEB = 7  # was 9; not on a new turn's path: nothing goes upstream
CONTINUED_WEB = {"conversation_id": 1, "completion_id": 2, "history": 2}


def test_round_trips_of_a_previous_response_id(
    traced_stack: tuple[str, Redis], sim: SimulatorProcess
) -> None:
    url, redis = traced_stack
    headers = {"Authorization": f"Bearer {KEY}"}
    counted = []
    for n in range(2):  # the second is counted: the first loads this kind's script into Redis
        first = requests.post(
            f"{url}/v1/responses",
            json={"model": "Balanced", "input": f"start {n}"},
            headers=headers,
            timeout=30,
        )
        assert first.status_code == 200, first.text
        body = {"model": "Balanced", "input": "and continue", "previous_response_id": first.json()["id"]}
        body["stream"] = True
        with requests.post(
            f"{url}/v1/responses", json=body, headers={**headers, trace.HEADER: "1"}, stream=True, timeout=30
        ) as second:
            assert second.status_code == 200, second.text
            events = [line for line in second.iter_lines() if line.startswith(b"data: ")]
        completion_id = json.loads(events[0].removeprefix(b"data: "))["response"]["id"]
        counted.append(_counts(redis, completion_id))
    assert counted[-1] == (PREVIOUS_RESPONSE_WEB, WORKER_ROUND_TRIPS)


# The Responses surface reads the previous response first (the names of its function calls,
# `responses.calls`), then the pointer to its conversation, then the gate's script (was 8, and
# 3 on the worker). An Idempotency-Key's first call was 5 on the web side.
PREVIOUS_RESPONSE_WEB = 3


def test_round_trips_of_a_turn_with_an_image(traced_stack: tuple[str, Redis], sim: SimulatorProcess) -> None:
    url, redis = traced_stack
    png = base64.b64encode(screenshot_png(64, 48)).decode()
    counted = []
    for n in range(2):  # the second is counted: the first loads this kind's script into Redis
        content = [
            {"type": "text", "text": f"what is in this picture {n}?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        ]
        completion_id, _ = _post(url, {"messages": [{"role": "user", "content": content}]})
        counted.append(_counts(redis, completion_id))
    assert counted[-1] == (WEB_ROUND_TRIPS, IMAGE_WORKER)


# The image's bytes are parked by the gate's script (they were parked in a round trip of their own
# before the door: 4 on the web side) and read back by the dequeue's (a GET of their own: 2).
IMAGE_WORKER = 1
