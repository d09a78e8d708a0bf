"""Copilot challenges (B3.1): issuing them and judging the client's answers.

Four kinds, each selected by a prompt prefix:

- `hashcash` — proof of work, `parameter` = `<64-hex seed>:<difficulty>`. The reference
  knows two incompatible verifiers, and a client must match the server's, so the config
  picks one (`hashcash_variant`): "bits" (B3.1 (b), capture-backed) accepts any nonce `n`
  with `sha256(seed + str(n))` having at least `difficulty` leading zero bits; "hex"
  (B3.1 (a)) accepts any `i` with `sha256(f"{seed}:{i}")` in hex starting with
  `difficulty` zeros. Mind the scale: hex difficulty 8 is 32 bits of work.
- `copilot` ("arithmetic") — `parameter` = an integer `a`; the answer is
  `round(((a**3 / 100) + 25 * a) % 22)`. Integer `a` never lands on a .5, so Python's
  and JavaScript's rounding agree.
- `null` ("captcha") and `cloudflare` — need a browser; a headless client must give up.
  Any answer is wrong (and a violation): a real server drew `invalid-event` for the empty
  token clients used to send.

Ids: 2026 servers number a socket's challenges `"0.0001"`, `"0.0002"`, … (WCA #8, #13,
upstream-protocols.md B5b [S]); `issue` takes the number. A `method: null` challenge is a
human check (Turnstile): answered with the empty token clients used to send it draws
`invalid-event`, and left unanswered the socket stays silent for 60 s (B5b [S]; the session
keeps that silence, `copilot_human_check_silence`).

Pure: no I/O; the session keeps the pending challenge and the state keeps the log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from typing import Any

ANSWERABLE = frozenset({"hashcash", "copilot"})
TURNSTILE_SITEKEY = "0x4AAAAAAAsimulatedTurnstile"
"""The cloudflare challenge's parameter: a Turnstile site key (the client cannot use it headless)."""


@dataclasses.dataclass
class Challenge:
    """One issued challenge and what became of it."""

    method: str | None
    parameter: str | None
    id: str
    variant: str | None = None
    """The hashcash verifier in force when it was issued."""
    token: str | None = None
    answered: bool = False
    solved: bool = False

    def as_json(self) -> dict[str, Any]:
        """The view kept in turn records and `GET /_sim/challenges`."""
        return {
            "method": self.method,
            "parameter": self.parameter,
            "id": self.id,
            "variant": self.variant,
            "answered": self.answered,
            "token": self.token,
            "solved": self.solved,
        }


def challenge_id(number: int) -> str:
    """The id of a socket's `number`th challenge (1-based): "0.0001", "0.0002", …"""
    return f"0.{number:04d}"


def issue(kind: str, *, difficulty: int, variant: str, seed: str = "", number: int = 1) -> Challenge:
    """A fresh challenge of `kind` (hashcash, arithmetic, captcha, cloudflare): a socket's `number`th."""
    ident = challenge_id(number)
    if kind == "hashcash":
        seed = seed or secrets.token_hex(32)
        return Challenge("hashcash", f"{seed}:{difficulty}", ident, variant=variant)
    if kind == "arithmetic":
        return Challenge("copilot", str(secrets.randbelow(999) + 1), ident)
    if kind == "cloudflare":
        return Challenge("cloudflare", TURNSTILE_SITEKEY, ident)
    return Challenge(None, None, ident)


def null_challenge(challenge_id: str) -> Challenge:
    """The null-method challenge that rides along with a throttle (B7.3)."""
    return Challenge(None, None, challenge_id)


def check(challenge: Challenge, token: str) -> bool:
    """Whether `token` answers `challenge` (never true for null/cloudflare ones)."""
    if challenge.method == "hashcash" and challenge.parameter is not None:
        seed, _, raw = challenge.parameter.rpartition(":")
        if not (token.isascii() and token.isdigit()):
            return False
        return hashcash_ok(seed, int(raw), token, challenge.variant or "bits")
    if challenge.method == "copilot" and challenge.parameter is not None:
        try:
            return float(token) == arithmetic_answer(int(challenge.parameter))
        except ValueError:
            return False
    return False


def hashcash_ok(seed: str, difficulty: int, token: str, variant: str) -> bool:
    """Verify a hashcash nonce with the given variant (see the module docstring)."""
    if variant == "hex":
        digest = hashlib.sha256(f"{seed}:{token}".encode()).hexdigest()
        return digest.startswith("0" * difficulty)
    value = int.from_bytes(hashlib.sha256((seed + token).encode()).digest(), "big")
    return 256 - value.bit_length() >= difficulty


def arithmetic_answer(a: int) -> int:
    """The `copilot` method's answer for parameter `a` (B3.1)."""
    return round(((a**3 / 100) + 25 * a) % 22)
