"""API keys: stored as SHA-256 digests, each belongs to a tenant.

Keys are 32 random bytes, so an unsalted fast hash is enough: nothing to brute-force, and a lookup
by digest stays one GetItem.
"""
from __future__ import annotations

import hashlib
import secrets
from typing import Any

from pydantic import BaseModel

from stillhouse.errors import Forbidden, Unauthorized

KEY_PREFIX = "sh_"


class Principal(BaseModel):
    tenant_id: str
    admin: bool = False


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing or malformed Authorization header; expected 'Bearer <api key>'", field="Authorization")
    return token.strip()


class ApiKeyStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def add(self, api_key: str, tenant_id: str, *, admin: bool = False) -> None:
        self._table.put_item(Item={"key_hash": hash_key(api_key), "tenant_id": tenant_id, "admin": admin})

    def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        item = self._table.get_item(Key={"key_hash": hash_key(token)}).get("Item")
        if item is None:
            raise Unauthorized("invalid API key", field="Authorization")
        return Principal(tenant_id=item["tenant_id"], admin=bool(item.get("admin", False)))

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
