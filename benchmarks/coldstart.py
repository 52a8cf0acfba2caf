"""Cold import time of each Lambda function: what an init pays before the first event.

    .venv/bin/python benchmarks/coldstart.py [--repeat 5] [--quick]

For every `functions/*/app.py` it starts a fresh Python process (nothing imported, no bytecode cache
shared in memory; the .pyc files on disk are used, as in a deployed package), imports the function's
module the way Lambda does, and times it. Median of `--repeat` processes per function. The embedded
stack is not needed: the one AWS call of an init (`startup_check` reading the live configuration) goes
to a closed port on 127.0.0.1 and fails at once, which the code allows. Prints ONE JSON object on stdout: `import_ms` per function (wall; tracing off, as in the
embedded stack or with `Tracing: PassThrough`), `import_ms_traced` (as on AWS with X-Ray on), `import_cpu_ms` (the
CPU time, which moves less with the machine's load), `modules_loaded` (which does not move at all),
`max_import_ms`, and the
slowest top-level imports of the slowest function (from `-X importtime`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"

# Imports the module as Lambda's runtime would (file by path, its directory first on sys.path).
_PROBE = """
import importlib.util, sys, time
path = sys.argv[1]
n0 = len(sys.modules)
t0, c0 = time.perf_counter(), time.process_time()
spec = importlib.util.spec_from_file_location("app", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print((time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000, len(sys.modules) - n0)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "layers" / "core"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # What the template gives every function; no endpoint is ever called during an import.
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # A function's init reads the live configuration (startup_check): here that read goes to a closed
    # port on 127.0.0.1 and fails at once (one try), as the code allows, so no import can reach AWS or
    # the instance metadata service, whatever credentials the caller's environment holds.
    env.update({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_ACCESS_KEY_ID": "coldstart", "AWS_SECRET_ACCESS_KEY": "coldstart"})
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    env.pop("STILLHOUSE_LOCALSTACK", None)
    env.setdefault("POWERTOOLS_SERVICE_NAME", "stillhouse")
    env.setdefault("POWERTOOLS_METRICS_NAMESPACE", "stillhouse")
    return env


def import_ms(app: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(wall ms, CPU ms, modules loaded) of one cold import. The CPU time moves less with the machine's
    load than the wall time (what an init really waits); the module count not at all."""
    done = subprocess.run([sys.executable, "-c", _PROBE, str(app)], capture_output=True, text=True,
                          cwd=app.parent, env=env, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"importing {app} failed: {done.stderr.strip()[-500:]}")
    wall, cpu, modules = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu), int(modules)


def slowest_imports(app: Path, env: dict[str, str], top: int = 12) -> list[dict[str, Any]]:
    """The packages that cost most, cumulative, as `python -X importtime` reports them (one run)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", _PROBE, str(app)], capture_output=True,
                          text=True, cwd=app.parent, env=env, timeout=120, check=False)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        try:
            _, cumulative, name = line.split(":", 1)[1].split("|")
            name = name[1:]  # one space after the bar, then two per level of nesting
            rows.append({"module": name.strip(), "cumulative_ms": round(int(cumulative) / 1000, 1),
                         "depth": (len(name) - len(name.lstrip())) // 2})
        except ValueError:
            continue
    roots = [r for r in rows if r["depth"] <= 1]  # what app.py imports, and what those import
    return sorted(roots, key=lambda r: r["cumulative_ms"], reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one process per function: a smoke run for CI")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else max(1, args.repeat)
    env = _env()
    apps = sorted(FUNCTIONS.glob("*/app.py"))
    result: dict[str, Any] = {"benchmark": "coldstart", "repeat": repeat, "import_ms": {}, "import_cpu_ms": {},
                              "modules_loaded": {}, "runs_ms": {}}
    # As on AWS with `Tracing: Active`: Powertools' Tracer, and with it the X-Ray SDK, is loaded.
    traced_env = {**env, "LAMBDA_TASK_ROOT": str(FUNCTIONS), "POWERTOOLS_TRACE_DISABLED": "false"}
    result["import_ms_traced"] = {}
    for app in apps:
        runs = [import_ms(app, env) for _ in range(repeat)]
        name = app.parent.name
        result["runs_ms"][name] = [round(wall, 1) for wall, _, _ in runs]
        result["import_ms"][name] = round(statistics.median(wall for wall, _, _ in runs), 1)
        result["import_cpu_ms"][name] = round(statistics.median(cpu for _, cpu, _ in runs), 1)
        result["modules_loaded"][name] = runs[0][2]
        result["import_ms_traced"][name] = round(statistics.median(import_ms(app, traced_env)[0]
                                                                   for _ in range(repeat)), 1)
        print(f"[coldstart] {name}: {result['import_ms'][name]} ms ({result['import_ms_traced'][name]} ms traced)",
              file=sys.stderr, flush=True)
    slowest = max(result["import_ms"], key=result["import_ms"].get)
    result["max_import_ms"] = result["import_ms"][slowest]
    result["max_import_ms_traced"] = max(result["import_ms_traced"].values())
    result["max_import_cpu_ms"] = max(result["import_cpu_ms"].values())
    result["slowest_function"] = slowest
    if not args.quick:
        result["slowest_function_top_imports"] = slowest_imports(FUNCTIONS / slowest / "app.py", env)
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
