"""`stillhouse up` as a person runs it: in its own process, it prints where everything is, including the RunPod
stand-in's key, with which the fault knobs it shows can really be turned; it starts without warnings and
stops on Ctrl-C."""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests
from stillhouse_local.moto_env import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_up_prints_the_stand_ins_key_and_its_fault_knobs_work(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STILLHOUSE_", "AWS_", "MOTO_"))}
    stderr = (tmp_path / "stderr").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "stillhouse_local.cli", "up", "--port", str(port)], cwd=REPO_ROOT,
                            env={**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}, stdout=subprocess.PIPE,
                            stderr=stderr, text=True)
    try:
        lines = []
        while not lines or "Ctrl-C stops everything" not in lines[-1]:
            line = proc.stdout.readline()  # pytest-timeout bounds a stack that never comes up
            assert line, f"`stillhouse up` exited ({proc.poll()}): {''.join(lines)}"
            lines.append(line)
        banner = "".join(lines)
        runpod_url = re.search(r"STILLHOUSE_RUNPOD_URL=(\S+)", banner).group(1)
        runpod_key = re.search(r"STILLHOUSE_RUNPOD_KEY=(\S+)", banner).group(1)
        assert re.search(rf"API\s+http://127.0.0.1:{port}", banner)
        assert "stillhouse faults local --error-rate 0.5" in banner

        knobs = requests.put(f"{runpod_url}/_faults/local", json={"error_rate": 0.5}, timeout=10,
                             headers={"Authorization": f"Bearer {runpod_key}"})
        assert knobs.status_code == 200 and knobs.json()["error_rate"] == 0.5
        assert requests.get(f"{runpod_url}/_faults/local", timeout=10).status_code == 401  # the key is needed

        stderr.seek(0)
        assert "Warning" not in stderr.read() and "No Moto" not in banner
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr.close()
