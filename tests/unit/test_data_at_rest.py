"""Data at rest: finished jobs and their spilled outputs are kept for JobRetentionDays (0: forever), the
results bucket refuses anything but TLS, and a presigned link lives as long as a setting says."""
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from stillhouse_local.template import load_sam, translate

from stillhouse.config import Settings
from stillhouse.container import Container
from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore
from stillhouse.outputs.spill import ResultStore
from tests.support.jobs import make_job

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400


@pytest.fixture(scope="module")
def sam():
    return load_sam(ROOT / "template.yaml")


@pytest.fixture(scope="module")
def cfn():
    return translate(ROOT / "template.yaml").deployed


# --- the template ---------------------------------------------------------------------------------------

def test_finished_jobs_expire_through_the_jobs_tables_ttl_on_the_attribute_the_store_writes(cfn):
    ttl = cfn["Resources"]["JobsTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}


def test_retention_is_a_parameter_where_0_keeps_everything_and_every_function_is_told_it(sam, cfn):
    days = sam["Parameters"]["JobRetentionDays"]
    assert days["MinValue"] == 0 and days["Default"] >= 1
    assert cfn["Conditions"]["KeepJobsForever"] == {"Fn::Equals": [{"Ref": "JobRetentionDays"}, 0]}
    env = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert env["STILLHOUSE_JOB_RETENTION_DAYS"] == {"Ref": "JobRetentionDays"}


def test_spilled_outputs_expire_with_their_jobs_and_are_kept_forever_when_the_jobs_are(cfn):
    lifecycle = cfn["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]
    condition, forever, otherwise = lifecycle["Fn::If"]
    assert condition == "KeepJobsForever" and forever == {"Ref": "AWS::NoValue"}
    [rule] = otherwise["Rules"]
    assert rule["Status"] == "Enabled" and "Prefix" not in rule and "Filter" not in rule  # every object
    assert rule["ExpirationInDays"] == {"Ref": "JobRetentionDays"}


def test_the_results_bucket_refuses_every_request_not_made_over_tls(cfn):
    policy = next(r for r in cfn["Resources"].values()
                  if r["Type"] == "AWS::S3::BucketPolicy"
                  and r["Properties"]["Bucket"] == {"Ref": "ResultsBucket"})
    [deny] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [{"Fn::GetAtt": ["ResultsBucket", "Arn"]}, {"Fn::Sub": "${ResultsBucket.Arn}/*"}]


def test_the_presigned_links_lifetime_is_a_parameter_within_s3s_seven_days(sam):
    seconds = sam["Parameters"]["OutputLinkSeconds"]
    assert seconds["MaxValue"] == 7 * DAY and seconds["MinValue"] <= seconds["Default"] <= seconds["MaxValue"]
    env = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert env["STILLHOUSE_OUTPUT_LINK_S"] == {"Ref": "OutputLinkSeconds"}


# --- the store ------------------------------------------------------------------------------------------

def _item(table, job_id):
    return table.get_item(Key={"id": job_id}, ConsistentRead=True)["Item"]


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED,
                                    JobStatus.TIMED_OUT])
def test_a_terminal_write_sets_the_expiry_retention_days_after_it(jobs_table, status):
    store = JobStore(jobs_table, retain_s=7 * DAY)
    store.create(make_job())
    before = time.time()
    store.transition("j1", status, actor="webhook")
    after = time.time()
    expires = int(_item(jobs_table, "j1")["expires_at"])
    assert int(before) + 7 * DAY <= expires <= int(after) + 7 * DAY


def test_a_live_job_never_carries_an_expiry(jobs_table):
    store = JobStore(jobs_table, retain_s=7 * DAY)
    store.create(make_job())
    store.transition("j1", JobStatus.IN_PROGRESS, actor="dispatch", fields={"runpod_id": "rp1"})
    assert "expires_at" not in _item(jobs_table, "j1")


def test_a_job_created_finished_from_the_cache_expires_like_any_other(jobs_table):
    store = JobStore(jobs_table, retain_s=DAY)
    job = make_job().model_copy(update={"status": JobStatus.COMPLETED})
    store.create(job)
    finished = datetime.fromisoformat(job.updated_at.replace("Z", "+00:00")).timestamp()
    assert int(_item(jobs_table, "j1")["expires_at"]) == int(finished + DAY)


def test_with_no_retention_a_finished_job_is_kept_forever(jobs_table):
    store = JobStore(jobs_table)
    store.create(make_job())
    store.transition("j1", JobStatus.COMPLETED, actor="webhook", fields={"output": {"n": 1}})
    assert "expires_at" not in _item(jobs_table, "j1")


def test_the_container_gives_the_store_the_retention_setting_in_seconds(aws_mock):
    store = Container(Settings(job_retention_days=3)).job_store
    assert store._retain_s == 3 * DAY


# --- presigned links ------------------------------------------------------------------------------------

def _lifetime(url):
    return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])


def test_a_presigned_link_lives_as_long_as_the_setting_says(aws_mock):
    s3 = boto3.client("s3", region_name="us-east-1", config=boto3.session.Config(signature_version="s3v4"))
    assert _lifetime(ResultStore(s3, "results", link_s=600).url("j1", {"bytes": 1})) == 600
    spill = Container(Settings(output_link_s=900, results_bucket="results")).spill
    assert spill.link_s == 900
