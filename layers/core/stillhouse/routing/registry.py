"""The endpoint registry: which RunPod endpoints exist, what they serve, how much traffic they get.

Stored in the ConfigTable in Powertools Parameters' DynamoDB layout (`id` HASH, `sk` RANGE, `value`
JSON string), one item per endpoint under `id="endpoints"`. Reads go through Powertools'
DynamoDBProvider with a short TTL, so an admin edit (PUT /v1/endpoints/{name}) reaches every warm
function within seconds without a restart; writes validate first, so a bad edit never replaces a good
configuration.
"""
from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from stillhouse.errors import InvalidRequest, NotFound, StillhouseError

log = logging.getLogger(__name__)

#: Partition key value under which every endpoint item lives (the Parameters "path").
PARAM_PATH = "endpoints"
ANY_MODEL = "*"


class EndpointSpec(BaseModel):
    """One RunPod serverless endpoint as the router sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-_]{0,62}$")
    endpoint_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
    # API root; callers POST f"{base_url}/{endpoint_id}/run". No backslash, `@` (userinfo), `?` or `#`: parsers
    # disagree on where a host with those ends, and a query or fragment would swallow the endpoint id.
    base_url: str = Field(default="https://api.runpod.ai/v2", pattern=r"^https?://[^\s/\\@?#]+(/[^\s\\@?#]*)?$")
    # Models served; "*" serves any model (and jobs that name none).
    models: list[str] = Field(default_factory=lambda: [ANY_MODEL], min_length=1)
    weight: float = Field(default=1.0, ge=0)
    max_in_flight: int = Field(default=100, ge=1)
    enabled: StrictBool = True  # strict: 0 or "false" is refused, not taken as a bool
    # Name of the secret holding this endpoint's RunPod API key; None = the default key.
    secret_ref: str | None = Field(default=None, min_length=1, max_length=512)
    # Deployed with WORKER_STREAMING=true: its worker streams `stream: true` jobs in chunks, and every
    # job's output comes back as a list of chunks (RunPod decides streaming per worker, not per job).
    streaming: StrictBool = False

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator("models")
    @classmethod
    def _models_non_empty(cls, v: list[str]) -> list[str]:
        if any(not m.strip() for m in v):
            raise ValueError("model names must be non-empty")
        return list(dict.fromkeys(m.strip() for m in v))  # de-duplicated, order kept

    @field_validator("weight")
    @classmethod
    def _weight_finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("weight must be a finite number")
        return v

    @property
    def url(self) -> str:
        """The endpoint's root: POST {url}/run, GET {url}/status/{id}."""
        return f"{self.base_url}/{self.endpoint_id}"

    def serves(self, model: str | None) -> bool:
        return model is None or ANY_MODEL in self.models or model in self.models


class InvalidEndpointConfig(InvalidRequest):
    """An endpoint edit that does not validate; the stored configuration is left as it was."""

    code = "invalid_endpoint_config"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> InvalidEndpointConfig:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "endpoint"
        return cls(field, first["msg"])


