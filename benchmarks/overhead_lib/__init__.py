"""The parts of `benchmarks/overhead.py`: prices and the cost doc (`prices`), metering of AWS calls and
Lambda invocations through the hooks `stillhouse.aws` and `stillhouse_local.lambdas` offer (`metering`),
the caller's load (`load`), one measured run (`measure`), the JSON report (`report`), statistics (`stats`)."""
from __future__ import annotations

import sys


def log(message: str) -> None:
    print(f"[overhead] {message}", file=sys.stderr, flush=True)
