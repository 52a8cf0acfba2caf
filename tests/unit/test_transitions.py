"""The one table of job status transitions."""
import pytest

from stillhouse.jobs.model import TERMINAL_STATUSES, JobStatus
from stillhouse.jobs.status import ALLOWED, allowed, sources_of


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_nothing_leaves_a_terminal_status(terminal):
    assert ALLOWED[terminal] == frozenset()
    assert all(not allowed(terminal, target) for target in JobStatus)


def test_a_queued_job_can_start_finish_or_be_cancelled():
    for target in (JobStatus.IN_PROGRESS, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
        assert allowed(JobStatus.IN_QUEUE, target)


def test_a_running_job_cannot_go_back_to_the_queue():
    assert not allowed(JobStatus.IN_PROGRESS, JobStatus.IN_QUEUE)


def test_retrying_jobs_may_run_again():
    assert allowed(JobStatus.RETRYING, JobStatus.IN_PROGRESS)
    assert allowed(JobStatus.IN_PROGRESS, JobStatus.RETRYING)


def test_every_status_has_a_row():
    assert set(ALLOWED) == set(JobStatus)


def test_sources_of_a_terminal_status_are_exactly_the_live_ones():
    assert set(sources_of(JobStatus.COMPLETED)) == {JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS, JobStatus.RETRYING}
    assert sources_of(JobStatus.IN_QUEUE) == []
