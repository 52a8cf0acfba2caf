"""Signatures of the webhooks we push to callers, as the Standard Webhooks spec defines them.

Headers: `webhook-id` (the same on every try of one notice, so a caller can drop duplicates),
`webhook-timestamp` (Unix seconds) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`, one entry per valid secret, space-separated (two while a rotation's grace
period lasts). Any Standard Webhooks library verifies them with the tenant's `whsec_` secret.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from stillhouse.delivery.tenant_secrets import secret_key

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature entry, `v1,<base64>`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()


def webhook_headers(secrets: Sequence[str], msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, signed with every secret in `secrets`."""
    if not secrets:
        raise ValueError("a webhook needs at least one secret to be signed with")
    ts = int(time.time()) if timestamp is None else timestamp
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: " ".join(sign(s, msg_id, ts, body) for s in secrets)}


def verify_webhook(secret: str, body: bytes, headers: Mapping[str, str], tolerance_s: int = 300) -> bool:
    """What a caller does on receipt (the docs' recipe): fresh timestamp, and one `v1` entry that matches."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, ts = lowered[ID_HEADER], int(lowered[TIMESTAMP_HEADER])
        entries = lowered[SIGNATURE_HEADER].split(" ")
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance_s:
        return False
    expected = sign(secret, msg_id, ts, body)
    return any(hmac.compare_digest(expected, entry) for entry in entries if entry.startswith("v1,"))
