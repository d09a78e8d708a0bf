"""Agent session benchmark (`deploy/bench --agents`): what an agent step costs in upstream turns and time.

Every upstream turn costs about 3.5 s and one of the ~12 turns a minute an account
allows, so the figure that decides whether an agent is usable on this gateway is
upstream turns per agent step. Four clients run the same scripted task against the
simulator, whose turns take a realistic time (`--turn-seconds`, 3.5 s by default;
`[sim:tools=5]` makes its scripted model call a tool five times, then answer, and
`[sim:use=NAME]` picks a harmless tool):

- the real Codex CLI (`codex exec`; Responses, `store: false`, the whole history each time),
- the real Claude Code (`claude -p`; stateless Messages),
- the OpenAI Agents SDK (`Runner.run`, Responses chained with `previous_response_id`),
- the anthropic SDK (stateless Messages, a hand-written tool loop), the last two as baselines.

Per client it reports the requests (agent steps), upstream turns, priming turns (the
parts a new upstream conversation or a long instructions update is primed with),
upstream turns per step after the first request (target: exactly 1), the wall time,
the wall time less the upstream's own turn time, and the gateway's share: the time the
gateway's requests took (its access log) less the upstream's, over the wall time
(target ≤ 2 %). The rest of the wall time is the client's own (start-up, running tools).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from anthropic import Anthropic

from service.runtime.embedded_redis import EmbeddedRedis
from tests.benchmarks.harness import SIM_TOKEN_DELAY, stack_env
from tests.benchmarks.report import Metric, Target
from tests.support.simulator import SimulatorProcess
from tests.support.stack import ROOT, GunicornServer, WorkerProcess

TASK = (
    "Read the five project notes one at a time with the tool, then summarise them. "
    "[sim:tools=5] [sim:use={tool}]"
)
INSTRUCTIONS = "You are a careful assistant. Use the tools to read what you need."
ACCESS = re.compile(r'"POST (\S+) HTTP/[\d.]+" (\d{3}) \S+ (\d+)ms')
PART = re.compile(r"\A\[Context part (\d+) of (\d+)")
Client = Callable[[str, Path], None]


@contextlib.contextmanager
def agent_stack(dialect: str, turn_seconds: float) -> Iterator[tuple[str, SimulatorProcess, Path]]:
    """redis, the simulator (turns of `turn_seconds`), one worker, gunicorn logging each request's time."""
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-agents-")))
        redis_server = stack.enter_context(EmbeddedRedis())
        simulator = stack.enter_context(SimulatorProcess(token_delay=SIM_TOKEN_DELAY, log_level="WARNING"))
        # The agents bring keys of their own; the gateway runs open (loopback only), as a
        # developer's would.
        env = stack_env(redis_server.url, simulator.http_url, dialect, API_KEYS="")
        worker = WorkerProcess(env)
        web = GunicornServer(env, workers=1, access_log=str(workdir / "access.log"))
        stack.callback(worker.stop)
        stack.callback(web.stop)
        worker.start()
        web.start()
        simulator.configure(turn_seconds=turn_seconds)
        yield web.url, simulator, workdir


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed: {(done.stderr or done.stdout)[-400:]}")
    return done.stdout


def codex(tools: Path) -> Client:
    def run(url: str, home: Path) -> None:
        (home / "config.toml").write_text(
            'model = "gpt-5.5"\nmodel_provider = "gateway"\n\n[model_providers.gateway]\n'
            f'name = "Copilot gateway"\nbase_url = "{url}/v1"\nenv_key = "GATEWAY_API_KEY"\n'
            'wire_api = "responses"\n'
        )
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "CODEX_HOME": str(home),
            "GATEWAY_API_KEY": "sk-b",
        }
        task = TASK.format(tool="exec_command")  # its sampled arguments fail to parse: nothing runs
        _run([str(tools / "codex"), "exec", "--skip-git-repo-check", task], env, home)

    return run


def claude(tools: Path) -> Client:
    def run(url: str, home: Path) -> None:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_API_KEY": "sk-ant-bench",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        _run([str(tools / "claude"), "-p", TASK.format(tool="Read")], env, home)

    return run


def agents_sdk(python: Path) -> Client:
    def run(url: str, home: Path) -> None:
        script = str(ROOT / "tests" / "clients" / "agents_task.py")
        env = {"PATH": os.environ["PATH"], "HOME": str(home)}
        found = json.loads(
            _run(
                [str(python), script, url + "/v1", "gpt-4o", TASK.format(tool="read_note")], env, home
            ).splitlines()[-1]
        )
        if found["tool_calls"] < 5:
            raise RuntimeError(f"the Agents SDK ran the tool {found['tool_calls']} times, not 5")

    return run


