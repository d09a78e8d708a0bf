"""Account groups (service.accounts.groups) on a real redis-server: parsing, and that a turn's
candidates, failover included, never leave its key's group."""

from __future__ import annotations

import pytest
from redis import Redis

from service.accounts import groups
from service.accounts.registry import Registry
from service.accounts.scheduler import Scheduler
from service.errors import InvalidRequest, UpstreamUnavailable
from service.runtime.settings import load_settings


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _pool(redis: Redis) -> tuple[Registry, Scheduler]:
    clock = Clock()
    registry = Registry(redis, namespace="groups", secret_key="k" * 32, clock=clock)
    scheduler = Scheduler(
        registry, max_concurrent=2, rpm=12, lease_seconds=10, clock=clock, sleep=lambda s: None
    )
    return registry, scheduler


def test_static_keys_name_their_group_after_an_at_sign() -> None:
    settings = load_settings(
        {"API_KEYS": "sk-one-0123456789@team-a, sk-two-0123456789, x@y@b", "SECRET_KEY": "s" * 20}
    )
    assert settings.api_keys == ("sk-one-0123456789", "sk-two-0123456789", "x@y")
    assert dict(settings.api_key_groups) == {"sk-one-0123456789": "team-a", "x@y": "b"}
    assert groups.split_static_key("sk-mail@Example.COM") == ("sk-mail@Example.COM", "default")  # no group


@pytest.mark.parametrize("value", ["", "Team", "-x", "a" * 33, 3, "a b"])
def test_a_bad_group_name_is_a_400_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        groups.parse(value)
    assert info.value.param == "group"


def test_a_turn_only_ever_gets_its_groups_accounts_failover_included(redis_client: Redis) -> None:
    registry, scheduler = _pool(redis_client)
    a1 = registry.add(cookies="_U=a1", group="team-a").id
    a2 = registry.add(cookies="_U=a2", group="team-a").id
    b1 = registry.add(cookies="_U=b1", group="team-b").id
    default = registry.add(cookies="_U=d1").id
    granted = {scheduler.acquire("owner-a", group="team-a").account.id for _ in range(4)}  # type: ignore[union-attr]
    assert granted <= {a1, a2}
    # Failover: both of team-a's accounts failed; b1 and the default account are ready, yet never used.
    with pytest.raises(UpstreamUnavailable):
        scheduler.acquire("owner-a", group="team-a", exclude={a1, a2})
    lease = scheduler.acquire("owner-b", group="team-b")
    assert lease is not None and lease.account.id == b1
    lease = scheduler.acquire("owner-d")
    assert lease is not None and lease.account.id == default


def test_an_empty_group_is_a_503_naming_it(redis_client: Redis) -> None:
    registry, scheduler = _pool(redis_client)
    registry.add(cookies="_U=a1", group="team-a")
    with pytest.raises(UpstreamUnavailable) as info:
        scheduler.acquire("owner", group="nobody")
    assert "'nobody'" in info.value.message and info.value.status == 503


def test_both_command_lines_know_groups(
    redis_url: str, redis_client: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from service import admin, keys_cli

    env = {"REDIS_URL": redis_url, "SECRET_KEY": "s" * 32, "ADMIN_KEY": "admin-0123456789abcdef"}

    def cli(runner: object, *argv: str) -> tuple[int, dict[str, object]]:
        code = runner(list(argv), env)  # type: ignore[operator]
        out = capsys.readouterr().out
        return code, json.loads(out) if out else {}

    code, account = cli(admin.run, "add", "--cookies", "_U=cli-a", "--group", "team-a")
    assert code == 0 and account["group"] == "team-a"
    code, account = cli(admin.run, "update", str(account["id"]), "--group", "team-b")
    assert code == 0 and account["group"] == "team-b"
    assert cli(admin.run, "add", "--cookies", "_U=cli-x", "--group", "Bad Group")[0] == 1
    code, key = cli(keys_cli.run, "create", "--label", "bot", "--group", "team-b")
    assert code == 0 and key["group"] == "team-b"
    code, key = cli(keys_cli.run, "update", str(key["id"]), "--group", "team-a")
    assert code == 0 and key["group"] == "team-a"
