"""Where RunPod posts an attempt's result. RunPod's webhooks are unsigned, so the URL carries a token that
only we can mint: `{key id}.{expiry}.{HMAC of job, attempt, endpoint, council member and expiry}`.

The HMAC key is the callback key, used for nothing else and never given to anyone (callers verify our
webhooks with their own tenant secrets, `delivery/tenant_secrets.py`). It is a keyring held in one secret,
`{"current": "<key id>", "<key id>": "<key>", ...}`: tokens are minted with the current key and verified
with whichever key their id names, so a rotation (add a key, make it current, drop the old one once the
callbacks minted with it have expired) breaks no callback in flight.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode

from stillhouse.telemetry import tracing

#: A RunPod job may wait in its queue for its TTL (24 h by default) and RunPod retries a webhook for a
#: while after: its callback URL must outlive both.
DEFAULT_TOKEN_TTL_S = 26 * 3600
#: A token naming a key this process does not know makes it re-read the keyring, at most this often
#: (a rotation is seen at once; a flood of forged key ids does not become a flood of secret reads).
KEYRING_REFRESH_S = 30.0


class _Job(Protocol):
    id: str
    trace_id: str | None


class _Endpoint(Protocol):
    name: str


@dataclass(frozen=True)
class Keyring:
    current: str  # the id of the key new tokens are minted with
    keys: Mapping[str, str] = field(default_factory=dict)  # key id -> key

    @classmethod
    def single(cls, key: str, key_id: str = "k1") -> Keyring:
        return cls(current=key_id, keys={key_id: key})

    @classmethod
    def parse(cls, value: str) -> Keyring:
        """The callback key secret's value: the JSON keyring, or (a stack made before keyrings) one bare key."""
        try:
            document = json.loads(value)
        except ValueError:
            return cls.single(value, "k0")
        if not isinstance(document, dict) or document.get("current") not in document:
            raise ValueError('the callback key secret must be {"current": "<key id>", "<key id>": "<key>", ...}')
        keys = {k: v for k, v in document.items() if k != "current" and isinstance(v, str) and v}
        return cls(current=document["current"], keys=keys)


def _mac(key: str, job_id: str, attempt: int, endpoint: str, member: str, expires_at: int) -> str:
    message = f"{job_id}:{attempt}:{endpoint}:{member}:{expires_at}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()[:40]


def callback_token(keys: Keyring, job_id: str, attempt: int, endpoint: str, member: str = "", *,
                   expires_at: int | None = None) -> str:
    expiry = int(time.time() + DEFAULT_TOKEN_TTL_S) if expires_at is None else int(expires_at)
    return f"{keys.current}.{expiry}.{_mac(keys.keys[keys.current], job_id, attempt, endpoint, member, expiry)}"


def token_key_id(token: str) -> str:
    return (token or "").split(".", 1)[0]


def verify_callback_token(keys: Keyring, token: str, job_id: str, attempt: int, endpoint: str, member: str = "",
                          *, now: float | None = None) -> bool:
    """Is `token` one we minted for exactly this job, attempt, endpoint and member, and not expired?"""
    parts = (token or "").split(".")
    # ASCII digits only: str.isdigit() also takes '²' or '٣', which int() then refuses (a 500, not a 401).
    if len(parts) != 3 or parts[0] not in keys.keys or not (parts[1].isascii() and parts[1].isdigit()):
        return False
    key_id, expiry, mac = parts[0], int(parts[1]), parts[2]
    if expiry < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(_mac(keys.keys[key_id], job_id, attempt, endpoint, member, expiry), mac)


class CallbackUrls:
    def __init__(self, keyring: Callable[..., str], base_url: Callable[[], str], *,
                 ttl_s: float = DEFAULT_TOKEN_TTL_S, clock: Callable[[], float] = time.time) -> None:
        self._keyring = keyring  # (refresh=False) -> the stored keyring, read on use: a rotation needs no restart
        self._base_url = base_url
        self._ttl_s = ttl_s
        self._clock = clock
        self._refreshed_at = float("-inf")

    def _keys(self, refresh: bool = False) -> Keyring:
        return Keyring.parse(self._keyring(refresh=refresh))

    def for_attempt(self, job: _Job, attempt: int, endpoint: _Endpoint, member: str = "") -> str:
        token = callback_token(self._keys(), job.id, attempt, endpoint.name, member,
                               expires_at=int(self._clock() + self._ttl_s))
        params: dict[str, str | int] = {"attempt": attempt, "endpoint": endpoint.name, "token": token}
        if member:
            params["member"] = member
        traceparent = tracing.hop(job.trace_id)
        if traceparent:  # not signed: it only correlates the callback's log lines with the job's trace
            params[tracing.HEADER] = traceparent
        return f"{self._base_url()}/callbacks/runpod/{job.id}?{urlencode(params)}"

    def verify(self, token: str, job_id: str, attempt: int, endpoint: str, member: str = "") -> bool:
        keys = self._keys()
        if token_key_id(token) not in keys.keys and self._clock() - self._refreshed_at >= KEYRING_REFRESH_S:
            # Minted by a process that has seen a newer keyring (a rotation): read it again, once.
            self._refreshed_at = self._clock()
            keys = self._keys(refresh=True)
        return verify_callback_token(keys, token, job_id, attempt, endpoint, member, now=self._clock())
