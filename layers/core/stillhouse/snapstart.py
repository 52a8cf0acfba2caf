"""Lambda SnapStart for Python (template.yaml's `SnapStart` parameter; docs/design.md, "Cold start").

With SnapStart on, Lambda runs a function's init once per published version, snapshots the initialised
process, and resumes every new execution environment from that snapshot. Two hooks make that safe here:

- before the snapshot, `warm`: what the function's first event loads (the core, every setting checked, the
  live configuration read), so that restored copies start warm; then buffered metrics are flushed
  (the snapshot must not hold data points that every restored copy would emit again);
- after each restore, `restored`: `random` is re-seeded (every copy would otherwise draw the same numbers:
  routing's picks, the quota shard a submission tries first, retry jitter), and everything that must not be
  shared by copies is dropped: cached AWS clients with their connection pools and resolved credentials, the
  built objects with their caches (keys, tenants, quotas, endpoint states, the live configuration), secrets
  and settings. They are built again on first use.

The hooks register with Lambda's `snapshot_restore_py`, which Lambda's Python runtime provides; where it is
not installed (tests, the embedded stack, LocalStack) `prepare` registers nothing and nothing changes.
"""
from __future__ import annotations

import importlib
import random
from typing import Any


def _registry() -> Any:
    """Lambda's hook registry, or None outside Lambda's runtime."""
    try:
        import snapshot_restore_py
    except ImportError:
        return None
    return snapshot_restore_py


def prepare(*modules: str) -> bool:
    """Register the hooks (a function's module calls this once, at import): before the snapshot, `warm` with
    the function's own `modules` (those its handler imports at first use). True if registered."""
    registry = _registry()
    if registry is None:
        return False
    registry.register_before_snapshot(before_snapshot, modules)
    registry.register_after_restore(restored)
    return True


def warm(modules: tuple[str, ...] = ()) -> None:
    """What a first event loads, loaded now: the core, every setting checked, the live configuration read,
    and the function's own `modules`."""
    for name in modules:
        importlib.import_module(name)
    from stillhouse.container import startup_check
    from stillhouse.telemetry.tracing import warm_tracers

    startup_check()
    warm_tracers()  # X-Ray's SDK and its botocore patch, in the snapshot rather than each first event


def before_snapshot(modules: tuple[str, ...] = ()) -> None:
    warm(modules)
    from stillhouse.telemetry.metrics import metrics

    metrics.flush()  # nothing buffered in the snapshot, where each restored copy would emit it again


def restored() -> None:
    random.seed()  # from os.urandom: each restored copy its own sequence
    from stillhouse import container

    container.reset()  # built objects and their caches, live configuration, secrets, AWS clients, settings
