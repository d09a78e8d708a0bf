"""The accounts, stored in Redis so every worker and the admin API see one pool.

Keys live under `accounts:<RQ_QUEUE>:` — gateways that share a Redis but serve different
queues keep separate pools:

    …:ids        ZSET  account id -> creation order (listing order)
    …:a:<id>     HASH  label, cookies*, access_token*, proxy*, user_agent, client_hints,
                       accept_language, impersonate, enabled, max_concurrent, rpm, group,
                       source, seed, created, and the health fields of `health`
                       (* sealed with `sealing.Sealer`; never in clear, never returned)

The browser identity (`identity`: UA, client hints, language, curl_cffi profile) is stored
in clear: it is what every request of the account shows the upstream anyway. An account
without a User-Agent (an `UPSTREAM_COOKIES` line) uses `identity.default_identity()`.

Ids are stable: accounts seeded from `UPSTREAM_COOKIES` are `env-1`, `env-2`, … by line
position (an empty setting seeds one anonymous `env-1`); accounts added at run time get
`acc-<random>`. Refreshing cookies never changes an id. Seeding is idempotent across
processes and restarts: a line whose keyed digest matches what was seeded is left alone
(so a refresh made through the admin API survives a restart); a changed line replaces
that account's secrets and clears its health; `env-N` past the last line is removed.
"""

from __future__ import annotations

import secrets as random_ids
import time
from collections.abc import Callable, Sequence
from typing import cast

from redis import Redis

from service.accounts.account import HEALTH_FIELDS, Account, AccountNotFound
from service.accounts.groups import DEFAULT_GROUP
from service.accounts.sealing import Sealer
from service.runtime.redis_conn import HashFields, text

SNAPSHOT_SECONDS = 1.0  # how stale a worker's view of the pool may be (changes apply within it)


