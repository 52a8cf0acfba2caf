"""API keys: stored as SHA-256 digests, each belongs to a tenant, has a key id, may expire or be revoked.

Keys are 32 random bytes, so an unsalted fast hash is enough: nothing to brute-force, and a lookup
by digest stays one GetItem. A key's id (`key_...`) names it for revocation and in logs; the key
itself is shown once, when it is made.

Lookups are kept in this process's memory for `cache_ttl_s` (a setting, 30 s by default): a revoked key
stops working at once in the process that revoked it and within that time everywhere else; an expired
key stops at its expiry everywhere, since expiry is checked on every use.

Bad keys are cheap to refuse, since anyone can send them: a token that is not shaped like a key we mint
(`new_key`) is refused without a read, and an unknown digest is remembered for `negative_ttl_s`, apart
from the good keys, so a flood of wrong keys costs one GetItem per distinct key per that time.

A key may carry scopes. `keys:manage` lets a tenant's key mint, list and revoke the tenant's keys; a
tenant's first key has it, other keys only when asked for by a key that has it. A tenant holds at most
`max_keys_per_tenant` live keys, and keys expire after `default_lifetime_s` unless the minter says when.
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel

from stillhouse.errors import Conflict, Forbidden, NotFound, Unauthorized
from stillhouse.expiring_cache import ExpiringCache

log = logging.getLogger(__name__)

KEY_PREFIX = "sh_"
KEY_ID_PREFIX = "key_"
KEY_BYTES = 32
#: What `new_key` makes: the prefix, then `token_urlsafe(32)` (43 characters of base64url, no padding).
#: Anything else cannot be one of our keys, so it is refused before any read.
WELL_FORMED_KEY = re.compile(rf"{KEY_PREFIX}[A-Za-z0-9_-]{{43}}")
#: Characters of a key kept beside its digest, so its owner can tell keys apart in a listing (the
#: prefix and 4 random characters: 24 bits of 256, nothing to guess the rest with).
SHOWN_PREFIX_CHARS = len(KEY_PREFIX) + 4
KEYS_MANAGE = "keys:manage"
Scope = Literal["keys:manage"]


class Principal(BaseModel):
    tenant_id: str
    admin: bool = False
    key_id: str | None = None
    scopes: frozenset[str] = frozenset()


class IssuedKey(BaseModel):
    """A key as its owner receives it, once."""

    key_id: str
    api_key: str
    tenant_id: str
    admin: bool = False
    scopes: list[Scope] = []
    expires_at: str | None = None  # ISO 8601, UTC


class KeyInfo(BaseModel):
    """A key as a listing shows it: never the key, nor its digest."""

    key_id: str
    prefix: str | None = None  # the key's first characters (none for keys made before prefixes were kept)
    tenant_id: str
    admin: bool = False
    scopes: list[Scope] = []
    created_at: str | None = None  # ISO 8601, UTC
    last_used_at: str | None = None  # accurate to the key cache's TTL: recorded once per cache period
    expires_at: str | None = None


class KeyNotFound(NotFound):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key {key_id!r}", field="key_id")


class TooManyKeys(Conflict):
    """The tenant already holds `max_keys_per_tenant` live keys: revoke one first (waiting won't help)."""

    code = "too_many_keys"

    def __init__(self, tenant_id: str, limit: int) -> None:
        super().__init__(f"tenant {tenant_id!r} already has {limit} live API keys (max_keys_per_tenant); "
                         "revoke one first", field="max_keys_per_tenant")


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def well_formed(api_key: str) -> bool:
    """Whether `api_key` has the shape of a key `new_key` makes (nothing else can be stored)."""
    return WELL_FORMED_KEY.fullmatch(api_key) is not None


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
    """The ApiKeysTable: `key_hash` → tenant, admin flag, scopes, key id (index ByKeyId), the key's first
    characters, created / last used / expiry / revocation times; the index ByTenant lists a tenant's keys."""

    def __init__(self, table: Any, *, cache_ttl_s: float = 30.0, negative_ttl_s: float = 10.0,
                 max_keys_per_tenant: int | None = None, default_lifetime_s: float | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self._table = table
        self._now = now
        self._cache_ttl_s = cache_ttl_s
        self._max_keys = max_keys_per_tenant
        self._default_lifetime_s = default_lifetime_s
        # Keys remembered per process, the least recently used going first.
        self._cache: ExpiringCache[dict[str, Any]] = ExpiringCache(cache_ttl_s, clock=now)
        # Digests found in no item, remembered apart (and briefly) so random guesses cannot push good keys
        # out, and a key minted meanwhile elsewhere is found soon: it was unknown only if someone guessed it.
        self._unknown: ExpiringCache[bool] = ExpiringCache(negative_ttl_s, clock=now)

    # --- issuing and revoking -----------------------------------------------------------------------
    def add(self, api_key: str, tenant_id: str, *, admin: bool = False, expires_at: float | None = None,
            key_id: str | None = None, scopes: list[Scope] | tuple[Scope, ...] = ()) -> str:
        """Store a key (by its digest); returns its key id."""
        if not well_formed(api_key):
            # It could never authenticate (authenticate refuses its shape unread): say so now.
            raise ValueError(f"an API key must look like one new_key() makes: {KEY_PREFIX} then 43 base64url "
                             "characters")
        key_id = key_id or new_key_id()
        digest = hash_key(api_key)
        item: dict[str, Any] = {"key_hash": digest, "key_id": key_id, "tenant_id": tenant_id, "admin": admin,
                                "scopes": sorted(set(scopes)), "prefix": api_key[:SHOWN_PREFIX_CHARS],
                                "created_at": _iso(self._now())}
        if expires_at is not None:
            item["expires_at"] = int(expires_at)
        self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(key_hash)")
        self._unknown.forget(digest)
        return key_id

    def issue(self, tenant_id: str, *, admin: bool = False, expires_at: float | None = None,
              scopes: list[Scope] | tuple[Scope, ...] = ()) -> IssuedKey:
        """A new random key for `tenant_id`, within its cap of live keys; without `expires_at` it expires
        after the default lifetime, if there is one."""
        if self._max_keys is not None and len(self.live_keys(tenant_id)) >= self._max_keys:
            raise TooManyKeys(tenant_id, self._max_keys)
        if expires_at is None and self._default_lifetime_s:
            expires_at = self._now() + self._default_lifetime_s
        api_key = new_key()
        key_id = self.add(api_key, tenant_id, admin=admin, expires_at=expires_at, scopes=scopes)
        return IssuedKey(key_id=key_id, api_key=api_key, tenant_id=tenant_id, admin=admin,
                         scopes=sorted(set(scopes)), expires_at=_iso(expires_at) if expires_at is not None else None)

    def live_keys(self, tenant_id: str) -> list[KeyInfo]:
        """The tenant's live keys (neither revoked nor expired), oldest first. The index is eventually
        consistent: a key made or revoked a moment ago may be missing or still shown."""
        now = self._now()
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"IndexName": "ByTenant", "KeyConditionExpression": "tenant_id = :t",
                                  "ExpressionAttributeValues": {":t": tenant_id}}
        while True:
            page = self._table.query(**kwargs)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        live = [item for item in items if item.get("revoked_at") is None
                and (item.get("expires_at") is None or now < float(item["expires_at"]))]
        return [_info(item) for item in sorted(live, key=lambda item: (item.get("created_at") or "", item["key_id"]))]

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
        if not well_formed(token):
            raise Unauthorized("invalid API key", field="Authorization")
        item = self._lookup(hash_key(token))
        now = self._now()
        if item is None or item.get("revoked_at") is not None:
            raise Unauthorized("invalid API key", field="Authorization")
        if item.get("expires_at") is not None and now >= float(item["expires_at"]):
            raise Unauthorized("this API key has expired", field="Authorization")
        return Principal(tenant_id=item["tenant_id"], admin=bool(item.get("admin", False)), key_id=item.get("key_id"),
                         scopes=frozenset(item.get("scopes") or ()))

    def _lookup(self, digest: str) -> dict[str, Any] | None:
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        if self._unknown.get(digest):
            return None
        item = self._table.get_item(Key={"key_hash": digest}).get("Item")
        if item is None:
            self._unknown.put(digest, True)
            return None
        self._cache.put(digest, item)
        self._record_use(item)
        return item

    def _record_use(self, item: dict[str, Any]) -> None:
        """Note when a live key was used: at most once per cache period per process (a read from the table
        is the only moment this process learns of a use it has not noted), and not when another process
        noted one within that period. Best effort: a failed write never fails the request."""
        now = int(self._now())
        if item.get("revoked_at") is not None or now - int(item.get("last_used_at") or 0) < self._cache_ttl_s:
            return
        try:
            self._table.update_item(Key={"key_hash": item["key_hash"]}, UpdateExpression="SET last_used_at = :now",
                                    ConditionExpression="attribute_exists(key_hash)",
                                    ExpressionAttributeValues={":now": now})
        except ClientError as error:
            log.warning("could not record the use of key %s: %s", item.get("key_id"), error)

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


def _info(item: dict[str, Any]) -> KeyInfo:
    return KeyInfo(key_id=item["key_id"], prefix=item.get("prefix"), tenant_id=item["tenant_id"],
                   admin=bool(item.get("admin", False)), scopes=sorted(item.get("scopes") or ()),
                   created_at=item.get("created_at"),
                   last_used_at=_iso(float(item["last_used_at"])) if item.get("last_used_at") else None,
                   expires_at=_iso(float(item["expires_at"])) if item.get("expires_at") is not None else None)


def require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden("this operation needs an admin API key", field="Authorization")


def require_key_manager(principal: Principal, scopes: list[Scope] | tuple[Scope, ...] = ()) -> None:
    """Minting, listing and revoking a tenant's keys needs an admin key or one with `keys:manage`; a key
    hands on only scopes it holds itself (which tenant it may act for is the caller's check)."""
    if principal.admin:
        return
    if KEYS_MANAGE not in principal.scopes:
        raise Forbidden(f"managing API keys needs an admin key or one with the {KEYS_MANAGE!r} scope",
                        field="Authorization")
    missing = set(scopes) - principal.scopes
    if missing:
        raise Forbidden(f"a key cannot grant scopes it does not hold: {sorted(missing)}", field="scopes")
