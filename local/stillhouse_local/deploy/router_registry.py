"""The router's endpoint registry over its admin API: `GET /v1/endpoints`, `PUT /v1/endpoints/{name}`."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests


class RouterApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"router {method} {path} answered {status}: {body[:500]}")
        self.status = status


class RouterRegistry:
    def __init__(self, url: str, api_key: str, *, timeout_s: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.request(method, self.url + path, json=body, headers=self._headers, timeout=self._timeout_s)
        if not response.ok:
            raise RouterApiError(method, path, response.status_code, response.text)
        return response.json()

    def endpoints(self) -> dict[str, dict[str, Any]]:
        """The registered endpoints by name (with their health, which the planner ignores)."""
        return {row["name"]: row for row in self._call("GET", "/v1/endpoints")}

    def put(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/v1/endpoints/{quote(name, safe='')}", spec)
