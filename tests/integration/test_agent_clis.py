"""Codex CLI, Claude Code and openai-node, the real npm packages, against the gateway and the simulator.

Both open with far more text than one upstream turn carries (Codex ~40 KB of
instructions and tools, Claude Code ~50–85 KB); the simulator enforces Copilot's
`text-too-long` limit, so these prove the priming of a new upstream conversation
(service/priming.py: ⌈context / turn budget⌉ turns, the question in the last part) and
count the upstream turns a session costs: exactly one per later request, Codex's
`store: false` included (continued by digest, `service.ephemeral`). They also run the
clients' first-try probes: Codex's Responses WebSocket (426, then HTTP at once, no
warning) and Claude Code's model discovery (its gateway-models cache lists our ids).
The packages are installed once into `.npm-tools/` (git-ignored), plus the oldest Claude
Code 2.1.x npm serves for Node 20 when `OLD_CLAUDE` can be installed; without npm or a
registry the tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from service.models import find_model
from service.priming import OVERHEAD
from service.state.conversations import owner_of
from tests.integration.conftest import Stack
from tests.support.stack import ROOT

TOOLS = ROOT / ".npm-tools"
PACKAGES = {"@openai/codex": "0.171.0", "@anthropic-ai/claude-code": "2.1.332", "openai": "7.59.0"}
OLD_CLAUDE = "2.1.0"  # the oldest 2.1.x (engines: node >= 18); 2.1.197 is what Node 20 gets by default
WARNING = re.compile(r"reconnect|retry|retrying|fall(ing)? ?back|stream disconnected|metadata for", re.I)
NOTICE = re.compile(r"\b(WARN|WARNING|ERROR)\b|^\s*(warning|error):|Reconnecting|Falling back", re.I)
BUDGET = 10000  # UPSTREAM_MAX_TURN_CHARS (the default)
STALL = 8.0  # seconds beyond the upstream's turn time that would mean a retry stall, not start-up


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


def old_claude() -> Path:
    """Claude Code `OLD_CLAUDE` in a prefix of its own (skips when it cannot be installed)."""
    prefix = TOOLS / f"claude-{OLD_CLAUDE}"
    binary = prefix / "node_modules" / ".bin" / "claude"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    prefix.mkdir(parents=True, exist_ok=True)
    spec = f"@anthropic-ai/claude-code@{OLD_CLAUDE}"
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), spec],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not binary.exists():
        pytest.skip(f"npm could not install {spec}: {done.stderr.strip()[-300:]}")
    return binary


def run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    return run_full(command, env, cwd)[0]


def run_full(command: list[str], env: dict[str, str], cwd: Path) -> tuple[str, str, float]:
    """stdout, stderr and wall time of a CLI run that must succeed."""
    started = time.monotonic()
    done = subprocess.run(
        command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, (done.stdout[-1500:], done.stderr[-1500:])
    return done.stdout, done.stderr, time.monotonic() - started


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


def stats(gateway: Stack) -> tuple[int, int, float]:
    """Upstream turns, upstream conversations created, seconds the upstream spent on turns."""
    found = gateway.simulator.stats()
    return int(found["invocations"]), int(found["creates"]), float(found["turn_seconds"])


def assert_primed_fewest(texts: list[str]) -> None:
    """A new upstream conversation's turns: parts 1..n, the question in the last, no turn more than needed."""
    total = len(texts)
    if total == 1:
        return
    for index, text in enumerate(texts, start=1):
        assert text.startswith(f"[Context part {index} of {total}"), text[:80]
    assert "[My message]" in texts[-1]
    # n - 1 parts could not have carried it: every part but the last is nearly full.
    carried = sum(len(text.split("\n\n", 1)[1]) for text in texts)
    assert carried > (total - 1) * (BUDGET - OVERHEAD) - 200 * total


