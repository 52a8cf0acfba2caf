"""API keys: stored as SHA-256 digests, each belongs to a tenant, has a key id, may expire or be revoked.

Keys are 32 random bytes, so an unsalted fast hash is enough: nothing to brute-force, and a lookup
by digest stays one GetItem. A key's id (`key_...`) names it for revocation and in logs; the key
itself is shown once, when it is made.

Lookups are kept in this process's memory for `cache_ttl_s` (a setting, 30 s by default): a revoked key
stops working at once in the process that revoked it and within that time everywhere else; an expired
key stops at its expiry everywhere, since expiry is checked on every use.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from stillhouse.errors import Forbidden, NotFound, Unauthorized
from stillhouse.expiring_cache import ExpiringCache

KEY_PREFIX = "sh_"
KEY_ID_PREFIX = "key_"


class Principal(BaseModel):
    tenant_id: str
    admin: bool = False
    key_id: str | None = None


class IssuedKey(BaseModel):
    """A key as its owner receives it, once."""

    key_id: str
    api_key: str
    tenant_id: str
    admin: bool = False
    expires_at: str | None = None  # ISO 8601, UTC


class KeyNotFound(NotFound):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key {key_id!r}", field="key_id")


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return KEY_ID_PREFIX + secrets.token_hex(8)


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing or malformed Authorization header; expected 'Bearer <api key>'", field="Authorization")
    return token.strip()


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ApiKeyStore:
    """The ApiKeysTable: `key_hash` → tenant, admin flag, key id (index ByKeyId), expiry, revocation."""

    def __init__(self, table: Any, *, cache_ttl_s: float = 30.0, now: Callable[[], float] = time.time) -> None:
        self._table = table
        self._now = now
        # Keys remembered per process, the least recently used going first; unknown keys are never
        # remembered, so random guesses cannot push good keys out.
        self._cache: ExpiringCache[dict[str, Any]] = ExpiringCache(cache_ttl_s, clock=now)

    # --- issuing and revoking -----------------------------------------------------------------------
    def add(self, api_key: str, tenant_id: str, *, admin: bool = False, expires_at: float | None = None,
            key_id: str | None = None) -> str:
        """Store a key (by its digest); returns its key id."""
        key_id = key_id or new_key_id()
        item: dict[str, Any] = {"key_hash": hash_key(api_key), "key_id": key_id, "tenant_id": tenant_id,
                                "admin": admin, "created_at": _iso(self._now())}
        if expires_at is not None:
            item["expires_at"] = int(expires_at)
        self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(key_hash)")
        return key_id

    def issue(self, tenant_id: str, *, admin: bool = False, expires_at: float | None = None) -> IssuedKey:
        """A new random key for `tenant_id`."""
        api_key = new_key()
        key_id = self.add(api_key, tenant_id, admin=admin, expires_at=expires_at)
        return IssuedKey(key_id=key_id, api_key=api_key, tenant_id=tenant_id, admin=admin,
                         expires_at=_iso(expires_at) if expires_at is not None else None)

    def revoke(self, key_id: str, *, tenant_id: str | None = None) -> None:
        """Revoke a key by its id (only a key of `tenant_id`, when given: another tenant's is not found)."""
        found = self._table.query(IndexName="ByKeyId", KeyConditionExpression="key_id = :k",
                                  ExpressionAttributeValues={":k": key_id}).get("Items", [])
        for entry in found:
            try:
                condition = "attribute_exists(key_hash)" + (" AND tenant_id = :t" if tenant_id else "")
                values: dict[str, Any] = {":now": int(self._now())}
                if tenant_id:
                    values[":t"] = tenant_id
                self._table.update_item(Key={"key_hash": entry["key_hash"]}, UpdateExpression="SET revoked_at = :now",
                                        ConditionExpression=condition, ExpressionAttributeValues=values)
            except self._table.meta.client.exceptions.ConditionalCheckFailedException:
                raise KeyNotFound(key_id) from None
            self._cache.forget(entry["key_hash"])
            return
        raise KeyNotFound(key_id)

    # --- checking -----------------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        item = self._lookup(hash_key(token))
        now = self._now()
        if item is None or item.get("revoked_at") is not None:
            raise Unauthorized("invalid API key", field="Authorization")
        if item.get("expires_at") is not None and now >= float(item["expires_at"]):
            raise Unauthorized("this API key has expired", field="Authorization")
        return Principal(tenant_id=item["tenant_id"], admin=bool(item.get("admin", False)), key_id=item.get("key_id"))

    def _lookup(self, digest: str) -> dict[str, Any] | None:
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        item = self._table.get_item(Key={"key_hash": digest}).get("Item")
        if item is None:
            return None
        self._cache.put(digest, item)
        return item

    def tenants(self) -> set[str]:
        """Every tenant that has a key (a scan: the table holds one small item per key)."""
        tenants: set[str] = set()
        kwargs: dict[str, Any] = {"ProjectionExpression": "tenant_id"}
        while True:
            page = self._table.scan(**kwargs)
            tenants |= {item["tenant_id"] for item in page.get("Items", [])}
            if "LastEvaluatedKey" not in page:
                return tenants
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden("this operation needs an admin API key", field="Authorization")
