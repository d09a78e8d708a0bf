"""Fetching an image input's http(s) URL without becoming an SSRF proxy.

Only the worker fetches (IMAGE_URL_FETCH on); the web tier never opens a connection to
a client-named host. For every hop, redirects included:

1. the host is resolved once, and EVERY address it resolves to must be public — not
   loopback, private, link-local, multicast, reserved or unspecified (IPv4-mapped IPv6
   addresses are judged as the IPv4 address they carry); one bad address refuses the
   hop, so a name that mixes a public and an internal address cannot be played;
2. the connection goes to that vetted address (the pool is opened on the IP, with the
   original `Host` header and, for https, the original name for SNI and certificate
   checks), so a second DNS answer cannot swap in another address (DNS rebinding);
3. at most MAX_REDIRECTS redirects, each vetted like the first;
4. the body is read in chunks and abandoned past IMAGE_MAX_BYTES; the whole fetch,
   every hop included, must finish within IMAGE_FETCH_TIMEOUT: one deadline, not a
   timeout per read (a server dripping a byte a second would reset that forever). In
   the worker (gevent) a `gevent.Timeout` bounds everything, connect, headers and body;
   without gevent each read waits at most what is left of the deadline and returns
   what one `recv` brought, so the deadline is checked after every byte that arrives.

Every failure is the client's URL failing, so it is a 400 naming the part.
IMAGE_URL_ALLOW_PRIVATE (tests only, unsafe) lifts rule 1.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import gevent
import gevent.monkey
import urllib3

from service.errors import InvalidRequest
from service.images import ImageLimits, ImageRef, check_bytes, parse_image_url, unpark
from workers.upstream.context import TurnImage

MAX_REDIRECTS = 3
REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 64 * 1024

Resolver = Callable[[str, int], list[str]]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (TCP)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def public_address(address: str) -> bool:
    """Whether `address` is a public unicast address a fetch may reach.

    IPv6 addresses that carry an IPv4 address (IPv4-mapped, NAT64 `64:ff9b::/96`) are
    judged as that IPv4 address. The tunnelling prefixes 6to4 (`2002::/16`) and Teredo
    (`2001::/32`) are refused outright: a relay turns them into the IPv4 address they
    embed, which may be internal, and no image host needs them. Site-local `fec0::/10`
    (deprecated, still routed inside some networks) is refused too.
    """
    ip: Any = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.sixtofour is not None or ip.teredo is not None or ip.is_site_local:
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


class ImageFetcher:
    """Fetches image URLs under the rules of the module docstring."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout: float,
        allow_private: bool = False,
        resolver: Resolver = resolve_host,
        is_allowed: Callable[[str], bool] = public_address,
    ) -> None:
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._resolver = resolver
        self._is_allowed = (lambda _address: True) if allow_private else is_allowed

    def fetch(self, url: str, part: str) -> bytes:
        """The body at `url` (following vetted redirects), or a 400 naming `part`."""
        timer = _whole_fetch_timer(self._timeout)
        try:
            if timer is not None:
                timer.start()
            return self._fetch(url, part, time.monotonic() + self._timeout)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise _refused(part, "the fetch took longer than IMAGE_FETCH_TIMEOUT") from None
        finally:
            if timer is not None:
                timer.close()

    def _fetch(self, url: str, part: str, deadline: float) -> bytes:
        for _hop in range(MAX_REDIRECTS + 1):
            response = self._open(url, part, deadline)
            try:
                if response.status in REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise _refused(part, f"a {response.status} redirect without a Location")
                    url = urljoin(url, location)
                    continue
                if response.status != 200:
                    raise _refused(part, f"the server answered HTTP {response.status}")
                return self._read(response, part, deadline)
            finally:
                response.release_conn()
        raise _refused(part, f"more than {MAX_REDIRECTS} redirects")

    def _open(self, url: str, part: str, deadline: float) -> Any:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
        if scheme not in ("http", "https") or not host:
            raise _refused(part, "only http(s) URLs with a host are fetched")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise _refused(part, "the URL has an invalid port") from None
        try:
            addresses = self._resolver(host, port)
        except OSError:
            raise _refused(part, f"the host {host!r} does not resolve") from None
        if not addresses:
            raise _refused(part, f"the host {host!r} does not resolve")
        for address in addresses:
            if not self._is_allowed(address):
                raise _refused(
                    part, f"{host!r} resolves to a non-public address, which image fetches may not reach"
                )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _refused(part, "the fetch took longer than IMAGE_FETCH_TIMEOUT")
        timeout = urllib3.Timeout(connect=remaining, read=remaining)
        pool: Any
        if scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                addresses[0],
                port,
                timeout=timeout,
                retries=False,
                server_hostname=host,
                assert_hostname=host,
                cert_reqs="CERT_REQUIRED",
            )
        else:
            pool = urllib3.HTTPConnectionPool(addresses[0], port, timeout=timeout, retries=False)
        default_port = port == (443 if scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        try:
            return pool.urlopen(
                "GET",
                path,
                headers={"Host": host if default_port else f"{host}:{port}", "Accept": "image/*"},
                redirect=False,
                preload_content=False,
                assert_same_host=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _refused(part, f"the fetch failed ({type(exc).__name__})") from None

    def _read(self, response: Any, part: str, deadline: float) -> bytes:
        data = bytearray()
        sock = getattr(getattr(response, "connection", None), "sock", None)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _refused(part, "the fetch took longer than IMAGE_FETCH_TIMEOUT")
                if sock is not None:
                    sock.settimeout(remaining)  # no single read may outlast the deadline
                chunk = response.read1(CHUNK)  # what one recv brought, not a full chunk
                if not chunk:
                    break
                data.extend(chunk)
                if len(data) > self._max_bytes:
                    raise InvalidRequest(
                        f"Invalid '{part}': the image at this URL is larger than {self._max_bytes} bytes "
                        "(IMAGE_MAX_BYTES).",
                        param=part,
                        code="image_too_large",
                    )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise _refused(part, "the fetch took longer than IMAGE_FETCH_TIMEOUT") from None
            raise _refused(part, f"the fetch failed ({type(exc).__name__})") from None
        return bytes(data)


def _whole_fetch_timer(seconds: float) -> gevent.Timeout | None:
    """A gevent timer over the whole fetch when sockets are cooperative (the worker), else None."""
    if not gevent.monkey.is_module_patched("socket"):
        return None  # a timer could not interrupt a blocking read; `_read` bounds each one instead
    return gevent.Timeout(seconds)


def _refused(part: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid '{part}': the image URL could not be fetched: {why}.", param=part, code="invalid_image_url"
    )


def load_images(redis: Any, settings: Any, refs: list[dict[str, Any]]) -> tuple[TurnImage, ...]:
    """The turn's images as bytes: parked ones from Redis, URLs fetched under the rules above."""
    loaded: list[TurnImage] = []
    fetcher: ImageFetcher | None = None
    limits = ImageLimits(settings.image_max_bytes, settings.image_max_per_message, settings.image_url_fetch)
    for raw in refs:
        ref = ImageRef.from_json(raw)
        if ref.url:
            if not settings.image_url_fetch:  # the web tier checked; a worker with other settings too
                parse_image_url(ref.url, ref.part, limits)
            fetcher = fetcher or ImageFetcher(
                max_bytes=settings.image_max_bytes,
                timeout=settings.image_fetch_timeout,
                allow_private=settings.image_url_allow_private,
            )
            data = fetcher.fetch(ref.url, ref.part)
            mime = check_bytes(data, ref.part, limits)
        else:
            data, mime = unpark(redis, ref), ref.mime
        loaded.append(TurnImage(digest=hashlib.sha256(data).hexdigest(), mime=mime, data=data))
    return tuple(loaded)
