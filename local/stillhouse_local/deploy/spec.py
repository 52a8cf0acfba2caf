"""The deploy file (deploy/runpod.yaml): RunPod templates and endpoints, and how the router uses each
endpoint. One pydantic model; an error names the field it is about (`endpoints.llm-a.workers.max`)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: The router's endpoint names (stillhouse.routing.registry.EndpointSpec.name); RunPod names follow them.
NAME = r"^[a-z0-9][a-z0-9-_]{0,62}$"
DEFAULT_SERVERLESS_URL = "https://api.runpod.ai/v2"
TRUE_WORDS = {"1", "true", "yes", "on"}


class DeployFileError(ValueError):
    """A deploy file that does not validate; `field` is the dotted path of the first problem."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Template(_Strict):
    """A RunPod serverless template: the worker image and its environment."""

    image: str = Field(min_length=1, pattern=r"^\S+$")
    # The worker's environment; MODEL names the models its endpoints serve (gpu_handler/serving.py).
    env: dict[str, str] = Field(default_factory=dict)
    container_disk_gb: int = Field(default=20, ge=1, le=1024)
    # containerRegistryAuthId of a private registry's credentials saved in RunPod; None = a public image.
    registry_auth: str | None = Field(default=None, min_length=1)

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):  # YAML reads `16` and `true` as numbers and booleans
            return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value

    @property
    def models(self) -> list[str]:
        return [m.strip() for m in self.env.get("MODEL", "").split(",") if m.strip()]

    @property
    def streaming(self) -> bool:
        return self.env.get("WORKER_STREAMING", "").strip().lower() in TRUE_WORDS


class Workers(_Strict):
    min: int = Field(default=0, ge=0, le=100)
    max: int = Field(default=3, ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> Workers:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is more than max ({self.max})")
        return self


class Scaler(_Strict):
    """RunPod's autoscaler: QUEUE_DELAY adds a worker when a job has waited `value` seconds;
    REQUEST_COUNT keeps one worker per `value` jobs (queued + running)."""

    type: Literal["QUEUE_DELAY", "REQUEST_COUNT"] = "QUEUE_DELAY"
    value: int = Field(default=4, ge=1, le=1000)


class Endpoint(_Strict):
    """A RunPod serverless endpoint, and what the router's registry says of it."""

    template: str = Field(min_length=1)
    gpu_types: list[str] = Field(min_length=1)
    gpu_count: int = Field(default=1, ge=1, le=8)
    workers: Workers = Field(default_factory=Workers)
    idle_timeout_s: int = Field(default=5, ge=1, le=3600)
    scaler: Scaler = Field(default_factory=Scaler)
    execution_timeout_ms: int = Field(default=600_000, ge=5_000, le=86_400_000)
    flashboot: bool = True
    network_volume: str | None = Field(default=None, min_length=1)
    # The router's side (PUT /v1/endpoints/{name}).
    models: list[str] = Field(min_length=1)
    weight: float = Field(default=1.0, ge=0, le=1000)
    max_in_flight: int = Field(default=100, ge=1)
    enabled: bool = True
    # The secret holding this endpoint's RunPod API key; None = the router's default key.
    secret_ref: str | None = Field(default=None, min_length=1, max_length=512)

    @field_validator("gpu_types", "models")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if any(not v.strip() for v in value):
            raise ValueError("names must be non-empty")
        return list(dict.fromkeys(v.strip() for v in value))


class RunPodSettings(_Strict):
    # Where the router sends jobs (POST {serverless_url}/{endpoint id}/run).
    serverless_url: str = Field(default=DEFAULT_SERVERLESS_URL, pattern=r"^https?://\S+$")


class DeployFile(_Strict):
    runpod: RunPodSettings = Field(default_factory=RunPodSettings)
    templates: dict[str, Template] = Field(default_factory=dict)
    endpoints: dict[str, Endpoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> DeployFile:
        for kind, names in (("templates", self.templates), ("endpoints", self.endpoints)):
            for name in names:
                if not re.match(NAME, name):
                    raise _At(f"{kind}.{name}", f"name must match {NAME}")
        for name, endpoint in self.endpoints.items():
            template = self.templates.get(endpoint.template)
            if template is None:
                raise _At(f"endpoints.{name}.template",
                          f"no template named {endpoint.template!r} (templates: {', '.join(self.templates) or 'none'})")
            # The worker refuses jobs for models it was not deployed with: a registry entry promising
            # more than the template's MODEL would route jobs there only to fail them as misrouted.
            if unserved := [m for m in endpoint.models if m not in template.models]:
                raise _At(f"endpoints.{name}.models",
                          f"{', '.join(unserved)} not in template {endpoint.template!r}'s env MODEL "
                          f"({', '.join(template.models) or 'unset'}): its workers would refuse those jobs")
        return self


class _At(ValueError):
    """A cross-field problem found after the fields validated, with the field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse(data: Any) -> DeployFile:
    """Validate a deploy file's content; raises DeployFileError naming the field."""
    try:
        return DeployFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, _At):
            raise DeployFileError(cause.field, str(cause)) from None
        field = ".".join(str(p) for p in first["loc"]) or "file"
        raise DeployFileError(field, first["msg"]) from None


def load(path: str | Path) -> DeployFile:
    """Read and validate a deploy file (YAML)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise DeployFileError("file", f"{path} is not valid YAML: {exc}") from None
    except OSError as exc:
        raise DeployFileError("file", f"cannot read {path}: {exc.strerror}") from None
    return parse(data)
