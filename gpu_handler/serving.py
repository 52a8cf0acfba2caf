"""Which models this worker answers for.

One image serves every endpoint; each endpoint is deployed with the model it serves (`MODEL`, plus
`MODEL_ID` / `EMBED_MODEL_ID` for the weights). A job that names another model was misrouted: it fails
with `ModelNotServed` (not retryable) instead of being answered by whatever this worker has loaded.
"""

from __future__ import annotations

import os

from .errors import ModelNotServed
from .loading import embedding_name, generation_name
from .settings import TaskName, WorkerSettings

#: A diagnostic model family: `echo*` answers deterministically with no weights (tasks.echo_generate).
ECHO_MODEL_PREFIX = "echo"


def is_echo_model(name: str) -> bool:
    return name.startswith(ECHO_MODEL_PREFIX)


def served_models(settings: WorkerSettings, task: TaskName) -> tuple[str, ...]:
    """The names this worker answers to for `task`; the first is what a job naming no model gets."""
    if settings.models:
        return settings.models
    return (generation_name(settings.model_id),) if task == "generate" else (embedding_name(settings.embed_model_id),)


def resolve_model(requested: str | None, task: TaskName, settings: WorkerSettings) -> str:
    """The model a job is served with; raises ModelNotServed for a model this worker does not serve."""
    served = served_models(settings, task)
    if requested is None or requested in served:
        return requested or served[0]
    # A worker deployed without MODEL keeps answering the echo family (tests and diagnostics need no
    # weights); one deployed with MODEL answers only the names it lists.
    if not settings.models and task == "generate" and is_echo_model(requested):
        return requested
    endpoint = os.environ.get("RUNPOD_ENDPOINT_ID")
    where = f"endpoint {endpoint}" if endpoint else "this worker"
    raise ModelNotServed(
        f"model {requested!r} is not served by {where} (it serves {', '.join(served)}): the job was misrouted; "
        "the endpoint's `models` in the router's registry must match the MODEL it is deployed with",
        field="model",
    )
