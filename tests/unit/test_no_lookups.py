"""Tests never resolve the names they make up (tests/conftest.py): a lookup of a name that is not loopback is
refused, and fails the test that made it even where the code under test swallows the refusal, as a
resolver that turns every failure into "not allowed" does. Nothing here reaches a resolver."""
import socket

import pytest

from tests.conftest import LOOKUPS_OFF_LOOPBACK, LookupRefused


@pytest.fixture
def lookups():
    """What the guard recorded during the test, taken away so that this test itself does not fail."""
    yield LOOKUPS_OFF_LOOPBACK
    LOOKUPS_OFF_LOOPBACK.clear()


@pytest.mark.parametrize("lookup", [
    lambda: socket.getaddrinfo("jhrpmszp.7.example", 443),
    lambda: socket.getaddrinfo(b"4.com", 443, type=socket.SOCK_STREAM),
    lambda: socket.gethostbyname("null.test"),
    lambda: socket.gethostbyname_ex("rebind.example"),
])
def test_a_lookup_of_a_made_up_name_is_refused_and_kept_against_the_test(lookups, lookup):
    try:
        lookup()
    except LookupRefused:
        pass  # swallowed, as code under test might: the record below still fails the test
    else:
        pytest.fail("the lookup was not refused")
    assert len(lookups) == 1 and lookups[0][1] in ("jhrpmszp.7.example", "4.com", "null.test", "rebind.example")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", None])
def test_loopback_names_and_addresses_are_looked_up_as_usual(lookups, host):
    socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
    assert lookups == []
