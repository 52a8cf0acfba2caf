"""Where callers' webhooks may point: the guard against server-side request forgery.

A webhook URL makes us send a POST from inside our network, so it must not reach anything that is not
on the public internet: loopback, private ranges, link-local (169.254.169.254 is the cloud metadata
service), unique-local IPv6, multicast, reserved. The rules:

- `https` only; `http` and loopback destinations only when the stack allows them (`webhook_allow_loopback`,
  set by the embedded runtime, whose callers listen on 127.0.0.1) - and even then nothing private;
- the host is resolved and *every* address must be allowed (one private answer refuses the URL);
- the POST connects to the address that was checked, with the URL's host as Host header, TLS SNI and the
  name the certificate must match, so a DNS answer that changes between the check and the connection
  (DNS rebinding) cannot redirect it;
- redirects are never followed;
- an exchange ends at its deadline, whatever it waits for, and reads no more of the answer than its
  status line and headers (a few KB): a receiver cannot hold a delivery, or fill its memory.

The URL is checked at submit (422 naming `webhook`) and again at each delivery try. A refused name is
"not allowed", whatever the reason: the caller never learns what it resolves to, or whether it resolves at
all, so the guard is no oracle for the DNS our functions see (internal names included). The reason is
logged for operators. A URL written with an IP address is refused saying why (the caller wrote the IP).
"""
from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import certifi
import urllib3
import urllib3.connection

from stillhouse.errors import Unprocessable

log = logging.getLogger(__name__)

#: host, port -> the addresses the host resolves to. The default asks the system's resolver; tests pass
#: a fake one, so no test depends on DNS or ever connects off 127.0.0.1.
Resolver = Callable[[str, int], list[str]]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeWebhook(Unprocessable):
    """The webhook URL points somewhere we will not send requests to."""

    code = "unsafe_webhook"


def _host_not_allowed(host: str, why: str) -> UnsafeWebhook:
    """The refusal of a name: the same words whatever `why` is (logged, never told)."""
    log.info("webhook host %r refused: %s", host, why)
    return UnsafeWebhook(f"webhook: host {host!r} is not allowed (it must resolve to public addresses only)",
                         field="webhook")


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise _host_not_allowed(host, f"does not resolve ({err})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


#: What the loopback-only resolver answers for: the names that are loopback by definition (RFC 6761).
_LOOPBACK_NAMES = {"localhost": ["127.0.0.1", "::1"], "127.0.0.1": ["127.0.0.1"], "::1": ["::1"]}


def loopback_only_resolver(host: str, port: int) -> list[str]:
    """localhost and *.localhost are loopback; any other name is refused as if it did not resolve, without
    a lookup. For stacks whose callers all listen on 127.0.0.1 (tests, benchmarks): the names their
    inputs make up, fuzzed ones included, never become DNS queries that leave the machine."""
    name = host.lower().rstrip(".")
    if name.endswith(".localhost"):
        name = "localhost"
    if name in _LOOPBACK_NAMES:
        return list(_LOOPBACK_NAMES[name])
    raise _host_not_allowed(host, "not a loopback name, and this stack looks up no other (loopback-only)")


#: STILLHOUSE_WEBHOOK_RESOLVER -> the resolver the guard uses.
RESOLVERS: dict[str, Resolver] = {"system": system_resolver, "loopback-only": loopback_only_resolver}


@dataclass(frozen=True)
class Destination:
    """A checked webhook URL and the address to connect to for it."""

    url: str
    scheme: str
    host: str  # as in the URL (the name for Host, SNI and the certificate)
    port: int
    address: str  # the checked IP the connection goes to
    target: str  # path and query


def _unwrap(ip: IpAddress) -> IpAddress:
    """An IPv4 address hidden in IPv6 (::ffff:10.0.0.1, 64:ff9b::/96 NAT64) is judged as the IPv4 it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in ipaddress.IPv6Network("64:ff9b::/96"):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def refusal(ip: IpAddress, *, allow_loopback: bool) -> str | None:
    """Why we will not connect to `ip`, or None when we will."""
    ip = _unwrap(ip)
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "not a public address"
    return None


class WebhookGuard:
    def __init__(self, *, allow_loopback: bool = False, resolve: Resolver = system_resolver) -> None:
        self.allow_loopback = allow_loopback
        self.resolve = resolve

    def check(self, url: str) -> Destination:
        """The destination of `url`, or UnsafeWebhook (field `webhook`) saying why not."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as err:
            raise UnsafeWebhook(f"webhook: not a valid URL ({err})", field="webhook") from err
        scheme, host = parts.scheme.lower(), (parts.hostname or "")
        if scheme not in ("https", "http") or not host or (scheme == "http" and not self.allow_loopback):
            # http refused before any lookup: after one, the refusal would tell public names from others
            raise UnsafeWebhook("webhook: must be an https:// URL", field="webhook")
        if parts.username or parts.password:
            raise UnsafeWebhook("webhook: credentials in the URL are not allowed", field="webhook")
        port = port or (443 if scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host)]
            literal = True
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolve(host, port)]
            literal = False
        if not addresses:
            raise _host_not_allowed(host, "does not resolve")
        for ip in addresses:
            why = refusal(ip, allow_loopback=self.allow_loopback)
            if why and literal:
                raise UnsafeWebhook(f"webhook: {host} is {why}", field="webhook")
            if why:
                raise _host_not_allowed(host, f"resolves to {ip}, which is {why}")
        if scheme == "http" and not (self.allow_loopback and all(_unwrap(ip).is_loopback for ip in addresses)):
            raise UnsafeWebhook("webhook: must be an https:// URL", field="webhook")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Destination(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]), target=target)


