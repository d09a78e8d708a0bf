"""Issue 16 item 8: a key's turn slot never outlives the response holding it by long.

- a gunicorn worker killed (-9) mid-stream stops renewing its slot: the key's next turn is
  admitted within about two KEY_SLOT_LEASE_SECONDS, not 6 minutes later;
- a Responses request that fails before its run is closed frees its slot at once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import Stack
from tests.support.stack import GunicornServer

KEY = "sk-slot-0123456789abcdef"
LEASE = 2.0


@pytest.fixture()
def keyed(stack: Stack) -> Iterator[GunicornServer]:
    """gunicorn with one static key limited to one turn at a time and a short slot lease."""
    env = dict(
        stack.env,
        API_KEYS=KEY,
        KEY_DEFAULT_CONCURRENT="1",
        KEY_SLOT_LEASE_SECONDS=str(LEASE),
    )
    server = GunicornServer(env).start()
    try:
        yield server
    finally:
        server.stop()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _ask(url: str, text: str = "hi", **extra: Any) -> requests.Response:
    body = {"model": "Balanced", "messages": [{"role": "user", "content": text}], **extra}
    return requests.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )


@pytest.mark.dialects("bing", reason="the web tier's slots are the same on both dialects")
def test_a_killed_web_process_frees_its_keys_slot_within_two_leases(keyed: GunicornServer) -> None:
    assert keyed.process is not None
    stream = requests.post(
        f"{keyed.url}/v1/chat/completions",
        json={
            "model": "Balanced",
            "stream": True,
            "messages": [{"role": "user", "content": "[sim:slow=0.2][sim:long=300] a long one"}],
        },
        headers={"Authorization": f"Bearer {KEY}"},
        stream=True,
        timeout=30,
    )
    assert stream.status_code == 200
    lines = stream.iter_lines()
    next(lines)  # the turn holds the key's one slot now
    blocked = _ask(keyed.url)
    assert blocked.status_code == 429, blocked.text  # the slot is really taken
    renewed_past = time.monotonic() + LEASE * 2.5
    for _ in lines:  # a live client, past two lease periods: its response keeps renewing the slot
        if time.monotonic() > renewed_past:
            break
    still = _ask(keyed.url)
    assert still.status_code == 429, still.text
    (worker,) = _children(keyed.process.pid)
    os.kill(worker, signal.SIGKILL)
    stream.close()
    deadline = time.monotonic() + 30  # bounded; today's lease holds the slot for 6 minutes
    answer = None
    while time.monotonic() < deadline:
        try:
            answer = _ask(keyed.url)
        except requests.ConnectionError:
            answer = None  # gunicorn is starting the replacement worker
        if answer is not None and answer.status_code != 429:
            break
        time.sleep(0.5)
    assert answer is not None and answer.status_code == 200, (
        answer.text if answer is not None else "no answer"
    )


@pytest.mark.dialects("bing", reason="the web tier's slots are the same on both dialects")
def test_a_responses_request_failing_before_its_run_closes_frees_its_slot(keyed: GunicornServer) -> None:
    body = b'{"model": "Balanced", "input": "hi", "metadata": {"k": "\\ud800"}}'
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    failed = requests.post(f"{keyed.url}/v1/responses", data=body, headers=headers, timeout=30)
    assert failed.status_code in (400, 500)  # a 400 once lone surrogates are refused at the door
    for _ in range(3):
        answer = _ask(keyed.url)
        assert answer.status_code == 200, answer.text  # never a 429 "In flight 1"
