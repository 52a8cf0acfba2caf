"""RunPod's management REST API, the part `stillhouse deploy` uses: templates and serverless endpoints,
list / create / update (https://rest.runpod.io/v1; docs/deploy.md records the shapes).

    GET   /templates                  -> [{"id", "name", "imageName", "env", "containerDiskInGb",
                                           "containerRegistryAuthId", "isServerless", ...}]
    POST  /templates                  {"name", "imageName", "env", "containerDiskInGb", "isServerless": true,
                                       "containerRegistryAuthId"?} -> the template
    PATCH /templates/{templateId}     the fields to change -> the template
    GET   /endpoints                  -> [{"id", "name", "templateId", "gpuTypeIds", "gpuCount", "workersMin",
                                           "workersMax", "idleTimeout", "scalerType", "scalerValue",
                                           "executionTimeoutMs", "flashboot", "networkVolumeId", ...}]
    POST  /endpoints                  {"name", "templateId", ...the same fields} -> the endpoint
    PATCH /endpoints/{endpointId}     the fields to change -> the endpoint (a rolling release of its workers)

Authentication: `Authorization: Bearer <RunPod API key>`.
"""
from __future__ import annotations

from typing import Any

import requests

DEFAULT_MANAGEMENT_URL = "https://rest.runpod.io/v1"
FLASHBOOT_SUFFIX = " -fb"  # RunPod appends this to the name of an endpoint created with flashboot


class RunPodApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"RunPod {method} {path} answered {status}: {body[:500]}")
        self.status = status


def endpoint_name(remote: dict[str, Any]) -> str:
    """An endpoint's name as we gave it (RunPod adds ` -fb` to flashboot endpoints' names)."""
    name = str(remote.get("name") or "")
    return name.removesuffix(FLASHBOOT_SUFFIX)


class RunPodManagement:
    """A thin client of the management API: one method per call, JSON in, JSON out, errors raised."""

    def __init__(self, api_key: str, base_url: str = DEFAULT_MANAGEMENT_URL, *, timeout_s: float = 30.0,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session or requests.Session()
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # Never to a redirect's target: the session would carry the Authorization header (our key) there.
        response = self._session.request(method, self.base_url + path, json=body, headers=self._headers,
                                         timeout=self._timeout_s, allow_redirects=False)
        if not 200 <= response.status_code < 300:
            raise RunPodApiError(method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def list_templates(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/templates") or [])

    def create_template(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/templates", body)

    def update_template(self, template_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/templates/{template_id}", changes)

    def list_endpoints(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/endpoints") or [])

    def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/endpoints", body)

    def update_endpoint(self, endpoint_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/endpoints/{endpoint_id}", changes)
