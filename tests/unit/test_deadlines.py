"""A lost webhook costs what the job should take, not minutes: a job in flight on RunPod is due for one
/status call once it should have finished (jobs.deadlines), and the sweeper reads only what is due."""
from datetime import UTC, datetime, timedelta

import pytest

from stillhouse.errors import ErrorClass
from stillhouse.jobs.deadlines import SettleDeadlines
from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore
from stillhouse.jobs.sweeper import Sweeper, SweepRounds
from tests.support.callbacks import recorder
from tests.support.jobs import make_job

DEADLINES = SettleDeadlines(floor_s=20, factor=3, execution_timeout_s=600, watch_s=300, run_floor_s=30,
                            unit_prior_ms=50)


def test_a_short_job_is_due_after_the_floor():
    assert DEADLINES.in_flight_s("echo", {"text": "hi"}, {}, per_unit_ms=60) == 20


def test_a_long_job_is_due_after_its_expected_time_times_the_factor():
    # 256 tokens at 250 ms per token: 64 s expected, 192 s allowed.
    assert DEADLINES.in_flight_s("generate", {"prompt": "p"}, {"max_new_tokens": 256}, per_unit_ms=250) == pytest.approx(192)
    # 40 texts at 1 s each.
    assert DEADLINES.in_flight_s("embed", {"texts": ["t"] * 40}, {}, per_unit_ms=1000) == pytest.approx(120)
    # A sleep asks for its time outright, whatever the endpoint learnt.
    assert DEADLINES.in_flight_s("sleep", {"seconds": 30}, {}, per_unit_ms=5) == pytest.approx(90)


def test_no_job_waits_much_past_runpods_own_execution_timeout():
    assert DEADLINES.in_flight_s("generate", {}, {"max_new_tokens": 2048}, per_unit_ms=5000) == 620


def test_an_endpoint_with_nothing_learnt_yet_gives_the_floor():
    assert DEADLINES.in_flight_s("generate", {"prompt": "p"}, {}, per_unit_ms=None) == 20


def test_a_job_found_still_running_is_looked_at_again_less_and_less_often():
    assert [DEADLINES.still_running_s(s) for s in (5, 20, 90, 1000)] == [20, 20, 90, 300]


def _in_flight(store, job_id, due_in_s):
    store.create(make_job(job_id))
    due = DEADLINES.due(datetime.now(UTC), due_in_s)
    return store.transition(job_id, JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", attempt=1,
                            fields={"runpod_id": f"rp-{job_id}", "attempts": 1, "due_at": due})


def test_the_sweeper_reads_only_jobs_that_are_due(jobs_table):
    store = JobStore(jobs_table, watch_s=300)
    _in_flight(store, "short", 20)
    _in_flight(store, "long", 600)
    soon = datetime.now(UTC) + timedelta(seconds=30)
    assert store.due(JobStatus.IN_PROGRESS, DEADLINES.due(soon, 0)) == ["short"]


def test_a_terminal_job_is_never_due_again_once_no_notice_is_owed(jobs_table):
    store = JobStore(jobs_table, watch_s=300)
    running = _in_flight(store, "done", 20)
    store.transition("done", JobStatus.COMPLETED, actor="webhook", fields={"output": {"text": "hi"}},
                     current=running)  # known to have no webhook: nothing is owed
    later = DEADLINES.due(datetime.now(UTC), 10_000)
    assert all(store.due(status, later) == [] for status in JobStatus)
    assert "due_at" not in jobs_table.get_item(Key={"id": "done"})["Item"]


def test_a_terminal_job_whose_notice_is_owed_stays_due_until_a_delivery_is_recorded(jobs_table):
    store = JobStore(jobs_table, watch_s=300)
    _in_flight(store, "told", 20)
    store.transition("told", JobStatus.COMPLETED, actor="webhook", fields={"output": {"text": "hi"}})
    later = DEADLINES.due(datetime.now(UTC), 10_000)
    assert store.due(JobStatus.COMPLETED, later) == ["told"]  # the outbox: a crash here cannot lose it
    store.record_delivery("told", {"at": "t", "try": 1, "status_code": 200})
    assert store.due(JobStatus.COMPLETED, later) == []


def test_a_queued_job_is_due_after_the_watch_time(jobs_table):
    store = JobStore(jobs_table, watch_s=300)
    store.create(make_job("queued"))
    now = datetime.now(UTC)
    assert store.due(JobStatus.IN_QUEUE, DEADLINES.due(now, 200)) == []
    assert store.due(JobStatus.IN_QUEUE, DEADLINES.due(now, 310)) == ["queued"]


def _sweeper(store, answers):
    callbacks, notified, fetched = recorder(store, answers)
    return Sweeper(store=store, callbacks=callbacks, fetch_status=callbacks.fetch_status,
                   execution_status=lambda arn: "RUNNING", notify=notified.append, deadlines=DEADLINES), fetched


