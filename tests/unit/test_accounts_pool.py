"""The account pool's Redis side against a real redis-server: registry, sealing, capacity, fair line."""

from __future__ import annotations

import pytest
from redis import Redis

from service.accounts import capacity, health
from service.accounts import registry as registry_module
from service.accounts.account import COOLING, DISABLED, NEEDS_ATTENTION, READY
from service.accounts.fair_line import new_ticket
from service.accounts.registry import Registry
from service.accounts.scheduler import Lease, Scheduler, pool_unavailable
from service.accounts.sealing import SealingError
from service.errors import RateLimited, UpstreamUnavailable

KEY = "k" * 32
COOKIE = "_U=very-secret-cookie; MUID=abc"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def registry(redis: Redis, clock: Clock | None = None, key: str = KEY) -> Registry:
    return Registry(redis, namespace="t", secret_key=key, clock=clock or Clock())


def classified(exc: BaseException) -> health.Verdict:
    verdict = health.classify(exc)
    assert verdict is not None, f"{exc!r} is no account failure"
    return verdict


def account_of(lease: Lease | None) -> str:
    assert lease is not None, "no account was granted"
    return lease.account.id


def scheduler(reg: Registry, clock: Clock, **kwargs) -> Scheduler:
    return Scheduler(
        reg,
        max_concurrent=kwargs.pop("max_concurrent", 2),
        rpm=kwargs.pop("rpm", 12),
        lease_seconds=10,
        clock=clock,
        sleep=lambda s: None,
    )


def test_seeding_is_idempotent_keeps_ids_and_respects_run_time_refreshes(redis_client: Redis) -> None:
    reg = registry(redis_client)
    reg.seed([COOKIE, "_U=two"])
    reg.seed([COOKIE, "_U=two"])  # a second process, or a restart
    assert [a.id for a in reg.all(fresh=True)] == ["env-1", "env-2"]
    reg.update("env-1", cookies="_U=refreshed")
    reg.seed([COOKIE, "_U=two"])  # same env: the admin refresh survives
    assert reg.cookies(reg.get("env-1")) == "_U=refreshed"
    reg.seed(["_U=edited"])  # the operator edited the env: it wins, env-2 is gone
    assert reg.cookies(reg.get("env-1")) == "_U=edited"
    assert [a.id for a in reg.all(fresh=True)] == ["env-1"]


def test_empty_cookies_seed_one_anonymous_account_without_a_secret_key(redis_client: Redis) -> None:
    reg = registry(redis_client, key="")
    reg.seed([])
    [account] = reg.all(fresh=True)
    assert account.id == "env-1" and reg.cookies(account) == ""
    with pytest.raises(SealingError, match="SECRET_KEY is required"):
        reg.add(cookies=COOKIE)


def test_secrets_are_not_readable_in_redis_nor_in_reprs_or_admin_views(redis_client: Redis) -> None:
    reg = registry(redis_client)
    account = reg.add(cookies=COOKIE, access_token="tok-secret-123", label="main")
    dump = b"".join(redis_client.dump(k) or b"" for k in redis_client.keys("*"))
    assert b"very-secret" not in dump and b"tok-secret" not in dump
    assert "very-secret" not in repr(account) and "tok-secret" not in repr(account)
    assert "very-secret" not in str(account.public(0)) and "tok-secret" not in str(account.public(0))
    assert reg.cookies(account) == COOKIE and reg.access_token(account) == "tok-secret-123"
    with pytest.raises(SealingError, match="another SECRET_KEY"):
        registry(redis_client, key="z" * 32).cookies(account)


