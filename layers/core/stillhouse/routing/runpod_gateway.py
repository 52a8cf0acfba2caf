"""RunPod jobs by endpoint name: the registry says where an endpoint lives and which API key it uses."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from threading import Lock
from typing import Any, Protocol

from stillhouse.routing.placement import Endpoint
from stillhouse.routing.registry import EndpointRegistry
from stillhouse.runpod.client import RunPodClient


class SlotReleaser(Protocol):
    """The router's in-flight bookkeeping (stillhouse.routing.router.Router)."""

    def released(self, name: str) -> None: ...


class RunPodGateway:
    def __init__(self, registry: EndpointRegistry, router: SlotReleaser, api_key: Callable[..., str],
                 timeout_s: float) -> None:
        self._registry = registry
        self._router = router
        # (secret reference (None: the default key), refresh=False) -> RunPod API key; refresh=True reads it
        # again, past the cache (the client does so once after a 401: the key may have been rotated).
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._clients: dict[str | None, RunPodClient] = {}
        self._lock = Lock()

    def client_for(self, endpoint: Endpoint) -> RunPodClient:
        """One client per API key: endpoints of one RunPod account share its connection pool."""
        with self._lock:
            client = self._clients.get(endpoint.secret_ref)
            if client is None:
                client = RunPodClient(partial(self._api_key, endpoint.secret_ref), timeout_s=self._timeout_s)
                self._clients[endpoint.secret_ref] = client
            return client

    def status(self, endpoint_name: str, runpod_id: str) -> dict[str, Any]:
        endpoint = self._registry.get(endpoint_name)
        return self.client_for(endpoint).status(endpoint.base_url, endpoint.endpoint_id, runpod_id)

    def stop(self, endpoint_name: str, runpod_id: str) -> None:
        """Free the endpoint's in-flight slot and ask RunPod to cancel (best effort: the job's own record is
        already final; at worst a GPU finishes for nothing and its late webhook is ignored)."""
        self._router.released(endpoint_name)
        self.cancel(endpoint_name, runpod_id)

    def cancel(self, endpoint_name: str, runpod_id: str) -> None:
        """Ask RunPod to cancel a job whose attempt was already reported (its slot freed), best effort."""
        try:
            endpoint = self._registry.get(endpoint_name)
            self.client_for(endpoint).cancel(endpoint.base_url, endpoint.endpoint_id, runpod_id)
        except Exception:  # noqa: BLE001
            pass
