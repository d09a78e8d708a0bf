"""The one-command run: `python -m service.launcher --demo` brings everything up and Ctrl-C takes it down.

Ctrl-C is sent as a terminal sends it: SIGINT to the launcher's whole process group. Every
process the launcher starts inherits a marker variable, so "nothing left running" is
checked by scanning /proc for it, whichever process group or parent a child ended up in.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from service.runtime.embedded_redis import free_port
from tests.support.http import text_lines
from tests.support.stack import wait_for

ROOT = Path(__file__).resolve().parents[2]
MARKER = "GATEWAY_LAUNCHER_TEST"
# Requests to a launcher close their connection: requests keeps the socket of a finished
# answer open while the response lives, and gunicorn's graceful stop (Ctrl-C) waits for an
# idle kept-alive connection until its keepalive (5 s) runs out, on every stop.
CLOSE = {"Connection": "close"}


def marked(token: str) -> set[int]:
    """Live processes whose environment carries `MARKER=token`."""
    found = set()
    needle = f"{MARKER}={token}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.add(int(entry.name))
    return found


class Launcher:
    """`python -m service.launcher --demo` in a session of its own, as a terminal runs it."""

    def __init__(self, data_dir: Path, port: int | None = None, *, demo: bool = True, **extra: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = uuid.uuid4().hex
        self.log = data_dir.parent / f"launcher-{self.token}.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REDIS_URL", "UPSTREAM", "BING_", "COPILOT_", "API_KEYS", "SECRET_KEY"))
            and not k.startswith(("ALLOW_OPEN", "CORS_", "DATA_DIR", "PORT", "ADMIN_KEY", "ACCOUNT_"))
        }
        env.update(
            PORT=str(self.port),
            WEB_CONCURRENCY="1",
            LOG_LEVEL="WARNING",
            DATA_DIR=str(data_dir),
            PYTHONUNBUFFERED="1",
            **{MARKER: self.token},
        )
        env.update(extra)
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.launcher", *(["--demo"] if demo else [])],
                cwd=ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self) -> None:
        """Until the banner is out (it is printed once the web tier answers)."""

        def ready() -> bool:
            assert self.process.poll() is None, f"the launcher exited early:\n{self.output}"
            return "gateway ready" in self.output

        wait_for(ready, timeout=60, interval=0.2)

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGINT)

    def stop(self) -> int:
        """Ctrl-C, then the launcher's exit code; leaves nothing running either way."""
        self.ctrl_c()
        try:
            return self.process.wait(90)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            for pid in marked(self.token):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def chat(url: str, content: str, **extra: Any) -> requests.Response:
    body: dict[str, Any] = {"model": "copilot", "messages": [{"role": "user", "content": content}], **extra}
    return requests.post(
        f"{url}/v1/chat/completions",
        json=body,
        headers=CLOSE,
        timeout=60,
        stream=bool(extra.get("stream")),
    )


def test_the_demo_runs_and_ctrl_c_stops_it_in_order_finishing_a_stream_in_flight(data_dir: Path) -> None:
    launcher = Launcher(data_dir)
    try:
        launcher.wait_ready()
        answer = chat(launcher.url, "hello demo")
        assert answer.status_code == 200, answer.text
        assert (
            answer.json()["choices"][0]["message"]["content"]
            == "Hello! You said: hello demo. This is turn 1."
        )
        assert len(marked(launcher.token)) >= 5  # redis-server, simulator, worker, gunicorn + its worker

        # A slow answer is streaming when Ctrl-C comes: it must still arrive whole.
        stream = chat(launcher.url, "[sim:slow=0.25][sim:long=16] story", stream=True)
        assert stream.status_code == 200
        lines = text_lines(stream)
        first = next(line for line in lines if line.startswith("data: ") and '"content"' in line)
        launcher.ctrl_c()
        rest = [line for line in lines if line.startswith("data: ")]
    finally:
        code = launcher.stop()
    assert rest[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in [first, *rest[:-1]]]
    assert not [chunk for chunk in chunks if "error" in chunk]
    finishes = [choice.get("finish_reason") for chunk in chunks for choice in chunk.get("choices", [])]
    assert "stop" in finishes
    text = "".join(
        choice["delta"].get("content") or "" for chunk in chunks for choice in chunk.get("choices", [])
    )
    assert len(text.split()) >= 16
    assert code == 0, launcher.output
    wait_for(lambda: not marked(launcher.token), timeout=15)
    output = launcher.output
    assert "Traceback" not in output, output
    # The banner tells where it really listens and that it is open to this machine only.
    [line] = [line for line in output.splitlines() if "gateway ready" in line]
    assert f"http://127.0.0.1:{launcher.port}/v1" in line and "loopback only" in line and "open" in line
    # Stopped in order: the web tier had exited before the simulator and Redis were stopped.
    assert output.index("Shutting down: Master") < output.index("event=simulator_stopped")


def test_a_port_in_use_is_a_clear_error_before_anything_starts(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        launcher = Launcher(data_dir, port=taken.getsockname()[1])
        try:
            code = launcher.process.wait(60)
        finally:
            launcher.stop()
    output = launcher.output
    assert code != 0
    assert f"port {launcher.port} is already in use" in output and "PORT=" in output, output
    assert "gateway ready" not in output and "redis-server at" not in output
    assert "Traceback" not in output
    assert not marked(launcher.token)


def test_a_conversation_survives_a_restart(data_dir: Path) -> None:
    first = Launcher(data_dir)
    try:
        first.wait_ready()
        answer = chat(first.url, "remember me")
        assert answer.status_code == 200, answer.text
        conversation_id = answer.headers["X-Conversation-Id"]
    finally:
        assert first.stop() == 0, first.output
    assert not marked(first.token)

    second = Launcher(data_dir)
    try:
        second.wait_ready()
        stored = requests.get(
            f"{second.url}/v1/conversations/{conversation_id}/items?order=asc", headers=CLOSE, timeout=10
        )
        assert stored.status_code == 200, stored.text
        assert [(item["role"], item["content"][0]["text"]) for item in stored.json()["data"]] == [
            ("user", "remember me"),
            ("assistant", "Hello! You said: remember me. This is turn 1."),
        ]
    finally:
        assert second.stop() == 0, second.output
    # What made that possible is kept private: owner-only secrets, a password on Redis.
    for name in ("secret_key", "redis_password"):
        assert (data_dir / name).stat().st_mode & 0o077 == 0
    assert (data_dir / "redis" / "appendonly.aof").exists()
    assert "requirepass" in (data_dir / "redis" / "redis.conf").read_text()
