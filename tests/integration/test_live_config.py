"""Live configuration through the API and the CLI: `GET/PUT /v1/config` (admin), a partial PUT that the
functions pick up without a restart, a bad value refused with 422 naming the field and nothing changed."""
import json

import pytest
from stillhouse_local.cli_config import app
from typer.testing import CliRunner

from stillhouse import aws
from stillhouse.config import get_settings
from stillhouse.container import container, live_config


@pytest.fixture
def fresh_config(stack):
    """No stored overlay before or after the test: the stack's environment settings are in force."""
    table = aws.table(get_settings().config_table)

    def forget():
        table.delete_item(Key={"id": "config", "sk": "router"})
        live_config().stored(force_fetch=True)  # this process sees it now, not after the max age

    forget()
    yield
    forget()


def test_get_config_shows_the_settings_in_force_and_needs_an_admin_key(api, other_tenant, fresh_config):
    body = api.get("/v1/config").json()
    assert body["stored"] == {}
    assert body["config"]["breaker"]["cooldown_s"] == 1.5  # the stack's environment (conftest)
    assert body["config"]["route"]["policy"] == "adaptive" and body["config"]["workflow_mode"] == "on_failure"
    assert other_tenant.get("/v1/config").status_code == 403
    assert other_tenant.put("/v1/config", {"max_attempts": 2}).status_code == 403


def test_a_partial_put_changes_those_values_and_the_functions_use_them(api, fresh_config):
    answer = api.put("/v1/config", {"breaker": {"consecutive_failures": 7}, "route": {"policy": "weighted"}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["stored"] == {"breaker": {"consecutive_failures": 7}, "route": {"policy": "weighted"}}
    assert body["config"]["breaker"]["consecutive_failures"] == 7
    assert body["config"]["breaker"]["cooldown_s"] == 1.5  # the rest of the object stays
    settings = container().settings
    assert (settings.breaker.consecutive_failures, settings.route.policy) == (7, "weighted")
    assert container().router.settings.policy == "weighted"
    # Jobs still run under the new configuration.
    job = api.wait(api.submit("echo", {"text": "after a config change"}), timeout=30)
    assert job["status"] == "COMPLETED", job


@pytest.mark.parametrize(("body", "field"), [
    ({"breaker": {"cooldown_s": -1}}, "breaker.cooldown_s"),
    ({"route": {"policy": "fastest"}}, "route.policy"),
    ({"workflow_mode": "sometimes"}, "workflow_mode"),
    ({"jobs_table": "x"}, "jobs_table"),
])
def test_a_bad_value_is_422_naming_the_field_and_the_last_good_config_stays(api, fresh_config, body, field):
    assert api.put("/v1/config", {"max_attempts": 4}).status_code == 200
    answer = api.put("/v1/config", {**body, "max_attempts": 2})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field and answer.json()["error"]["code"] == "invalid_config"
    assert api.get("/v1/config").json()["stored"] == {"max_attempts": 4}
    assert container().settings.max_attempts == 4


def test_the_cli_gets_and_sets_the_configuration(stack, fresh_config):
    runner = CliRunner()
    env = {"STILLHOUSE_API_URL": stack.url, "STILLHOUSE_API_KEY": stack.dev_api_key}
    done = runner.invoke(app, ["set", "breaker.cooldown_s=2.5", "workflow_mode=on_failure"], env=env)
    assert done.exit_code == 0, done.output
    shown = runner.invoke(app, ["get", "--json"], env=env)
    assert json.loads(shown.output)["config"]["breaker"]["cooldown_s"] == 2.5
    refused = runner.invoke(app, ["set", "breaker.failure_rate=2"], env=env)
    assert refused.exit_code == 1 and "breaker.failure_rate" in refused.output, refused.output