def codex_home(tmp_path: Path, gateway: Stack, *, websockets: bool = False) -> dict[str, str]:
    home = tmp_path / "codex-home"
    home.mkdir(exist_ok=True)
    # The README's config as pasted, only pointed at this gateway (issue #17: it had no `model`
    # line, and Codex's own default model was not mapped).
    config = readme_codex_config().replace("http://127.0.0.1:8000", gateway.url)
    (home / "config.toml").write_text(config + ("supports_websockets = true\n" if websockets else ""))
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CODEX_HOME": str(home),
        "GATEWAY_API_KEY": f"sk-codex-{tmp_path.name}",
    }


def upstream_texts(gateway: Stack, conversation_id: str) -> list[str]:
    return [turn["user"] for turn in gateway.simulator.conversation(conversation_id)["turns"]]


def unstored_upstream(gateway: Stack, api_key: str) -> str:
    """The upstream conversation id a `store: false` session left its digest entry pointing at."""
    owner = owner_of(api_key, secret=gateway.env["SECRET_KEY"])
    entries = list(gateway.redis.keys(f"digest:{owner}:*"))
    assert len(entries) == 1, entries
    carried: dict[str, Any] = json.loads(gateway.redis.get(entries[0]) or b"{}")
    return str(carried["handle"]["conversation_id"])


def quick_recall(gateway: Stack) -> None:
    """Stream the coming `[sim:recall]` answer in sentences rather than words.

    The recall echoes every earlier user text, the primed instructions included (Codex ~40 KB,
    Claude Code 50-85 KB): word by word that is thousands of updates, each of which re-sends the
    whole answer so far on ChatHub, about 30 s per recall on a busy machine. Still a stream of
    many updates; the next test's `sim` reset restores one word per update.
    """
    gateway.simulator.configure(words_per_update=200)


def warnings_in(output: str) -> list[str]:
    """Codex's own warning, error and reconnect lines about reconnecting, retrying or falling back
    (not the model's answer, which Codex also prints and which may say anything)."""
    return [line for line in output.splitlines() if NOTICE.search(line) and WARNING.search(line)]


def test_codex_exec_primes_once_then_one_upstream_turn_per_request(
    tools: Path, gateway: Stack, tmp_path: Path
) -> None:
    env = codex_home(tmp_path, gateway)
    codex = str(tools / "codex")
    turns0, creates0, busy0 = stats(gateway)
    out, err, wall = run_full([codex, "exec", "--skip-git-repo-check", "say hello"], env, tmp_path)
    assert "say hello. This is turn" in out
    assert warnings_in(out + err) == []
    turns1, creates1, busy1 = stats(gateway)
    assert creates1 - creates0 == 1
    # Codex sends `store: false`: nothing stored but the digest entry, which names the upstream conversation.
    texts = upstream_texts(gateway, unstored_upstream(gateway, env["GATEWAY_API_KEY"]))
    assert len(texts) == turns1 - turns0 >= 2  # ~20 KB of instructions: primed, the question in the last part
    assert_primed_fewest(texts)
    # No stall: beyond the upstream's own time, only Codex's start-up and the gateway (1-4 s on a
    # busy 2-core machine); the stall a refused probe causes is 10-20 s of reconnects.
    assert wall - (busy1 - busy0) < STALL, (wall, busy1 - busy0)
    # The next request of the session re-sends everything with `store: false`: one upstream turn.
    quick_recall(gateway)
    out, err, _ = run_full(
        [codex, "exec", "--skip-git-repo-check", "resume", "--last", "[sim:recall] what did I say?"],
        env,
        tmp_path,
    )
    assert "Earlier you said:" in out and "say hello" in out
    assert warnings_in(out + err) == []
    turns2, creates2, _ = stats(gateway)
    assert (turns2 - turns1, creates2 - creates1) == (1, 0)


