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
- redirects are never followed.

The URL is checked at submit (422 naming `webhook`) and again at each delivery try. A refused name is
"not allowed", whatever the reason: the caller never learns what it resolves to, or whether it resolves at
all, so the guard is no oracle for the DNS our functions see (internal names included). The reason is
logged for operators. A URL written with an IP address is refused saying why (the caller wrote the IP).
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3

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


def connection_pool(dest: Destination, timeout_s: float) -> urllib3.HTTPConnectionPool:
    """A pool that connects to the checked address, never re-resolving the name; TLS still sends the
    name (SNI) and verifies the certificate against it."""
    timeout = urllib3.Timeout(total=timeout_s)
    if dest.scheme == "https":
        return urllib3.HTTPSConnectionPool(dest.address, dest.port, timeout=timeout, retries=False,
                                           server_hostname=dest.host, assert_hostname=dest.host,
                                           cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
    return urllib3.HTTPConnectionPool(dest.address, dest.port, timeout=timeout, retries=False)


def host_header(dest: Destination) -> str:
    default = 443 if dest.scheme == "https" else 80
    name = f"[{dest.host}]" if ":" in dest.host else dest.host
    return name if dest.port == default else f"{name}:{dest.port}"
