"""The management routes of the stand-in (``/v1/templates[/{id}]``, ``/v1/endpoints[/{id}]``, as
rest.runpod.io/v1): list, create, update (PATCH, or POST ``.../update`` as RunPod also accepts).
Bearer auth with the stand-in's API key."""
from __future__ import annotations

from stillhouse_local.runpod_standin.engine import JobEngine
from stillhouse_local.runpod_standin.http_base import BaseHandler, Reply, err
from stillhouse_local.runpod_standin.management import Management, ManagementError


class ManagementRoutes(BaseHandler):
    def _management(self, engine: JobEngine, management: Management, method: str, parts: list[str]) -> None:
        if not self._bearer_ok(engine):
            raise Reply(401, {"error": "Unauthorized: Authorization: Bearer <api key> required"},
                        {"WWW-Authenticate": "Bearer"})
        kind, rest = (parts[0] if parts else ""), parts[1:]
        if kind not in ("templates", "endpoints"):
            raise err(404, f"no route for {method} {self.path}")
        lister, creator, updater = (
            (management.list_templates, management.create_template, management.update_template)
            if kind == "templates"
            else (management.list_endpoints, management.create_endpoint, management.update_endpoint))
        try:
            if not rest and method == "GET":
                raise Reply(200, lister())
            if not rest and method == "POST":
                raise Reply(200, creator(self._json_body()))
            if len(rest) == 1 and method == "GET":
                found = [r for r in lister() if r["id"] == rest[0]]
                raise Reply(200, found[0]) if found else err(404, f"{kind[:-1]} {rest[0]!r} not found")
            if (len(rest) == 1 and method == "PATCH") or (len(rest) == 2 and rest[1] == "update" and method == "POST"):
                raise Reply(200, updater(rest[0], self._json_body()))
        except ManagementError as error:
            raise err(error.status, error.message, **({"field": error.field} if error.field else {})) from error
        raise err(404, f"no route for {method} {self.path}")
