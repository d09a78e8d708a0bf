"""`python -m service.keys_cli`: managed API keys from a shell, straight against Redis.

    create [--label L] [--rpm N] [--max-concurrent N] [--tokens-per-day N] [--models GLOB,GLOB]
    list
    show ID
    update ID [--label L] [--rpm N|default] [--max-concurrent N|default]
              [--tokens-per-day N|default] [--models GLOB,GLOB|default]
    revoke ID
    usage ID [--days 7]

The same operations as /admin/keys, for an operator with a shell and the gateway's
environment (REDIS_URL): no web process is needed, and a change reaches every web
process on its next request. A limit of 0 means "no limit"; `default` means the
KEY_DEFAULT_* setting. `create` prints the secret once (as `key`); nothing else ever
shows it. Output is JSON. `run(argv, environ)` is what another CLI dispatches to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from service.access import key_usage
from service.access.key_limits import parse_limits
from service.access.keys import KeyNotFound, KeyStore
from service.accounts import groups
from service.data_dir import cli_environ, launcher_keyed, missing_redis
from service.errors import ApiError
from service.runtime.redis_conn import connect
from service.runtime.settings import SettingsError, load_settings

UNSET = object()


def _limit(value: str) -> int | None:
    if value == "default":
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError("must be a whole number ≥ 0 (0 = no limit) or `default`")
    return number


def _models(value: str) -> list[str] | None:
    if value == "default":
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def parser(prog: str = "python -m service.keys_cli") -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog=prog, description="Manage the gateway's API keys.")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every managed key (never a secret)")
    for name in ("show", "revoke"):
        commands.add_parser(name, help=f"{name} a key").add_argument("id")
    usage = commands.add_parser("usage", help="a key's usage per UTC day, today first")
    usage.add_argument("id")
    usage.add_argument("--days", type=int, default=7)
    for name in ("create", "update"):
        command = commands.add_parser(name, help=f"{name} a key")
        if name == "update":
            command.add_argument("id")
        command.add_argument("--label", default=UNSET)
        command.add_argument("--group", default=UNSET, help="the account group its turns run on")
        command.add_argument("--rpm", type=_limit, default=UNSET, help="turns per minute")
        command.add_argument("--max-concurrent", type=_limit, default=UNSET, help="turns in flight")
        command.add_argument("--tokens-per-day", type=_limit, default=UNSET, help="tokens per UTC day")
        command.add_argument(
            "--models", type=_models, default=UNSET, help="allowed model globs, comma-separated"
        )
    return top


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    names = ("label", "rpm", "max_concurrent", "tokens_per_day", "models", "group")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not UNSET}


def _execute(store: KeyStore, args: argparse.Namespace) -> Any:
    if args.command == "list":
        return store.views(store.all())
    if args.command == "create":
        body = _changes(args)
        group = groups.parse(body.get("group"))
        key, secret = store.create(label=body.get("label") or "", limits=parse_limits(body), group=group)
        return {**store.views([key])[0], "key": secret}
    if args.command == "show":
        return store.views([store.get(args.id)])[0]
    if args.command == "update":
        body = _changes(args)
        limits = parse_limits(body, store.get(args.id).limits)
        regroup = groups.parse(body["group"]) if "group" in body else None
        key = store.update(args.id, label=body.get("label"), limits=limits, group=regroup)
        return store.views([key])[0]
    if args.command == "revoke":
        store.revoke(args.id)
        return {"id": args.id, "object": "api_key", "deleted": True}
    if not 1 <= args.days <= 35:
        raise ApiError("--days must be from 1 to 35", status=400)
    return {"key_id": args.id, "data": key_usage.usage(store.redis, args.id, days=args.days)}


def run(argv: Sequence[str], environ: Mapping[str, str], *, prog: str | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 refused, 2 misconfigured)."""
    args = parser(prog or "python -m service.keys_cli").parse_args(argv)
    environ = cli_environ(environ, "keys")
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_configured:
        print(missing_redis("keys", environ), file=sys.stderr)
        return 2
    if args.command == "create" and not (settings.auth_enabled or launcher_keyed(environ)):
        print(
            "keys: note: with neither API_KEYS nor ADMIN_KEY set the gateway runs open and "
            "asks for no key; set one of them for managed keys to be required",
            file=sys.stderr,
        )
    redis = connect(settings.redis_url, role="keys-cli", max_connections=2, sentinel=settings.sentinel)
    try:
        result = _execute(KeyStore(redis), args)
    except KeyNotFound:
        print(f"keys: no API key with id '{args.id}'", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        return 1
    finally:
        redis.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], os.environ))
