"""Every block of the README and docs/ marked runnable runs, as pasted, against a real demo stack (#17).

A fenced block whose info string is `bash runnable` or `python runnable` runs against an open
gateway (no keys, as `deploy/start --demo` is); `… runnable keyed` against one with `ADMIN_KEY`
and `API_KEYS` set, with `$ADMIN_KEY` and `$GATEWAY_API_KEY` exported and a `DATA_DIR` that
holds what `deploy/start` writes there (so `deploy/admin` finds Redis as it would). Both web
tiers (gunicorn) share one Redis, one worker and the upstream simulator, started from
`tests/support`. The documented address `127.0.0.1:8000` is rewritten to the stack's port;
nothing else in a block is changed. A bash block runs with `set -euo pipefail` and must exit 0;
every `curl` in it must answer 2xx (it runs with `--fail-with-body`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.data_dir import PASSWORD_FILE, SECRET_FILE, write_redis_file
from service.runtime.embedded_redis import EmbeddedRedis
from tests.support.simulator import SimulatorProcess
from tests.support.stack import ROOT, GunicornServer, WorkerProcess, gateway_env

FENCE = re.compile(r"^```(\w+) runnable( keyed)?\n(.*?)^```$", re.M | re.S)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ADDRESS = "127.0.0.1:8000"
ADMIN_KEY = "docs-admin-key-0123456789"
API_KEY = "sk-docs-0123456789abcdef"
SECRET = "docs-secret-key-0123456789"


@dataclasses.dataclass(frozen=True)
class Block:
    """One runnable block: where it is, its language, which gateway it needs, its text."""

    page: str
    line: int
    language: str
    keyed: bool
    text: str

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        source = page.read_text()
        for match in FENCE.finditer(source):
            line = source.count("\n", 0, match.start()) + 1
            found.append(
                Block(
                    page.relative_to(ROOT).as_posix(),
                    line,
                    match.group(1),
                    bool(match.group(2)),
                    match.group(3),
                )
            )
    return found


@dataclasses.dataclass
class Docs:
    open_url: str
    keyed_url: str
    data_dir: Path


@pytest.fixture(scope="module")
def docs_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    password = secrets.token_urlsafe(16)
    data_dir = tmp_path_factory.mktemp("data")
    with EmbeddedRedis(password=password) as redis, SimulatorProcess() as simulator:
        (data_dir / PASSWORD_FILE).write_text(password + "\n")
        (data_dir / SECRET_FILE).write_text(SECRET + "\n")
        write_redis_file(data_dir, redis.port)
        env = gateway_env(
            redis.url,
            simulator.http_url,
            UPSTREAM="copilot",
            UPSTREAM_COOKIES="",
            SECRET_KEY=SECRET,
        )
        worker = WorkerProcess(env)
        web_open = GunicornServer(env)
        web_keyed = GunicornServer(dict(env, ADMIN_KEY=ADMIN_KEY, API_KEYS=API_KEY), host="127.0.0.1")
        try:
            worker.start()
            web_open.start()
            web_keyed.start()
            yield Docs(web_open.url, web_keyed.url, data_dir)
        finally:
            web_open.stop()
            web_keyed.stop()
            worker.stop()


def _environment(stack: Docs) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "SECRET_KEY", "API_KEYS", "ADMIN_KEY"))
    }
    env.update(ADMIN_KEY=ADMIN_KEY, GATEWAY_API_KEY=API_KEY, DATA_DIR=str(stack.data_dir))
    return env


def _run(block: Block, stack: Docs) -> subprocess.CompletedProcess[str]:
    url = stack.keyed_url if block.keyed else stack.open_url
    text = block.text.replace(f"http://{ADDRESS}", url)
    env = _environment(stack)
    if block.keyed:
        # A keyed gateway needs a key where the open demo takes any: the documented placeholder.
        text = text.replace('api_key="anything"', f'api_key="{API_KEY}"')
    if block.language == "bash":
        prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
        argv = ["bash", "-c", prelude + text]
    elif block.language == "python":
        argv = [sys.executable, "-c", text]
    else:
        raise AssertionError(f"{block.name}: no runner for `{block.language} runnable`")
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


RUNNABLE = blocks()


def test_the_docs_have_runnable_blocks_for_every_kind_of_command() -> None:
    assert {block.language for block in RUNNABLE} == {"bash", "python"}
    assert any(block.keyed and "deploy/admin" in block.text for block in RUNNABLE)
    assert any(block.page == "README.md" and block.language == "python" for block in RUNNABLE)


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.name for block in RUNNABLE])
def test_a_documented_block_runs_as_pasted(block: Block, docs_stack: Docs) -> None:
    done = _run(block, docs_stack)
    output = f"--- stdout\n{done.stdout[-2000:]}\n--- stderr\n{done.stderr[-2000:]}"
    assert done.returncode == 0, f"{block.name} failed:\n{block.text}\n{output}"
