"""What the path to the first token remembers or skips, and when it must not.

Each turn opens its account's secrets and (for an account without a captured identity)
builds the default browser identity. Both are now kept between turns; these tests hold
them to giving exactly what a fresh computation gives, and to forgetting nothing that
changed: a re-sealed secret, another SECRET_KEY.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from cryptography.fernet import Fernet

from service.accounts import identity, sealing
from service.accounts.sealing import Sealer, SealingError


class CountingFernet(Fernet):
    """A real Fernet that counts its decryptions."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self.decrypted = 0

    def decrypt(self, token: Any, ttl: int | None = None) -> bytes:
        self.decrypted += 1
        return super().decrypt(token, ttl)


def counting(sealer: Sealer) -> CountingFernet:
    key = Fernet.generate_key()
    sealer._fernet = spy = CountingFernet(key)
    return spy


def test_an_opened_secret_is_opened_once_and_a_resealed_one_afresh() -> None:
    sealer = Sealer("a-secret-key-0123456789")
    spy = counting(sealer)
    first = sealer.seal("_U=one")
    assert [sealer.open(first) for _ in range(3)] == ["_U=one"] * 3
    assert spy.decrypted == 1
    changed = sealer.seal("_U=two")  # the admin API stores a new ciphertext for a new secret
    assert sealer.open(changed) == "_U=two"
    assert sealer.open(first) == "_U=one"
    assert spy.decrypted == 2


def test_same_secret_sealed_twice_is_two_ciphertexts_each_opened_correctly() -> None:
    sealer = Sealer("a-secret-key-0123456789")
    one, two = sealer.seal("same"), sealer.seal("same")
    assert one != two
    assert sealer.open(one) == sealer.open(two) == "same"


def test_another_secret_key_does_not_open_what_this_one_remembers() -> None:
    ours = Sealer("a-secret-key-0123456789")
    sealed = ours.seal("_U=mine")
    assert ours.open(sealed) == "_U=mine"
    with pytest.raises(SealingError, match="another SECRET_KEY"):
        Sealer("another-key-9876543210").open(sealed)
    with pytest.raises(SealingError, match="SECRET_KEY is not set"):
        Sealer("").open(sealed)


def test_a_refused_ciphertext_is_not_remembered() -> None:
    sealer = Sealer("a-secret-key-0123456789")
    foreign = Sealer("another-key-9876543210").seal("theirs")
    for _ in range(2):
        with pytest.raises(SealingError):
            sealer.open(foreign)


def test_the_remembered_secrets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sealing, "OPENED_KEPT", 4)
    sealer = Sealer("a-secret-key-0123456789")
    spy = counting(sealer)
    sealed = [sealer.seal(f"secret-{n}") for n in range(10)]
    assert [sealer.open(s) for s in sealed] == [f"secret-{n}" for n in range(10)]
    assert len(sealer._opened) <= 4
    assert sealer.open(sealed[0]) == "secret-0"  # forgotten, opened again
    assert spy.decrypted == 11


def test_the_default_identity_is_built_once_and_equals_a_fresh_build() -> None:
    assert identity.default_identity() is identity.default_identity()
    assert identity.newest_chrome() == identity.newest_chrome(identity.profiles())
    assert identity.newest_chrome(["chrome120", "chrome99", "firefox147"]) == "chrome120"
    built = identity.default_identity.__wrapped__()
    assert built == identity.default_identity()


def test_the_job_argument_is_what_asdict_gave_and_round_trips() -> None:
    from service.turns import TurnRequest

    turn = TurnRequest(
        completion_id="chatcmpl-1",
        conversation_id="conv-1",
        owner="owner",
        model="gpt-4o",
        prompt="hi",
        history=[{"role": "user", "content": "earlier"}],
        images=[{"kind": "url", "url": "https://example.com/a.png"}],
        options={"tools": [{"type": "function", "function": {"name": "f"}}], "stop": ["x"]},
        carried={"handle": {"id": "up-1"}},
    )
    expected = dataclasses.asdict(turn)
    del expected["trace"]  # an untraced turn's argument is as it always was
    assert turn.to_json() == expected
    assert TurnRequest.from_json(turn.to_json()) == turn
    traced = dataclasses.replace(turn, trace=True)
    assert traced.to_json() == dataclasses.asdict(traced)


def test_a_jobs_function_is_imported_once_and_is_rqs(redis_url: str) -> None:
    from redis import Redis
    from rq.job import Job

    from workers import gevent_job, jobs
    from workers.gevent_job import TurnJob

    connection = Redis.from_url(redis_url)
    job = TurnJob.create("workers.jobs.run_turn", args=({},), connection=connection)
    assert job.func is jobs.run_turn is Job.create("workers.jobs.run_turn", connection=connection).func
    assert gevent_job._functions["workers.jobs.run_turn"] is jobs.run_turn
    bound = TurnJob.create(Greeter().hello, connection=connection)
    assert bound.func() == "hello"  # a method of an instance is RQ's own lookup, never remembered
    assert "hello" not in gevent_job._functions


class Greeter:
    def hello(self) -> str:
        return "hello"
