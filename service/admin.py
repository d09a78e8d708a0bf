"""`python -m service.admin`: the admin API's operations from a shell, straight against Redis.

    python -m service.admin list
    python -m service.admin add [--cookies C] [--access-token T] [--label L] [--max-concurrent N] [--rpm N]
    python -m service.admin update ID [--cookies C] [--access-token T] [--label L] [--enable|--disable]
                                      [--max-concurrent N|default] [--rpm N|default]
    python -m service.admin delete ID
    python -m service.admin keys create|list|show|update|revoke|usage …   (API keys: service.keys_cli)

`deploy/admin …` runs it with the project's venv. It reads the same environment as the
gateway (REDIS_URL, RQ_QUEUE, SECRET_KEY); with no REDIS_URL it uses the Redis and the
SECRET_KEY that a running `deploy/start` keeps in DATA_DIR (service.data_dir). It needs
no running web process, and what it changes reaches every worker on its next turn. A
cookie passed as `-` is read from standard input, so it stays out of the shell history.
Output is JSON (the admin API's account view: never a secret).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from service import keys_cli
from service.accounts import manage
from service.accounts.registry import AccountNotFound, Registry
from service.accounts.sealing import SealingError
from service.data_dir import cli_environ, missing_redis
from service.errors import ApiError
from service.runtime.redis_conn import connect
from service.runtime.settings import SettingsError, load_settings

PROG = os.environ.get("GATEWAY_CLI_NAME", "python -m service.admin")  # deploy/admin says its own name


def _limit(value: str) -> int | None:
    if value == "default":
        return None
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer or `default`")
    return number


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog=PROG, description="Manage upstream accounts.")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every account, its state and load")
    for name in ("add", "update"):
        command = commands.add_parser(name, help=f"{name} an account")
        if name == "update":
            command.add_argument("id")
            toggle = command.add_mutually_exclusive_group()
            toggle.add_argument("--enable", dest="enabled", action="store_true", default=None)
            toggle.add_argument("--disable", dest="enabled", action="store_false")
        command.add_argument("--cookies", help="the account's Cookie header (`-` = read stdin)")
        command.add_argument("--access-token", help="a signed-in access token (`-` = read stdin)")
        command.add_argument("--label")
        command.add_argument("--user-agent")
        command.add_argument("--max-concurrent", type=_limit, default=False)
        command.add_argument("--rpm", type=_limit, default=False)
        command.add_argument("--group", help="the account group whose keys may use it (default: default)")
    delete = commands.add_parser("delete", help="remove an account")
    delete.add_argument("id")
    return top


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in ("cookies", "access_token", "label", "user_agent", "group"):
        value = getattr(args, name)
        if value == "-" and name in ("cookies", "access_token"):
            value = sys.stdin.readline().strip()
        if value is not None:
            body[name] = value
    for name in ("max_concurrent", "rpm"):
        if getattr(args, name) is not False:
            body[name] = getattr(args, name)
    if getattr(args, "enabled", None) is not None:
        body["enabled"] = args.enabled
    return body


def run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Run one command; returns the exit code (0 ok, 1 refused, 2 misconfigured).

    `keys …` manages API keys (`service.keys_cli`); everything else manages accounts.
    """
    if list(argv[:1]) == ["keys"]:
        return keys_cli.run(argv[1:], environ, prog=f"{PROG} keys")
    args = parser().parse_args(argv)
    environ = cli_environ(environ, "admin")
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        print(f"admin: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_configured:
        print(missing_redis("admin", environ), file=sys.stderr)
        return 2
    redis = connect(settings.redis_url, role="admin", max_connections=2, sentinel=settings.sentinel)
    registry = Registry(redis, namespace=settings.queue_name, secret_key=settings.secret_key)
    try:
        if args.command == "list":
            result: Any = manage.views(registry, registry.all(fresh=True))
        elif args.command == "add":
            account = manage.add(registry, manage.parse_changes(_changes(args), creating=True))
            result = manage.views(registry, [account])[0]
        elif args.command == "update":
            changes = manage.parse_changes(_changes(args), creating=False)
            result = manage.views(registry, [manage.update(registry, args.id, changes)])[0]
        else:
            registry.delete(args.id)
            result = {"id": args.id, "deleted": True}
    except AccountNotFound:
        print(f"admin: no account with id '{args.id}'", file=sys.stderr)
        return 1
    except (ApiError, SealingError) as exc:
        print(f"admin: {exc}", file=sys.stderr)
        return 1
    finally:
        redis.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], os.environ))
