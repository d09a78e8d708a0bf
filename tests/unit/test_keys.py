"""Managed keys and per-key limits on a real redis-server: the store, the Lua admission, the CLI."""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import pytest
from redis import Redis

from service.access import ratelimit
from service.access.key_limits import Limits, parse_limits
from service.access.key_usage import USAGE_TTL, usage
from service.access.keys import KeyNotFound, KeyStore, digest_of
from service.access.ratelimit import Caller, admit, duration, settle
from service.errors import InvalidRequest
from service.keys_cli import run

SECRET = "test-secret-0123456789abcdef"


def every_byte_in(redis: Redis) -> bytes:
    """Every key name and value in Redis, concatenated: where a leaked secret would show."""
    out = []
    for name in redis.scan_iter(count=1000):
        out.append(name)
        kind = redis.type(name)
        if kind == b"string":
            out.append(redis.get(name) or b"")
        elif kind == b"hash":
            for field, value in redis.hgetall(name).items():
                out += [field, value]
        elif kind == b"zset":
            pairs: Any = redis.zrange(name, 0, -1, withscores=True)  # (member, score) pairs; typed loosely
            out += [member for member, _ in pairs]
    return b"\n".join(out)


def caller(key_id: str = "key_test", **limits: Any) -> Caller:
    return Caller(id=key_id, owner=key_id, limits=Limits(**limits))


def test_create_lookup_update_revoke(redis_client: Redis) -> None:
    store = KeyStore(redis_client)
    key, secret = store.create(label="ci", limits=Limits(rpm=5, models=("gpt-4*",)))
    assert secret.startswith("sk-gw-") and len(secret) > 40 and key.prefix == secret[:10]
    assert store.lookup(secret) == key and key.owner == key.id
    assert store.lookup(secret + "x") is None and store.lookup("sk-other") is None
    blob = every_byte_in(redis_client)
    assert secret.encode() not in blob and secret[10:].encode() not in blob  # only its hash is kept
    assert digest_of(secret).encode() in blob

    updated = store.update(key.id, limits=parse_limits({"rpm": None, "tokens_per_day": 100}, key.limits))
    assert updated.limits == Limits(rpm=None, tokens_per_day=100, models=("gpt-4*",))
    assert store.lookup(secret) == updated and store.get(key.id).label == "ci"
    [view] = store.views(store.all())
    assert view["last_used"] is None and "key" not in view and "digest" not in view

    store.revoke(key.id)
    assert store.lookup(secret) is None and store.all() == []
    with pytest.raises(KeyNotFound):
        store.get(key.id)
    with pytest.raises(KeyNotFound):
        store.revoke(key.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"rpm": -1}, "rpm"),
        ({"max_concurrent": "2"}, "max_concurrent"),
        ({"tokens_per_day": True}, "tokens_per_day"),
        ({"models": []}, "models"),
        ({"models": "gpt-4"}, "models"),
        ({"models": [""]}, "models"),
    ],
)
def test_bad_limits_name_the_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as error:
        parse_limits(body)
    assert error.value.param == param


def test_limits_defaults_and_globs() -> None:
    defaults = Limits(rpm=10, max_concurrent=2, tokens_per_day=0, models=("Balanced",))
    assert Limits(rpm=0).over(defaults) == Limits(
        rpm=0, max_concurrent=2, tokens_per_day=0, models=("Balanced",)
    )
    globbed = Limits(models=("gpt-4*", "bal?nced"))
    assert globbed.allows("gpt-4") and globbed.allows("GPT-4o") and globbed.allows("Balanced")
    assert not globbed.allows("Creative") and Limits().allows("anything")


def test_duration_is_written_like_openai() -> None:
    assert [duration(ms) for ms in (0, 20, 1000, 1500, 59_999, 60_000, 360_000, 86_399_000)] == [
        "0ms", "20ms", "1s", "1.5s", "59.999s", "1m0s", "6m0s", "23h59m59s"
    ]  # fmt: skip


def test_rpm_window_counts_down_and_retry_is_exact(redis_client: Redis) -> None:
    who = caller(rpm=3)
    decisions = [admit(redis_client, who, lease_seconds=60) for _ in range(3)]
    assert [d.status for d in decisions] == [0, 0, 0]
    assert [d.headers()["x-ratelimit-remaining-requests"] for d in decisions] == ["2", "1", "0"]
    assert all(d.headers()["x-ratelimit-limit-requests"] == "3" for d in decisions)
    refused = admit(redis_client, who, lease_seconds=60)
    assert refused.status == ratelimit.RPM
    # Exactly when the oldest admitted request leaves the 60 s window, by Redis' own clock.
    window: Any = redis_client.zrange("ratelimit:key_test:requests", 0, 0, withscores=True)
    ((_, oldest),) = window
    clock: Any = redis_client.time()
    seconds, micros = clock
    now_ms = seconds * 1000 + micros // 1000
    assert oldest + 60_000 - now_ms <= refused.retry_ms <= 60_000
    error = refused.error(who)
    assert error is not None and error.status == 429 and error.code == "rate_limit_exceeded"
    assert error.headers()["Retry-After"] == str(math.ceil(refused.retry_ms / 1000))
    assert refused.headers()["x-ratelimit-remaining-requests"] == "0"
    assert usage(redis_client, "key_test", days=1)[0]["rejected"] == 1


