"""Strict parsers of single setting values, and `read`, which applies one to one key.

A parser takes the raw string and returns the value or raises `ValueError` with a
message; `read` turns that into a `SettingsError` naming the key, and never shows the
value of a credential (`SECRET_KEYS`) nor a password inside a URL. Apart from
`load_settings` so the list of keys there reads as the configuration, not its grammar.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

from service.runtime.logs import redact_passwords
from service.runtime.settings_fields import SettingsError

T = TypeVar("T")


def text(value: str) -> str:
    """Any text, surrounding white space dropped."""
    return value.strip()


def positive_int(value: str) -> int:
    """A whole number above 0."""
    number = int(value.strip())
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def count(value: str) -> int:
    """A whole number, 0 or more (0 = no limit)."""
    number = int(value.strip())
    if number < 0:
        raise ValueError("must be a whole number, 0 or more (0 = no limit)")
    return number


def port(value: str) -> int:
    """A TCP port, 1-65535."""
    number = positive_int(value)
    if number > 65535:
        raise ValueError("must be a TCP port (1-65535)")
    return number


def port_or_off(value: str) -> int:
    """A TCP port, or 0 for off."""
    return 0 if value.strip() == "0" else port(value)


def positive_float(value: str) -> float:
    """A number above 0 (seconds, mostly)."""
    number = float(value.strip())
    if not number > 0:
        raise ValueError("must be a positive number")
    return number


def non_negative_float(value: str) -> float:
    """A number, 0 or more."""
    number = float(value.strip())
    if number < 0:
        raise ValueError("must be zero or more")
    return number


def secret(value: str) -> str:
    """A server secret of 16+ characters."""
    secret = value.strip()
    if len(secret) < 16:
        raise ValueError(
            "must be at least 16 characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return secret


def memory(value: str) -> str:
    """A redis-server memory size such as 256mb (lower-cased as redis takes it)."""
    amount = value.strip().lower()
    if not re.fullmatch(r"[1-9][0-9]*(?:b|kb|mb|gb)?", amount):
        raise ValueError("must be a size such as 256mb or 1gb")
    return amount


def flag(value: str) -> bool:
    """On or off: 1/0, true/false, on/off, yes/no."""
    flag = value.strip().lower()
    if flag not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
        raise ValueError("must be on or off")
    return flag in ("1", "true", "on", "yes")


def url(*schemes: str) -> Callable[[str], str]:
    """A parser of URLs with one of `schemes`."""

    def parse(value: str) -> str:
        url = value.strip()
        if not any(url.startswith(f"{scheme}://") for scheme in schemes):
            raise ValueError(f"must start with {' or '.join(s + '://' for s in schemes)}")
        return url

    return parse


def redis_url(value: str) -> str | None:
    """A redis://, rediss:// or unix:// URL with a valid port; empty = None (embedded Redis)."""
    url = value.strip()
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    try:
        urlsplit(url).port  # noqa: B018 - parsed for its ValueError on a bad port
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    return url


def host_ports(value: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (IPv6 hosts in brackets: `[::1]:26379`)."""
    addresses = []
    for item in csv(value):
        host, sep, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"{item!r} is not host:port (port 1-65535)")
        addresses.append((host, int(port)))
    return tuple(addresses)


def csv(value: str) -> tuple[str, ...]:
    """Comma-separated items, blanks dropped."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def lines(value: str) -> tuple[str, ...]:
    """One item per line, blank lines dropped."""
    return tuple(line.strip() for line in value.replace("\r", "").split("\n") if line.strip())


def pem_file(value: str) -> str:
    """The path of a readable PEM certificate file; empty = none."""
    path = value.strip()
    if not path:
        return ""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            pem = handle.read(1 << 20)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError(f"{path} holds no PEM certificate")
    return path


def choice(*allowed: str) -> Callable[[str], str]:
    """A parser of one of the `allowed` words (case-insensitive, lower-cased)."""

    def parse(value: str) -> str:
        choice = value.strip().lower()
        if choice not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return choice

    return parse


def log_level(value: str) -> str:
    """A logging level name, upper-cased."""
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


# Keys whose values are credentials: an error names the key but never shows the value.
SECRET_KEYS = (
    "API_KEYS",
    "SECRET_KEY",
    "ADMIN_KEY",
    "COPILOT_ACCESS_TOKEN",
    "UPSTREAM_COOKIES",
    "REDIS_SENTINEL_PASSWORD",
)


def _shown(key: str, raw: str) -> str:
    if key in SECRET_KEYS:
        return f"{key} (value not shown)"
    return f"{key}={redact_passwords(raw.strip())!r}"


def read(environ: Mapping[str, str], key: str, parse: Callable[[str], T], default: T) -> T:
    """`parse` the value of `key`, or `default` when unset or blank; SettingsError naming the key."""
    raw = environ.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        # No `from exc`: the parser's own message may quote the raw value (a password).
        raise SettingsError(f"{_shown(key, raw)} is invalid: {exc}") from None
