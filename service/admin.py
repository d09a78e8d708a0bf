"""`python -m service.admin`: the admin API's operations from a shell, straight against Redis.

    python -m service.admin list
    python -m service.admin add [--from-curl FILE | --from-har FILE | --cookies C] [--proxy URL]
                                [--access-token T] [--label L] [--max-concurrent N] [--rpm N]
    python -m service.admin update|refresh ID [--from-curl FILE | --from-har FILE | --cookies C]
                                [--proxy URL] [--access-token T] [--label L] [--enable|--disable]
                                [--max-concurrent N|default] [--rpm N|default]
    python -m service.admin check ID      bootstrap + one short real turn, every step reported
    python -m service.admin delete ID
    python -m service.admin keys create|list|show|update|revoke|usage …   (API keys: service.keys_cli)

`deploy/admin …` runs it with the project's venv. It reads the same environment as the
gateway (REDIS_URL, RQ_QUEUE, SECRET_KEY); with no REDIS_URL it uses the Redis and the
SECRET_KEY that a running `deploy/start` keeps in DATA_DIR (service.data_dir). It needs
no running web process, and what it changes reaches every worker on its next turn. A
cookie passed as `-` is read from standard input, so it stays out of the shell history; so is a
`--from-curl -` / `--from-har -` capture (a request copied as cURL from the browser's developer
tools, or a HAR export: the cookies and the browser identity together, `docs/accounts.md`).
Output is JSON (the admin API's account view, with `warnings`: never a secret); `check` prints
its steps as lines.
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
from service.accounts.account import AccountNotFound
from service.accounts.registry import Registry
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
    for name in ("add", "update", "refresh"):
        command = commands.add_parser(name, help=f"{name} an account")
        if name != "add":
            command.add_argument("id")
            toggle = command.add_mutually_exclusive_group()
            toggle.add_argument("--enable", dest="enabled", action="store_true", default=None)
            toggle.add_argument("--disable", dest="enabled", action="store_false")
        command.add_argument("--cookies", help="the account's Cookie header (`-` = read stdin)")
        command.add_argument("--access-token", help="a signed-in access token (`-` = read stdin)")
        command.add_argument("--from-curl", metavar="FILE", help="a request copied as cURL (`-` = stdin)")
        command.add_argument("--from-har", metavar="FILE", help="a HAR export (`-` = stdin)")
        command.add_argument("--proxy", help="egress proxy URL (http/https/socks5), `` for none")
        command.add_argument("--label")
        command.add_argument("--user-agent")
        command.add_argument("--max-concurrent", type=_limit, default=False)
        command.add_argument("--rpm", type=_limit, default=False)
        command.add_argument("--group", help="the account group whose keys may use it (default: default)")
    check = commands.add_parser("check", help="bootstrap the account and run one short turn, step by step")
    check.add_argument("id")
    delete = commands.add_parser("delete", help="remove an account")
    delete.add_argument("id")
    return top


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for option, field in (("from_curl", "curl"), ("from_har", "har")):
        path = getattr(args, option, None)
        if path is not None:
            body[field] = sys.stdin.read() if path == "-" else _read_file(path)
    if getattr(args, "proxy", None) is not None:
        body["proxy"] = args.proxy
    for name in ("cookies", "access_token", "label", "user_agent", "group"):
        value = getattr(args, name, None)
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


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        raise ApiError(f"cannot read {path}: {exc.strerror}") from None


def _check(settings: Any, redis: Any, account_id: str) -> int:
    """Run `check` here (the CLI is not the web tier: it may drive the upstream itself)."""
    from workers.account_check import check_pool_account, render

    report = check_pool_account(settings, redis, account_id)
    print(render(report))
    return 0 if report["ok"] else 1


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
        host = manage.upstream_host(settings)
        if args.command == "list":
            result: Any = manage.views(registry, registry.all(fresh=True))
        elif args.command == "check":
            return _check(settings, redis, args.id)
        elif args.command == "add":
            changes, warnings = manage.parse_request(_changes(args), creating=True, host=host)
            result = {**manage.views(registry, [manage.add(registry, changes)])[0], "warnings": warnings}
        elif args.command in ("update", "refresh"):
            changes, warnings = manage.parse_request(_changes(args), creating=False, host=host)
            account = manage.update(registry, args.id, changes)
            result = {**manage.views(registry, [account])[0], "warnings": warnings}
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
