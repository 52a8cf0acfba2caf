"""The endpoint registry: validated endpoint specs in the ConfigTable, read through a short TTL cache."""
from __future__ import annotations

import json

import pytest

from stillhouse.routing.registry import (
    EndpointNotFound,
    EndpointPolicy,
    EndpointRegistry,
    EndpointSpec,
    InvalidEndpointConfig,
    allowed_origins,
)
from tests.support.clock import Clock
from tests.support.tables import create_config_table

CONFIG_TABLE = "test-config"


@pytest.fixture(scope="module")
def _aws(module_dynamodb):
    return create_config_table(module_dynamodb, CONFIG_TABLE)


@pytest.fixture
def config_table(_aws):
    for item in _aws.scan(ProjectionExpression="id, sk")["Items"]:
        _aws.delete_item(Key=item)
    return _aws


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def registry(config_table, clock):
    return EndpointRegistry(config_table, ttl_s=5, now=clock)


def spec(name: str, **kw) -> EndpointSpec:
    return EndpointSpec(name=name, endpoint_id=f"id{name.replace('-', '')}", **kw)


# --- the spec --------------------------------------------------------------------------------


def test_spec_defaults_and_run_url():
    s = EndpointSpec(name="gpu-a", endpoint_id="abc123", base_url="https://api.runpod.ai/v2/")
    assert s.base_url == "https://api.runpod.ai/v2"  # trailing slash dropped
    assert s.url == "https://api.runpod.ai/v2/abc123"
    assert (s.models, s.weight, s.max_in_flight, s.enabled, s.secret_ref) == (["*"], 1.0, 100, True, None)


def test_spec_serves_listed_models_or_any_with_star():
    only = spec("only", models=["llama"])
    star = spec("star", models=["*"])
    assert only.serves("llama") and not only.serves("qwen") and only.serves(None)
    assert star.serves("qwen")


# --- put / get / list / candidates -----------------------------------------------------------


def test_put_then_get_and_list_sorted_by_name(registry):
    registry.put(spec("b"))
    registry.put(spec("a", weight=2))
    assert [s.name for s in registry.list()] == ["a", "b"]
    assert registry.get("a").weight == 2


def test_items_use_the_powertools_parameters_layout(registry, config_table):
    registry.put(spec("gpu-a", models=["llama"]))
    item = config_table.get_item(Key={"id": "endpoints", "sk": "gpu-a"})["Item"]
    assert set(item) == {"id", "sk", "value"}
    assert json.loads(item["value"])["models"] == ["llama"]


def test_put_accepts_a_plain_dict_as_the_api_body(registry):
    registry.put({"name": "gpu-a", "endpoint_id": "abc", "weight": 0.5})
    assert registry.get("gpu-a").weight == 0.5


def test_get_unknown_endpoint_raises_not_found(registry):
    with pytest.raises(EndpointNotFound):
        registry.get("nope")


def test_candidates_are_enabled_endpoints_serving_the_model(registry):
    registry.put(spec("llama-only", models=["llama"]))
    registry.put(spec("anything", models=["*"]))
    registry.put(spec("qwen-only", models=["qwen"]))
    registry.put(spec("llama-off", models=["llama"], enabled=False))
    assert [s.name for s in registry.candidates("llama")] == ["anything", "llama-only"]
    assert [s.name for s in registry.candidates(None)] == ["anything", "llama-only", "qwen-only"]
    assert registry.candidates("mistral") == [registry.get("anything")]


# --- validation: a bad edit is refused and the stored config stays ----------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name", "endpoint_id": "x"}, "name"),
        ({"name": "ok", "endpoint_id": "x", "weight": -1}, "weight"),
        ({"name": "ok", "endpoint_id": "x", "max_in_flight": 0}, "max_in_flight"),
        ({"name": "ok", "endpoint_id": "x", "models": []}, "models"),
        ({"name": "ok", "endpoint_id": "x", "base_url": "ftp://x"}, "base_url"),
        ({"name": "ok", "endpoint_id": "x", "colour": "red"}, "colour"),
    ],
)
def test_invalid_put_names_the_field(registry, body, field):
    with pytest.raises(InvalidEndpointConfig) as err:
        registry.put(body)
    assert err.value.field == field
    assert err.value.code == "invalid_endpoint_config"
    assert registry.list(force_fetch=True) == []


