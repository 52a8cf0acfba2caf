"""The result cache: which jobs qualify, what a key covers, expiry, and that a hit skips the GPU."""
import boto3
import pytest

from stillhouse.auth import Principal
from stillhouse.errors import Unprocessable
from stillhouse.jobs.model import JobRequest, JobStatus, Task
from stillhouse.jobs.service import JobService
from stillhouse.jobs.store import JobStore
from stillhouse.outputs.cache import MAX_CACHED_BYTES, ResultCache, cache_key, cacheable
from tests.support.callbacks import recorder
from tests.support.clock import Clock
from tests.support.jobs import make_job
from tests.support.tables import create_cache_table


@pytest.fixture
def cache_table(aws_mock):
    return create_cache_table(boto3.resource("dynamodb", region_name="us-east-1"), "cache")


@pytest.mark.parametrize("task, input, params, expected", [
    (Task.ECHO, {"text": "hi"}, {}, True),
    (Task.EMBED, {"texts": ["a"]}, {}, True),
    (Task.GENERATE, {"prompt": "p"}, {}, True),  # the worker's default temperature is 0 (greedy)
    (Task.GENERATE, {"prompt": "p", "temperature": 0}, {}, True),
    (Task.GENERATE, {"prompt": "p"}, {"temperature": 0.7}, False),
    (Task.GENERATE, {"prompt": "p", "temperature": 0.7}, {}, False),
    (Task.GENERATE, {"prompt": "p", "stream": True}, {}, False),
    (Task.SLEEP, {"seconds": 1}, {}, False),
    (Task.COUNCIL, {"prompt": "p"}, {}, False),
])
def test_only_deterministic_jobs_are_cacheable(task, input, params, expected):
    assert cacheable(task, input, params) is expected


@pytest.mark.parametrize("input, params, field", [
    ({"prompt": "p", "temperature": "hot"}, {}, "input.temperature"),
    ({"prompt": "p"}, {"temperature": [0]}, "params.temperature"),
    ({"prompt": "p", "temperature": True}, {}, "input.temperature"),
    ({"prompt": "p", "temperature": float("nan")}, {"temperature": 0}, "input.temperature"),
])
def test_a_temperature_that_is_not_a_number_is_422_naming_where_it_was_written(input, params, field):
    with pytest.raises(Unprocessable) as refused:
        cacheable(Task.GENERATE, input, params)
    assert refused.value.field == field


def test_a_key_covers_tenant_task_model_input_and_params_but_not_key_order():
    base = cache_key("acme", Task.ECHO, None, {"a": 1, "b": 2}, {})
    assert base == cache_key("acme", Task.ECHO, None, {"b": 2, "a": 1}, {})
    assert base != cache_key("other", Task.ECHO, None, {"a": 1, "b": 2}, {})
    assert base != cache_key("acme", Task.EMBED, None, {"a": 1, "b": 2}, {})
    assert base != cache_key("acme", Task.ECHO, "m", {"a": 1, "b": 2}, {})
    assert base != cache_key("acme", Task.ECHO, None, {"a": 1, "b": 3}, {})
    assert base != cache_key("acme", Task.ECHO, None, {"a": 1, "b": 2}, {"max_new_tokens": 8})


def test_an_entry_is_served_until_it_expires(cache_table):
    clock = Clock()
    cache = ResultCache(cache_table, ttl_s=60, now=clock)
    assert cache.get("k") is None
    assert cache.put("k", "job-1", {"text": "hi", "score": 0.5})
    assert cache.get("k") == ("job-1", {"text": "hi", "score": 0.5})
    clock.t += 61
    assert cache.get("k") is None


def test_an_output_too_big_for_one_item_is_not_kept(cache_table):
    cache = ResultCache(cache_table)
    assert cache.put("k", "job-1", {"text": "x" * MAX_CACHED_BYTES}) is False
    assert cache.get("k") is None


def test_a_failed_cache_write_is_reported_not_raised(cache_table):
    cache_table.delete()  # every write now fails with ResourceNotFound
    assert ResultCache(cache_table).put("k", "job-1", {"text": "hi"}) is False


class RecordingQueue:
    def __init__(self):
        self.sent = []

    def send(self, job_id, priority, *, attempts=None, task=None):
        self.sent.append(job_id)


@pytest.fixture
def service(jobs_table, cache_table):
    queue, notified = RecordingQueue(), []
    svc = JobService(JobStore(jobs_table), queue, cache=ResultCache(cache_table), notify=notified.append)
    return svc, queue, notified, ResultCache(cache_table)