def test_concurrency_is_exact_under_parallel_admission(redis_url: str, redis_client: Redis) -> None:
    who, limit = caller(max_concurrent=3), 3
    results: list[ratelimit.Decision] = []
    barrier = threading.Barrier(12)

    def one() -> None:
        client = Redis.from_url(redis_url)
        barrier.wait()
        results.append(admit(client, who, lease_seconds=60))
        client.close()

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    admitted = [d for d in results if d.status == ratelimit.OK]
    assert len(results) == 12 and len(admitted) == limit
    assert all(d.status == ratelimit.CONCURRENT for d in results if d.status != ratelimit.OK)
    settle(redis_client, who, admitted[0].lease, input_tokens=5, output_tokens=7, error=False)
    assert admit(redis_client, who, lease_seconds=60).status == ratelimit.OK  # the freed slot


def test_expired_lease_frees_its_slot(redis_client: Redis) -> None:
    who = caller(max_concurrent=1)
    assert admit(redis_client, who, lease_seconds=0.001).status == ratelimit.OK  # its holder "died"
    redis_client.execute_command("DEBUG", "SLEEP", "0.01")  # let Redis' clock pass the lease
    assert admit(redis_client, who, lease_seconds=60).status == ratelimit.OK
    assert admit(redis_client, who, lease_seconds=60).status == ratelimit.CONCURRENT


def test_daily_tokens_and_usage(redis_client: Redis) -> None:
    who = caller(tokens_per_day=100)
    first = admit(redis_client, who, lease_seconds=60)
    assert first.headers()["x-ratelimit-remaining-tokens"] == "100"
    settle(redis_client, who, first.lease, input_tokens=60, output_tokens=50, error=False)
    second = admit(redis_client, who, lease_seconds=60)
    assert second.status == ratelimit.QUOTA and second.headers()["x-ratelimit-remaining-tokens"] == "0"
    error = second.error(who)
    assert error is not None and (error.status, error.code, error.error_type) == (
        429, "insufficient_quota", "insufficient_quota"
    )  # fmt: skip
    assert error.headers() == {"x-should-retry": "false"}
    today = usage(redis_client, "key_test", days=3)
    assert [d["requests"] for d in today] == [1, 0, 0]
    assert today[0] | {"date": ""} == {
        "date": "", "requests": 1, "input_tokens": 60, "output_tokens": 50, "errors": 0, "rejected": 1
    }  # fmt: skip
    assert 0 < redis_client.ttl(f"usage:key_test:{redis_client.time()[0] // 86400}") <= USAGE_TTL


def test_cli_creates_lists_limits_revokes(
    redis_url: str, redis_client: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"REDIS_URL": redis_url, "SECRET_KEY": SECRET, "ADMIN_KEY": "admin-0123456789abcdef"}

    def cli(*argv: str) -> tuple[int, object]:
        code = run(list(argv), env)
        out = capsys.readouterr().out
        return code, json.loads(out) if out else None

    code, created = cli("create", "--label", "bot", "--rpm", "3", "--models", "gpt-4*,Balanced")
    assert code == 0 and isinstance(created, dict)
    secret, key_id = created["key"], created["id"]
    assert created["limits"] == {
        "rpm": 3,
        "max_concurrent": None,
        "tokens_per_day": None,
        "models": ["gpt-4*", "Balanced"],
    }
    code, listed = cli("list")
    assert code == 0 and [k["id"] for k in listed] == [key_id] and "key" not in listed[0]  # type: ignore[index, attr-defined]
    code, updated = cli("update", key_id, "--rpm", "default", "--tokens-per-day", "1000")
    assert updated["limits"]["rpm"] is None and updated["limits"]["tokens_per_day"] == 1000  # type: ignore[index]
    code, days = cli("usage", key_id, "--days", "2")
    assert code == 0 and len(days["data"]) == 2  # type: ignore[index]
    assert secret.encode() not in every_byte_in(redis_client)
    assert cli("revoke", key_id)[0] == 0
    assert cli("show", key_id)[0] == 1
    assert KeyStore(redis_client).lookup(secret) is None
