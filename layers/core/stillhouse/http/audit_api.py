"""GET /v1/audit (admin): the audit trail of changes made through the API, newest first (stillhouse.audit)."""
from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from stillhouse.audit import AuditPage
from stillhouse.auth import require_admin
from stillhouse.container import container

router = Router()


@router.get("/v1/audit")
def audit_trail(
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> AuditPage:
    """Who changed what (endpoints, the live configuration, tenants, their limits, keys, webhook secrets),
    with each change's before and after; never a secret. Every tenant's changes: admin keys only."""
    require_admin(router.context["principal"])
    return container().audit.page(limit=limit, cursor=cursor)
