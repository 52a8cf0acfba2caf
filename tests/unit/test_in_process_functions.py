"""In-process Lambda functions: a queue's function runs one instance per mapping, each with its own module (and
cold start), so a handler's module-level state (Powertools' batch processors) is never shared by two
invocations at once; an HTTP function's instances share one module, its per-request state kept per thread."""
import threading

from stillhouse_local.lambdas import InProcessFunction
from stillhouse_local.template import FunctionSpec

HANDLER = '''
state = {"module": object(), "busy": False}

def handler(event, context):
    assert not state["busy"], "two invocations shared one instance's module state"
    state["busy"] = True
    if event.get("together"):
        event["together"].wait(timeout=10)  # every invocation of the round must be running at once
    state["busy"] = False
    return id(state["module"])
'''


def function(tmp_path, **kw):
    (tmp_path / "app.py").write_text(HANDLER)
    spec = FunctionSpec(logical_id="QueueFunction", code_dir=tmp_path, handler="app.handler")
    return InProcessFunction(spec, "queue-fn", **kw)


def invoke_together(fn, n, meet=True):
    event = {"together": threading.Barrier(n)} if meet else {}
    results, threads = [], [threading.Thread(target=lambda: results.append(fn.invoke(event))) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_per_instance_function_gives_each_concurrent_invocation_its_own_module(tmp_path):
    fn = function(tmp_path, concurrency=3, per_instance=True)
    modules = invoke_together(fn, 3)  # side by side: each waits for the other two
    assert len(modules) == 3 and len(set(modules)) == 3  # three instances, three cold starts
    assert set(invoke_together(fn, 3)) == set(modules)  # warm instances are reused, none loaded again


def test_a_shared_function_runs_one_invocation_at_a_time_at_concurrency_one(tmp_path):
    fn = function(tmp_path, concurrency=1)
    modules = invoke_together(fn, 2, meet=False)
    assert len(modules) == 2 and len(set(modules)) == 1
