"""Callers' webhooks never reach what is not on the public internet (SSRF): https only, every resolved
address public, the checked address is the one connected to, and a name that changes its answer later
is refused at delivery. Every name here is resolved by a fake resolver: no DNS, no connection."""
import socket

import pytest

from stillhouse.config import Settings
from stillhouse.container import Container
from stillhouse.delivery.destinations import (
    Deadline,
    UnsafeWebhook,
    WebhookGuard,
    host_header,
    loopback_only_resolver,
    pinned_connection,
    system_resolver,
)
from stillhouse.delivery.webhooks import GuardedPost

PUBLIC = "93.184.215.14"


class FakeDns:
    def __init__(self, **answers):
        self.answers = {name.replace("_", "."): addrs for name, addrs in answers.items()}
        self.asked = []

    def __call__(self, host, port):
        self.asked.append(host)
        return self.answers.get(host, [])


def guard(allow_loopback=False, **answers):
    return WebhookGuard(allow_loopback=allow_loopback, resolve=FakeDns(hooks_example=[PUBLIC], **answers))


@pytest.mark.parametrize("url", [
    "https://hooks.example/in",
    "https://hooks.example:8443/in?tenant=1",
    f"https://{PUBLIC}/in",
    "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/in",
])
def test_https_to_a_public_address_is_allowed(url):
    dest = guard().check(url)
    assert dest.scheme == "https" and dest.address in (PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c")


@pytest.mark.parametrize(("url", "why"), [
    ("http://hooks.example/in", "https"),
    ("ftp://hooks.example/in", "https"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://[fd00:ec2::254]/latest/meta-data/", "not a public address"),  # EC2's IPv6 metadata (ULA)
    ("https://127.0.0.1/in", "loopback"),
    ("https://[::1]/in", "loopback"),
    ("https://10.1.2.3/in", "not a public address"),
    ("https://172.16.0.1/in", "not a public address"),
    ("https://192.168.1.1/in", "not a public address"),
    ("https://100.64.0.1/in", "not a public address"),  # carrier-grade NAT
    ("https://0.0.0.0/in", "not a public address"),
    ("https://[fe80::1]/in", "link-local"),
    ("https://[::ffff:169.254.169.254]/in", "link-local"),  # IPv4 hidden in IPv6
    ("https://[64:ff9b::a9fe:a9fe]/in", "link-local"),  # ... or behind NAT64
    ("https://224.0.0.1/in", "multicast"),
    ("https://internal.example/in", "is not allowed"),
    ("https://metadata.example/in", "is not allowed"),
    ("https://split.example/in", "is not allowed"),  # one private answer among public ones
    ("https://nowhere.example/in", "is not allowed"),
    ("https://user:pw@hooks.example/in", "credentials"),
    ("https:///in", "https"),
])
def test_anything_else_is_refused_naming_the_webhook_field(url, why):
    g = guard(internal_example=["10.0.0.5"], metadata_example=["169.254.169.254"],
              split_example=[PUBLIC, "192.168.0.10"])
    with pytest.raises(UnsafeWebhook) as err:
        g.check(url)
    assert err.value.field == "webhook" and why in err.value.message


@pytest.mark.parametrize("allow_loopback", [False, True])
@pytest.mark.parametrize("url", ["https://internal.example/in", "https://metadata.example/in",
                                 "https://split.example/in", "https://nowhere.example/in",
                                 "https://v6.example/in", "https://mapped.example/in"])
def test_a_refused_name_is_not_allowed_without_saying_what_it_resolves_to(url, allow_loopback):
    # Otherwise the guard is a DNS oracle: a tenant learns what our functions' resolver answers for any
    # name (internal ones included), and whether it answers at all.
    g = guard(allow_loopback=allow_loopback, internal_example=["10.0.0.5"], metadata_example=["169.254.169.254"],
              split_example=[PUBLIC, "192.168.0.10"], v6_example=["fd00:ec2::254"],
              mapped_example=["::ffff:172.16.0.1"])
    with pytest.raises(UnsafeWebhook) as err:
        g.check(url)
    host = url.split("/")[2]
    assert err.value.message == f"webhook: host {host!r} is not allowed (it must resolve to public addresses only)"
    for hint in ("10.0.0.5", "169.254", "192.168", "fd00", "172.16", "link-local", "private", "loopback",
                 "does not"):
        assert hint not in err.value.message


def test_http_to_a_name_is_refused_before_the_name_is_looked_up():
    dns = FakeDns(hooks_example=[PUBLIC], internal_example=["10.0.0.5"])
    for url in ("http://hooks.example/in", "http://internal.example/in"):
        with pytest.raises(UnsafeWebhook) as err:
            WebhookGuard(resolve=dns).check(url)
        assert "https" in err.value.message
    assert dns.asked == []


def test_loopback_and_http_are_allowed_only_where_the_stack_says_so_and_private_ranges_never():
    g = guard(allow_loopback=True, localhost=["127.0.0.1", "::1"])
    assert g.check("http://127.0.0.1:8080/hook").address == "127.0.0.1"
    assert g.check("http://localhost:8080/hook").address == "127.0.0.1"
    with pytest.raises(UnsafeWebhook):
        g.check("http://hooks.example/in")  # http only to loopback
    with pytest.raises(UnsafeWebhook):
        g.check("https://10.0.0.1/in")
    with pytest.raises(UnsafeWebhook):
        g.check("http://169.254.169.254/latest/meta-data/")


def test_the_connection_goes_to_the_checked_address_with_the_name_for_host_sni_and_certificate():
    dest = guard().check("https://hooks.example:8443/in?x=1")
    conn = pinned_connection(dest, Deadline(5.0))
    assert conn.host == PUBLIC and conn.port == 8443
    assert conn.server_hostname == "hooks.example" and conn.assert_hostname == "hooks.example"
    assert conn.cert_reqs == "CERT_REQUIRED"
    assert host_header(dest) == "hooks.example:8443" and dest.target == "/in?x=1"


def test_a_name_that_turns_private_after_submit_is_refused_at_delivery_without_connecting():
    """DNS rebinding: public when the job was submitted, the metadata service when it is delivered."""
    dns = FakeDns(rebind_example=[PUBLIC])
    g = WebhookGuard(resolve=dns)
    g.check("https://rebind.example/hook")  # at submit
    dns.answers["rebind.example"] = ["169.254.169.254"]
    with pytest.raises(UnsafeWebhook):
        GuardedPost(g)("https://rebind.example/hook", b"{}", {}, 1.0)


def test_a_delivery_to_a_refused_address_is_a_failed_try_kept_on_the_job(jobs_table):
    import random

    from stillhouse.delivery.webhooks import DeliveryFailed, Notice, WebhookDeliverer
    from stillhouse.jobs.model import JobStatus
    from stillhouse.jobs.store import JobStore
    from tests.support.jobs import make_job

    store = JobStore(jobs_table)
    store.create(make_job("j1", webhook="https://metadata.example/latest/meta-data/"))
    store.transition("j1", JobStatus.COMPLETED, actor="webhook", fields={"output": {"text": "hi"}})

    class Queue:
        def retry_after(self, handle, delay):
            pass

    class NoLinks:
        def url(self, job_id, ref):
            return None

    post = GuardedPost(WebhookGuard(resolve=FakeDns(metadata_example=["169.254.169.254"])))
    deliverer = WebhookDeliverer(store, NoLinks(), lambda tenant: ["whsec_" + "A" * 44], Queue(), send=post,
                                 rng=random.Random(0))
    with pytest.raises(DeliveryFailed):
        deliverer.deliver(Notice(job_id="j1"), 1, "rh")
    (entry,) = store.get("j1").deliveries
    assert entry.error.startswith("refused: webhook: host 'metadata.example' is not allowed")
    assert "169.254" not in entry.error


def test_the_loopback_only_resolver_answers_loopback_names_and_refuses_the_rest_without_a_lookup(monkeypatch):
    """What the stacks of tests and benchmarks resolve with: made-up names (fuzzing sends `https://0.com`)
    are refused as any name that does not resolve is, and never become a DNS query."""
    asked = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: asked.append(args) or [])
    g = WebhookGuard(allow_loopback=True, resolve=loopback_only_resolver)
    assert g.check("http://localhost:8080/hook").address == "127.0.0.1"
    assert g.check("http://hooks.localhost:8080/hook").address == "127.0.0.1"
    assert g.check("http://LOCALHOST.:8080/hook").address == "127.0.0.1"
    assert g.check("http://127.0.0.1:8080/hook").address == "127.0.0.1"
    for url in ("https://0.com/in", "https://jhrpmszp.7.example/in", "http://null.test/in", "https://localhost.example/"):
        with pytest.raises(UnsafeWebhook, match="is not allowed"):
            g.check(url)
    assert asked == []


def test_the_stack_resolves_webhook_hosts_with_the_resolver_its_settings_name():
    assert Container(Settings()).webhook_guard.resolve is system_resolver  # deployed, and `make run`
    loopback_only = Container(Settings(webhook_resolver="loopback-only"))
    assert loopback_only.webhook_guard.resolve is loopback_only_resolver
    with pytest.raises(ValueError):
        Settings(webhook_resolver="google")