#: What may follow the per-endpoint key prefix in a secret_ref: Secrets Manager's own name characters (and
#: no empty, `.` or `..` segment, which no reader should have to wonder about).
_SECRET_NAME_TAIL = re.compile(r"[A-Za-z0-9/_+=.@-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class EndpointPolicy(BaseModel):
    """Where an endpoint may point: an edit naming another origin, or a secret that is not a per-endpoint
    RunPod key, is refused, so an admin key cannot send our RunPod API key, or a secret of ours (the
    callback keyring above all), anywhere else."""

    model_config = ConfigDict(frozen=True)

    origins: frozenset[str]  # "scheme://host:port", as _origin writes them
    # Per-endpoint RunPod keys live under this prefix only (stillhouse/{Stage}/runpod/): a secret_ref can
    # never name the default key's neighbours, such as the callback keyring.
    secret_prefix: str

    def check(self, spec: EndpointSpec) -> None:
        try:
            origin = _origin(spec.base_url)
        except ValueError as err:
            raise InvalidEndpointConfig("base_url", str(err)) from None
        if origin not in self.origins:
            raise InvalidEndpointConfig("base_url", f"{origin} is not an allowed RunPod host "
                                        f"(allowed: {', '.join(sorted(self.origins))})")
        if spec.secret_ref is not None:
            tail = spec.secret_ref[len(self.secret_prefix):]
            if (not spec.secret_ref.startswith(self.secret_prefix) or not _SECRET_NAME_TAIL.fullmatch(tail)
                    or {"", ".", ".."} & set(tail.split("/"))):
                raise InvalidEndpointConfig("secret_ref", f"must name a per-endpoint RunPod key of this stack "
                                            f"({self.secret_prefix}<name>)")


def allowed_origins(runpod_base_url: str, extra_hosts: list[str]) -> frozenset[str]:
    """RunPod's own API (wherever settings point it: the stand-in when embedded), plus https hosts."""
    return frozenset({_origin(runpod_base_url), *(_origin(f"https://{host}") for host in extra_hosts)})


def _origin(url: str) -> str:
    """`scheme://host:port` of `url` as the request that uses it would reach it: the URL is prepared the
    way requests prepares what it sends (IDNA, quoting) and parsed by urllib3, which opens the connection.

    `urlsplit` is not that parser: for `https://evil.tld\\@api.runpod.ai/v2` it says `api.runpod.ai`, while
    urllib3 connects to `evil.tld`. So a URL with a backslash, userinfo or `@` anywhere is refused outright,
    and so is one on whose host the two parsers disagree (ValueError, saying why)."""
    import requests
    from urllib3.util import parse_url

    if "\\" in url or "@" in url:
        raise ValueError("must not contain a backslash or an @ (userinfo)")
    try:
        prepared = requests.Request("GET", url).prepare().url or ""
        sent = parse_url(prepared)
        plain = urlsplit(url)
        plain_port = plain.port
    except (requests.exceptions.RequestException, ValueError) as err:
        raise ValueError(f"not a valid URL ({err.__class__.__name__})") from None
    scheme = (sent.scheme or "").lower()
    host = (sent.host or "").lower().removeprefix("[").removesuffix("]")  # urlsplit's hostname has no brackets
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError("must be an http(s) URL with a host")
    if sent.auth is not None or plain.username is not None or plain.password is not None:
        raise ValueError("must not carry credentials")
    port = sent.port or _DEFAULT_PORTS[scheme]
    plain_origin = (plain.scheme.lower(), (plain.hostname or "").lower(), plain_port or _DEFAULT_PORTS[scheme])
    if plain_origin != (scheme, host, port):
        raise ValueError("its host is read differently by different URL parsers")
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class EndpointNotFound(NotFound):
    code = "not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no endpoint named {name!r}", field="name")


