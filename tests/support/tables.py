"""DynamoDB tables as template.yaml declares them: key schema, attribute definitions and indexes are read
from its `AWS::DynamoDB::Table` resources (parsed by the embedded runtime's `load_sam`), never copied.

`ddb` is a boto3 DynamoDB resource or client (both take the same `create_table` arguments); the table name
is the test's own, the schema the template's.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"

# Template properties that create_table takes as they are; the rest must be known to be ignorable here,
# so a new table setting in the template is a visible decision rather than silently left out.
CREATE_TABLE_PROPERTIES = ("BillingMode", "AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes",
                           "LocalSecondaryIndexes")
NOT_FOR_CREATE_TABLE = {
    "PointInTimeRecoverySpecification",  # backups: nothing a test observes
    "TimeToLiveSpecification",  # moto never expires items; code under test checks expiry itself
}


@functools.cache
def _template_tables() -> dict[str, dict[str, Any]]:
    from stillhouse_local.template import load_sam  # cfn-lint's decoder: understands !Ref, !Sub, !GetAtt

    resources = load_sam(TEMPLATE)["Resources"]
    # A JSON round trip turns the decoder's marked nodes into plain dicts, lists and strings.
    return json.loads(json.dumps({name: res.get("Properties", {}) for name, res in resources.items()
                                  if res["Type"] == "AWS::DynamoDB::Table"}))


def table_schema(logical_id: str) -> dict[str, Any]:
    """`create_table` arguments (less TableName) for the template's table `logical_id`, e.g. "JobsTable"."""
    tables = _template_tables()
    if logical_id not in tables:
        raise KeyError(f"template.yaml declares no AWS::DynamoDB::Table {logical_id!r}; it has {sorted(tables)}")
    props = tables[logical_id]
    unknown = set(props) - set(CREATE_TABLE_PROPERTIES) - NOT_FOR_CREATE_TABLE
    if unknown:
        raise ValueError(f"{logical_id}: decide how tests create {sorted(unknown)} (tests/support/tables.py)")
    return json.loads(json.dumps({k: props[k] for k in CREATE_TABLE_PROPERTIES if k in props}))  # a fresh copy


def create_table(ddb: Any, logical_id: str, name: str) -> Any:
    return ddb.create_table(TableName=name, **table_schema(logical_id))


def create_jobs_table(ddb: Any, name: str = "jobs") -> Any:
    return create_table(ddb, "JobsTable", name)


def create_keys_table(ddb: Any, name: str = "keys") -> Any:
    return create_table(ddb, "ApiKeysTable", name)


def create_config_table(ddb: Any, name: str) -> Any:
    """The ConfigTable layout (Powertools Parameters' DynamoDBProvider: id + sk)."""
    return create_table(ddb, "ConfigTable", name)


def create_state_table(ddb: Any, name: str) -> Any:
    """The EndpointStateTable layout (one item per endpoint name)."""
    return create_table(ddb, "EndpointStateTable", name)


def create_cache_table(ddb: Any, name: str = "cache") -> Any:
    return create_table(ddb, "ResultCacheTable", name)


def create_tenants_table(ddb: Any, name: str = "tenants") -> Any:
    return create_table(ddb, "TenantsTable", name)


def create_webhook_secrets_table(ddb: Any, name: str = "webhook-secrets") -> Any:
    return create_table(ddb, "WebhookSecretsTable", name)


def create_batches_table(ddb: Any, name: str = "batches") -> Any:
    return create_table(ddb, "BatchesTable", name)
