"""What the CLI draws from API answers, without a stack: trace waterfalls, `up`'s banner."""
from rich.console import Console
from stillhouse_local.cli_trace import Stage, stages_from_events, stages_from_trace, waterfall
from stillhouse_local.cli_up import banner

EVENTS = [
    {"at": "2026-11-30T10:00:00.000Z", "status": "IN_QUEUE", "actor": "api"},
    {"at": "2026-11-30T10:00:00.500Z", "status": "IN_PROGRESS", "actor": "dispatch", "endpoint": "east", "attempt": 1},
    {"at": "2026-11-30T10:00:02.000Z", "status": "COMPLETED", "actor": "webhook", "endpoint": "east", "attempt": 1},
]


def test_each_event_is_a_stage_lasting_until_the_next():
    stages = stages_from_events(EVENTS, ended=True)
    assert [s.name for s in stages] == ["IN_QUEUE", "IN_PROGRESS #1", "COMPLETED #1"]
    assert [s.start_s for s in stages] == [0.0, 0.5, 2.0]
    assert [s.duration_s for s in stages] == [0.5, 1.5, 0.0]
    assert "dispatch east" in stages[1].detail


def test_trace_spans_are_ordered_by_start_with_their_durations():
    spans = {"spans": [{"name": "dispatch", "start": "2026-11-30T10:00:01Z", "duration_ms": 250},
                       {"name": "api", "start": "2026-11-30T10:00:00Z", "end": "2026-11-30T10:00:00.100Z"}]}
    stages = stages_from_trace(spans)
    assert [(s.name, s.start_s, s.duration_s) for s in stages] == [("api", 0.0, 0.1), ("dispatch", 1.0, 0.25)]
    assert stages_from_trace({"unexpected": True}) == []


def test_the_waterfall_places_bars_on_one_time_axis():
    console = Console(width=120, record=True)
    console.print(waterfall([Stage("first", 0.0, 1.0), Stage("second", 1.0, 1.0)], width=20))
    lines = [line for line in console.export_text().splitlines() if "█" in line]
    first, second = (line.index("█") for line in lines)
    assert second - first == 10  # the second stage starts halfway along the axis
    assert lines[0].count("█") == lines[1].count("█") == 10


def test_up_prints_the_stand_ins_key_and_a_fault_knob_example():
    text = banner("http://127.0.0.1:3000", "sh_key", "http://127.0.0.1:4000", "rp_key", ["local", "east"])
    assert "STILLHOUSE_RUNPOD_KEY=rp_key" in text
    assert "stillhouse faults local --error-rate" in text
    assert "Bearer rp_key" in text and "http://127.0.0.1:4000/_faults/local" in text


def test_endpoints_seen_with_a_tenants_key_are_the_models_available(monkeypatch):
    from stillhouse_local import cli_endpoints

    console = Console(width=120, record=True)
    monkeypatch.setattr(cli_endpoints, "console", console)
    cli_endpoints.show([{"model": "*", "available": True}, {"model": "llama", "available": False}], as_json=False)
    text = console.export_text()
    assert "llama" in text and "no" in text and "breaker" not in text
