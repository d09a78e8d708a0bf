"""Codex CLI, Claude Code and openai-node, the real npm packages, against the gateway and the simulator.

Both open with far more text than one upstream turn carries (Codex ~40 KB of
instructions and tools, Claude Code ~50–85 KB); the simulator enforces Copilot's
`text-too-long` limit, so these prove the priming of a new upstream conversation
(workers/priming.py) and count the upstream turns a session costs. The packages are
installed once into `.npm-tools/` (git-ignored); without npm or a registry the tests
skip, saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from service.models import find_model
from tests.integration.conftest import Stack
from tests.support.stack import ROOT

TOOLS = ROOT / ".npm-tools"
PACKAGES = {"@openai/codex": "0.171.0", "@anthropic-ai/claude-code": "2.1.332", "openai": "7.59.0"}


def npm_tools() -> Path:
    """The CLIs' bin directory, installing the pinned packages on first use (or skipping)."""
    bin_dir = TOOLS / "node_modules" / ".bin"
    marker = TOOLS / "installed.json"
    if marker.exists() and json.loads(marker.read_text()) == PACKAGES and bin_dir.exists():
        return bin_dir
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: cannot run Codex CLI or Claude Code")
    TOOLS.mkdir(exist_ok=True)
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(TOOLS), *specs],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.skip(f"npm could not install {', '.join(specs)}: {done.stderr.strip()[-300:]}")
    marker.write_text(json.dumps(PACKAGES))
    return bin_dir


@pytest.fixture(scope="session")
def tools() -> Path:
    return npm_tools()


def run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, (done.stdout[-1500:], done.stderr[-1500:])
    return done.stdout


def readme_codex_config() -> str:
    """The Codex CLI config block of the README (fence info string `toml codex-config`)."""
    found = re.search(r"^```toml codex-config\n(.*?)^```$", (ROOT / "README.md").read_text(), re.M | re.S)
    assert found is not None, "the README has no `toml codex-config` block"
    return found.group(1)


def test_the_readme_codex_config_names_a_model_the_gateway_serves() -> None:
    config = tomllib.loads(readme_codex_config())
    assert (
        find_model(config["model"], "copilot") is not None and find_model(config["model"], "bing") is not None
    )
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"].endswith("/v1") and provider["wire_api"] == "responses"


def upstream_turns(gateway: Stack) -> int:
    return int(gateway.simulator.stats()["invocations"])


def test_codex_exec_answers_through_the_responses_api(tools: Path, gateway: Stack, tmp_path: Path) -> None:
    home = tmp_path / "codex-home"
    home.mkdir()
    # The README's config as pasted, only pointed at this gateway (issue #17: it had no `model`
    # line, and Codex's own default model was not mapped).
    (home / "config.toml").write_text(readme_codex_config().replace("http://127.0.0.1:8000", gateway.url))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CODEX_HOME": str(home),
        "GATEWAY_API_KEY": "sk-x",
    }
    output = run([str(tools / "codex"), "exec", "--skip-git-repo-check", "say hello"], env, tmp_path)
    assert "say hello. This is turn" in output
    # ~20 KB of developer instructions went ahead in parts: one new upstream conversation.
    first = upstream_turns(gateway)
    assert first >= 3
    assert gateway.simulator.stats()["creates"] == 1


def test_claude_code_print_mode_answers_through_messages(tools: Path, gateway: Stack, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
    }
    claude = str(tools / "claude")
    first = run([claude, "-p", "my name is Ada"], env, tmp_path)
    assert "my name is Ada" in first
    primed = upstream_turns(gateway)
    assert primed >= 2  # the system prompt and environment went ahead in parts
    second = run([claude, "-p", "--continue", "[sim:recall] who am I?"], env, tmp_path)
    assert "Earlier you said:" in second and "my name is Ada" in second
    # The continued session re-sent everything; history matching sent only the new turn upstream.
    assert upstream_turns(gateway) == primed + 1
    assert gateway.simulator.stats()["creates"] == 1


def test_openai_node_chat_and_responses(tools: Path, gateway: Stack, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "NODE_PATH": str(TOOLS / "node_modules")}
    script = ROOT / "tests" / "clients" / "openai_node.cjs"
    result = json.loads(
        run(["node", str(script), gateway.url + "/v1"], env, tmp_path).strip().splitlines()[-1]
    )
    assert result["chat"] == "Hello! You said: hello node. This is turn 1."
    assert result["streamed"] == "Hello! You said: stream node. This is turn 1."
    assert result["response"] == "Hello! You said: responses node. This is turn 1."
    assert result["followUp"] == "Earlier you said: responses node"
