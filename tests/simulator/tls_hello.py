"""A TLS ClientHello, parsed from the raw bytes a client sends first, and its JA3 / JA4 fingerprints.

Cloudflare tells a browser from a script before any HTTP is read: the ClientHello (cipher
suites, extensions, groups, signature algorithms, ALPN) differs between Chrome, Firefox,
Safari and Python's `ssl` (upstream-protocols.md B5b: clearance is bound to the TLS
fingerprint). The simulator's TLS listener peeks at the first record(s) of every
connection and hands the bytes here. Pure: no I/O.

Fingerprints:

- **JA3** (Salesforce): `version,ciphers,extensions,groups,point_formats`, each a
  `-`-joined list of decimal values in the order sent, GREASE values (RFC 8701) removed;
  `ja3_hash` is its MD5. Chrome shuffles its extensions per connection (since 110), so a
  Chrome JA3 changes every time; JA4 does not.
- **JA4** (FoxIO, github.com/FoxIO-LLC/ja4 `technical_details/JA4.md`): `a_b_c` where `a`
  = `t` + TLS version (highest of supported_versions, else the legacy version) + `d`/`i`
  (SNI present or not) + 2-digit cipher count + 2-digit extension count (GREASE removed,
  SNI and ALPN counted) + first and last character of the first ALPN value (`00` if none);
  `b` = first 12 hex digits of SHA-256 of the sorted cipher list (4-digit hex, `,`-joined);
  `c` = the same of the sorted extension list without SNI (0000) and ALPN (0010), then `_`
  and the signature algorithms in the order sent (no `_` part when there are none).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import struct
import time
from typing import Any

RECORD_HANDSHAKE = 22
CLIENT_HELLO = 1
EXT_SNI, EXT_GROUPS, EXT_POINT_FORMATS, EXT_SIG_ALGS, EXT_ALPN, EXT_VERSIONS = 0, 10, 11, 13, 16, 43
KEPT = 1000
"""How many connections `GET /_sim/tls` remembers (the newest)."""
VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2"}


class Incomplete(ValueError):
    """More bytes are needed before the ClientHello is whole."""


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE values: 0x0a0a, 0x1a1a, … 0xfafa (both bytes equal, low nibble 0xa)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


@dataclasses.dataclass(frozen=True)
class ClientHello:
    """The fields of a ClientHello that fingerprints and the gate read (GREASE kept, as sent)."""

    legacy_version: int
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    alpn: tuple[str, ...] = ()
    sni: str | None = None
    supported_versions: tuple[int, ...] = ()

    @property
    def version(self) -> int:
        """The highest TLS version offered (supported_versions wins over the legacy field)."""
        offered = [v for v in self.supported_versions if not is_grease(v)]
        return max(offered) if offered else self.legacy_version

    def ja3(self) -> str:
        """The JA3 string (see the module docstring)."""

        def joined(values: tuple[int, ...]) -> str:
            return "-".join(str(v) for v in values if not is_grease(v))

        return ",".join(
            [
                str(self.legacy_version),
                joined(self.ciphers),
                joined(self.extensions),
                joined(self.groups),
                joined(self.point_formats),
            ]
        )

    def ja3_hash(self) -> str:
        """MD5 of the JA3 string (the form fingerprint databases list)."""
        return hashlib.md5(self.ja3().encode(), usedforsecurity=False).hexdigest()

    def ja4(self) -> str:
        """The JA4 fingerprint (see the module docstring)."""
        ciphers = [c for c in self.ciphers if not is_grease(c)]
        extensions = [e for e in self.extensions if not is_grease(e)]
        part_a = "t{}{}{:02d}{:02d}{}".format(
            VERSIONS.get(self.version, "00"),
            "d" if EXT_SNI in extensions else "i",
            min(len(ciphers), 99),
            min(len(extensions), 99),
            _alpn_chars(self.alpn[0] if self.alpn else ""),
        )
        part_b = _hash12(",".join(f"{c:04x}" for c in sorted(ciphers))) if ciphers else "0" * 12
        rest = sorted(e for e in extensions if e not in (EXT_SNI, EXT_ALPN))
        text = ",".join(f"{e:04x}" for e in rest)
        algorithms = [s for s in self.signature_algorithms if not is_grease(s)]
        if algorithms:
            text += "_" + ",".join(f"{s:04x}" for s in algorithms)
        part_c = _hash12(text) if rest else "0" * 12
        return f"{part_a}_{part_b}_{part_c}"

    def as_json(self) -> dict[str, object]:
        """The fields and fingerprints, as `GET /_sim/tls` shows them."""
        return {
            "ja3": self.ja3(),
            "ja3_hash": self.ja3_hash(),
            "ja4": self.ja4(),
            "alpn": list(self.alpn),
            "sni": self.sni,
            "tls_version": f"{self.version:#06x}",
            "ciphers": len([c for c in self.ciphers if not is_grease(c)]),
            "extensions": [e for e in self.extensions if not is_grease(e)],
            "groups": [g for g in self.groups if not is_grease(g)],
        }


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _alpn_chars(value: str) -> str:
    """JA4's ALPN field: first and last character, or of its hex form if either is not alphanumeric."""
    if not value:
        return "00"
    if value[0].isascii() and value[0].isalnum() and value[-1].isascii() and value[-1].isalnum():
        return value[0] + value[-1]
    hexed = value.encode("latin-1", "replace").hex()
    return hexed[0] + hexed[-1]