def test_health_states_and_their_way_back(redis_client: Redis) -> None:
    clock = Clock()
    reg = registry(redis_client, clock)
    reg.seed([COOKIE])
    throttled = RateLimited("throttled", retry_after=30)
    health.record(reg, "env-1", classified(throttled), clock.now)
    assert reg.get("env-1").state(clock.now) == COOLING
    assert reg.get("env-1").state(clock.now + 31) == READY  # cooling ends by itself

    captcha = type("Captcha", (Exception,), {"code": "upstream_captcha_required"})("solve the CAPTCHA")
    health.record(reg, "env-1", classified(captcha), clock.now)
    account = reg.get("env-1")
    assert account.state(clock.now + 10_000) == NEEDS_ATTENTION
    assert account.public(clock.now)["last_error"]["message"] == "solve the CAPTCHA"
    reg.update("env-1", cookies="_U=fresh")  # a refresh ends it
    assert reg.get("env-1").state(clock.now) == READY
    reg.update("env-1", enabled=False)
    assert reg.get("env-1").state(clock.now) == DISABLED
    assert health.classify(RuntimeError("a bug")) is None


def test_probe_recovers_accounts_and_only_one_prober_runs_per_round(redis_client: Redis) -> None:
    clock = Clock()
    reg = registry(redis_client, clock)
    reg.seed([COOKIE])
    bad = type("Unauth", (Exception,), {"code": "upstream_unauthorized"})("bad cookies")
    health.record(reg, "env-1", classified(bad), clock.now)
    probed: list[str] = []
    assert health.probe_once(redis_client, reg, lambda a: probed.append(a.id), every=60, now=clock.now) == 1
    assert health.probe_once(redis_client, reg, lambda a: probed.append(a.id), every=60, now=clock.now) == 0
    assert probed == ["env-1"] and reg.get("env-1").state(clock.now) == READY


def test_concurrency_and_rate_limits_hold_and_expired_leases_free_themselves(redis_client: Redis) -> None:
    clock = Clock()
    reg = registry(redis_client, clock)
    reg.seed([COOKIE])
    sched = scheduler(reg, clock)
    first, second = sched.acquire("a"), sched.acquire("a")
    assert first and second
    stopped = sched.acquire("a", should_stop=lambda: True)  # full: it would wait
    assert stopped is None
    sched.release(first)
    assert sched.acquire("a") is not None
    clock.now += 11  # the other leases were never refreshed: their worker is gone
    assert capacity.usage(redis_client, reg.prefix, ["env-1"], clock.now)["env-1"] == (0, 3)
    for _ in range(9):
        lease = sched.acquire("a")
        assert lease is not None
        sched.release(lease)
    assert sched.acquire("a", should_stop=lambda: True) is None  # 12 turns this minute
    clock.now += 61
    assert sched.acquire("a") is not None


def test_a_conversation_stays_on_its_account_and_new_ones_go_where_there_is_headroom(
    redis_client: Redis,
) -> None:
    clock = Clock()
    reg = registry(redis_client, clock)
    reg.seed([COOKIE, "_U=two"])
    sched = scheduler(reg, clock)
    assert account_of(sched.acquire("a", preferred="env-2")) == "env-2"
    assert account_of(sched.acquire("a")) == "env-1"  # env-1 has two free, env-2 one
    assert account_of(sched.acquire("a", preferred="env-2")) == "env-2"
    assert sched.acquire("a", preferred="env-2", should_stop=lambda: True) is None  # full: it waits


def test_the_line_takes_owners_in_turn(redis_client: Redis) -> None:
    clock = Clock()
    reg = registry(redis_client, clock)
    reg.seed([COOKIE])
    sched = scheduler(reg, clock, max_concurrent=1)
    held = sched.acquire("flood")
    assert held is not None
    flood = [new_ticket() for _ in range(5)]
    for n, ticket in enumerate(flood):
        assert sched.poll(ticket, "flood") == (None, n + 1)
    other = new_ticket()
    assert sched.poll(other, "other") == (None, 2)  # behind the flood's first, ahead of the rest
    served = []
    for _ in range(6):
        sched.release(held)
        for owner, ticket in [*(("flood", t) for t in flood), ("other", other)]:
            lease, _ = sched.poll(ticket, owner)
            if lease is not None:
                served.append(owner)
                held = lease
                break
    assert served == ["flood", "other", "flood", "flood", "flood", "flood"]


