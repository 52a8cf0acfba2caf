"""The deploy planner: what the deploy file wants, against what RunPod and the router's registry have.

`Deployer.plan()` reads only; `Deployer.apply()` makes the plan's changes, in order (templates, then the
endpoints that use them, then the registry, which needs the endpoints' ids), and a second run finds
nothing to change. Things that exist but are not in the file are listed and left alone: removing an
endpoint is an operator's decision, made in RunPod's console, never a side effect of a deploy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from stillhouse_local.deploy.router_registry import RouterRegistry
from stillhouse_local.deploy.runpod_api import RunPodManagement, endpoint_name
from stillhouse_local.deploy.spec import DeployFile, Endpoint, Template

Action = Literal["create", "update", "unchanged", "unmanaged"]
Kind = Literal["template", "endpoint", "registry"]
PENDING_ID = "(its id once created)"

_TEMPLATE_FIELDS = ("imageName", "env", "containerDiskInGb", "containerRegistryAuthId")
_ENDPOINT_FIELDS = ("templateId", "gpuTypeIds", "gpuCount", "workersMin", "workersMax", "idleTimeout", "scalerType",
                    "scalerValue", "executionTimeoutMs", "flashboot", "networkVolumeId")
# Compared only when RunPod reports them: an endpoint record without them would otherwise look changed
# on every run, and a deploy would never be idempotent.
_REPORTED_ONLY = frozenset({"flashboot"})
_REGISTRY_FIELDS = ("endpoint_id", "base_url", "models", "weight", "max_in_flight", "enabled", "secret_ref",
                    "streaming")


@dataclass(frozen=True)
class Change:
    action: Action
    kind: Kind
    name: str
    #: create: the whole body; update: the changed fields' new values; otherwise empty
    fields: dict[str, Any] = field(default_factory=dict)
    #: update: the changed fields' old values
    before: dict[str, Any] = field(default_factory=dict)
    #: the RunPod id of what is updated (or unchanged)
    id: str | None = None

    def describe(self) -> str:
        mark = {"create": "+", "update": "~", "unchanged": "=", "unmanaged": "?"}[self.action]
        head = f"  {mark} {self.kind} {self.name}" + (f" ({self.id})" if self.id else "")
        if self.action == "create":
            return f"{head}: create " + ", ".join(f"{k}={_short(v)}" for k, v in self.fields.items())
        if self.action == "update":
            return f"{head}: " + ", ".join(f"{k} {_short(self.before.get(k))} -> {_short(v)}"
                                           for k, v in self.fields.items())
        if self.action == "unmanaged":
            return f"{head}: not in the deploy file, left alone"
        return f"{head}: unchanged"


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action in ("create", "update")]

    def render(self) -> str:
        if not self.changes:
            return "nothing in the deploy file"
        lines = [c.describe() for c in self.changes]
        n = len(self.pending)
        lines.append(f"{n} change{'s' if n != 1 else ''}" if n else "nothing to change")
        return "\n".join(lines)


def template_body(name: str, template: Template) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "imageName": template.image, "env": dict(template.env),
                            "containerDiskInGb": template.container_disk_gb, "isServerless": True}
    if template.registry_auth:
        body["containerRegistryAuthId"] = template.registry_auth
    return body


def endpoint_body(name: str, endpoint: Endpoint, template_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name, "templateId": template_id, "gpuTypeIds": list(endpoint.gpu_types),
        "gpuCount": endpoint.gpu_count, "workersMin": endpoint.workers.min, "workersMax": endpoint.workers.max,
        "idleTimeout": endpoint.idle_timeout_s, "scalerType": endpoint.scaler.type,
        "scalerValue": endpoint.scaler.value, "executionTimeoutMs": endpoint.execution_timeout_ms,
        "flashboot": endpoint.flashboot,
    }
    if endpoint.network_volume:
        body["networkVolumeId"] = endpoint.network_volume
    return body


def registry_body(file: DeployFile, name: str, endpoint_id: str) -> dict[str, Any]:
    endpoint = file.endpoints[name]
    return {"endpoint_id": endpoint_id, "base_url": file.runpod.serverless_url.rstrip("/"),
            "models": list(endpoint.models), "weight": endpoint.weight, "max_in_flight": endpoint.max_in_flight,
            "enabled": endpoint.enabled, "secret_ref": endpoint.secret_ref,
            "streaming": file.templates[endpoint.template].streaming}


def _differences(desired: dict[str, Any], actual: dict[str, Any], keys: tuple[str, ...],
                 reported_only: frozenset[str] = frozenset()) -> tuple[dict[str, Any], dict[str, Any]]:
    after, before = {}, {}
    for key in keys:
        if key in reported_only and key not in actual:
            continue
        want, have = desired.get(key), actual.get(key)
        if want in (None, "") and have in (None, ""):
            continue
        if want != have:
            after[key], before[key] = want, have
    return after, before


class Deployer:
    def __init__(self, runpod: RunPodManagement, router: RouterRegistry) -> None:
        self.runpod = runpod
        self.router = router

    # --- reading -------------------------------------------------------------------------------
    def _remote(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        templates = {str(t.get("name")): t for t in self.runpod.list_templates()}
        endpoints = {endpoint_name(e): e for e in self.runpod.list_endpoints()}
        return templates, endpoints

    def _template_changes(self, file: DeployFile, remote: dict[str, dict[str, Any]]) -> list[Change]:
        changes = []
        for name, template in file.templates.items():
            body, have = template_body(name, template), remote.get(name)
            if have is None:
                changes.append(Change("create", "template", name, body))
                continue
            after, before = _differences(body, have, _TEMPLATE_FIELDS)
            changes.append(Change("update" if after else "unchanged", "template", name, after, before, have.get("id")))
        return changes

    def _endpoint_changes(self, file: DeployFile, templates: dict[str, dict[str, Any]],
                          remote: dict[str, dict[str, Any]]) -> list[Change]:
        changes = []
        for name, endpoint in file.endpoints.items():
            template_id = (templates.get(endpoint.template) or {}).get("id") or PENDING_ID
            body, have = endpoint_body(name, endpoint, template_id), remote.get(name)
            if have is None:
                changes.append(Change("create", "endpoint", name, body))
                continue
            after, before = _differences(body, have, _ENDPOINT_FIELDS, _REPORTED_ONLY)
            changes.append(Change("update" if after else "unchanged", "endpoint", name, after, before, have.get("id")))
        changes += [Change("unmanaged", "endpoint", name, id=e.get("id"))
                    for name, e in remote.items() if name not in file.endpoints]
        return changes

    def _registry_changes(self, file: DeployFile, endpoint_ids: dict[str, str]) -> list[Change]:
        rows, changes = self.router.endpoints(), []
        for name in file.endpoints:
            body, have = registry_body(file, name, endpoint_ids.get(name, PENDING_ID)), rows.get(name)
            if have is None:
                changes.append(Change("create", "registry", name, body))
                continue
            after, before = _differences(body, have, _REGISTRY_FIELDS)
            changes.append(Change("update" if after else "unchanged", "registry", name, after, before))
        return changes

    def plan(self, file: DeployFile) -> Plan:
        """What a deploy would change; changes nothing anywhere."""
        templates, endpoints = self._remote()
        ids = {name: str(e["id"]) for name, e in endpoints.items() if e.get("id")}
        return Plan(self._template_changes(file, templates) + self._endpoint_changes(file, templates, endpoints)
                    + self._registry_changes(file, ids))

    # --- applying ------------------------------------------------------------------------------
    def apply(self, file: DeployFile) -> Plan:
        """Make the plan's changes; returns the plan that was carried out."""
        templates, endpoints = self._remote()
        done = self._template_changes(file, templates)
        for change in done:
            if change.action == "create":
                templates[change.name] = self.runpod.create_template(change.fields)
            elif change.action == "update":
                templates[change.name] = self.runpod.update_template(str(change.id), change.fields)
        endpoint_changes = self._endpoint_changes(file, templates, endpoints)
        for change in endpoint_changes:
            if change.action == "create":
                endpoints[change.name] = self.runpod.create_endpoint(change.fields)
            elif change.action == "update":
                endpoints[change.name] = {**endpoints[change.name],
                                          **self.runpod.update_endpoint(str(change.id), change.fields)}
        ids = {name: str(e["id"]) for name, e in endpoints.items() if e.get("id")}
        registry_changes = self._registry_changes(file, ids)
        for change in registry_changes:
            if change.action in ("create", "update"):  # PUT adds an endpoint, or changes only these fields
                self.router.put(change.name, change.fields)
        return Plan(done + endpoint_changes + registry_changes)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def with_serverless_url(file: DeployFile, url: str | None) -> DeployFile:
    """The file with another job API root (the stand-in's, or a `--serverless-url`)."""
    return file if not url else file.model_copy(update={"runpod": file.runpod.model_copy(update={"serverless_url": url})})
