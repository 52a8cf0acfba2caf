import ipaddress
import os
import sys

# Tests never reach real AWS: fake credentials, one region, no hub downloads, no instance metadata.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")


def _only_loopback(event: str, args: tuple) -> None:
    """No test opens a connection off 127.0.0.1 / ::1, not even by accident: such a connect fails the test
    that made it (an SSRF test uses a fake resolver and never lets a delivery run to such an address)."""
    if event != "socket.connect" or not isinstance(args[1], tuple):
        return  # a Unix socket's address is a path
    try:
        address = ipaddress.ip_address(args[1][0])
    except ValueError:
        return  # not an IP: the connect itself resolves nothing
    address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 is loopback too
    if not address.is_loopback:
        raise ConnectionRefusedError(f"tests connect only to loopback addresses, not {args[1][0]}")


sys.addaudithook(_only_loopback)