def test_a_cached_request_is_answered_at_once_without_queueing(service):
    svc, queue, notified, cache = service
    who = Principal(tenant_id="acme")
    request = JobRequest(task="echo", input={"text": "hi"}, cache=True)
    first = svc.submit(who, request)
    assert first.status is JobStatus.IN_QUEUE and queue.sent == [first.id]
    cache.put(first.cache_key, first.id, {"text": "hi"})  # what the webhook does when `first` completes

    second = svc.submit(who, request)
    assert queue.sent == [first.id]  # no GPU work for the second
    assert second.status is JobStatus.COMPLETED
    assert second.output == {"text": "hi"} and second.cached_from == first.id
    assert [e.actor for e in second.events] == ["api", "cache"]
    assert notified == [second]  # the caller's webhook hears of it as of any finished job


def test_without_cache_true_the_same_request_runs_again(service):
    svc, queue, _, cache = service
    who = Principal(tenant_id="acme")
    first = svc.submit(who, JobRequest(task="echo", input={"text": "hi"}, cache=True))
    cache.put(first.cache_key, first.id, {"text": "hi"})
    again = svc.submit(who, JobRequest(task="echo", input={"text": "hi"}))
    assert again.status is JobStatus.IN_QUEUE and queue.sent == [first.id, again.id]


def test_asking_to_cache_a_sampled_generation_is_refused_naming_the_field(service):
    svc, queue, _, _ = service
    with pytest.raises(Unprocessable) as err:
        svc.submit(Principal(tenant_id="acme"),
                   JobRequest(task="generate", input={"prompt": "p", "temperature": 0.9}, cache=True))
    assert err.value.field == "cache"
    assert queue.sent == []


class _CacheWatchingStore(JobStore):
    """A job store that notes whether the cache held the result at the moment the job became COMPLETED."""

    def __init__(self, table, cache, key):
        super().__init__(table)
        self.cache, self.key, self.seen_at_completion = cache, key, "not completed"

    def transition(self, job_id, target, **kw):
        held = self.cache.get(self.key) if target is JobStatus.COMPLETED else None
        moved = super().transition(job_id, target, **kw)  # a refused write raises: it completed nothing
        if target is JobStatus.COMPLETED:
            self.seen_at_completion = held
        return moved


def _recorder(store, cache):
    return recorder(store, cache=cache)[0]


def _running_cached_job(store):
    store.create(make_job("j1", cache=True, cache_key="key-1"))
    return store.transition("j1", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", attempt=1,
                            fields={"runpod_id": "rp1"})


def test_the_result_is_cached_before_the_job_shows_completed(jobs_table, cache_table):
    # Whoever sees COMPLETED and asks again must get the hit, so the entry cannot come after.
    cache = ResultCache(cache_table)
    store = _CacheWatchingStore(jobs_table, cache, "key-1")
    job = _running_cached_job(store)
    _recorder(store, cache).apply(job, "a", 1, {"id": "rp1", "status": "COMPLETED", "output": {"text": "hi"}},
                                  actor="webhook")
    assert store.seen_at_completion == ("j1", {"text": "hi"})


def test_a_cached_jobs_webhook_also_writes_the_cache_before_the_job_shows_completed(jobs_table, cache_table):
    from stillhouse.runpod.callback_urls import callback_token
    from tests.support.callbacks import SECRET

    cache = ResultCache(cache_table)
    store = _CacheWatchingStore(jobs_table, cache, "key-1")
    _running_cached_job(store)
    _recorder(store, cache).record("j1", 1, "a", callback_token(SECRET, "j1", 1, "a"),
                                   {"id": "rp1", "status": "COMPLETED", "output": {"text": "hi"}})
    assert store.get("j1").status is JobStatus.COMPLETED
    assert store.seen_at_completion == ("j1", {"text": "hi"})


def test_a_result_the_job_does_not_take_is_not_left_in_the_cache(jobs_table, cache_table):
    cache, store = ResultCache(cache_table), JobStore(jobs_table)
    seen = _running_cached_job(store)
    store.transition("j1", JobStatus.CANCELLED, actor="api")  # cancelled while the report was on its way
    assert _recorder(store, cache).apply(seen, "a", 1, {"id": "rp1", "status": "COMPLETED", "output": {"text": "hi"}},
                                         actor="webhook") is None
    assert store.get("j1").status is JobStatus.CANCELLED and cache.get("key-1") is None


def test_a_duplicate_report_racing_the_first_keeps_the_cached_result(jobs_table, cache_table):
    cache, store = ResultCache(cache_table), JobStore(jobs_table)
    seen = _running_cached_job(store)
    body = {"id": "rp1", "status": "COMPLETED", "output": {"text": "hi"}}
    rec = _recorder(store, cache)
    assert rec.apply(seen, "a", 1, body, actor="webhook").status is JobStatus.COMPLETED
    assert rec.apply(seen, "a", 1, body, actor="poller") is None  # read the job before the first one wrote
    assert cache.get("key-1") == ("j1", {"text": "hi"})
