"""Per-tenant webhook secrets (`whsec_...`, Standard Webhooks): one tenant's secret verifies only that
tenant's webhooks, and is never the key that mints RunPod callback tokens.

A secret is shown once, when it is created or rotated; it is stored (DynamoDB, encrypted at rest) because
the delivery function must sign with it. Rotation keeps the previous secret valid for a grace period:
deliveries then carry both signatures, space-separated, so a caller can switch over without losing one.

The delivery function keeps a tenant's secrets in memory for `cache_ttl_s` (a minute by default), so a
batch of one tenant's notices costs one read: a rotation reaches its deliveries within that time, far
within the grace period in which the previous secret still signs. "No secret" is never kept: a secret
created now signs the next try.

Item of the webhook secrets table, one per tenant:
`{tenant_id, current, current_created_at, previous?, previous_until?}` (times are Unix seconds).
"""
from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from stillhouse.errors import Conflict
from stillhouse.expiring_cache import ExpiringCache

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks asks for 24 to 64 bytes of key


def new_secret() -> str:
    """`whsec_` + base64 of random bytes: the form Standard Webhooks libraries take as it is."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_` secret stands for (the base64 after the prefix)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


class SecretExists(Conflict):
    """The tenant has a webhook secret already: rotate it instead (a secret is shown only once)."""

    code = "secret_exists"


class WebhookSecretStore:
    def __init__(self, table: Any, *, grace_s: float = 86_400, cache_ttl_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self.grace_s = grace_s
        self._clock = clock
        # tenant -> its item; the delivery function tries a batch's notices in several threads
        self._cache: ExpiringCache[dict[str, Any]] = ExpiringCache(cache_ttl_s, clock=clock)

    def create(self, tenant_id: str) -> str:
        """A first secret for `tenant_id`, returned once. A tenant that has one gets SecretExists."""
        secret = new_secret()
        try:
            self._table.put_item(
                Item={"tenant_id": tenant_id, "current": secret, "current_created_at": int(self._clock())},
                ConditionExpression="attribute_not_exists(tenant_id)")
        except ClientError as err:
            if err.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            raise SecretExists(f"tenant {tenant_id} has a webhook secret; rotate it to get a new one",
                               field="tenant_id") from err
        self._cache.forget(tenant_id)
        return secret

    def rotate(self, tenant_id: str) -> str:
        """A new secret for `tenant_id`, returned once; the one it replaces still signs for `grace_s`."""
        for _ in range(3):  # optimistic: a concurrent rotation wins, and this one rotates after it
            item = self._item(tenant_id)
            if item is None:
                try:
                    return self.create(tenant_id)
                except SecretExists:
                    continue
            secret, now = new_secret(), int(self._clock())
            try:
                self._table.update_item(
                    Key={"tenant_id": tenant_id},
                    UpdateExpression="SET #cur = :new, current_created_at = :now, previous = :old, "
                                     "previous_until = :until",
                    ConditionExpression="#cur = :old",
                    ExpressionAttributeNames={"#cur": "current"},
                    ExpressionAttributeValues={":new": secret, ":old": item["current"], ":now": now,
                                               ":until": int(now + self.grace_s)})
            except ClientError as err:
                if err.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                continue
            self._cache.forget(tenant_id)  # this process signs with the new secret at once
            return secret
        raise Conflict(f"the webhook secret of tenant {tenant_id} is being rotated concurrently; try again",
                       field="tenant_id")

    def signing_secrets(self, tenant_id: str) -> list[str]:
        """The secrets a delivery to `tenant_id` is signed with: the current one, then the previous one
        while its grace period lasts. Empty when the tenant has none."""
        item = self._cached_item(tenant_id)
        if item is None:
            return []
        found = [item["current"]]
        if item.get("previous") and int(item.get("previous_until", 0)) > self._clock():
            found.append(item["previous"])
        return found

    def _cached_item(self, tenant_id: str) -> dict[str, Any] | None:
        cached = self._cache.get(tenant_id)
        if cached is not None:
            return cached
        item = self._item(tenant_id)
        if item is not None:  # "no secret" is not kept: one created meanwhile must sign the next try
            self._cache.put(tenant_id, item)
        return item

    def _item(self, tenant_id: str) -> dict[str, Any] | None:
        return self._table.get_item(Key={"tenant_id": tenant_id}, ConsistentRead=True).get("Item")
