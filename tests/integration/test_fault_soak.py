"""The fault soak as a test: 500 jobs over three stand-in endpoints that misbehave in every way the
stand-in knows (5xx, 429, lost and duplicate webhooks, worker crashes, a hard-down endpoint, latency
spikes, duplicate SQS messages). Every job ends, once, with its own output; the only failures are the
ones the fault mix makes terminal by design (a worker that crashes in `fail` mode fails its job).
Beside them a 120-line batch, four lines to a chunk, meets the same faults: it ends, and each of its lines is
in exactly one of its files, once, with its own answer (error lines only from chunks failed by design).

It runs `benchmarks/fault_soak.py` in a process of its own: an embedded stack is process-global, and
this session's stack is another one. About 2.5 minutes on 2 cores."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)  # ~2.5 min alone; a busy machine stretches it, the soak's own deadline bounds it
def test_500_jobs_under_mixed_faults_all_end_once_with_their_own_output(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fault_soak.py"), "--jobs", "500",
                          "--deadline-s", "600", "--batch-lines", "120"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert run.stdout.strip(), run.stderr[-3000:]
    out = json.loads(run.stdout)
    summary = {k: out[k] for k in ("jobs", "accepted", "terminal", "completed", "lost", "duplicate_terminal",
                                   "wrong_output", "by_status", "errors", "caller_webhooks")}
    assert out["accepted"] == out["jobs"] == 500, summary
    assert out["lost"] == 0 and out["terminal"] == 500, summary
    assert out["duplicate_terminal"] == 0 and out["wrong_output"] == 0, summary
    assert all("crash_rate fault" in error for error in out["errors"]), summary  # failures by design only
    assert out["completed"] >= 490, summary
    assert out["caller_webhooks"] == {"terminal_without_webhook": 0, "more_than_one": 0, "status_differs": 0}, summary
    batch = {k: v for k, v in out["batch"].items() if k not in ("status_changes", "chunk_jobs")}
    assert batch["ended"] and batch["status"] == "completed", batch
    assert batch["lines_lost"] == 0 and batch["lines_duplicated"] == 0 and batch["lines_wrong"] == 0, batch
    assert batch["lines_output"] + batch["lines_error"] == batch["lines_total"] == 120, batch
    assert all("crash_rate fault" in message for message in batch["errors_by_message"]), batch
    assert run.returncode == 0, run.stderr[-3000:]
