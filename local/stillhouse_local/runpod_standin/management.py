"""RunPod's management API in the stand-in (``/v1/templates``, ``/v1/endpoints``, as rest.runpod.io/v1):
templates and serverless endpoints kept as records, with the same shapes. Creating an endpoint starts
its workers with its template's environment, scaled by its workersMin/Max, scalerType/Value and
idleTimeout; changing those rescales it; changing the template (or the endpoint's template) restarts
its workers with the new environment, as RunPod rolls an endpoint's workers."""
from __future__ import annotations

import secrets
import string
import threading
from collections.abc import Callable
from typing import Any

_ID_CHARS = string.ascii_lowercase + string.digits
FLASHBOOT_SUFFIX = " -fb"

# name -> (type, RunPod's default); what each record carries, and all a create or update may send.
TEMPLATE_FIELDS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "name": (str, None), "imageName": (str, None), "env": (dict, {}), "containerDiskInGb": (int, 50),
    "containerRegistryAuthId": (str, None), "isServerless": (bool, False), "dockerEntrypoint": (list, []),
    "dockerStartCmd": (list, []), "ports": (list, []), "readme": (str, ""), "volumeInGb": (int, 0),
    "volumeMountPath": (str, "/workspace"), "isPublic": (bool, False),
}
ENDPOINT_FIELDS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "name": (str, None), "templateId": (str, None), "gpuTypeIds": (list, []), "gpuCount": (int, 1),
    "workersMin": (int, 0), "workersMax": (int, 3), "idleTimeout": (int, 5), "scalerType": (str, "QUEUE_DELAY"),
    "scalerValue": (int, 4), "executionTimeoutMs": (int, 600_000), "flashboot": (bool, False),
    "networkVolumeId": (str, None), "allowedCudaVersions": (list, []), "dataCenterIds": (list, []),
    "computeType": (str, "GPU"), "vcpuCount": (int, 2), "cpuFlavorIds": (list, []),
}
SCALER_TYPES = ("QUEUE_DELAY", "REQUEST_COUNT")


class ManagementError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _new_id(n: int) -> str:
    return "".join(secrets.choice(_ID_CHARS) for _ in range(n))


def _checked(body: Any, fields: dict[str, tuple[Any, Any]], *, required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ManagementError(400, "body must be a JSON object")
    for key, value in body.items():
        if key not in fields:
            raise ManagementError(400, f"unknown field {key!r}", key)
        kind = fields[key][0]
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise ManagementError(400, f"{key} must be of type {kind.__name__}", key)
    for key in required:
        if body.get(key) in (None, ""):
            raise ManagementError(400, f"{key} is required", key)
    if "env" in body and any(not isinstance(v, str) for v in (body["env"] or {}).values()):
        raise ManagementError(400, "env values must be strings", "env")
    if body.get("scalerType") is not None and body["scalerType"] not in SCALER_TYPES:
        raise ManagementError(400, f"scalerType must be one of {', '.join(SCALER_TYPES)}", "scalerType")
    return dict(body)


SCALING_FIELDS = ("workersMin", "workersMax", "scalerType", "scalerValue", "idleTimeout")


class Management:
    """The records, behind one lock. `start_worker(endpoint_id, env, record)` starts an endpoint's workers
    (scaled by the record's workersMin/Max, scalerType/Value and idleTimeout); `restart_worker(endpoint_id,
    env)` restarts them with a new environment; `rescale(endpoint_id, record)` applies changed scaler
    settings."""

    def __init__(self, start_worker: Callable[[str, dict[str, str], dict[str, Any]], None],
                 restart_worker: Callable[[str, dict[str, str]], None],
                 rescale: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self._start_worker = start_worker
        self._restart_worker = restart_worker
        self._rescale = rescale
        self._lock = threading.Lock()
        self.templates: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}

    # --- templates -----------------------------------------------------------------------------
    def list_templates(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(t) for t in self.templates.values()]

    def create_template(self, body: Any) -> dict[str, Any]:
        fields = _checked(body, TEMPLATE_FIELDS, required=("name", "imageName"))
        with self._lock:
            if any(t["name"] == fields["name"] for t in self.templates.values()):
                raise ManagementError(400, f"a template named {fields['name']!r} exists already", "name")
            record = {k: v for k, (_, v) in TEMPLATE_FIELDS.items()} | fields | {"id": _new_id(10)}
            self.templates[record["id"]] = record
            return dict(record)

    def update_template(self, template_id: str, body: Any) -> dict[str, Any]:
        fields = _checked(body, TEMPLATE_FIELDS, required=())
        with self._lock:
            record = self._template(template_id)
            changed_env = "env" in fields and fields["env"] != record["env"]
            changed_image = "imageName" in fields and fields["imageName"] != record["imageName"]
            record.update(fields)
            users = [e["id"] for e in self.endpoints.values() if e["templateId"] == template_id]
            env = dict(record["env"] or {})
        if changed_env or changed_image:  # a new release of every endpoint that uses it
            for endpoint_id in users:
                self._restart_worker(endpoint_id, env)
        return dict(record)

    def _template(self, template_id: str) -> dict[str, Any]:
        record = self.templates.get(template_id)
        if record is None:
            raise ManagementError(404, f"template {template_id!r} not found", "templateId")
        return record

    # --- endpoints -----------------------------------------------------------------------------
    def list_endpoints(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._endpoint_view(e) for e in self.endpoints.values()]

    def _endpoint_view(self, record: dict[str, Any]) -> dict[str, Any]:
        template = self.templates.get(record["templateId"]) or {}
        return {**record, "env": dict(template.get("env") or {}), "template": dict(template)}

    def create_endpoint(self, body: Any) -> dict[str, Any]:
        fields = _checked(body, ENDPOINT_FIELDS, required=("templateId", "gpuTypeIds"))
        with self._lock:
            template = self._template(fields["templateId"])
            record = {k: v for k, (_, v) in ENDPOINT_FIELDS.items()} | fields | {"id": _new_id(14), "version": 0}
            name = record["name"] or record["id"]
            # As RunPod does: a flashboot endpoint's name gets a suffix.
            record["name"] = name + FLASHBOOT_SUFFIX if record["flashboot"] and not name.endswith(FLASHBOOT_SUFFIX) \
                else name
            self._check_workers(record)
            self.endpoints[record["id"]] = record
            env = dict(template["env"] or {})
            view = self._endpoint_view(record)
            scaling = dict(record)
        self._start_worker(record["id"], env, scaling)
        return view

    def update_endpoint(self, endpoint_id: str, body: Any) -> dict[str, Any]:
        fields = _checked(body, ENDPOINT_FIELDS, required=())
        with self._lock:
            record = self.endpoints.get(endpoint_id)
            if record is None:
                raise ManagementError(404, f"endpoint {endpoint_id!r} not found", "endpointId")
            new_template = fields.get("templateId") not in (None, record["templateId"])
            if new_template:
                self._template(fields["templateId"])
            self._check_workers({**record, **fields})
            rescaled = any(k in fields and fields[k] != record[k] for k in SCALING_FIELDS)
            record.update(fields)
            scaling = dict(record)
            record["version"] += 1
            env = dict(self.templates[record["templateId"]]["env"] or {})
            view = self._endpoint_view(record)
        if rescaled and self._rescale is not None:
            self._rescale(endpoint_id, scaling)
        if new_template:
            self._restart_worker(endpoint_id, env)
        return view

    @staticmethod
    def _check_workers(record: dict[str, Any]) -> None:
        if record["workersMin"] > record["workersMax"]:
            raise ManagementError(400, "workersMin must not exceed workersMax", "workersMin")
