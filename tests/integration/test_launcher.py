"""The one-command run: `python -m service.launcher --demo` brings everything up and Ctrl-C takes it down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from service.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_demo_runs_redis_web_worker_and_simulator_and_ctrl_c_stops_them_all() -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_URL", "UPSTREAM", "BING_", "COPILOT_"))
    }
    env.update(PORT=str(port), WEB_CONCURRENCY="1", LOG_LEVEL="WARNING")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "service.launcher", "--demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert launcher.poll() is None, "the launcher exited early"
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the gateway never became healthy"
            time.sleep(0.2)
        answer = requests.post(
            url + "/v1/chat/completions",
            json={"model": "copilot", "messages": [{"role": "user", "content": "hello demo"}]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert (
            answer.json()["choices"][0]["message"]["content"]
            == "Hello! You said: hello demo. This is turn 1."
        )
        children = descendants(launcher.pid)
        assert len(children) >= 4  # redis-server, simulator, gunicorn (+ its worker), RQ worker
    finally:
        launcher.send_signal(signal.SIGINT)
        code = launcher.wait(40)
    assert code == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if alive(pid)]
