"""The audit trail, through the embedded stack's HTTP API: every change to endpoints, the live
configuration, tenants, their limits, keys and webhook secrets is in `GET /v1/audit` (admins only), with
who made it and what changed, and never a secret (docs/security.md)."""
import json
import uuid

import pytest

from stillhouse import aws
from stillhouse.config import get_settings
from stillhouse.container import container, live_config
from tests.support.stack import Api


@pytest.fixture
def operator(stack):
    """An admin key of its own, so its entries can be told from everyone else's: (client, key id)."""
    key = stack.create_api_key(f"ops-{uuid.uuid4().hex[:8]}", admin=True)
    ops = Api(stack.url, key)
    ops.key = key
    return ops, container().api_keys.authenticate(f"Bearer {key}")


@pytest.fixture
def fresh_config(stack):
    """No stored live configuration before or after the test."""
    table = aws.table(get_settings().config_table)

    def forget():
        table.delete_item(Key={"id": "config", "sk": "router"})
        live_config().stored(force_fetch=True)

    forget()
    yield
    forget()


def trail(api, **query):
    response = api.get("/v1/audit", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def entries_by(api, principal):
    return [e for e in trail(api, limit=100)["items"] if e["actor_key_id"] == principal.key_id]


def test_an_admin_change_is_in_the_trail_with_who_made_it_and_before_and_after(operator):
    ops, me = operator
    made = ops.post("/v1/tenants", {"name": "audited", "limits": {"max_in_flight": 7}}).json()
    tenant_id = made["tenant"]["tenant_id"]
    assert ops.put(f"/v1/tenants/{tenant_id}/limits", {"max_in_flight": 9}).status_code == 200

    newest, created = entries_by(ops, me)[:2]
    assert newest["action"] == "tenant.limits.put" and newest["target"] == tenant_id
    assert (newest["actor_tenant"], newest["actor_key_id"]) == (me.tenant_id, me.key_id)
    assert newest["before"]["limits"]["max_in_flight"] == 7 and newest["after"]["limits"]["max_in_flight"] == 9
    assert newest["changed"] == ["limits.max_in_flight"]
    assert created["action"] == "tenant.create" and created["after"]["key_id"] == made["key_id"]
    assert created["at"] <= newest["at"]


def test_endpoint_config_key_and_secret_changes_are_each_recorded(operator, two_endpoints, fresh_config):
    ops, me = operator
    assert ops.put("/v1/endpoints/west", {"weight": 0.5}).status_code == 200
    assert ops.put("/v1/config", {"breaker": {"cooldown_s": 11}}).status_code == 200
    made = ops.post("/v1/tenants", {"name": "keys"}).json()
    tenant_id = made["tenant"]["tenant_id"]
    key = ops.post(f"/v1/tenants/{tenant_id}/keys", {}).json()
    assert ops.delete(f"/v1/keys/{key['key_id']}").status_code == 200
    assert ops.post(f"/v1/tenants/{tenant_id}/webhook-secret").status_code == 200

    mine = {(e["action"], e["target"]): e for e in entries_by(ops, me)}
    endpoint = mine["endpoint.put", "west"]
    assert endpoint["after"]["weight"] == 0.5 and endpoint["before"]["weight"] != 0.5
    assert endpoint["changed"] == ["weight"]
    config = mine["config.put", "router"]
    assert config["after"]["breaker"]["cooldown_s"] == 11 and "breaker.cooldown_s" in config["changed"]
    assert mine["key.create", key["key_id"]]["after"]["tenant_id"] == tenant_id
    assert mine["key.revoke", key["key_id"]]["changed"] == ["revoked"]
    assert ("webhook_secret.rotate", tenant_id) in mine


def test_no_secret_is_ever_in_the_trail(operator):
    ops, me = operator
    made = ops.post("/v1/tenants", {"name": "secretive"}).json()
    tenant_id = made["tenant"]["tenant_id"]
    key = ops.post(f"/v1/tenants/{tenant_id}/keys", {}).json()
    rotated = ops.post(f"/v1/tenants/{tenant_id}/webhook-secret").json()

    text = json.dumps(trail(ops, limit=100))
    for secret in (made["api_key"], made["webhook_secret"], key["api_key"], rotated["webhook_secret"],
                   ops.key):
        assert secret not in text
    assert "sh_" not in text and "whsec_" not in text


def test_only_admins_read_the_trail(api, other_tenant, stack):
    assert other_tenant.get("/v1/audit").status_code == 403
    assert Api(stack.url, None).get("/v1/audit").status_code == 401
    assert api.get("/v1/audit").status_code == 200


def test_the_trail_is_newest_first_and_paged(operator):
    ops, _ = operator
    for n in range(3):
        ops.post("/v1/tenants", {"name": f"paged-{n}"})
    first = trail(ops, limit=2)
    assert len(first["items"]) == 2 and first["cursor"]
    second = trail(ops, limit=2, cursor=first["cursor"])
    ids = [e["id"] for e in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert ops.get("/v1/audit", params={"cursor": "not-a-cursor"}).status_code == 400
