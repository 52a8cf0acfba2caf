"""The audit trail: every change an API key makes to the fleet, the configuration, tenants and keys, with
who made it (tenant and key id) and what changed (before and after, never a secret).

Each change is one structured log line (`"message": "admin change"`, in the API function's log group) and
one item in the ConfigTable under a partition of its own (`id="audit"`, beside `endpoints` and `config`),
sorted by `sk` = `{time}#{random}`, so `GET /v1/audit` is one Query, newest first, paged by that key. The
line is written first: an item write that fails still leaves the line. Changes are rare (operators'
work), so one partition holds them well; they are kept until deleted.

Secrets never reach the trail: callers pass views without them (a new key's id, not the key; a rotation's
grace period, not the secret), and any field named like a secret is replaced by "[redacted]" anyway.
"""
from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from stillhouse.auth import Principal
from stillhouse.errors import InvalidRequest

logger = Logger(service="stillhouse", child=True)

PARTITION = "audit"
REDACTED = "[redacted]"
#: Field names whose values are secrets wherever they appear (an endpoint's `secret_ref` is a secret's
#: name, which an auditor needs; it is not among them).
SECRET_FIELDS = frozenset({"api_key", "webhook_secret", "secret", "password", "token", "authorization"})


class AuditEntry(BaseModel):
    id: str  # `{at}#{random}`: the order of the trail
    at: str  # ISO 8601, UTC
    action: str  # e.g. "endpoint.put", "config.put", "tenant.create", "tenant.limits.put", "key.create"
    target: str  # what was changed: an endpoint's name, a tenant id, a key id, "router"
    actor_tenant: str  # who: the tenant of the key that made the change ...
    actor_key_id: str | None = None  # ... and that key's id
    before: Any = None  # None: it did not exist (or is not kept, e.g. a key before it was made)
    after: Any = None
    changed: list[str]  # the fields that differ, as dotted paths ("limits.max_in_flight")


class AuditPage(BaseModel):
    items: list[AuditEntry]
    cursor: str | None = None


def redacted(value: Any) -> Any:
    """`value` with every field named like a secret replaced, at any depth."""
    if isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in SECRET_FIELDS else redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def changed_fields(before: Any, after: Any, prefix: str = "") -> list[str]:
    """The dotted paths at which `after` differs from `before` (objects compared field by field; an object
    that did not exist before, or no longer does, is an empty one)."""
    if isinstance(before, dict) or isinstance(after, dict):
        before = {} if before is None else before
        after = {} if after is None else after
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            found += changed_fields(before.get(key), after.get(key), f"{prefix}{key}.")
        return found
    return [] if before == after else [prefix.rstrip(".") or "*"]


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """The trail in the ConfigTable (Powertools Parameters' layout: `id` HASH, `sk` RANGE, `value` JSON)."""

    def __init__(self, table: Any, *, now: Callable[[], float] = time.time) -> None:
        self._table = table
        self._now = now

    def record(self, who: Principal, action: str, target: str, *, before: Any = None, after: Any = None) -> AuditEntry:
        at = _iso(self._now())
        before, after = redacted(_plain(before)), redacted(_plain(after))
        entry = AuditEntry(id=f"{at}#{secrets.token_hex(4)}", at=at, action=action, target=target,
                           actor_tenant=who.tenant_id, actor_key_id=who.key_id, before=before, after=after,
                           changed=changed_fields(before, after))
        logger.info("admin change", extra={"audit": entry.model_dump(mode="json")})
        self._table.put_item(Item={"id": PARTITION, "sk": entry.id, "value": entry.model_dump_json()})
        return entry

    def page(self, *, limit: int = 50, cursor: str | None = None) -> AuditPage:
        """The trail, newest first, `limit` entries at a time; `cursor` continues where a page stopped."""
        kwargs: dict[str, Any] = {"KeyConditionExpression": "id = :p", "ExpressionAttributeValues": {":p": PARTITION},
                                  "ScanIndexForward": False, "Limit": limit, "ConsistentRead": True}
        if cursor:
            kwargs["ExclusiveStartKey"] = {"id": PARTITION, "sk": _decode_cursor(cursor)}
        page = self._table.query(**kwargs)
        items = [AuditEntry.model_validate_json(item["value"]) for item in page.get("Items", [])]
        last = page.get("LastEvaluatedKey")
        return AuditPage(items=items, cursor=_encode_cursor(last["sk"]) if last else None)


def _plain(value: Any) -> Any:
    """Models as the JSON they serialise to, so the trail holds what the API answered."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=str)) if value is not None else None


def _encode_cursor(sk: str) -> str:
    return base64.urlsafe_b64encode(sk.encode()).decode()


def _decode_cursor(cursor: str) -> str:
    try:
        sk = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        sk = ""
    if "#" not in sk:
        raise InvalidRequest("cursor is not one this listing gave", field="cursor")
    return sk
