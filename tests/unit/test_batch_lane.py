"""The batch lane: a chunk yields an endpoint to interactive jobs while the endpoint is over the lane's share,
waits a short while in its queue (no attempt spent, no failure counted), and goes anyway once it has waited
its turns, so a batch is never starved. And a batch's lines are admitted against `max_batch_lines` as one
entry, never one per line."""
import pytest

from stillhouse.config import TenantLimits
from stillhouse.errors import InvalidRequest, QuotaExceeded
from stillhouse.jobs.dispatch import BatchLane, Dispatcher, LaneBusy
from stillhouse.jobs.model import Job, JobStatus, Priority, Task
from stillhouse.jobs.queue import Queued
from stillhouse.jobs.store import JobStore, now_iso
from stillhouse.routing.registry import EndpointSpec
from stillhouse.routing.router import Plan
from stillhouse.routing.state import EndpointState
from stillhouse.tenants.quotas import Quotas, in_flight_key
from stillhouse.tenants.store import TenantStore
from tests.support.clock import Clock
from tests.support.fakes import FakeRouter, FakeRunPod
from tests.support.tables import create_tenants_table

CHUNK = Queued("batch_1-c00000", attempts=0, task="batch")


def plan_with(in_flight: int, max_in_flight: int = 10) -> Plan:
    spec = EndpointSpec(name="a", endpoint_id="ep-a", max_in_flight=max_in_flight)
    return Plan(endpoints=(spec,), states={"a": EndpointState(name="a", in_flight=in_flight)}, candidates=1)


def test_a_chunk_goes_only_where_the_endpoint_is_under_the_lanes_share():
    lane = BatchLane(share=0.5, defers=3)
    assert list(lane.room(plan_with(4), 1)) == list(plan_with(4))
    assert lane.room(plan_with(5), 1) is None
    assert lane.room(plan_with(0, max_in_flight=1), 1) is not None  # a share of one slot is still one slot


def test_the_lane_never_queues_more_than_its_slots_on_an_endpoint_however_large():
    lane = BatchLane(share=0.5, defers=3, slots=8)
    assert lane.room(plan_with(7, max_in_flight=1000), 1) is not None
    assert lane.room(plan_with(8, max_in_flight=1000), 1) is None


def test_a_chunk_that_waited_its_turns_goes_anyway():
    lane = BatchLane(share=0.5, defers=3)
    assert lane.room(plan_with(9), 3) is None
    assert list(lane.room(plan_with(9), 4)) == list(plan_with(9))


class LaneRouter(FakeRouter):
    def __init__(self, in_flight):
        super().__init__([])
        self.in_flight = in_flight

    def plan(self, model, *, streaming=False):
        return plan_with(self.in_flight)


@pytest.fixture
def chunk_store(jobs_table):
    store = JobStore(jobs_table)
    at = now_iso()
    store.create(Job(id="batch_1-c00000", tenant_id="acme", task=Task.BATCH, status=JobStatus.IN_QUEUE, model="m",
                     input={"batch_id": "batch_1", "chunk": 0, "lines": 2, "first_line": 1}, priority=Priority.BATCH,
                     created_at=at, updated_at=at, events=[{"at": at, "status": "IN_QUEUE", "actor": "batch"}]))
    return store


def lane_dispatcher(store, router, runpod, deferred):
    return Dispatcher(store=store, router=router, client_for=lambda ep: runpod,
                      callback_url=lambda job, attempt, ep: f"http://cb/{job.id}", policy={}, max_receive_count=3,
                      payload_for=lambda job: {"task": "batch", "model": job.model, "lines": ["…"]},
                      lane=BatchLane(share=0.5, defers=3), defer=deferred.append)


def test_a_busy_lane_puts_the_chunk_back_soon_without_spending_an_attempt(chunk_store):
    runpod, deferred = FakeRunPod(), []
    dispatcher = lane_dispatcher(chunk_store, LaneRouter(in_flight=8), runpod, deferred)
    with pytest.raises(LaneBusy):
        dispatcher.dispatch(CHUNK.job_id, 1, CHUNK, receipt_handle="r-1")
    assert deferred == ["r-1"] and runpod.runs == []
    job = chunk_store.get(CHUNK.job_id)
    assert job.status is JobStatus.IN_QUEUE and job.attempts == 0


def test_a_chunk_is_sent_with_its_lines_when_the_lane_has_room_or_it_waited_long_enough(chunk_store):
    runpod, deferred = FakeRunPod(), []
    job = lane_dispatcher(chunk_store, LaneRouter(in_flight=9), runpod, deferred).dispatch(
        CHUNK.job_id, 4, CHUNK, receipt_handle="r-4")  # deferred three times already: it goes
    assert job.status is JobStatus.IN_PROGRESS and deferred == []
    [(endpoint_id, payload, _, _)] = runpod.runs
    assert endpoint_id == "ep-a" and payload == {"task": "batch", "model": "m", "lines": ["…"]}


def test_deliveries_spent_waiting_do_not_count_towards_failing_the_chunk(chunk_store):
    class Broken(FakeRunPod):
        def run(self, *args, **kwargs):
            raise RuntimeError("network down")

    dispatcher = lane_dispatcher(chunk_store, LaneRouter(in_flight=9), Broken(), [])
    with pytest.raises(RuntimeError):
        dispatcher.dispatch(CHUNK.job_id, 4, CHUNK)  # its 4th delivery, but its first real try
    assert chunk_store.get(CHUNK.job_id).status is not JobStatus.FAILED


# --- max_batch_lines ----------------------------------------------------------------------------------

@pytest.fixture
def quotas(module_dynamodb):
    table = create_tenants_table(module_dynamodb, f"tenants-{id(object())}")
    live = {"running": set()}
    tenants = TenantStore(table, TenantLimits(max_batch_lines=100), cache_ttl_s=30, now=Clock())
    quotas = Quotas(tenants, live_batches=lambda ids: {i for i in ids if i in live["running"]})
    return quotas, live, table


def test_batches_are_admitted_up_to_max_batch_lines_as_one_entry_each(quotas):
    quotas, live, table = quotas
    for batch_id, lines in (("b1", 60), ("b2", 40)):
        quotas.admit_batch("acme", batch_id, lines)
        live["running"].add(batch_id)
    item = table.get_item(Key={"tenant_id": in_flight_key("acme")})["Item"]
    assert item["batches"] == {"b1*60", "b2*40"} and item["batch_lines"] == 100
    with pytest.raises(QuotaExceeded) as refused:
        quotas.admit_batch("acme", "b3", 1)
    assert refused.value.field == "max_batch_lines" and refused.value.retry_after_s > 0


def test_an_ended_batch_gives_its_lines_back(quotas):
    quotas, live, table = quotas
    quotas.admit_batch("acme", "b1", 90)
    live["running"].add("b1")
    with pytest.raises(QuotaExceeded):
        quotas.admit_batch("acme", "b2", 20)
    live["running"].discard("b1")  # b1 ended
    quotas.admit_batch("acme", "b2", 20)
    item = table.get_item(Key={"tenant_id": in_flight_key("acme")})["Item"]
    assert item["batches"] == {"b2*20"} and item["batch_lines"] == 20


def test_a_file_larger_than_the_limit_itself_is_refused_as_the_requests_fault(quotas):
    quotas, _, _ = quotas
    with pytest.raises(InvalidRequest) as refused:
        quotas.admit_batch("acme", "b1", 101)
    assert refused.value.field == "input_file_id" and not isinstance(refused.value, QuotaExceeded)
