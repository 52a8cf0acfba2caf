"""The one table of job status transitions."""
import pytest

from stillhouse.jobs import status
from stillhouse.jobs.status import ALLOWED, TERMINAL, JobStatus, Move, allowed, sources_of


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
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
    assert sources_of(JobStatus.IN_QUEUE) == frozenset()


def test_a_terminal_job_is_exactly_one_in_the_terminal_set():
    assert {s for s in JobStatus if s.terminal} == TERMINAL


@pytest.mark.parametrize("move", [m for m in vars(status).values() if isinstance(m, Move)], ids=lambda m: m.name)
def test_every_named_move_is_a_move_the_table_allows(move):
    assert move.sources and all(allowed(source, move.target) for source in move.sources)


def test_a_move_the_table_forbids_cannot_even_be_named():
    with pytest.raises(ValueError, match="not in ALLOWED"):
        Move("resurrect", JobStatus.IN_PROGRESS, frozenset({JobStatus.COMPLETED}))
