"""The tenants table: one item per tenant with its name, its own limits (only the ones it overrides) and
the counters its quotas keep (stillhouse.tenants.quotas)."""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from stillhouse.config import TenantLimits
from stillhouse.errors import Conflict, NotFound
from stillhouse.expiring_cache import ExpiringCache


class LimitsPatch(BaseModel):
    """Some of a tenant's limits (PUT /v1/tenants/{id}/limits, or POST /v1/tenants' `limits`)."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    stream_polls_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    max_in_flight: int | None = Field(default=None, ge=1, le=5_000)
    max_council_models: int | None = Field(default=None, ge=2, le=8)
    max_batch_lines: int | None = Field(default=None, ge=1, le=10_000_000)
    allow_high_priority: StrictBool | None = None  # strict: 0 or "no" is 422, not taken as false
    deadline_s: int | None = Field(default=None, ge=5, le=86_400)  # the default deadline of the tenant's jobs

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Tenant(BaseModel):
    tenant_id: str
    name: str | None = None
    created_at: str | None = None
    limits: TenantLimits  # in force: the tenant's own values over the defaults


class TenantNotFound(NotFound):
    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"no tenant {tenant_id!r}", field="tenant_id")


def new_tenant_id() -> str:
    return "t_" + secrets.token_hex(8)


class TenantStore:
    """Tenants and their limits; the limits are kept in memory for `cache_ttl_s` (a change is in force
    everywhere within that time, at once in the process that made it)."""

    def __init__(self, table: Any, defaults: TenantLimits, *, cache_ttl_s: float = 30.0,
                 now: Callable[[], float] = time.time) -> None:
        self.table = table
        self._defaults = defaults
        self._cache: ExpiringCache[TenantLimits] = ExpiringCache(cache_ttl_s, clock=now)

    def create(self, name: str, limits: LimitsPatch | None = None, *, tenant_id: str | None = None) -> Tenant:
        """A new tenant (or, with `tenant_id`, that tenant, if it has no record yet)."""
        item = {"tenant_id": tenant_id or new_tenant_id(), "name": name,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "limits": (limits or LimitsPatch()).given()}
        # An item without a record may exist (earlier versions kept the rate bucket there): keep what it holds.
        try:
            self.table.update_item(
                Key={"tenant_id": item["tenant_id"]},
                UpdateExpression="SET #n = :n, created_at = :c, #l = :l",
                ConditionExpression="attribute_not_exists(created_at)",
                ExpressionAttributeNames={"#n": "name", "#l": "limits"},
                ExpressionAttributeValues={":n": item["name"], ":c": item["created_at"], ":l": item["limits"]},
            )
        except self.table.meta.client.exceptions.ConditionalCheckFailedException:
            raise Conflict(f"tenant {item['tenant_id']!r} exists already", field="tenant_id") from None
        self._cache.forget(item["tenant_id"])
        return self._tenant(item)

    def get(self, tenant_id: str) -> Tenant:
        item = self.table.get_item(Key={"tenant_id": tenant_id}, ConsistentRead=True).get("Item")
        if item is None or "created_at" not in item:
            raise TenantNotFound(tenant_id)
        return self._tenant(item)

    def set_limits(self, tenant_id: str, patch: LimitsPatch) -> Tenant:
        """Change the limits given in `patch`; the others stay as they are."""
        given = patch.given()
        if given:
            names = {f"#f{i}": field for i, field in enumerate(given)}
            values = {f":v{i}": value for i, value in enumerate(given.values())}
            try:
                self.table.update_item(
                    Key={"tenant_id": tenant_id},
                    UpdateExpression="SET " + ", ".join(f"#l.{n} = {v}" for n, v in zip(names, values)),
                    ConditionExpression="attribute_exists(created_at)",
                    ExpressionAttributeNames={**names, "#l": "limits"}, ExpressionAttributeValues=values)
            except self.table.meta.client.exceptions.ConditionalCheckFailedException:
                raise TenantNotFound(tenant_id) from None
        self._cache.forget(tenant_id)
        return self.get(tenant_id)

    def limits(self, tenant_id: str) -> TenantLimits:
        """The limits in force for `tenant_id` (the defaults for a tenant without a record)."""
        cached = self._cache.get(tenant_id)
        if cached is not None:
            return cached
        item = self.table.get_item(Key={"tenant_id": tenant_id}, ProjectionExpression="#l",
                                   ExpressionAttributeNames={"#l": "limits"}).get("Item") or {}
        limits = self._merge(item.get("limits"))
        self._cache.put(tenant_id, limits)
        return limits

    def _merge(self, own: dict[str, Any] | None) -> TenantLimits:
        return TenantLimits.model_validate({**self._defaults.model_dump(), **(own or {})})

    def _tenant(self, item: dict[str, Any]) -> Tenant:
        return Tenant(tenant_id=item["tenant_id"], name=item.get("name"), created_at=item.get("created_at"),
                      limits=self._merge(item.get("limits")))