def test_a_lost_webhook_of_a_short_job_is_settled_once_the_job_is_due(jobs_table):
    store = JobStore(jobs_table, watch_s=300)
    _in_flight(store, "quiet", 20)
    sweeper, fetched = _sweeper(store, {"rp-quiet": {"id": "rp-quiet", "status": "COMPLETED", "output": {"text": "hi"}}})
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(seconds=5)) == {}  # not due: RunPod is not asked
    assert fetched == []
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(seconds=25)) == {"settled": 1}
    assert store.get("quiet").status is JobStatus.COMPLETED and store.get("quiet").output == {"text": "hi"}


def test_a_job_still_running_is_not_asked_again_at_once(jobs_table):
    store = JobStore(jobs_table, watch_s=300)
    _in_flight(store, "busy", 20)
    sweeper, fetched = _sweeper(store, {"rp-busy": {"id": "rp-busy", "status": "IN_PROGRESS"}})
    now = datetime.now(UTC) + timedelta(seconds=25)
    assert sweeper.sweep(now=now) == {"still_running": 1}
    assert sweeper.sweep(now=now + timedelta(seconds=5)) == {}
    assert fetched == [("a", "rp-busy")]
    assert sweeper.sweep(now=now + timedelta(seconds=30)) == {"still_running": 1}  # due again later


def test_a_scheduled_run_sweeps_in_rounds_until_the_next_run():
    class Clock:
        t = 0.0

        def sleep(self, s):
            self.t += s

    clock, rounds = Clock(), []

    class Counting:
        def sweep(self):
            rounds.append(clock.t)
            clock.t += 1.5  # a round takes time; the next one still starts on its beat
            return {"settled": 1}

    result = SweepRounds(Counting(), every_s=20, sleep=clock.sleep, clock=lambda: clock.t).run()
    assert rounds == [0, 20, 40]
    assert result == {"settled": 3, "rounds": 3}


def test_a_lost_webhook_under_the_recovery_workflow_is_settled_without_waiting_for_its_callback_timeout(jobs_table):
    from tests.support.fakes import FakeWorkflows

    store = JobStore(jobs_table, watch_s=300)
    store.create(make_job("wf"))
    store.transition("wf", JobStatus.RETRYING, actor="dispatch", fields={"execution_arn": "arn:exec:wf-1"})
    due = DEADLINES.due(datetime.now(UTC), 20)
    store.transition("wf", JobStatus.IN_PROGRESS, actor="workflow", endpoint="a", attempt=1,
                     fields={"runpod_id": "rp-wf", "attempts": 1, "task_token": "tok", "due_at": due})
    workflows = FakeWorkflows()
    callbacks, notified, _ = recorder(store, {"rp-wf": {"id": "rp-wf", "status": "COMPLETED", "output": {"text": "ok"}}},
                                      workflows=workflows)
    sweeper = Sweeper(store=store, callbacks=callbacks, fetch_status=callbacks.fetch_status,
                      execution_status=lambda arn: "RUNNING", notify=notified.append, deadlines=DEADLINES)
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(seconds=25)) == {"settled": 1}
    assert store.get("wf").status is JobStatus.COMPLETED
    assert workflows.task_results == [("succeed", "tok", {"status": "COMPLETED"})]  # the workflow ends too


def test_dispatch_records_when_a_started_job_is_due(jobs_table):
    from tests.support.fakes import Ep, FakeRunPod, make_dispatcher

    store = JobStore(jobs_table, watch_s=300)
    store.create(make_job("fast"))
    dispatcher = make_dispatcher(store, [Ep("a")], FakeRunPod())
    dispatcher.deadlines = DEADLINES
    before = datetime.now(UTC)
    dispatcher.dispatch("fast")
    after = datetime.now(UTC)
    item = jobs_table.get_item(Key={"id": "fast"})["Item"]
    assert item["status"] == "IN_PROGRESS"
    due = datetime.fromisoformat(item["due_at"].replace("Z", "+00:00"))
    floor = timedelta(seconds=20)  # nothing learnt yet: the floor, counted from when RunPod took the job
    assert before + floor - timedelta(milliseconds=1) <= due <= after + floor


# --- RunPod's executionTimeout per job: a hung worker is given up on in seconds, not in 10 minutes ---

def test_a_short_job_may_run_on_runpod_for_the_floor_only():
    assert DEADLINES.run_timeout_s("echo", {"text": "hi"}, {}, per_unit_ms=40) == 30


def test_a_long_job_may_run_for_its_expected_time_times_the_factor_within_the_endpoints_limit():
    # 256 tokens at 100 ms per token learnt: 25.6 s expected, 76.8 s allowed.
    assert DEADLINES.run_timeout_s("generate", {}, {"max_new_tokens": 256}, per_unit_ms=100) == pytest.approx(76.8)
    assert DEADLINES.run_timeout_s("generate", {}, {"max_new_tokens": 4096}, per_unit_ms=100) == 600  # the limit


