"""Tenants and their API keys: POST /v1/tenants (admin), GET /v1/tenants/{id}, PUT /v1/tenants/{id}/limits
(admin), POST and GET /v1/tenants/{id}/keys, DELETE /v1/keys/{key_id}.

A tenant may read itself; its keys with the `keys:manage` scope (its first key has it) may make, list and
revoke its keys, and any key may revoke itself. Anything about another tenant answers 404, like another
tenant's job. An API key and a webhook secret are shown once, in the answer that made them. A revoked key
stops within `api_key_cache_ttl_s` (30 s by default) in every warm function.
"""
from __future__ import annotations

import time
from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import BaseModel, ConfigDict, Field

from stillhouse.auth import KEYS_MANAGE, IssuedKey, KeyInfo, Principal, Scope, require_admin, require_key_manager
from stillhouse.container import container
from stillhouse.tenants.store import LimitsPatch, Tenant, TenantNotFound

router = Router()
TENANT_ID = r"^[A-Za-z0-9_.:-]{1,100}$"
KEY_ID = r"^key_[0-9a-f]{1,64}$"
MAX_KEY_LIFETIME_S = 5 * 365 * 86_400


class NewTenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    limits: LimitsPatch | None = None


class TenantCreated(BaseModel):
    tenant: Tenant
    api_key: str  # shown once
    key_id: str
    webhook_secret: str  # `whsec_...`, shown once


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # none: the default expiry (api_key_default_expiry_s), or never where there is none
    expires_in_s: int | None = Field(default=None, ge=1, le=MAX_KEY_LIFETIME_S)
    # `keys:manage`: the new key may manage keys too (only a key that has the scope may grant it)
    scopes: list[Scope] = Field(default_factory=list, max_length=1)


class KeyList(BaseModel):
    keys: list[KeyInfo]  # the live keys, oldest first; never a key or its digest


class KeyRevoked(BaseModel):
    key_id: str
    revoked: bool = True


def _principal() -> Principal:
    return router.context["principal"]


def _own_or_admin(tenant_id: str) -> Principal:
    who = _principal()
    if not who.admin and who.tenant_id != tenant_id:
        raise TenantNotFound(tenant_id)  # not 403: whether another tenant exists is not told
    return who


@router.post("/v1/tenants", responses={201: {"description": "created; the API key and webhook secret are "
                                                            "shown only here"}})
def create_tenant(body: NewTenant) -> TenantCreated:
    who = _principal()
    require_admin(who)
    tenant = container().tenants.create(body.name, body.limits)
    # The tenant's first key manages its keys: without it the tenant would need an admin for every key.
    key = container().api_keys.issue(tenant.tenant_id, scopes=[KEYS_MANAGE])
    secret = container().webhook_secrets.create(tenant.tenant_id)
    # The key's id, never the key or the webhook secret.
    container().audit.record(who, "tenant.create", tenant.tenant_id, after={"tenant": tenant, "key_id": key.key_id})
    created = TenantCreated(tenant=tenant, api_key=key.api_key, key_id=key.key_id, webhook_secret=secret)
    return Response(status_code=201, content_type="application/json", body=created)


@router.get("/v1/tenants/<tenant_id>")
def get_tenant(tenant_id: Annotated[str, Path(pattern=TENANT_ID)]) -> Tenant:
    _own_or_admin(tenant_id)
    return container().tenants.get(tenant_id)


@router.put("/v1/tenants/<tenant_id>/limits")
def put_limits(tenant_id: Annotated[str, Path(pattern=TENANT_ID)], body: LimitsPatch) -> Tenant:
    who = _principal()
    require_admin(who)
    before = container().tenants.get(tenant_id)
    after = container().tenants.set_limits(tenant_id, body)
    container().audit.record(who, "tenant.limits.put", tenant_id, before=before, after=after)
    return after


@router.post("/v1/tenants/<tenant_id>/keys", responses={201: {"description": "created; the key is shown only "
                                                                             "here"}})
def create_key(tenant_id: Annotated[str, Path(pattern=TENANT_ID)], body: NewKey | None = None) -> IssuedKey:
    body = body or NewKey()
    who = _own_or_admin(tenant_id)
    require_key_manager(who, body.scopes)
    container().tenants.get(tenant_id)
    expires = time.time() + body.expires_in_s if body.expires_in_s else None
    key = container().api_keys.issue(tenant_id, expires_at=expires, scopes=body.scopes)
    container().audit.record(who, "key.create", key.key_id, after=key.model_dump(exclude={"api_key"}))
    return Response(status_code=201, content_type="application/json", body=key)


@router.get("/v1/tenants/<tenant_id>/keys")
def list_keys(tenant_id: Annotated[str, Path(pattern=TENANT_ID)]) -> KeyList:
    require_key_manager(_own_or_admin(tenant_id))
    return KeyList(keys=container().api_keys.live_keys(tenant_id))


@router.delete("/v1/keys/<key_id>")
def revoke_key(key_id: Annotated[str, Path(pattern=KEY_ID)]) -> KeyRevoked:
    who = _principal()
    if key_id != who.key_id:  # any key may retire itself
        require_key_manager(who)
    container().api_keys.revoke(key_id, tenant_id=None if who.admin else who.tenant_id)
    container().audit.record(who, "key.revoke", key_id, after={"revoked": True})
    return KeyRevoked(key_id=key_id)
