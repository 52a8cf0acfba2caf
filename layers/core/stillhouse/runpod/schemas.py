"""The bodies of RunPod's serverless API that we read and send, typed (RunPod's own field names).

They are checked where they cross our edge: what /run answers, what /status answers, and what a RunPod
webhook posts to us. Unknown fields are kept: RunPod adds fields without notice.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RunRequest(BaseModel):
    """POST /{endpoint}/run."""

    input: dict[str, Any]
    webhook: str | None = None
    policy: dict[str, Any] | None = None  # executionTimeout, ttl (ms)


class RunAccepted(BaseModel):
    """What /run answers: the RunPod job id we then follow."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    status: str


class RunPodJob(BaseModel):
    """A RunPod job as /status answers it and as its webhook posts it."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    status: str = Field(min_length=1)
    output: Any = None
    error: Any = None
    delayTime: int | float | None = None  # ms in RunPod's queue  # noqa: N815 - RunPod's name
    executionTime: int | float | None = None  # ms on the worker  # noqa: N815 - RunPod's name
