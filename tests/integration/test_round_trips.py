"""Redis round trips on the path to the first token, counted per side from a real turn's trace.

A real gunicorn web process and a real worker (account pool admission on, a key with
limits) against the simulator; the turn is sent with `X-Gateway-Trace: 1` and each side's
trace (`service.runtime.trace`) counts every command or pipeline its connections sent
from the request's start (web) or the job's dequeue (worker) to each phase. The counts
are asserted exactly, so a new round trip on the path fails here (and an honest cut
lowers the numbers below).
"""

from __future__ import annotations

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
from tests.support.simulator import SimulatorProcess
from tests.support.stack import gateway_env, served, wait_for

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
        with served(env) as stack:
            yield stack


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
    # After the enqueue, nothing when the script saw our SUBSCRIBE already in place (the usual
    # case: it was sent first); else the replay-log read that backs the overlapped SUBSCRIBE.
    assert _at(web, "first_byte") - _at(web, "enqueue") in (0, 1)
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