def test_no_ready_account_is_429_until_the_earliest_end_or_503_for_the_operator(redis_client: Redis) -> None:
    clock = Clock()
    reg = registry(redis_client, clock)
    reg.seed([COOKIE, "_U=two"])
    health.record(reg, "env-1", health.Verdict("cooling", "rate_limit_exceeded", "x", 40), clock.now)
    health.record(reg, "env-2", health.Verdict("cooling", "rate_limit_exceeded", "x", 90), clock.now)
    error = pool_unavailable(reg.all(fresh=True), clock.now)
    assert isinstance(error, RateLimited) and error.retry_after == 40
    for account_id in ("env-1", "env-2"):
        health.record(
            reg, account_id, health.Verdict("attention", "upstream_captcha_required", "Solve the CAPTCHA"), 0
        )
    with pytest.raises(UpstreamUnavailable, match="Solve the CAPTCHA") as raised:
        scheduler(reg, clock).acquire("a")
    assert raised.value.headers()["x-should-retry"] == "false"


def test_settings_require_a_secret_key_when_accounts_carry_secrets() -> None:
    from service.runtime.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="SECRET_KEY is required"):
        load_settings({"UPSTREAM_COOKIES": COOKIE})
    with pytest.raises(SettingsError, match="SECRET_KEY is required"):
        load_settings({"ADMIN_KEY": "a" * 20})
    settings = load_settings({"UPSTREAM_COOKIES": COOKIE, "SECRET_KEY": KEY, "ACCOUNT_HEALTH": "off"})
    assert settings.account_max_concurrent == 2 and settings.account_rpm == 12 and not settings.account_health
    assert KEY not in repr(settings)
    assert load_settings({}).queue_max_wait_seconds == 30


def test_a_dead_workers_waiting_ticket_leaves_the_line(redis_client: Redis) -> None:
    clock = Clock()
    reg = registry(redis_client, clock)
    reg.seed([COOKIE])
    sched = scheduler(reg, clock, max_concurrent=1)
    held = sched.acquire("a")
    assert held is not None
    assert sched.poll(new_ticket(), "a") == (None, 1)  # then its worker dies: no more polls
    clock.now += 11  # past TICKET_SECONDS (the held lease expires too: its worker stopped refreshing)
    lease, _ = sched.poll(new_ticket(), "b")
    assert lease is not None


def test_a_turn_served_out_of_line_does_not_push_a_newcomer_behind_the_line(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker's pool view may be a second old (SNAPSHOT_SECONDS): right after the operator
    # replaces an account, one worker's turns still want the deleted one while another worker's
    # turn, later in the line, takes the new account's only slot. Serving that turn must not move
    # the line's clock past the turns still waiting, or another key arriving now would be
    # tagged behind the whole flood: first come, first served.
    monkeypatch.setattr(registry_module, "SNAPSHOT_SECONDS", 3600.0)  # however slow this machine is
    clock = Clock()
    admin, stale_view, fresh_view = (registry(redis_client, clock) for _ in range(3))
    admin.seed([COOKIE])
    stale_view.all()  # this worker's snapshot: env-1 only
    admin.delete("env-1")
    admin.add(cookies="_U=new", max_concurrent=1)
    stale, fresh = scheduler(stale_view, clock), scheduler(fresh_view, clock)
    flood = [new_ticket() for _ in range(5)]
    for n, ticket in enumerate(flood):
        assert stale.poll(ticket, "flood") == (None, n + 1)  # waiting for env-1, which is gone
    held, _ = fresh.poll(new_ticket(), "flood")  # the flood's sixth turn, on the other worker
    assert held is not None
    other = new_ticket()
    assert fresh.poll(other, "other") == (None, 2)  # behind the flood's first only
