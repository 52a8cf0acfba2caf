"""`GET/PUT /v1/config`: the router's live configuration (admin only; stillhouse.live_config).

GET answers the live settings in force (`config`) and the stored overlay that sets them (`stored`).
PUT takes a partial object (`{"breaker": {"cooldown_s": 10}}` changes that one value) and answers as
GET; a bad value is a 422 naming the field, and the configuration in force stays as it was."""
from typing import Any

from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from stillhouse.auth import require_admin
from stillhouse.config import get_settings
from stillhouse.container import container, live_config
from stillhouse.live_config import live_values

router = APIGatewayHttpRouter()


@router.get("/v1/config")
def get_config() -> dict[str, Any]:
    require_admin(router.context["principal"])
    store = live_config()
    stored = store.stored(force_fetch=True)
    return {"config": live_values(store.effective(get_settings())), "stored": stored}


@router.put("/v1/config")
def put_config(body: dict[str, Any]) -> dict[str, Any]:
    who = router.context["principal"]
    require_admin(who)
    store = live_config()
    before = store.stored(force_fetch=True)
    settings = store.update(get_settings(), body)
    after = store.stored()
    container().audit.record(who, "config.put", "router", before=before, after=after)
    return {"config": live_values(settings), "stored": after}