def handshake_message(data: bytes) -> bytes:
    """The ClientHello handshake message from the first TLS record(s) of a connection.

    Raises `Incomplete` when `data` ends before the message does, ValueError when the bytes
    are not a TLS handshake at all (plain HTTP on the TLS port, say).
    """
    body = b""
    offset = 0
    while True:
        if len(data) < offset + 5:
            raise Incomplete("record header")
        kind, _version, length = struct.unpack_from("!BHH", data, offset)
        if kind != RECORD_HANDSHAKE:
            raise ValueError(f"not a TLS handshake record (content type {kind})")
        if len(data) < offset + 5 + length:
            raise Incomplete("record body")
        body += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if len(body) >= 4:
            if body[0] != CLIENT_HELLO:
                raise ValueError(f"first handshake message is type {body[0]}, not ClientHello")
            needed = 4 + int.from_bytes(body[1:4], "big")
            if len(body) >= needed:
                return body[:needed]


class _Reader:
    """Bounds-checked reading of TLS vectors."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ValueError("truncated ClientHello")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> _Reader:
        return _Reader(self.take(self.number(length_size)))

    def uint16s(self) -> tuple[int, ...]:
        return tuple(struct.unpack(f"!{len(self.data) // 2}H", self.data[: len(self.data) // 2 * 2]))

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def parse(data: bytes) -> ClientHello:
    """Parse a connection's first bytes (TLS records) into a `ClientHello`."""
    reader = _Reader(handshake_message(data)[4:])
    legacy_version = reader.number(2)
    reader.take(32)  # random
    reader.vector(1)  # legacy session id
    ciphers = reader.vector(2).uint16s()
    reader.vector(1)  # compression methods
    fields: dict[str, object] = {}
    extensions: list[int] = []
    block = reader.vector(2) if not reader.done else _Reader(b"")
    while not block.done:
        kind = block.number(2)
        extensions.append(kind)
        _extension(kind, block.vector(2), fields)
    return ClientHello(legacy_version, ciphers, tuple(extensions), **fields)  # type: ignore[arg-type]


def _extension(kind: int, body: _Reader, fields: dict[str, object]) -> None:
    """Read the extensions the fingerprints and the gate need into `fields`."""
    if kind == EXT_GROUPS:
        fields["groups"] = body.vector(2).uint16s()
    elif kind == EXT_POINT_FORMATS:
        fields["point_formats"] = tuple(body.vector(1).data)
    elif kind == EXT_SIG_ALGS:
        fields["signature_algorithms"] = body.vector(2).uint16s()
    elif kind == EXT_VERSIONS:
        fields["supported_versions"] = body.vector(1).uint16s()
    elif kind == EXT_ALPN:
        names = body.vector(2)
        alpn = []
        while not names.done:
            alpn.append(names.vector(1).data.decode("latin-1"))
        fields["alpn"] = tuple(alpn)
    elif kind == EXT_SNI:
        entries = body.vector(2)
        while not entries.done:
            name_type = entries.number(1)
            name = entries.vector(2).data
            if name_type == 0:
                fields["sni"] = name.decode("ascii", "replace")


class TlsLog:
    """Every TLS connection's ClientHello summary, oldest first; `reset()` (via the state) clears it."""

    def __init__(self) -> None:
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEPT)

    def add(self, hello: ClientHello, client: tuple[str, int]) -> dict[str, Any]:
        """Record one connection's hello (before its handshake completes)."""
        record = {**hello.as_json(), "client": client[0], "client_port": client[1], "at": time.time()}
        self.records.append(record)
        return record

    def as_json(self) -> list[dict[str, Any]]:
        """The records, newest last."""
        return list(self.records)
