import ipaddress
import os
import sys

import pytest

# Tests never reach real AWS: fake credentials, one region, no hub downloads, no instance metadata.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")


#: Lookups of names that are not loopback, as (event, name): each fails the test it happened in (or, made
#: by a thread between tests, the next one). Kept as well as refused, because the code under test may well
#: catch the refusal (a resolver turns any failure into "not allowed").
LOOKUPS_OFF_LOOPBACK: list[tuple[str, str]] = []


def _name(host: object) -> str:
    return (host.decode(errors="replace") if isinstance(host, bytes) else str(host)).lower().rstrip(".")


def _is_loopback_name(host: object) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the wildcard address of a server socket, no lookup
    name = _name(host)
    if name == "localhost" or name.endswith(".localhost") or name == "":
        return True
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True  # an IP literal: nothing to look up (a connect to it is checked below)


def _only_loopback(event: str, args: tuple) -> None:
    """No test opens a connection off 127.0.0.1 / ::1, or asks DNS about a name, not even by accident: such
    a connect or lookup fails the test that made it (an SSRF test uses a fake resolver and never lets a
    delivery run to such an address; the embedded stacks of tests use the loopback-only resolver)."""
    if event in ("socket.getaddrinfo", "socket.gethostbyname"):
        if not _is_loopback_name(args[0]):
            LOOKUPS_OFF_LOOPBACK.append((event, _name(args[0])))
            raise LookupRefused(f"tests look up no names but loopback ones, not {args[0]!r}")
        return
    if event != "socket.connect" or not isinstance(args[1], tuple):
        return  # a Unix socket's address is a path
    try:
        address = ipaddress.ip_address(args[1][0])
    except ValueError:
        return  # not an IP: the connect itself resolves nothing
    address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 is loopback too
    if not address.is_loopback:
        raise ConnectionRefusedError(f"tests connect only to loopback addresses, not {args[1][0]}")


class LookupRefused(RuntimeError):
    """Not an OSError: code that handles DNS failures must not take this for one and carry on."""


sys.addaudithook(_only_loopback)


@pytest.fixture(autouse=True)
def no_lookups_off_loopback():
    yield
    if LOOKUPS_OFF_LOOPBACK:
        made = list(dict.fromkeys(LOOKUPS_OFF_LOOPBACK))
        LOOKUPS_OFF_LOOPBACK.clear()
        pytest.fail(f"names looked up through the system resolver (tests must use a fake one): {made}")
