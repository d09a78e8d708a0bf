"""Managed API keys: created, listed, limited and revoked at run time, kept in Redis.

A managed key is `sk-gw-<43 url-safe characters>` (256 random bits). Its secret is shown
once, when it is created; Redis holds only its SHA-256 (a bare hash is safe for a
256-bit random secret, and unlike an HMAC it survives a change of SECRET_KEY). So
authenticating a request is one GET:

    apikey:<sha256 of the secret>  → JSON record {id, prefix, label, created, limits}
    apikeys                        → hash id → sha256, the index for list/get/revoke
    apikeys:last_used              → hash id → epoch seconds (written on admission)

Revoking deletes the record, so the very next request with the key is a 401 on every
web process (no cache). A key's owner tag (which scopes its conversations) is its id,
`key_<12 hex>`: stable for the key's life and unlike the 32-hex HMAC tags of static keys.

A key's limits are `service.access.key_limits.Limits`; enforcement lives in
`service.access.ratelimit`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import time
from typing import Any

from redis import Redis, WatchError

from service.access.key_limits import Limits
from service.accounts.groups import DEFAULT_GROUP

KEY_PREFIX = "sk-gw-"
SHOWN_CHARS = 10  # of the secret, in listings: `sk-gw-AbCd`
INDEX = "apikeys"
LAST_USED = "apikeys:last_used"


class KeyNotFound(LookupError):
    """No managed key with that id."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def record_key(digest: str) -> str:
    """Where the record of the key whose secret hashes to `digest` lives."""
    return f"apikey:{digest}"


def digest_of(secret: str) -> str:
    """SHA-256 of a presented key, hex: what Redis stores instead of the key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def static_key_id(owner: str) -> str:
    """The id a static `API_KEYS` key's limits and usage are kept under (from its owner tag)."""
    return f"static_{owner[:12]}"


def looks_managed(secret: str) -> bool:
    """Whether a presented key has the managed format (others are not looked up)."""
    return secret.startswith(KEY_PREFIX) and len(secret) > len(KEY_PREFIX) + 20


@dataclasses.dataclass(frozen=True)
class ManagedKey:
    """A managed key's record: everything but the secret."""

    id: str
    prefix: str
    label: str
    created: int
    limits: Limits
    digest: str
    group: str = DEFAULT_GROUP  # its turns run only on this account group's accounts

    @property
    def owner(self) -> str:
        """The owner tag its conversations are stored under: the id, stable for the key's life."""
        return self.id

    def to_json(self) -> dict[str, Any]:
        """The stored record."""
        return {
            "id": self.id,
            "prefix": self.prefix,
            "label": self.label,
            "created": self.created,
            "limits": self.limits.to_json(),
            "digest": self.digest,
            "group": self.group,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ManagedKey:
        """Inverse of `to_json`."""
        return cls(
            id=data["id"],
            prefix=data["prefix"],
            label=data.get("label") or "",
            created=int(data["created"]),
            limits=Limits.from_json(data.get("limits") or {}),
            digest=data["digest"],
            group=data.get("group") or DEFAULT_GROUP,
        )


class KeyStore:
    """Managed keys in Redis: the operations of the admin API and the CLI, and the auth lookup."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def lookup(self, secret: str) -> ManagedKey | None:
        """The key a request presents, or None (unknown or revoked): one GET."""
        if not looks_managed(secret):
            return None
        raw = self.redis.get(record_key(digest_of(secret)))
        return ManagedKey.from_json(json.loads(raw)) if raw else None

    def create(
        self, *, label: str = "", limits: Limits | None = None, group: str = DEFAULT_GROUP
    ) -> tuple[ManagedKey, str]:
        """A new key and its secret; the secret is returned here once and stored nowhere."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ManagedKey(
            id=f"key_{secrets.token_hex(6)}",
            prefix=secret[:SHOWN_CHARS],
            label=label,
            created=int(time.time()),
            limits=limits or Limits(),
            digest=digest_of(secret),
            group=group,
        )
        with self.redis.pipeline() as pipe:  # MULTI: the record and its index appear together
            pipe.set(record_key(key.digest), json.dumps(key.to_json()))
            pipe.hset(INDEX, key.id, key.digest)
            pipe.execute()
        return key, secret

    def get(self, key_id: str) -> ManagedKey:
        """The key with that id; raises `KeyNotFound`."""
        digest = self.redis.hget(INDEX, key_id)
        raw = self.redis.get(record_key(_text(digest))) if digest else None
        if not raw:
            raise KeyNotFound(key_id)
        return ManagedKey.from_json(json.loads(raw))

    def all(self) -> list[ManagedKey]:
        """Every managed key, oldest first."""
        digests = [_text(d) for d in self.redis.hvals(INDEX)]
        raws = self.redis.mget([record_key(d) for d in digests]) if digests else []
        keys = [ManagedKey.from_json(json.loads(raw)) for raw in raws if raw]
        return sorted(keys, key=lambda k: (k.created, k.id))

    def update(
        self,
        key_id: str,
        *,
        label: str | None = None,
        limits: Limits | None = None,
        group: str | None = None,
    ) -> ManagedKey:
        """Change a key's label, limits and/or group (optimistic transaction: never half-written)."""
        digest = self.redis.hget(INDEX, key_id)
        if not digest:
            raise KeyNotFound(key_id)
        name = record_key(_text(digest))
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(name)  # type: ignore[no-untyped-call]  # redis-py: unannotated
                    raw = pipe.get(name)
                    if not raw:
                        raise KeyNotFound(key_id)
                    key = ManagedKey.from_json(json.loads(raw))
                    key = dataclasses.replace(
                        key,
                        label=key.label if label is None else label,
                        limits=key.limits if limits is None else limits,
                        group=key.group if group is None else group,
                    )
                    pipe.multi()
                    pipe.set(name, json.dumps(key.to_json()))
                    pipe.execute()
                    return key
                except WatchError:
                    continue

    def revoke(self, key_id: str) -> None:
        """Delete a key: its next request is a 401 everywhere. Its usage history stays."""
        digest = self.redis.hget(INDEX, key_id)
        if not digest:
            raise KeyNotFound(key_id)
        with self.redis.pipeline() as pipe:
            pipe.delete(record_key(_text(digest)))
            pipe.hdel(INDEX, key_id)
            pipe.hdel(LAST_USED, key_id)
            pipe.execute()

    def last_used(self, key_ids: list[str]) -> dict[str, int | None]:
        """When each key last had a request admitted (epoch seconds), None if never."""
        if not key_ids:
            return {}
        values = self.redis.hmget(LAST_USED, key_ids)
        return {k: int(v) if v else None for k, v in zip(key_ids, values, strict=True)}

    def views(self, keys: list[ManagedKey]) -> list[dict[str, Any]]:
        """What the admin API and CLI show of keys: never the secret nor its hash."""
        used = self.last_used([k.id for k in keys])
        return [
            {
                "id": k.id,
                "object": "api_key",
                "managed": True,
                "prefix": k.prefix,
                "label": k.label,
                "created": k.created,
                "last_used": used.get(k.id),
                "limits": k.limits.to_json(),
                "group": k.group,
            }
            for k in keys
        ]