def anthropic_sdk(url: str, home: Path) -> None:
    """Stateless Messages with a hand-written tool loop: the whole history every request."""
    tool: Any = {
        "name": "read_note",
        "description": "Read one of the project's notes by name.",
        "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    }
    messages: list[Any] = [{"role": "user", "content": TASK.format(tool="read_note")}]
    with Anthropic(base_url=url, api_key="sk-ant-sdk", max_retries=0, timeout=120) as client:
        for _ in range(20):
            reply = client.messages.create(
                model="claude-copilot", max_tokens=1024, system=INSTRUCTIONS, messages=messages, tools=[tool]
            )
            content = [
                {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
                if b.type == "tool_use"
                else {"type": "text", "text": getattr(b, "text", "")}
                for b in reply.content
            ]
            messages.append({"role": "assistant", "content": content})
            uses = [b for b in content if b["type"] == "tool_use"]
            if not uses:
                return
            results = [
                {"type": "tool_result", "tool_use_id": u["id"], "content": "the note is fine."} for u in uses
            ]
            messages.append({"role": "user", "content": results})
    raise RuntimeError("the anthropic SDK loop did not finish in 20 requests")


def _priming(simulator: SimulatorProcess) -> int:
    """Upstream turns that were priming parts (every part of a primed text but its last)."""
    count = 0
    for conversation_id in simulator.conversations():
        for turn in simulator.conversation(conversation_id)["turns"]:
            found = PART.match(str(turn["user"]))
            count += bool(found and found.group(1) != found.group(2))
    return count


def measure(name: str, client: Client, url: str, simulator: SimulatorProcess, workdir: Path) -> list[Metric]:
    """Run one client's task on a reset simulator; its figures."""
    turn_seconds = float(simulator.configure()["turn_seconds"])
    simulator.reset()
    simulator.configure(turn_seconds=turn_seconds)
    log = workdir / "access.log"
    offset = log.stat().st_size if log.exists() else 0
    home = workdir / name
    home.mkdir()
    started = time.monotonic()
    client(url, home)
    wall = time.monotonic() - started
    time.sleep(0.5)  # gunicorn writes the access line after the response
    with log.open() as lines:
        lines.seek(offset)
        timed = [
            m
            for line in lines
            if (m := ACCESS.search(line)) and re.search(r"/(responses|messages)(\?|$)", m.group(1))
        ]
    stats = simulator.stats()
    requests, turns, upstream = len(timed), int(stats["invocations"]), float(stats["turn_seconds"])
    http = sum(int(m.group(3)) for m in timed) / 1000
    priming = _priming(simulator)
    per_step = (turns - priming - 1) / (requests - 1) if requests > 1 else float("nan")
    gateway = http - upstream
    return [
        Metric("requests", "requests (agent steps)", requests, digits=0),
        Metric("turns", "upstream turns", turns, digits=0),
        Metric("priming", "priming turns", priming, digits=0),
        Metric(
            "per_step",
            "upstream turns per step after the first",
            per_step,
            target=Target("<=", 1.0),
            digits=2,
        ),
        Metric("wall", "wall time", wall, "s"),
        Metric("upstream", "upstream's own turn time", upstream, "s"),
        Metric("wall_less", "wall time less the upstream's", wall - upstream, "s"),
        Metric("client", "client's own time (wall less its requests)", wall - http, "s"),
        Metric("gateway", "gateway time (requests less upstream)", gateway, "s", digits=2),
        Metric(
            "share", "gateway share of the wall time", 100 * gateway / wall, "%", Target("<=", 2.0), digits=2
        ),
    ]


def clients() -> dict[str, Client]:
    """The four clients, each only if it can be installed (else left out, saying so)."""
    found: dict[str, Client] = {}
    try:
        from tests.integration.test_agent_clis import npm_tools

        tools = npm_tools()
        found["codex exec"] = codex(tools)
        found["claude -p"] = claude(tools)
    except BaseException as exc:  # pytest.skip outside pytest, npm missing
        print(f"agents: Codex CLI and Claude Code left out: {exc}", flush=True)
    try:
        from tests.integration.test_agents_sdk import agents_python

        found["Agents SDK"] = agents_sdk(agents_python())
    except BaseException as exc:
        print(f"agents: the Agents SDK left out: {exc}", flush=True)
    found["anthropic SDK"] = anthropic_sdk
    return found


def warm_up(url: str) -> None:
    """One short turn on each surface, so first-use costs (imports, the tokenizer) of the long-lived
    processes are not counted against the first client."""
    import requests

    surfaces: tuple[tuple[str, Any], ...] = (
        ("/v1/responses", {"model": "gpt-4o", "input": "warm up"}),
        (
            "/v1/messages",
            {"model": "claude-copilot", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
        ),
    )
    for path, body in surfaces:
        requests.post(url + path, json=body, timeout=120).raise_for_status()


def run_all(dialect: str, turn_seconds: float) -> tuple[dict[str, list[Metric]], dict[str, str]]:
    """Every client's figures (one column each), and the clients that could not be measured."""
    results: dict[str, list[Metric]] = {}
    failures: dict[str, str] = {}
    chosen = clients()
    with agent_stack(dialect, turn_seconds) as (url, simulator, workdir):
        print(f"agents: stack up ({dialect}, {turn_seconds:g} s per upstream turn) at {url}", flush=True)
        warm_up(url)
        for name, client in chosen.items():
            try:
                results[name] = measure(name.replace(" ", "-"), client, url, simulator, workdir)
                print(
                    f"agents: {name}: " + ", ".join(f"{m.label} {m.shown()}" for m in results[name]),
                    flush=True,
                )
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"
                print(f"agents: {name} could not be measured: {failures[name]}", flush=True)
    return results, failures