class _OneTable:
    """Adapts a Table resource to the ServiceResource that DynamoDBProvider expects (`.Table(name)`),
    so the registry can take the very table object the clients factory hands out."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.meta = table.meta

    def Table(self, _name: str) -> Any:  # noqa: N802 - boto3's spelling
        return self._table


class EndpointRegistry:
    """Endpoint configuration in the ConfigTable, cached for `ttl_s` seconds per process."""

    def __init__(
        self,
        table: Any,
        *,
        ttl_s: int = 5,
        now: Callable[[], float] = time.time,
        policy: EndpointPolicy | None = None,
    ) -> None:
        # Imported here, not at module level: only functions that route pay for it.
        from aws_lambda_powertools.utilities.parameters import DynamoDBProvider

        self._table = table
        self._provider = DynamoDBProvider(table_name=table.name, boto3_client=_OneTable(table))
        self._ttl_s = max(1, int(ttl_s))
        self._now = now
        self._policy = policy
        self._cache: dict[str, EndpointSpec] | None = None
        self._fetched_at = 0.0

    # --- reads -------------------------------------------------------------------------------

    def _specs(self, force_fetch: bool = False) -> dict[str, EndpointSpec]:
        # Our own clock decides freshness (injectable, so tests need no sleeps); Powertools does the
        # query and the JSON transform.
        fresh = self._cache is not None and self._now() - self._fetched_at < self._ttl_s
        if fresh and not force_fetch:
            return self._cache  # type: ignore[return-value]
        raw = self._provider.get_multiple(
            PARAM_PATH, max_age=self._ttl_s, transform="json", force_fetch=True
        )
        specs: dict[str, EndpointSpec] = {}
        for name, value in raw.items():
            try:
                specs[name] = EndpointSpec.model_validate(value)
            except ValidationError as exc:
                # Written around our API (console, script): skip that one, keep routing to the rest.
                log.warning("ignoring invalid endpoint item %r: %s", name, exc.errors()[:1])
        self._cache, self._fetched_at = specs, self._now()
        return specs

    def list(self, *, force_fetch: bool = False) -> list[EndpointSpec]:
        return sorted(self._specs(force_fetch).values(), key=lambda s: s.name)

    def get(self, name: str, *, force_fetch: bool = False) -> EndpointSpec:
        spec = self._specs(force_fetch).get(name)
        if spec is None:
            raise EndpointNotFound(name)
        return spec

    def candidates(self, model: str | None, streaming: bool = False) -> list[EndpointSpec]:
        """Enabled endpoints serving `model` (any enabled endpoint when model is None), of the job's kind.

        A streaming job goes only to streaming endpoints (only their workers send chunks). A
        non-streaming job goes to non-streaming endpoints; streaming ones are used only when no
        non-streaming endpoint serves the model at all, because a streaming worker returns every
        output as a list of chunks instead of the usual object (docs/gpu_handler.md, "Streaming").
        """
        serving = [s for s in self.list() if s.enabled and s.serves(model)]
        if streaming:
            return [s for s in serving if s.streaming]
        return [s for s in serving if not s.streaming] or serving

    # --- writes ------------------------------------------------------------------------------

    def put(self, spec: EndpointSpec | dict[str, Any]) -> EndpointSpec:
        """Create or replace one endpoint. Raises InvalidEndpointConfig before anything is written."""
        spec = self._validate(spec)
        self._table.put_item(Item=_item(spec))
        self._cache = None  # our own edit is visible to us at once
        return spec

    def update(self, name: str, /, **changes: Any) -> EndpointSpec:
        """Change some fields of an existing endpoint (e.g. weight=0.5, enabled=False).

        The merged result is validated as a whole; the write is conditional on the item being unchanged
        since we read it, so two concurrent admin edits don't silently drop one another.
        """
        if "name" in changes and changes["name"] != name:
            raise InvalidEndpointConfig("name", "an endpoint cannot be renamed; put a new one")
        for _ in range(3):
            old = self._table.get_item(
                Key={"id": PARAM_PATH, "sk": name}, ConsistentRead=True
            ).get("Item")
            if old is None:
                raise EndpointNotFound(name)
            try:
                current = EndpointSpec.model_validate_json(old["value"])
            except ValidationError:
                current = None  # a broken stored item may still be repaired by a full update
            base = current.model_dump() if current is not None else {"name": name}
            spec = self._validate({**base, **changes})
            try:
                self._table.put_item(
                    Item=_item(spec),
                    ConditionExpression="#v = :old",
                    ExpressionAttributeNames={"#v": "value"},
                    ExpressionAttributeValues={":old": old["value"]},
                )
            except self._table.meta.client.exceptions.ConditionalCheckFailedException:
                continue  # someone edited it in between: merge into their version
            self._cache = None
            return spec
        raise StillhouseError(f"endpoint {name!r} is being edited concurrently; try again")

    def _validate(self, spec: EndpointSpec | dict[str, Any]) -> EndpointSpec:
        checked = _validate(spec)
        if self._policy is not None:
            self._policy.check(checked)
        return checked


def _validate(spec: EndpointSpec | dict[str, Any]) -> EndpointSpec:
    try:
        data = spec.model_dump() if isinstance(spec, EndpointSpec) else spec
        return EndpointSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidEndpointConfig.from_validation_error(exc) from None


def _item(spec: EndpointSpec) -> dict[str, str]:
    return {"id": PARAM_PATH, "sk": spec.name, "value": spec.model_dump_json()}