def test_codex_websocket_probe_gets_426_and_falls_back_to_http_at_once(
    tools: Path, gateway: Stack, tmp_path: Path
) -> None:
    env = codex_home(tmp_path, gateway, websockets=True)
    turns0, _, busy0 = stats(gateway)
    out, err, wall = run_full(
        [str(tools / "codex"), "exec", "--skip-git-repo-check", "say hello"], env, tmp_path
    )
    assert "say hello. This is turn" in out
    # Codex logs the refused upgrade once ("failed to connect to responses websocket"), then goes
    # straight to HTTP: no reconnect, no retry, no fallback warning, no stall.
    assert warnings_in(out + err) == []
    turns1, _, busy1 = stats(gateway)
    assert turns1 > turns0
    assert wall - (busy1 - busy0) < STALL, (wall, busy1 - busy0)


def claude_env(tmp_path: Path, gateway: Stack) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_API_KEY": f"sk-ant-{tmp_path.name}",
        "CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1",  # GET /v1/models?limit=1000 into its cache
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
    }


def claude_session(claude: str, gateway: Stack, tmp_path: Path, *, side_requests: bool = False) -> None:
    """`claude -p`, then `--continue`: primed once, then one upstream turn on the same conversation.

    `side_requests`: the client also sends short requests of its own (titles, topic checks;
    Claude Code 2.1.0 does), each a conversation of its own, so only the session's own
    upstream conversation is counted.
    """
    env = claude_env(tmp_path, gateway)
    turns0, creates0, _ = stats(gateway)
    first = run([claude, "-p", "my name is Ada"], env, tmp_path)
    assert "my name is Ada" in first
    turns1, creates1, _ = stats(gateway)
    quick_recall(gateway)
    second = run([claude, "-p", "--continue", "[sim:recall] who am I?"], env, tmp_path)
    assert "Earlier you said:" in second and "my name is Ada" in second
    turns2, creates2, _ = stats(gateway)
    # The session's conversation: history matching found it for `--continue` (only the new turn went
    # upstream, after the changed lines of its instructions if they changed).
    owner = owner_of(env["ANTHROPIC_API_KEY"], secret=gateway.env["SECRET_KEY"])
    names = [key.decode() if isinstance(key, bytes) else key for key in gateway.redis.keys("conv:*")]
    documents = [json.loads(gateway.redis.get(name) or "{}") for name in names if name.count(":") == 1]
    mine = [d for d in documents if d.get("owner") == owner and "who am I?" in json.dumps(d["messages"])]
    assert len(mine) == 1
    users = [m["content"] for m in mine[0]["messages"] if m["role"] == "user"]
    assert users[-2].endswith("my name is Ada") and users[-1].endswith("[sim:recall] who am I?")
    handle = json.loads(gateway.redis.get(f"conv:{mine[0]['id']}:upstream") or "{}")
    texts = upstream_texts(gateway, str(handle["conversation_id"]))
    assert_primed_fewest(texts[:-1])
    assert texts[-1].split("\n\n[gateway:", 1)[0].endswith("[sim:recall] who am I?")  # then tool directives
    if not side_requests:
        assert creates1 - creates0 == 1 and len(texts) - 1 == turns1 - turns0
        assert (turns2 - turns1, creates2 - creates1) == (1, 0)


def test_claude_code_print_then_continue_is_one_upstream_conversation(
    tools: Path, gateway: Stack, tmp_path: Path
) -> None:
    claude_session(str(tools / "claude"), gateway, tmp_path)
    cache = json.loads((tmp_path / ".claude" / "cache" / "gateway-models.json").read_text())
    ids = [model["id"] for model in cache["models"]]
    expected = "claude-copilot" if gateway.dialect == "copilot" else "claude-bing-balanced"
    assert expected in ids and all("claude" in i for i in ids)
    assert all("maps to the gateway model" in model["display_name"] for model in cache["models"])


def test_the_oldest_claude_code_2_1_continues_too(gateway: Stack, tmp_path: Path) -> None:
    claude_session(str(old_claude()), gateway, tmp_path, side_requests=True)


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
