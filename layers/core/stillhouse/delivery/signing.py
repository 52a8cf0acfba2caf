"""HMAC signatures: per-job callback tokens (RunPod webhooks are unsigned) and client webhooks."""
from __future__ import annotations

import hashlib
import hmac
import time


def callback_token(secret: str, job_id: str, attempt: int, endpoint: str, member: str = "") -> str:
    message = f"{job_id}:{attempt}:{endpoint}:{member}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:40]


def verify_callback_token(secret: str, token: str, job_id: str, attempt: int, endpoint: str, member: str = "") -> bool:
    return hmac.compare_digest(callback_token(secret, job_id, attempt, endpoint, member), token or "")


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
