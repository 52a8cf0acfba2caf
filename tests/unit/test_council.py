"""Council stages: anonymised ranking, its parsing, aggregation and the chair's prompt."""
import pytest

from stillhouse import council
from stillhouse.council_tasks import CouncilTasks
from stillhouse.errors import TerminalError

ANSWERS = [{"model": "m1", "text": "one"}, {"model": "m2", "text": "two"}, {"model": "m3", "text": "three"}]


def test_labels_are_letters_in_answer_order():
    assert council.labels_for(["m1", "m2", "m3"]) == {"A": "m1", "B": "m2", "C": "m3"}


def test_ranking_prompt_hides_model_names():
    labels = council.labels_for(["m1", "m2", "m3"])
    text = council.ranking_messages("q?", ANSWERS, labels)[0]["content"]
    assert "Response A:\none" in text and "Response C:\nthree" in text
    assert "m1" not in text and "m2" not in text
    assert council.RANKING_MARKER in text


def test_a_ranking_is_read_after_the_last_marker():
    labels = {"A": "m1", "B": "m2", "C": "m3"}
    text = "Response A is fine. FINAL RANKING:\n1. Response C\n2. Response A\n3. Response B\nResponse A again"
    assert council.parse_ranking(text, labels) == ["m3", "m1", "m2"]
    assert council.parse_ranking("no marker, Response B then Response Z", labels) == ["m2"]


def test_rankings_aggregate_by_average_position():
    rows = council.aggregate_rankings([["m1", "m2"], ["m2", "m1"], ["m2"]])
    assert [r["model"] for r in rows] == ["m2", "m1"]
    assert rows[0] == {"model": "m2", "average_rank": pytest.approx(4 / 3), "votes": 3}


def test_the_chair_sees_every_answer_and_the_peer_ranking():
    text = council.synthesis_messages("q?", ANSWERS, [{"model": "m2"}, {"model": "m1"}])[0]["content"]
    assert all(f"Answer from {a['model']}:\n{a['text']}" in text for a in ANSWERS)
    assert "Peer ranking (best first): m2, m1" in text


class Notes:
    def __init__(self):
        self.fields = None

    def annotate(self, job_id, fields):
        self.fields = fields


def quorum(answers, tolerated):
    notes = Notes()
    tasks = CouncilTasks(store=notes, members=None, router=None, client_for=None, callback_url=None,
                         policy={}, notify=None)
    return tasks.quorum("j", answers, tolerated), notes.fields


def test_a_quorum_keeps_answers_and_names_failed_models():
    result, kept = quorum([*ANSWERS[:2], {"model": "m3", "error": "TransientError"}], 50)
    assert result == {"answered": ["m1", "m2"], "failed_models": ["m3"]}
    assert kept["council"]["labels"] == {"A": "m1", "B": "m2"}


def test_more_failures_than_tolerated_is_terminal():
    with pytest.raises(TerminalError, match="2 of 3 models failed"):
        quorum([ANSWERS[0], {"model": "m2", "error": "x"}, {"model": "m3", "error": "y"}], 50)
    with pytest.raises(TerminalError):
        quorum([{"model": "m1", "error": "x"}, {"model": "m2", "error": "y"}], 100)  # nobody answered
