"""Python client libraries with conflicting pins against the real stack: the OpenAI Agents SDK
(`Runner.run` on an `OpenAIResponsesModel`) and LangChain's `ChatOpenAI`.

They live in a virtualenv of their own (see requirements-agents.txt), built once and kept
under the project; each client runs as a child process of that interpreter.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

from service.runtime.redis_conn import text
from tests.integration.conftest import Stack
from tests.support.stack import ROOT

AGENTS_ENV = ROOT / ".venv-agents"
REQUIREMENTS = ROOT / "requirements-agents.lock"  # hash-locked from requirements-agents.txt (deploy/lock)


def agents_python() -> Path:
    """The Agents SDK's interpreter, installing it on first use; skips if it cannot be installed."""
    python = AGENTS_ENV / "bin" / "python"
    marker = AGENTS_ENV / ".installed"
    if marker.exists() and marker.read_text() == REQUIREMENTS.read_text():
        return python
    venv.create(AGENTS_ENV, with_pip=True, clear=True)
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--require-hashes", "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if installed.returncode != 0:
        pytest.skip(f"cannot install the Agents SDK: {installed.stderr.strip()[-300:]}")
    marker.write_text(REQUIREMENTS.read_text())
    return python


@pytest.fixture(scope="session")
def agents() -> Path:
    return agents_python()


def test_runner_run_on_the_responses_model(agents: Path, gateway: Stack) -> None:
    prompts = ["my name is Ada", "[sim:recall] who am I?", "third"]
    done = subprocess.run(
        [
            str(agents),
            str(ROOT / "tests" / "clients" / "agents_run.py"),
            gateway.url + "/v1",
            "gpt-4o",
            *prompts,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    turns = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert turns[0]["output"] == "Hello! You said: my name is Ada. This is turn 1."
    # The agent's instructions reached the upstream once, with the first turn.
    assert turns[1]["output"] == "Earlier you said: my name is Ada (system: You answer briefly.)"
    assert turns[2]["output"].endswith("This is turn 3.")
    stored = gateway.redis.get(f"completion:{turns[2]['response_id']}")
    assert stored is not None
    conversation_id = text(stored)
    assert gateway.upstream_users(conversation_id) == prompts


def test_langchain_chat_openai_with_its_default_model(agents: Path, gateway: Stack) -> None:
    done = subprocess.run(
        [str(agents), str(ROOT / "tests" / "clients" / "langchain_run.py"), gateway.url + "/v1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["model"] == "gpt-3.5-turbo"  # LangChain's default, through the default aliases
    assert result["first"] == "Hello! You said: my name is Ada. This is turn 1."
    assert result["streamed"] == "Hello! You said: stream langchain. This is turn 1."
    assert result["second"] == "Earlier you said: my name is Ada"  # history matching: one conversation
    assert result["responses"] == "Hello! You said: responses langchain. This is turn 1."