#: Of a receiver's answer we need the status only: its status line and headers are read up to this many
#: bytes (more fails the try), its body not at all. What a receiver sends cannot fill our memory.
ANSWER_HEAD_MAX_BYTES = 8192


class AnswerTooLarge(http.client.HTTPException):
    """The receiver's status line and headers run past ANSWER_HEAD_MAX_BYTES."""


class Deadline:
    """The end of one exchange with a receiver, whatever it is then waiting for.

    urllib3's timeouts bound each connect, send and read, not the exchange: a receiver that drips a byte
    every few seconds never trips them, and would hold the delivery function (every other tenant's notice
    in the batch with it) until Lambda kills it. So at `seconds` a timer shuts the connection's socket
    down, which wakes whatever is blocked on it (a TLS handshake, a send, a read) at once. The timer holds
    a duplicate of the socket, because TLS takes over (detaches) the original."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def watch(self, sock: socket.socket) -> None:
        """The connection's socket, just connected: cut off at the deadline (at once if it has passed)."""
        with self._lock:
            if self._sock is not None:  # a second connection of the same exchange: only it matters now
                self._sock.close()
            self._sock = sock.dup()
            if self.expired:
                _shut(self._sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shut(self._sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already, or never connected: nothing is waiting on it


class _CappedReader(io.RawIOBase):
    """The answer as http.client reads it, ending in AnswerTooLarge once more than `left` bytes were asked
    for. http.client reads the status line and headers line by line; we never read the body."""

    def __init__(self, fp: Any, left: int) -> None:
        super().__init__()
        self._fp = fp
        self._left = left

    def readable(self) -> bool:
        return True

    def _take(self, n: int) -> None:
        self._left -= n
        if self._left < 0:
            raise AnswerTooLarge(f"the answer's status line and headers are over {ANSWER_HEAD_MAX_BYTES} bytes")

    def readline(self, limit: int | None = -1) -> bytes:
        cap = self._left + 1 if limit is None or limit < 0 else min(limit, self._left + 1)
        line = self._fp.readline(cap)
        self._take(len(line))
        return line

    def read(self, n: int | None = -1) -> bytes:
        data = self._fp.read(self._left + 1 if n is None or n < 0 else min(n, self._left + 1))
        self._take(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._fp.close()
        super().close()


class _CappedResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = _CappedReader(self.fp, ANSWER_HEAD_MAX_BYTES)


class _Pinned:
    """What our connections add to urllib3's: the socket is watched by the exchange's deadline, and the
    answer's head is read up to ANSWER_HEAD_MAX_BYTES."""

    deadline: Deadline
    response_class = _CappedResponse

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        self.deadline.watch(sock)
        return sock


class _PinnedHTTP(_Pinned, urllib3.connection.HTTPConnection):
    pass


class _PinnedHTTPS(_Pinned, urllib3.connection.HTTPSConnection):
    pass


def pinned_connection(dest: Destination, deadline: Deadline) -> urllib3.connection.HTTPConnection:
    """A connection to the checked address, never re-resolving the name (TLS still sends the name as SNI
    and verifies the certificate against it), cut off at `deadline`."""
    conn: urllib3.connection.HTTPConnection
    if dest.scheme == "https":
        conn = _PinnedHTTPS(dest.address, dest.port, timeout=deadline.seconds, server_hostname=dest.host,
                            assert_hostname=dest.host, cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
    else:
        conn = _PinnedHTTP(dest.address, dest.port, timeout=deadline.seconds)
    conn.deadline = deadline  # type: ignore[attr-defined]
    return conn


def host_header(dest: Destination) -> str:
    default = 443 if dest.scheme == "https" else 80
    name = f"[{dest.host}]" if ":" in dest.host else dest.host
    return name if dest.port == default else f"{name}:{dest.port}"
