"""What `deploy/start` keeps in the data directory, and how the command-line tools find it.

The launcher runs a private Redis on a port that changes on every start, with a password
kept in `DATA_DIR/redis_password`, and a generated `SECRET_KEY` in `DATA_DIR/secret_key`
(the key account secrets are sealed with: a new one would make every stored account
unreadable). While it runs it writes `DATA_DIR/redis.json` (where Redis listens and which
file holds the password, never the password itself), so `service.admin` and
`service.keys_cli` (`deploy/admin …`) reach the same Redis, with the same SECRET_KEY, when
no `REDIS_URL` is set. They say so in one line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET_FILE = "secret_key"
PASSWORD_FILE = "redis_password"
REDIS_FILE = "redis.json"


def data_dir(environ: Mapping[str, str]) -> Path:
    """`DATA_DIR` (relative to the project, as deploy/start runs there), default `.data/`."""
    configured = environ.get("DATA_DIR", "").strip()
    path = Path(configured).expanduser() if configured else ROOT / ".data"
    return (path if path.is_absolute() else ROOT / path).resolve()


def write_redis_file(directory: Path, port: int, *, keyed: bool = False) -> Path:
    """Tell the CLIs where the embedded Redis listens (the password stays in its own file), and
    whether that gateway requires keys (the CLIs' own environment may not say: ADMIN_KEY)."""
    path = directory / REDIS_FILE
    record = {
        "host": "127.0.0.1",
        "port": port,
        "password_file": PASSWORD_FILE,
        "pid": os.getpid(),
        "keyed": keyed,
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record) + "\n")
    temporary.replace(path)
    return path


def remove_redis_file(directory: Path) -> None:
    """Forget the embedded Redis once it stops (only the file this process wrote)."""
    path = directory / REDIS_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def cli_environ(environ: Mapping[str, str], tool: str) -> dict[str, str]:
    """The environment a CLI runs with: the launcher's Redis and SECRET_KEY when none is set.

    Prints one line on stderr when it uses them. A `REDIS_URL` or `REDIS_SENTINELS` set by
    the operator always wins; so does a `SECRET_KEY`.
    """
    env = dict(environ)
    if env.get("REDIS_URL", "").strip() or env.get("REDIS_SENTINELS", "").strip():
        return env
    directory = data_dir(env)
    try:
        record = json.loads((directory / REDIS_FILE).read_text())
        password = (directory / str(record["password_file"])).read_text().strip()
        address = f"{record['host']}:{int(record['port'])}"
        os.kill(int(record["pid"]), 0)  # a file left by a launcher that was killed: nothing runs
    except ProcessLookupError:
        return env
    except PermissionError:
        pass  # the launcher runs as another user; its Redis may still be ours to reach
    except (OSError, ValueError, KeyError, TypeError):
        return env  # no deploy/start running here: the caller says REDIS_URL is required
    env["REDIS_URL"] = f"redis://:{password}@{address}/0"
    secret = directory / SECRET_FILE
    if not env.get("SECRET_KEY", "").strip() and secret.exists():
        env["SECRET_KEY"] = secret.read_text().strip()
    print(
        f"{tool}: using the Redis that deploy/start runs at {address} (from {directory / REDIS_FILE})",
        file=sys.stderr,
    )
    return env


def launcher_keyed(environ: Mapping[str, str]) -> bool:
    """Whether the running `deploy/start` of this data directory requires keys (False if none runs)."""
    try:
        return bool(json.loads((data_dir(environ) / REDIS_FILE).read_text()).get("keyed"))
    except (OSError, ValueError, AttributeError):
        return False


def missing_redis(tool: str, environ: Mapping[str, str]) -> str:
    """The message when there is no Redis to manage: how to get one."""
    return (
        f"{tool}: no Redis: set REDIS_URL (or REDIS_SENTINELS), or start the gateway with deploy/start, "
        f"which writes {data_dir(environ) / REDIS_FILE} for this tool while it runs"
    )
