"""POST /v1/tenants/{tenant_id}/webhook-secret: rotate a tenant's webhook secret (admin, or the tenant).

The new secret is in this answer only. The previous one keeps signing, beside the new one, until
`previous_valid_until`, so the caller can switch over without dropping a delivery."""
from __future__ import annotations

import time
from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import BaseModel

from stillhouse.auth import Principal
from stillhouse.container import container
from stillhouse.errors import NotFound

router = Router()
TENANT_ID = r"^[A-Za-z0-9_.:-]{1,100}$"


class WebhookSecret(BaseModel):
    tenant_id: str
    webhook_secret: str  # `whsec_...`: shown once
    previous_valid_until: int | None = None  # Unix seconds; the replaced secret also signs until then


@router.post("/v1/tenants/<tenant_id>/webhook-secret")
def rotate_webhook_secret(tenant_id: Annotated[str, Path(pattern=TENANT_ID)]) -> WebhookSecret:
    who: Principal = router.context["principal"]
    if not who.admin and who.tenant_id != tenant_id:
        # Like another tenant's job: not found, rather than confirming that the tenant exists.
        raise NotFound(f"no tenant {tenant_id}", field="tenant_id")
    store = container().webhook_secrets
    had_one = bool(store.signing_secrets(tenant_id))
    if who.tenant_id != tenant_id and not had_one:
        container().tenants.get(tenant_id)  # an admin gets 404 for a tenant that does not exist
    secret = store.rotate(tenant_id)
    until = int(time.time() + store.grace_s) if had_one else None
    # That it was rotated and until when the old one signs; never the secret.
    container().audit.record(who, "webhook_secret.rotate", tenant_id, after={"previous_valid_until": until})
    return WebhookSecret(tenant_id=tenant_id, webhook_secret=secret, previous_valid_until=until)