def test_with_nothing_learnt_a_slow_prior_stands_in_for_the_endpoints_latency():
    # 2048 tokens at 50 ms each (20 tokens/s): 102.4 s expected, 307.2 s allowed; never the floor alone.
    assert DEADLINES.run_timeout_s("generate", {}, {"max_new_tokens": 2048}, per_unit_ms=None) == pytest.approx(307.2)


def test_each_earlier_gpu_run_doubles_the_time_a_retry_is_given():
    assert [DEADLINES.run_timeout_s("echo", {}, {}, 40, runs_before=n) for n in (0, 1, 2, 5)] == [30, 60, 120, 600]


def test_the_jobs_deadline_caps_the_time_it_may_run():
    assert DEADLINES.run_timeout_s("generate", {}, {"max_new_tokens": 256}, 100, cap_s=45) == 45
    assert DEADLINES.run_timeout_s("echo", {}, {}, 40, cap_s=1) == 5  # RunPod's own minimum


def test_dispatch_gives_runpod_the_jobs_execution_timeout_and_remembers_it(jobs_table):
    from tests.support.fakes import Ep, FakeRunPod, make_dispatcher

    store = JobStore(jobs_table, watch_s=300)
    store.create(make_job("timed", task="generate", params={"max_new_tokens": 2048}))
    runpod = FakeRunPod()
    dispatcher = make_dispatcher(store, [Ep("a")], runpod)
    dispatcher.deadlines = DEADLINES
    job = dispatcher.dispatch("timed")
    (_, _, _, policy), = runpod.runs
    assert policy["executionTimeout"] == 307_200  # the slow prior: nothing learnt of `a` yet
    assert job.run_timeout_s == 307


def _hung(store, job_id, run_timeout_s):
    store.create(make_job(job_id))
    store.transition(job_id, JobStatus.RETRYING, actor="dispatch", fields={"execution_arn": f"arn:exec:{job_id}"})
    return store.transition(job_id, JobStatus.IN_PROGRESS, actor="recovery", endpoint="a", attempt=1,
                            fields={"runpod_id": f"rp-{job_id}", "attempts": 1, "task_token": "tok",
                                    "run_timeout_s": run_timeout_s,
                                    "due_at": DEADLINES.due(datetime.now(UTC), 0)})


def _hang_sweeper(store, delay_ms=0):
    from tests.support.fakes import FakeWorkflows

    workflows, learnt, cancelled = FakeWorkflows(), [], []
    callbacks, notified, _ = recorder(
        store, {f"rp-{j}": {"id": f"rp-{j}", "status": "IN_PROGRESS", "delayTime": delay_ms} for j in ("h", "q")},
        workflows=workflows, learn=lambda *outcome: learnt.append(outcome[:3]))
    sweeper = Sweeper(store=store, callbacks=callbacks, fetch_status=callbacks.fetch_status,
                      execution_status=lambda arn: "RUNNING", notify=notified.append, deadlines=DEADLINES,
                      cancel_runpod=lambda endpoint, runpod_id: cancelled.append((endpoint, runpod_id)))
    return sweeper, workflows, learnt, cancelled


def test_an_attempt_still_running_long_past_its_execution_timeout_is_given_up_on_and_retried(jobs_table):
    store = JobStore(jobs_table, watch_s=300)
    _hung(store, "h", run_timeout_s=30)
    sweeper, workflows, learnt, cancelled = _hang_sweeper(store)
    # RunPod did not end it (the endpoint ignores the policy, or its worker is wedged): 30 s + 20 s of grace.
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(seconds=45)) == {"still_running": 1}
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(seconds=55)) == {"hung": 1}
    job = store.get("h")
    assert job.status is JobStatus.RETRYING and job.error_class.value == "worker_lost"
    assert "executionTimeout" in job.error
    assert learnt == [("a", JobStatus.FAILED, ErrorClass.WORKER_LOST)]  # the breaker hears of the hang
    assert cancelled == [("a", "rp-h")]  # the GPU is stopped
    assert workflows.task_results[0][:2] == ("fail", "tok")  # the workflow submits it again


def test_time_spent_queued_on_runpod_is_not_held_against_an_attempt(jobs_table):
    store = JobStore(jobs_table, watch_s=300)
    _hung(store, "q", run_timeout_s=30)
    sweeper, _, learnt, cancelled = _hang_sweeper(store, delay_ms=40_000)  # a cold start: 40 s in RunPod's queue
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(seconds=55)) == {"still_running": 1}
    assert store.get("q").status is JobStatus.IN_PROGRESS and learnt == [] and cancelled == []
