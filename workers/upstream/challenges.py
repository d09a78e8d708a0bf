"""Copilot's challenges (B3.1): proof of work and arithmetic, answered without I/O.

Copilot may answer a `send` with a `challenge`; the client answers it and re-sends the
held `send`. Two readings of the hashcash puzzle exist in public clients and the
reference cannot tell which is right: (b) leading zero *bits* of sha256(seed + n),
inferred from a capture where `:1` was answered with `0`, is the default; (a) leading
zero *hex digits* of sha256(f"{seed}:{i}") is kept one line away (`HASHCASH`).
A hashing loop holds the GIL, so on the worker's gevent loop (or in one of its threads)
it would stall every other turn of the process past its liveness lease. Puzzles of more
than `INLINE_BITS` are therefore solved in a short-lived child process
(`python -m workers.upstream.challenges`, which gevent's patched `subprocess` waits for
cooperatively); a spawn costs ~50 ms, nothing next to the work. Measured on a 20-bit
puzzle under gevent: inline, the loop stalled 2.3 s; in gevent's threadpool its worst
gap was 32 ms (the GIL is shared every 5 ms, and the solver still takes half the loop's
CPU); in a child process 13 ms. The only capture shows
difficulty 1 (B7.4); `MAX_HASHCASH_BITS` only refuses absurd puzzles (B3.1: "reject
absurd difficulties"), sized to what one turn can afford on one core.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

from workers.upstream.errors import ProtocolError

MAX_HASHCASH_BITS = 26  # ~67M hashes, ~50 s on one core (0.8 µs each); captures show 1
INLINE_BITS = 16  # up to ~65k hashes (~50 ms): cheaper in place than a process spawn
SOLVE_TIMEOUT = 120.0  # seconds a child solver may take before the turn gives up
ROOT = Path(__file__).resolve().parents[2]


def _hashcash_parameter(parameter: str | None) -> tuple[str, int]:
    """Seed and difficulty of `"<seed>:<difficulty>"`, split on the LAST colon (B3.1 (b))."""
    seed, colon, difficulty = (parameter or "").rpartition(":")
    if not colon or not difficulty.strip().isdigit():
        raise ProtocolError(f"Copilot sent a hashcash parameter we cannot read: {parameter!r:.80}")
    return seed, int(difficulty)


def solve_hashcash_bits(parameter: str | None, *, max_bits: int = MAX_HASHCASH_BITS) -> str:
    """Variant (b), capture-backed: the smallest n with ≥ difficulty leading zero BITS in sha256(seed + n).

    From the 2026 clients, "inferred from a capture where the parameter ended in `:1`
    and the accepted token was `0`" (B3.1, B7.4). Absurd difficulties are refused.
    """
    seed, bits = _hashcash_parameter(parameter)
    if bits > max_bits:
        raise ProtocolError(f"Copilot asked for {bits}-bit hashcash; more than {max_bits} is refused")
    if bits == 0:
        return "0"
    base, shift = hashlib.sha256(seed.encode()), 32 - bits
    nonce = 0
    while True:
        attempt = base.copy()
        attempt.update(str(nonce).encode())
        if int.from_bytes(attempt.digest()[:4], "big") >> shift == 0:
            return str(nonce)
        nonce += 1


def solve_hashcash_hex(parameter: str | None, *, max_digits: int = MAX_HASHCASH_BITS // 4) -> str:
    """Variant (a), OmniRoute's: an i whose sha256(f"{seed}:{i}") hex starts with `difficulty` zeros."""
    seed, digits = _hashcash_parameter(parameter)
    if digits > max_digits:
        raise ProtocolError(f"Copilot asked for {digits} zero hex digits; more than {max_digits} is refused")
    prefix = "0" * digits
    nonce = 0
    while not hashlib.sha256(f"{seed}:{nonce}".encode()).hexdigest().startswith(prefix):
        nonce += 1
    return str(nonce)


# The two published solvers disagree (B3.1 [U]); (b) is the one a capture backs. Switch here.
HASHCASH = solve_hashcash_bits


MAX_ARITHMETIC = 100_000
"""Largest |a| answered: Copilot sends 1-999; beyond this a³ loses the precision the answer needs."""


def solve_arithmetic(parameter: str | None) -> str:
    """`method:"copilot"`: round(((a³/100) + 25a) mod 22) of the number `a` (B3.1 [S])."""
    try:
        number = float(parameter or "")
    except ValueError:
        raise ProtocolError(
            f"Copilot sent an arithmetic challenge we cannot read: {parameter!r:.80}"
        ) from None
    if not math.isfinite(number) or abs(number) > MAX_ARITHMETIC:
        # nan/inf would raise deep in the arithmetic, 1e308 overflow: neither is a real challenge.
        raise ProtocolError(f"Copilot sent an arithmetic challenge out of range: {parameter!r:.80}")
    a: float = int(number) if number.is_integer() else number
    return str(round(((a**3 / 100) + 25 * a) % 22))


ANSWERABLE = frozenset({"hashcash", "copilot"})


def solve_challenge(method: str, parameter: str | None) -> str:
    """The token for an answerable challenge method (`hashcash`, `copilot`), never blocking the loop."""
    if method == "hashcash":
        _, difficulty = _hashcash_parameter(parameter)
        bits = difficulty * 4 if HASHCASH is solve_hashcash_hex else difficulty
        if bits <= INLINE_BITS:
            return HASHCASH(parameter)
        if bits > MAX_HASHCASH_BITS:
            HASHCASH(parameter)  # raises the solver's own refusal
        return _solve_in_child(str(parameter))
    if method == "copilot":
        return solve_arithmetic(parameter)
    raise ValueError(f"no solver for challenge method {method!r}")


def _solve_in_child(parameter: str) -> str:
    """Run `HASHCASH(parameter)` in a child process and return its answer."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__, parameter],
            cwd=ROOT,
            capture_output=True,
            timeout=SOLVE_TIMEOUT,
            check=True,
        )
    except subprocess.TimeoutExpired:
        raise ProtocolError(f"a hashcash puzzle took longer than {SOLVE_TIMEOUT:g}s to solve") from None
    except subprocess.CalledProcessError as exc:
        reason = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ProtocolError(f"the hashcash solver failed: {reason[0]:.200}") from None
    return done.stdout.decode().strip()


if __name__ == "__main__":  # the child of `_solve_in_child`
    print(HASHCASH(sys.argv[1]))
