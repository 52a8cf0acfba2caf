"""Live configuration: the router's knobs in the ConfigTable, validated by the one settings model, read
through a short max age; a bad edit is refused naming the field and the last good configuration stays."""
from __future__ import annotations

import json

import pytest

from stillhouse.config import Policy, Settings
from stillhouse.live_config import LIVE_FIELDS, InvalidConfig, LiveConfigStore, live_values, overlay
from tests.support.clock import Clock
from tests.support.tables import create_config_table


@pytest.fixture(scope="module")
def _aws(module_dynamodb):
    return create_config_table(module_dynamodb, "live-config")


@pytest.fixture
def table(_aws):
    for item in _aws.scan(ProjectionExpression="id, sk")["Items"]:
        _aws.delete_item(Key=item)
    return _aws


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(table, clock):
    return LiveConfigStore(table, max_age_s=5, now=clock)


BASE = Settings.model_validate({"breaker": {"cooldown_s": 7.0}})


def test_the_live_settings_are_the_router_s_knobs():
    assert set(live_values(BASE)) == set(LIVE_FIELDS) == {"route", "breaker", "max_attempts", "workflow_mode",
                                                          "cache_ttl_s"}


def test_an_overlay_changes_only_what_it_names_and_keeps_the_rest_of_an_object():
    s = overlay(BASE, {"breaker": {"consecutive_failures": 9}, "route": {"policy": "weighted"}, "max_attempts": 2})
    assert (s.breaker.consecutive_failures, s.breaker.cooldown_s) == (9, 7.0)
    assert (s.route.policy, s.max_attempts, s.workflow_mode) == (Policy.WEIGHTED, 2, "on_failure")
    assert s.jobs_table == BASE.jobs_table  # not live: untouched


@pytest.mark.parametrize(("live", "field"), [
    ({"breaker": {"cooldown_s": 0}}, "breaker.cooldown_s"),
    ({"breaker": {"failure_rate": 1.5}}, "breaker.failure_rate"),
    ({"breaker": {"cooldown": 5}}, "breaker.cooldown"),
    ({"route": {"policy": "fastest"}}, "route.policy"),
    ({"workflow_mode": "sometimes"}, "workflow_mode"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"cache_ttl_s": -1}, "cache_ttl_s"),
    ({"jobs_table": "other"}, "jobs_table"),  # exists, but not live: needs a deploy
])
def test_a_bad_value_is_refused_naming_the_field(live, field):
    with pytest.raises(InvalidConfig) as caught:
        overlay(BASE, live)
    assert caught.value.field == field and caught.value.code == "invalid_config"


def test_an_update_merges_into_what_is_stored_and_is_read_back(store, table):
    store.update(BASE, {"breaker": {"cooldown_s": 10}})
    store.update(BASE, {"breaker": {"consecutive_failures": 3}, "workflow_mode": "always"})
    item = table.get_item(Key={"id": "config", "sk": "router"})["Item"]
    assert json.loads(item["value"]) == {"breaker": {"cooldown_s": 10, "consecutive_failures": 3},
                                         "workflow_mode": "always"}
    s = store.effective(BASE)
    assert (s.breaker.cooldown_s, s.breaker.consecutive_failures, s.workflow_mode) == (10, 3, "always")


def test_a_refused_update_writes_nothing(store, table):
    store.update(BASE, {"max_attempts": 3})
    with pytest.raises(InvalidConfig):
        store.update(BASE, {"max_attempts": 2, "breaker": {"cooldown_s": -1}})
    assert json.loads(table.get_item(Key={"id": "config", "sk": "router"})["Item"]["value"]) == {"max_attempts": 3}
    assert store.effective(BASE).max_attempts == 3


def test_an_edit_made_elsewhere_is_seen_after_the_max_age_and_the_same_settings_object_until_then(table, clock):
    reader = LiveConfigStore(table, max_age_s=5, now=clock)
    first = reader.effective(BASE)
    assert first.max_attempts == BASE.max_attempts and reader.effective(BASE) is first
    LiveConfigStore(table, now=clock).update(BASE, {"max_attempts": 9})  # another function's edit
    clock.advance(4)
    assert reader.effective(BASE) is first
    clock.advance(2)
    assert reader.effective(BASE).max_attempts == 9


def test_an_invalid_stored_value_is_ignored_and_the_last_good_configuration_kept(store, table, clock):
    store.update(BASE, {"max_attempts": 4})
    assert store.effective(BASE).max_attempts == 4
    table.put_item(Item={"id": "config", "sk": "router", "value": json.dumps({"max_attempts": "many"})})
    clock.advance(10)
    assert store.effective(BASE).max_attempts == 4


def test_no_config_table_means_the_environment_s_settings(aws_mock, clock):
    import boto3

    missing = boto3.resource("dynamodb", region_name="us-east-1").Table("no-such-table")
    assert LiveConfigStore(missing, now=clock).effective(BASE) is BASE
