"""The audit trail's rules (stillhouse.audit) and the API's access line: who changed what, never a secret;
each request logged with the caller's key id, which API Gateway's own access log cannot know."""
import json
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from stillhouse_local.template import translate

from stillhouse.audit import REDACTED, AuditLog, changed_fields, redacted
from stillhouse.auth import ApiKeyStore, Principal
from stillhouse.errors import InvalidRequest
from stillhouse.http import public_api
from stillhouse.http.streaming import http_api_event
from tests.support.tables import create_config_table

ADMIN = Principal(tenant_id="ops", admin=True, key_id="key_0a")


@pytest.fixture
def audit(aws_mock):
    return AuditLog(create_config_table(boto3.resource("dynamodb", region_name="us-east-1"), "config"))


def test_what_changed_is_named_field_by_field_and_a_new_object_changes_every_field():
    before = {"weight": 1, "limits": {"max_in_flight": 7, "requests_per_minute": 600}}
    after = {"weight": 1, "limits": {"max_in_flight": 9, "requests_per_minute": 600}}
    assert changed_fields(before, after) == ["limits.max_in_flight"]
    assert changed_fields(None, {"revoked": True}) == ["revoked"]
    assert changed_fields(before, before) == []


def test_a_field_named_like_a_secret_is_redacted_at_any_depth_and_a_secret_ref_is_kept():
    value = {"api_key": "sh_x", "nested": [{"webhook_secret": "whsec_y", "Token": "t"}],
             "secret_ref": "stillhouse/dev/runpod/east"}
    assert redacted(value) == {"api_key": REDACTED, "nested": [{"webhook_secret": REDACTED, "Token": REDACTED}],
                               "secret_ref": "stillhouse/dev/runpod/east"}


def test_an_entry_names_its_actor_and_the_trail_reads_newest_first_in_pages(audit):
    times = iter([1_000.0, 2_000.0, 3_000.0])
    audit._now = lambda: next(times)
    for n in range(3):
        audit.record(ADMIN, "tenant.limits.put", f"t{n}", before={"n": n}, after={"n": n + 1, "api_key": "sh_z"})
    first = audit.page(limit=2)
    assert [e.target for e in first.items] == ["t2", "t1"] and first.cursor
    rest = audit.page(limit=2, cursor=first.cursor)
    assert [e.target for e in rest.items] == ["t0"] and rest.cursor is None
    entry = rest.items[0]
    assert (entry.actor_tenant, entry.actor_key_id, entry.changed) == ("ops", "key_0a", ["api_key", "n"])
    assert entry.after == {"n": 1, "api_key": REDACTED}


def test_a_cursor_the_trail_did_not_give_is_a_400(audit):
    with pytest.raises(InvalidRequest):
        audit.page(cursor="bm9wZQ")  # "nope"


def test_each_request_has_an_access_line_with_the_callers_key_id_and_never_the_key(keys_table, monkeypatch):
    keys = ApiKeyStore(keys_table)
    key_id = keys.add("sh_" + "k" * 43, "acme")
    monkeypatch.setattr(public_api, "container", lambda: SimpleNamespace(api_keys=keys))
    lines = []
    monkeypatch.setattr(public_api.logger, "info", lambda msg, extra=None: lines.append((msg, extra)))

    def call(headers):
        event = http_api_event("GET", "/v1/audit", "", headers, b"", "203.0.113.9")
        answer = public_api.serve(event, None)
        (message, extra), = [line for line in lines if line[0] == "access"]
        lines.clear()
        assert extra["access"]["request_id"] == event["requestContext"]["requestId"]  # joins API Gateway's line
        return answer["statusCode"], extra["access"]

    status, line = call({"authorization": "Bearer sh_" + "k" * 43})
    assert status == 403  # a tenant's key: the trail is for admins
    assert (line["tenant_id"], line["key_id"], line["method"], line["path"]) == ("acme", key_id, "GET", "/v1/audit")
    assert "sh_" not in repr(line)
    status, line = call({})
    assert status == 401 and line["key_id"] is None and line["status"] == 401


def test_api_gateway_writes_a_json_access_line_per_request_to_a_log_group_that_expires():
    cfn = translate(Path(__file__).resolve().parents[2] / "template.yaml").deployed
    (stage,) = [r for r in cfn["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    settings = stage["Properties"]["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fields = json.loads(settings["Format"])  # JSON, one object per request
    assert fields["requestId"] == "$context.requestId"  # what the function's "access" line joins on
    assert {"ip", "method", "path", "status"} <= set(fields)
    group = cfn["Resources"]["ApiAccessLogGroup"]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "AccessLogRetentionDays"}