def test_invalid_update_is_refused_and_old_config_kept(registry):
    registry.put(spec("gpu-a", weight=2))
    with pytest.raises(InvalidEndpointConfig) as err:
        registry.update("gpu-a", weight=-3)
    assert err.value.field == "weight"
    assert registry.get("gpu-a", force_fetch=True).weight == 2


def test_update_changes_only_the_named_fields(registry):
    registry.put(spec("gpu-a", models=["llama"], weight=2))
    updated = registry.update("gpu-a", enabled=False, weight=0.5)
    assert (updated.enabled, updated.weight, updated.models) == (False, 0.5, ["llama"])
    assert registry.get("gpu-a").enabled is False  # our own write is visible at once


def test_update_refuses_renames_and_unknown_endpoints(registry):
    registry.put(spec("gpu-a"))
    with pytest.raises(InvalidEndpointConfig) as err:
        registry.update("gpu-a", name="gpu-b")
    assert err.value.field == "name"
    with pytest.raises(EndpointNotFound):
        registry.update("ghost", weight=1)


def test_an_invalid_item_written_around_the_api_is_skipped_not_fatal(registry, config_table):
    registry.put(spec("good"))
    config_table.put_item(Item={"id": "endpoints", "sk": "broken", "value": '{"name": "broken"}'})
    config_table.put_item(Item={"id": "endpoints", "sk": "garbage", "value": "{not json"})
    assert [s.name for s in registry.list(force_fetch=True)] == ["good"]


# --- the TTL cache: edits reach running functions without a restart ---------------------------


def test_an_edit_by_another_instance_becomes_visible_after_the_ttl(config_table, clock):
    reader = EndpointRegistry(config_table, ttl_s=5, now=clock)
    writer = EndpointRegistry(config_table, ttl_s=5, now=clock)
    writer.put(spec("gpu-a", weight=1))
    assert reader.get("gpu-a").weight == 1

    writer.update("gpu-a", weight=3)
    clock.advance(4.9)
    assert reader.get("gpu-a").weight == 1  # still cached: no DynamoDB read per job
    clock.advance(0.2)
    assert reader.get("gpu-a").weight == 3  # past max_age: re-read


def test_force_fetch_bypasses_the_cache(config_table, clock):
    reader = EndpointRegistry(config_table, ttl_s=5, now=clock)
    writer = EndpointRegistry(config_table, ttl_s=5, now=clock)
    writer.put(spec("gpu-a", weight=1))
    reader.list()
    writer.update("gpu-a", enabled=False)
    assert reader.candidates(None) != []
    assert reader.get("gpu-a", force_fetch=True).enabled is False
    assert reader.candidates(None) == []


# --- streaming endpoints ------------------------------------------------------------------------


def test_streaming_defaults_to_false_and_round_trips(registry):
    assert spec("a").streaming is False
    registry.put(spec("s", streaming=True))
    assert registry.get("s", force_fetch=True).streaming is True
    assert registry.update("s", streaming=False).streaming is False


def test_a_streaming_job_goes_only_to_streaming_endpoints(registry):
    registry.put(spec("plain"))
    registry.put(spec("stream-llama", models=["llama"], streaming=True))
    registry.put(spec("stream-off", streaming=True, enabled=False))
    assert [s.name for s in registry.candidates("llama", streaming=True)] == ["stream-llama"]
    assert registry.candidates("qwen", streaming=True) == []  # no streaming endpoint serves it


def test_a_plain_job_prefers_plain_endpoints_and_falls_back_to_streaming_ones(registry):
    # A streaming worker returns every output as a list of chunks: use it for plain jobs only when
    # no plain endpoint serves the model.
    registry.put(spec("plain-llama", models=["llama"]))
    registry.put(spec("stream-any", streaming=True))
    assert [s.name for s in registry.candidates("llama")] == ["plain-llama"]
    assert [s.name for s in registry.candidates("qwen")] == ["stream-any"]
    registry.update("plain-llama", enabled=False)
    assert [s.name for s in registry.candidates("llama")] == ["stream-any"]


# --- where an admin may point an endpoint ---------------------------------------------------------------

@pytest.fixture
def guarded(config_table, clock):
    policy = EndpointPolicy(origins=allowed_origins("https://api.runpod.ai/v2", ["runpod.example.com"]),
                            secret_prefix="stillhouse/prod/runpod/")
    return EndpointRegistry(config_table, ttl_s=5, now=clock, policy=policy)


