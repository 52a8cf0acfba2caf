"""The `stillhouse` CLI against the embedded stack: what a person (or a script with --json) sees."""
import itertools
import json

import pytest
from stillhouse_local.cli import app
from typer.testing import CliRunner


@pytest.fixture
def cli(stack):
    """Run `stillhouse ARGS...` configured by the environment, as a shell would; returns the result."""
    runner = CliRunner()
    env = {"STILLHOUSE_API_URL": stack.url, "STILLHOUSE_API_KEY": stack.dev_api_key,
           "STILLHOUSE_RUNPOD_URL": stack.standin.base_url, "STILLHOUSE_RUNPOD_KEY": stack.runpod_api_key,
           "COLUMNS": "160"}
    return lambda *args: runner.invoke(app, list(args), env=env)


def test_submit_wait_follows_the_job_until_it_completes(cli):
    result = cli("submit", "--task", "echo", "--input", '{"text": "hello cli"}', "--wait")
    assert result.exit_code == 0, result.output
    assert "COMPLETED" in result.output
    assert "queue time" in result.output
    assert "hello cli" in result.output


def test_submit_passes_a_deadline_and_a_ttl(cli):
    submitted = cli("submit", "--task", "echo", "--input", '{"text": "on time"}', "--deadline-s", "120",
                    "--ttl-s", "60", "--wait", "--json")
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.stdout)
    assert job["status"] == "COMPLETED" and job["deadline_at"] > job["start_by"] > job["created_at"]


def test_submit_json_then_get_and_jobs_find_the_job(cli):
    submitted = cli("submit", "--task", "echo", "--input", '{"text": "for scripts"}', "--json")
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.stdout)["id"]

    waited = cli("submit", "--task", "echo", "--input", '{"text": "second"}', "--wait", "--json")
    assert json.loads(waited.stdout)["status"] == "COMPLETED"

    got = cli("get", job_id, "--json")
    assert got.exit_code == 0
    assert json.loads(got.stdout)["id"] == job_id
    assert job_id in cli("get", job_id).output

    listed = cli("jobs", "--limit", "100", "--json")
    assert job_id in [item["id"] for item in json.loads(listed.stdout)["items"]]
    completed = cli("jobs", "--status", "COMPLETED", "--limit", "100", "--json")
    assert {item["status"] for item in json.loads(completed.stdout)["items"]} == {"COMPLETED"}


def test_input_from_a_file(cli, tmp_path):
    path = tmp_path / "input.json"
    path.write_text('{"text": "from a file"}')
    result = cli("submit", "--task", "echo", "--input", f"@{path}", "--wait", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output"]["text"] == "from a file"


def test_cancel_ends_a_running_job(cli, api):
    job_id = json.loads(cli("submit", "--task", "sleep", "--input", '{"seconds": 30}', "--json").stdout)["id"]
    result = cli("cancel", job_id, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "CANCELLED"
    assert api.wait(job_id)["status"] == "CANCELLED"


def test_bad_input_exits_non_zero_naming_the_field(cli):
    unknown_task = cli("submit", "--task", "paint", "--input", "{}")
    assert unknown_task.exit_code == 1
    assert "field: task" in unknown_task.output

    not_json = cli("submit", "--task", "echo", "--input", "{text")
    assert not_json.exit_code == 2
    assert "field: --input" in not_json.output

    missing = cli("get", "no-such-job")
    assert missing.exit_code == 1
    assert "404" in missing.output


def test_an_unreachable_api_exits_3(cli):
    result = cli("--url", "http://127.0.0.1:9", "jobs")
    assert result.exit_code == 3
    assert "cannot reach the API" in result.output


def test_faults_changes_a_knob_of_the_stand_in(cli, stack):
    try:
        result = cli("faults", "east", "--error-rate", "0.25", "--latency-ms", "5", "--json")
        assert result.exit_code == 0, result.output
        assert stack.standin.get_faults("east")["error_rate"] == 0.25
        assert stack.standin.get_faults("east")["latency_ms"] == 5

        out_of_range = cli("faults", "east", "--error-rate", "2")
        assert out_of_range.exit_code == 1
        assert "field: --error-rate" in out_of_range.output
        assert stack.standin.get_faults("east")["error_rate"] == 0.25

        assert cli("faults", "east", "--reset").exit_code == 0
        assert stack.standin.get_faults("east")["error_rate"] == 0.0
    finally:
        stack.standin.reset_faults("east")


def test_trace_draws_the_jobs_stages(cli, api):
    job_id = api.submit("echo", {"text": "traced"})
    assert api.wait(job_id)["status"] == "COMPLETED"
    stages = json.loads(cli("trace", job_id, "--json").stdout)
    names = [stage["name"].split()[0] for stage in stages]
    assert names[0] == "IN_QUEUE" and names[-1] == "COMPLETED"
    assert all(later["start_s"] >= earlier["start_s"] for earlier, later in itertools.pairwise(stages))
    drawn = cli("trace", job_id)
    assert drawn.exit_code == 0
    assert "█" in drawn.output and "IN_PROGRESS" in drawn.output


def test_endpoints_shows_each_endpoints_breaker(cli):
    rows = json.loads(cli("endpoints", "--json").stdout)
    assert {"local", "east", "west"} <= {row["name"] for row in rows}
    assert all(row["breaker"] in {"CLOSED", "OPEN", "HALF_OPEN"} for row in rows)
    assert "local" in cli("endpoints").output


def test_batch_submit_wait_then_download_round_trips_every_line(cli, tmp_path):
    requests_file = tmp_path / "requests.jsonl"
    requests_file.write_text("".join(json.dumps(
        {"custom_id": f"cli-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "echo-a", "messages": [{"role": "user", "content": f"line {i}"}]}}) + "\n"
        for i in range(6)))
    submitted = cli("batch", "submit", str(requests_file), "--wait", "--poll", "0.5", "--json")
    assert submitted.exit_code == 0, submitted.output
    batch = json.loads(submitted.stdout)
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 6
    out = tmp_path / "out.jsonl"
    downloaded = cli("batch", "download", batch["id"], "-o", str(out))
    assert downloaded.exit_code == 0, downloaded.output
    answers = {json.loads(line)["custom_id"]: json.loads(line)["response"]["body"]["choices"][0]["message"]["content"]
               for line in out.read_text().splitlines()}
    assert answers == {f"cli-{i}": f"echo-a says: line {i}" for i in range(6)}
    assert batch["id"] in cli("batch", "list").output
    assert "none of its requests failed" in cli("batch", "download", batch["id"], "--errors").output
