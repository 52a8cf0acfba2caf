"""`stillhouse tenants ...`: tenants, their limits and API keys, through the router's HTTP API.

    create NAME [--limits '{"requests_per_minute": 60}']   admin; prints the API key and webhook secret (once)
    show TENANT_ID
    limits TENANT_ID --set max_in_flight=10 --set allow_high_priority=true     admin; only what is given
    key TENANT_ID [--expires-in-s 86400]                    a new key for the tenant (shown once)
    revoke KEY_ID                                           effective within the API's key cache TTL (30 s)

Each function takes the API's URL and a key and returns the API's JSON; an error answer raises
TenantsCliError with the API's code, message and field.
"""
from __future__ import annotations

import json
from typing import Any

import requests


class TenantsCliError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field: {field})" if field else ""))
        self.status, self.code, self.field = status, code, field


def _call(method: str, url: str, key: str, path: str, body: Any = None) -> Any:
    response = requests.request(method, url.rstrip("/") + path, json=body, timeout=10,
                                headers={"Authorization": f"Bearer {key}"})
    try:
        data = response.json()
    except ValueError:
        data = None
    if not response.ok:
        error = data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), dict) else {}
        raise TenantsCliError(response.status_code, error.get("code", "error"),
                              error.get("message", response.text[:300]), error.get("field"))
    return data


def parse_limits(assignments: list[str]) -> dict[str, Any]:
    """`["max_in_flight=10", "allow_high_priority=true"]` → `{"max_in_flight": 10, "allow_high_priority": true}`
    (each value read as JSON, so numbers and booleans keep their type; the API checks names and ranges)."""
    limits: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set takes NAME=VALUE, not {assignment!r}")
        try:
            limits[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"--set {name.strip()}: {value!r} is not a number or true/false") from None
    return limits


def create_tenant(url: str, key: str, name: str, limits: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new tenant: `{tenant, api_key, key_id, webhook_secret}` (the key and secret are shown only now)."""
    return _call("POST", url, key, "/v1/tenants", {"name": name, **({"limits": limits} if limits else {})})


def show_tenant(url: str, key: str, tenant_id: str) -> dict[str, Any]:
    return _call("GET", url, key, f"/v1/tenants/{tenant_id}")


def set_limits(url: str, key: str, tenant_id: str, limits: dict[str, Any]) -> dict[str, Any]:
    return _call("PUT", url, key, f"/v1/tenants/{tenant_id}/limits", limits)


def new_key(url: str, key: str, tenant_id: str, expires_in_s: int | None = None) -> dict[str, Any]:
    body = {"expires_in_s": expires_in_s} if expires_in_s else {}
    return _call("POST", url, key, f"/v1/tenants/{tenant_id}/keys", body)


def revoke_key(url: str, key: str, key_id: str) -> dict[str, Any]:
    return _call("DELETE", url, key, f"/v1/keys/{key_id}")
