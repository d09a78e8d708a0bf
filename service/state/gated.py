"""Checks, then writes, in ONE Redis round trip: a Lua script runs each check's own script in
turn and, only when every check lets the turn through, the commands a pipeline would have sent.

Why: the web tier's path to the first token was the door (`service.accounts.door`), the
key's quota (`service.access.ratelimit`) and the enqueue, each its own round trip. The
checks must come before the enqueue (a refused turn is never queued) and their scripts
must stay the single source of their rules, so each check's script runs here unchanged,
as a local function whose parameters shadow Redis's `KEYS` and `ARGV`. What follows the
checks is *captured* from a real redis-py pipeline (`captured`): RQ's own enqueue writes
the job hash, pushes the id and registers the queue exactly as it would itself, so its
registries, failure handling and tooling (`rq info`, `Job.fetch`) see an ordinary job.

    run(redis, [Check(...), ...], commands) -> (passed, [reply of each check that ran])

A check's `passes` is a Lua condition on its reply `r`; the first that fails ends the
script before anything is written but what the checks themselves wrote (the door's
claim, the quota's count), exactly as when each ran in its own round trip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script

Command = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Check:
    """One script that may stop the turn: its Lua body (as run on its own), keys, args, and the
    Lua condition on its reply `r` under which the next step runs."""

    name: str  # a Lua identifier, unique within one run
    script: str
    keys: Sequence[Any]
    args: Sequence[Any]
    passes: str


_TAKE = """
-- A full Redis refuses a script only at its first write that may grow memory; the checks'
-- first writes only delete, after which Redis lets the script write on. SETRANGE of nothing
-- changes nothing but is such a write: refused here, before anything, as a MULTI would be.
local full = redis.pcall('SETRANGE', 'gate:oom-probe', 0, '')
if type(full) == 'table' and full.err then return redis.error_reply(full.err) end
local at = 0
local function take()
  at = at + 1
  local n, out = tonumber(ARGV[at]), {}
  for j = 1, n do out[j] = ARGV[at + j] end
  at = at + n
  return out
end
local replies = {}
"""

_scripts: dict[tuple[tuple[str, str, str], ...], Script] = {}


def source(checks: Sequence[Check]) -> str:
    """The one script for these checks (in order), then the captured commands."""
    parts = [_TAKE]
    for check in checks:
        parts.append(f"local function check_{check.name}(KEYS, ARGV)\n{check.script}\nend\n")
    for check in checks:
        parts.append(
            "do\n"
            "  local keys = take()\n"
            "  local args = take()\n"
            f"  local r = check_{check.name}(keys, args)\n"
            "  replies[#replies + 1] = r\n"
            f"  if not ({check.passes}) then return {{0, replies}} end\n"
            "end\n"
        )
    parts.append(
        "at = at + 1\n"
        "for _ = 1, tonumber(ARGV[at]) do redis.call(unpack(take())) end\n"
        "return {1, replies}\n"
    )
    return "".join(parts)


def _script(redis: Redis, checks: Sequence[Check]) -> Script:
    """The script for these checks' shape (run with the caller's client: apps in one process differ)."""
    shape = tuple((c.name, c.script, c.passes) for c in checks)
    script = _scripts.get(shape)
    if script is None:
        script = _scripts[shape] = redis.register_script(source(checks))
    return script


def arguments(checks: Sequence[Check], commands: Sequence[Command]) -> list[Any]:
    """The script's ARGV: each check's keys and args, then the commands, each length-prefixed."""
    out: list[Any] = []
    for check in checks:
        out.extend((len(check.keys), *check.keys, len(check.args), *check.args))
    out.append(len(commands))
    for command in commands:
        out.extend((len(command), *command))
    return out


def run(redis: Redis, checks: Sequence[Check], commands: Sequence[Command]) -> tuple[bool, list[Any]]:
    """Run the checks in order and, if all pass, the commands: one round trip (EVALSHA).

    Returns whether the commands ran, and the replies of the checks that ran (a refused
    turn's list ends with the reply of the check that refused it).
    """
    passed, replies = _script(redis, checks)(args=arguments(checks, commands), client=redis)
    return bool(passed), list(replies)


def captured(redis: Redis, fill: Callable[[Pipeline], object]) -> list[Command]:
    """The commands `fill` puts on a transaction pipeline, taken instead of sent.

    `fill` must only queue commands (no WATCH, which runs at once); RQ's enqueue of a job
    without dependencies does just that.
    """
    with redis.pipeline() as pipe:
        fill(pipe)
        commands = [tuple(args) for args, _options in pipe.command_stack]
        pipe.reset()
    return commands
