"""HMAC signatures of the webhooks we push to callers."""
from __future__ import annotations

import hashlib
import hmac
import time


def webhook_signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """Stripe-style header value: `t=<unix>,v1=<hex hmac of "t.body">` (replay window is the caller's)."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify_webhook_signature(secret: str, body: bytes, header: str, tolerance_s: int = 300) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance_s:
        return False
    return hmac.compare_digest(webhook_signature(secret, body, ts), header)