class Registry:
    """Reads and changes the pool's accounts; one per process is enough (it caches briefly)."""

    def __init__(
        self, redis: Redis, *, namespace: str, secret_key: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.prefix = f"accounts:{namespace}"
        self.sealer = Sealer(secret_key)
        self.clock = clock
        self._snapshot: tuple[float, list[Account]] | None = None

    def key(self, account_id: str) -> str:
        """The Redis hash of one account."""
        return f"{self.prefix}:a:{account_id}"

    # reading

    def all(self, *, fresh: bool = False) -> list[Account]:
        """Every account in creation order; cached for SNAPSHOT_SECONDS unless `fresh`."""
        now = time.monotonic()
        if not fresh and self._snapshot is not None and now - self._snapshot[0] < SNAPSHOT_SECONDS:
            return self._snapshot[1]
        # Without `withscores` ZRANGE returns members only; redis-py's return type covers both forms.
        members = cast("list[bytes]", self.redis.zrange(f"{self.prefix}:ids", 0, -1))
        ids = [text(member) for member in members]
        with self.redis.pipeline(transaction=False) as pipe:
            for account_id in ids:
                pipe.hgetall(self.key(account_id))
            rows = pipe.execute()
        accounts = [Account.from_hash(i, raw) for i, raw in zip(ids, rows, strict=True) if raw]
        self._snapshot = (now, accounts)
        return accounts

    def get(self, account_id: str) -> Account:
        """One account, read now; AccountNotFound if it does not exist."""
        raw = self.redis.hgetall(self.key(account_id))
        if not raw:
            raise AccountNotFound(account_id)
        return Account.from_hash(account_id, raw)

    def find(self, account_id: str) -> Account | None:
        """One account from the snapshot, or None."""
        return next((a for a in self.all() if a.id == account_id), None)

    def cookies(self, account: Account) -> str:
        """The account's Cookie header, opened."""
        return self.sealer.open(account.sealed_cookies)

    def access_token(self, account: Account) -> str:
        """The account's access token, opened."""
        return self.sealer.open(account.sealed_token)

    def proxy(self, account: Account) -> str:
        """The account's egress proxy URL, opened ("" = direct)."""
        return self.sealer.open(account.sealed_proxy)

    # changing

    def add(
        self,
        *,
        cookies: str = "",
        access_token: str = "",
        label: str = "",
        user_agent: str = "",
        client_hints: str = "",
        accept_language: str = "",
        impersonate: str = "",
        proxy: str = "",
        max_concurrent: int | None = None,
        rpm: int | None = None,
        enabled: bool = True,
        group: str = DEFAULT_GROUP,
        account_id: str | None = None,
        source: str = "admin",
        seed: str = "",
    ) -> Account:
        """Create an account (a fresh `acc-…` id unless given) and return it."""
        account_id = account_id or f"acc-{random_ids.token_hex(4)}"
        fields: HashFields = {
            "label": label,
            "cookies": self.sealer.seal(cookies),
            "access_token": self.sealer.seal(access_token),
            "user_agent": user_agent,
            "client_hints": client_hints,
            "accept_language": accept_language,
            "impersonate": impersonate,
            "proxy": self.sealer.seal(proxy),
            "enabled": "1" if enabled else "0",
            "max_concurrent": str(max_concurrent or ""),
            "rpm": str(rpm or ""),
            "group": group,
            "source": source,
            "seed": seed,
            "created": repr(self.clock()),
        }
        with self.redis.pipeline() as pipe:
            pipe.hset(self.key(account_id), mapping=fields)
            pipe.zadd(f"{self.prefix}:ids", {account_id: self.redis.incr(f"{self.prefix}:seq")})
            pipe.execute()
        self._snapshot = None
        return self.get(account_id)

    def update(
        self,
        account_id: str,
        *,
        cookies: str | None = None,
        access_token: str | None = None,
        label: str | None = None,
        user_agent: str | None = None,
        client_hints: str | None = None,
        accept_language: str | None = None,
        impersonate: str | None = None,
        proxy: str | None = None,
        enabled: bool | None = None,
        max_concurrent: int | bool | None = False,
        rpm: int | bool | None = False,
        group: str | None = None,
    ) -> Account:
        """Change an account; new credentials clear its health (a refresh ends needs_attention).

        `max_concurrent` / `rpm`: False = unchanged, None = back to the default, a number = set.
        """
        self.get(account_id)
        fields: HashFields = {}
        if cookies is not None:
            fields["cookies"] = self.sealer.seal(cookies)
        if access_token is not None:
            fields["access_token"] = self.sealer.seal(access_token)
        if label is not None:
            fields["label"] = label
        for name, value in (
            ("user_agent", user_agent),
            ("client_hints", client_hints),
            ("accept_language", accept_language),
            ("impersonate", impersonate),
        ):
            if value is not None:
                fields[name] = value
        if proxy is not None:
            fields["proxy"] = self.sealer.seal(proxy)
        if enabled is not None:
            fields["enabled"] = "1" if enabled else "0"
        if max_concurrent is not False:
            fields["max_concurrent"] = str(max_concurrent or "")
        if rpm is not False:
            fields["rpm"] = str(rpm or "")
        if group is not None:
            fields["group"] = group
        with self.redis.pipeline() as pipe:
            if fields:
                pipe.hset(self.key(account_id), mapping=fields)
            if cookies is not None or access_token is not None or user_agent is not None or proxy is not None:
                pipe.hdel(self.key(account_id), *HEALTH_FIELDS)
            pipe.execute()
        self._snapshot = None
        return self.get(account_id)

    def store_cookies(self, account_id: str, cookies: str) -> None:
        """Persist the cookie jar the upstream updated (Set-Cookie); unlike a refresh, health stays."""
        sealed = self.sealer.seal(cookies)
        if self.redis.exists(self.key(account_id)):
            self.redis.hset(self.key(account_id), "cookies", sealed)

    def delete(self, account_id: str) -> None:
        """Remove an account; its conversations move to another account on their next turn."""
        with self.redis.pipeline() as pipe:
            pipe.zrem(f"{self.prefix}:ids", account_id)
            pipe.delete(self.key(account_id))
            removed = pipe.execute()[0]
        self._snapshot = None
        if not removed:
            raise AccountNotFound(account_id)

    def set_health(self, account_id: str, fields: HashFields, *, clear: Sequence[str] = ()) -> None:
        """Write health fields of an existing account (see `health`); a deleted one stays deleted."""
        key = self.key(account_id)
        if not self.redis.exists(key):
            return
        with self.redis.pipeline() as pipe:
            if fields:
                pipe.hset(key, mapping=fields)
            if clear:
                pipe.hdel(key, *clear)
            pipe.execute()
        self._snapshot = None

    def seed(self, lines: Sequence[str], *, access_token: str = "") -> None:
        """Make `env-1…env-N` match UPSTREAM_COOKIES (idempotent; see the module docstring)."""
        lines = list(lines) or [""]
        with self.redis.lock(f"{self.prefix}:seed-lock", timeout=30, blocking_timeout=30):
            for position, cookies in enumerate(lines, 1):
                account_id = f"env-{position}"
                digest = self.sealer.digest(f"{cookies}\n{access_token}")
                stored = self.redis.hget(self.key(account_id), "seed")
                if stored is None:
                    self.add(
                        cookies=cookies,
                        access_token=access_token,
                        account_id=account_id,
                        source="env",
                        seed=digest,
                    )
                elif text(stored) != digest:
                    self.update(account_id, cookies=cookies, access_token=access_token)
                    self.redis.hset(self.key(account_id), "seed", digest)
            for account in self.all(fresh=True):
                number = account.id.removeprefix("env-")
                if account.source == "env" and number.isdigit() and int(number) > len(lines):
                    self.delete(account.id)
            self.redis.set(f"{self.prefix}:seeded", b"1")
        self._snapshot = None

    def seeded(self) -> bool:
        """Whether this Redis has seen a seed (False after a restart of a Redis that lost its data)."""
        return bool(self.redis.exists(f"{self.prefix}:seeded"))
