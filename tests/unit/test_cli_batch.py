"""`stillhouse batch` against a fake of OpenAI's Files and Batch routes on 127.0.0.1 (tests/support/batch_api.py):
the upload and the batch it makes, following a batch to its end (and the exit code), the lists, cancelling,
downloading results, and a validation that failed shown with the input's line numbers."""
import json

import pytest
from stillhouse_local.cli import app
from typer.testing import CliRunner

from tests.support.batch_api import FakeBatchApi

CHAT = {"model": "echo-a", "messages": [{"role": "user", "content": "hi"}]}
LINES = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": CHAT} for i in range(3)]


@pytest.fixture
def fake():
    api = FakeBatchApi()
    yield api
    api.close()


@pytest.fixture
def cli(fake):
    """Run `stillhouse ARGS...` against the fake, configured by the environment as a shell would."""
    runner = CliRunner()
    env = {"STILLHOUSE_API_URL": fake.url, "STILLHOUSE_API_KEY": fake.key, "COLUMNS": "200"}
    return lambda *args: runner.invoke(app, list(args), env=env)


@pytest.fixture
def requests_file(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    return path


def counts(total, completed, failed):
    return {"request_counts": {"total": total, "completed": completed, "failed": failed}}


def test_submit_uploads_the_file_for_batch_and_prints_the_batch_id(cli, fake, requests_file):
    result = cli("batch", "submit", str(requests_file), "--metadata", "team=ml", "--metadata", "run=7=a")
    assert result.exit_code == 0, result.output
    (upload,) = fake.uploads
    assert upload["content_type"].startswith("multipart/form-data")
    assert (upload["purpose"], upload["filename"]) == ("batch", "requests.jsonl")
    assert upload["content"] == requests_file.read_bytes()
    (created,) = fake.created
    assert created == {"input_file_id": fake.files[created["input_file_id"]]["id"],
                       "endpoint": "/v1/chat/completions", "completion_window": "24h",
                       "metadata": {"team": "ml", "run": "7=a"}}
    (batch_id,) = fake.batches
    assert result.stdout.split() == [batch_id, "validating"]
    assert {auth for *_, auth in fake.requests} == {f"Bearer {fake.key}"}


def test_the_endpoint_comes_from_the_first_line_unless_given(cli, fake, tmp_path):
    path = tmp_path / "embed.jsonl"
    path.write_text("\n" + json.dumps({"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
                                       "body": {"model": "m", "input": "x"}}) + "\n")
    assert cli("batch", "submit", str(path), "--json").exit_code == 0
    assert cli("batch", "submit", str(path), "--endpoint", "/v1/completions", "--window", "24h").exit_code == 0
    assert [c["endpoint"] for c in fake.created] == ["/v1/embeddings", "/v1/completions"]


def test_submit_wait_draws_progress_and_ends_0_when_the_batch_completed(cli, fake, requests_file):
    output_id = fake.add_file(b'{"custom_id": "r0"}\n')
    error_id = fake.add_file(b'{"custom_id": "r2"}\n')
    fake.plan = [{"status": "in_progress", **counts(3, 0, 0)}, {**counts(3, 1, 0)}, {**counts(3, 2, 1)},
                 {"status": "finalizing"},
                 {"status": "completed", "output_file_id": output_id, "error_file_id": error_id}]
    result = cli("batch", "submit", str(requests_file), "--wait", "--poll", "0")
    assert result.exit_code == 0, result.output
    assert "3/3" in result.stdout and "1 failed" in result.stdout  # the bar: completed + failed of total
    assert "3 total, 2 completed, 1 failed" in result.stdout
    assert output_id in result.stdout and error_id in result.stdout
    (batch_id,) = fake.batches
    assert batch_id in result.stderr  # which batch is being followed, before the bar


@pytest.mark.parametrize("end", [
    {"status": "failed", "failed_at": 1_790_000_100, **counts(3, 0, 3)},
    {"status": "expired", "expired_at": 1_790_086_400, **counts(3, 1, 0)},
    {"status": "cancelled", "cancelled_at": 1_790_000_100, **counts(3, 1, 0)},
])
def test_submit_wait_ends_1_when_the_batch_did_not_complete(cli, fake, requests_file, end):
    fake.plan = [{"status": "in_progress", **counts(3, 0, 0)}, end]
    result = cli("batch", "submit", str(requests_file), "--wait", "--poll", "0")
    assert result.exit_code == 1, result.output
    assert end["status"] in result.stdout


def test_submit_wait_json_prints_the_batch_as_it_ended_and_no_bar(cli, fake, requests_file):
    fake.plan = [{"status": "completed", **counts(3, 3, 0)}]
    result = cli("batch", "submit", str(requests_file), "--wait", "--poll", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "completed"


def test_a_validation_that_failed_is_shown_with_the_inputs_line_numbers(cli, fake, requests_file):
    fake.plan = [{"status": "failed", "failed_at": 1_790_000_100, "errors": {"object": "list", "data": [
        {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "param": None,
         "line": 2},
        {"code": "mismatched_endpoint", "message": "The url must match the batch's endpoint.", "param": "url",
         "line": 3}]}}]
    result = cli("batch", "submit", str(requests_file), "--wait", "--poll", "0")
    assert result.exit_code == 1
    assert "line 2: invalid_json_line: This line is not parseable as valid JSON." in result.stdout
    assert "line 3: mismatched_endpoint: The url must match the batch's endpoint. (param: url)" in result.stdout
    (batch_id,) = fake.batches
    shown = cli("batch", "get", batch_id)
    assert shown.exit_code == 0 and "line 3: mismatched_endpoint" in shown.stdout
    download = cli("batch", "download", batch_id)
    assert download.exit_code == 1
    assert "no output file" in download.stderr and f"stillhouse batch get {batch_id}" in download.stderr


def test_an_error_of_the_api_is_printed_with_its_param(cli, fake, requests_file):
    result = cli("batch", "submit", str(requests_file), "--window", "48h")
    assert result.exit_code == 1
    assert "400 invalid_request_error: Invalid completion_window" in result.stderr
    assert "(field: completion_window)" in result.stderr
    assert cli("batch", "get", "batch_nope").exit_code == 1


def test_bad_usage_is_caught_before_any_request(cli, fake, requests_file, tmp_path):
    assert cli("batch", "submit", str(requests_file), "--metadata", "no-equals").exit_code == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli("batch", "submit", str(empty)).exit_code == 2
    assert cli("batch", "submit", str(tmp_path / "missing.jsonl")).exit_code == 2
    assert fake.requests == []


def test_download_writes_the_output_file_to_a_file_or_stdout(cli, fake, tmp_path):
    results = b'{"id": "batch_req_1", "custom_id": "r0", "response": {"status_code": 200}, "error": null}\n'
    batch = fake.add_batch(status="completed", output_file_id=fake.add_file(results), **counts(1, 1, 0))
    target = tmp_path / "results.jsonl"
    written = cli("batch", "download", batch["id"], "-o", str(target))
    assert written.exit_code == 0, written.output
    assert target.read_bytes() == results
    assert f"{len(results)} bytes" in written.stderr
    to_stdout = cli("batch", "download", batch["id"])
    assert to_stdout.exit_code == 0
    assert to_stdout.stdout_bytes == results


def test_download_errors_writes_the_error_file(cli, fake, tmp_path):
    failures = b'{"id": "batch_req_2", "custom_id": "r1", "response": null, "error": {"code": "x"}}\n'
    batch = fake.add_batch(status="completed", output_file_id=fake.add_file(b"{}\n"),
                           error_file_id=fake.add_file(failures), **counts(2, 1, 1))
    result = cli("batch", "download", batch["id"], "--errors")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == failures


@pytest.mark.parametrize(("fields", "flags", "why"), [
    ({"status": "in_progress", **counts(3, 1, 0)}, [], "still in_progress"),
    ({"status": "completed", **counts(3, 3, 0)}, ["--errors"], "none of its requests failed"),
    ({"status": "completed", **counts(2, 0, 2)}, [], "all its requests failed: --errors"),
])
def test_download_says_why_there_is_no_such_file(cli, fake, tmp_path, fields, flags, why):
    batch = fake.add_batch(**fields)
    target = tmp_path / "never.jsonl"
    result = cli("batch", "download", batch["id"], *flags, "-o", str(target))
    assert result.exit_code == 1
    assert why in result.stderr
    assert not target.exists()


def test_cancel_asks_the_api_and_shows_the_new_status(cli, fake):
    batch = fake.add_batch(status="in_progress", **counts(5, 2, 0))
    result = cli("batch", "cancel", batch["id"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [batch["id"], "cancelling"]
    assert ("POST", f"/v1/batches/{batch['id']}/cancel") in [(m, p) for m, p, *_ in fake.requests]
    again = cli("batch", "cancel", fake.add_batch(status="completed")["id"])
    assert again.exit_code == 1 and "409" in again.stderr


def test_list_shows_the_newest_first_with_progress_and_the_next_page(cli, fake):
    made = [fake.add_batch(status="completed", **counts(4, 3, 1)), fake.add_batch(status="in_progress",
                                                                                  **counts(10, 2, 0)),
            fake.add_batch(status="validating")]
    result = cli("batch", "list", "--limit", "2")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "batch_" in line and "│" in line]
    assert [row.split()[1] for row in rows] == [made[2]["id"], made[1]["id"]]
    assert "2/10" in rows[1]
    assert f"more: --after {made[1]['id']}" in result.stdout
    following = cli("batch", "list", "--limit", "2", "--after", made[1]["id"], "--json")
    page = json.loads(following.stdout)
    assert [b["id"] for b in page["data"]] == [made[0]["id"]] and page["has_more"] is False
    assert fake.requests[-1][2] == {"limit": ["2"], "after": [made[1]["id"]]}


def test_get_shows_counts_files_and_times(cli, fake):
    batch = fake.add_batch(status="completed", output_file_id="file-out", error_file_id="file-err",
                           completed_at=1_790_000_500, metadata={"team": "ml"}, **counts(4, 3, 1))
    result = cli("batch", "get", batch["id"])
    assert result.exit_code == 0, result.output
    for text in ("completed", "4 total, 3 completed, 1 failed", "file-out", "file-err", "team=ml",
                 "2026-09-21"):
        assert text in result.stdout, text
    assert json.loads(cli("batch", "get", batch["id"], "--json").stdout) == fake.batches[batch["id"]]


def test_every_batch_command_has_help_with_examples(cli):
    for command in ("submit", "list", "get", "cancel", "download"):
        result = cli("batch", command, "--help")
        assert result.exit_code == 0, command
        assert "Example" in result.output, command
        assert any(f"stillhouse batch {command}" in line and not line.strip().startswith("Usage")
                   for line in result.output.splitlines()), command