@pytest.mark.parametrize(("changes", "field"), [
    ({"base_url": "https://attacker.example/v2"}, "base_url"),
    ({"base_url": "http://api.runpod.ai/v2"}, "base_url"),  # our API key never travels in clear text
    ({"base_url": "https://169.254.169.254/latest"}, "base_url"),
    ({"base_url": "https://user@attacker.example/v2"}, "base_url"),
    # urlsplit reads api.runpod.ai here; urllib3, which connects, reads evil.tld
    ({"base_url": "https://evil.tld\\@api.runpod.ai/v2"}, "base_url"),
    ({"base_url": "https://api.runpod.ai@evil.tld/v2"}, "base_url"),
    ({"base_url": "https://api.runpod.ai:8443/v2"}, "base_url"),  # the port is part of the origin
    ({"base_url": "https://api.runpod.ai.evil.tld/v2"}, "base_url"),
    ({"base_url": "https://api.runpod.ai/v2?x="}, "base_url"),  # the endpoint id would land in the query
    ({"secret_ref": "stillhouse/other-stage/runpod/key"}, "secret_ref"),
    ({"secret_ref": "some-team/db-password"}, "secret_ref"),
    # our own secrets that are not per-endpoint RunPod keys: sent as a Bearer token, the keyring would let
    # whoever receives it forge any job's result
    ({"secret_ref": "stillhouse/prod/callback-key"}, "secret_ref"),
    ({"secret_ref": "stillhouse/prod/runpod-api-key"}, "secret_ref"),
    ({"secret_ref": "stillhouse/prod/runpod/"}, "secret_ref"),
    ({"secret_ref": "stillhouse/prod/runpod/../callback-key"}, "secret_ref"),
    ({"secret_ref": "stillhouse/prod/runpod/key\n"}, "secret_ref"),
])
def test_an_endpoint_pointing_outside_the_allowed_hosts_or_secrets_is_refused(guarded, changes, field):
    with pytest.raises(InvalidEndpointConfig) as refused:
        guarded.put({"name": "ep", "endpoint_id": "abc", **changes})
    assert refused.value.field == field
    guarded.put({"name": "ep", "endpoint_id": "abc"})
    with pytest.raises(InvalidEndpointConfig):
        guarded.update("ep", **changes)
    assert guarded.get("ep", force_fetch=True).base_url == "https://api.runpod.ai/v2"


def test_runpods_own_host_an_allowed_host_and_per_endpoint_keys_are_accepted(guarded):
    guarded.put({"name": "a", "endpoint_id": "abc", "secret_ref": "stillhouse/prod/runpod/key-2"})
    guarded.put({"name": "b", "endpoint_id": "abc", "base_url": "https://RunPod.Example.com/v2"})
    guarded.put({"name": "c", "endpoint_id": "abc", "base_url": "https://api.runpod.ai:443/v2"})
    assert {s.name for s in guarded.list(force_fetch=True)} == {"a", "b", "c"}


@pytest.mark.parametrize("url", [
    "https://evil.tld\\@api.runpod.ai/v2",
    "https://evil.tld%5C@api.runpod.ai/v2",
    "https://api.runpod.ai@evil.tld/v2",
    "https://:@api.runpod.ai/v2",
    "https://api.runpod.ai\uff0eevil.tld/v2",  # a fullwidth dot, which IDNA turns into a dot
])
def test_the_policy_itself_refuses_urls_whose_host_the_sending_parser_reads_otherwise(url):
    # The spec's pattern refuses these before the policy does; the policy must not rely on it.
    policy = EndpointPolicy(origins=allowed_origins("https://api.runpod.ai/v2", []),
                            secret_prefix="stillhouse/prod/runpod/")
    with pytest.raises(InvalidEndpointConfig) as refused:
        policy.check(EndpointSpec.model_construct(name="ep", endpoint_id="abc", base_url=url, secret_ref=None))
    assert refused.value.field == "base_url"


@pytest.mark.parametrize("url", ["https://api.runpod.ai/v2", "https://API.RUNPOD.AI:443/v2/",
                                 "http://127.0.0.1:8000/v2", "https://runpod.example.com/v2",
                                 "https://attacker.example/v2"])
def test_the_origin_the_policy_judges_is_the_one_requests_connects_to(url):
    import requests
    from urllib3.util import parse_url

    from stillhouse.routing.registry import _origin

    sent = parse_url(requests.Request("POST", f"{url.rstrip('/')}/abc/run").prepare().url)
    assert _origin(url) == f"{sent.scheme}://{sent.host}:{sent.port or {'http': 80, 'https': 443}[sent.scheme]}"
