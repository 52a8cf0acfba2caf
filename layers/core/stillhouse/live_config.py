"""The router's live knobs: settings an operator changes without a redeploy (`GET/PUT /v1/config`).

Which settings are live is `LIVE_FIELDS`; their types and bounds are those of the one settings model
(`config.Settings`), which validates every value. The stored part is an overlay over the environment's
settings, kept in the ConfigTable in Powertools Parameters' DynamoDB layout (`id="config"`,
`sk="router"`, `value` = JSON), read through Powertools' DynamoDBProvider with a short max age, so an
edit reaches every warm function within seconds. A write validates the merged result first, so a bad
edit never replaces a good configuration; a stored value that does not validate (written around the
API) is logged and the last good configuration is kept.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from stillhouse.config import Settings
from stillhouse.errors import StillhouseError, Unprocessable

log = logging.getLogger(__name__)

PARAM_PATH, PARAM_NAME = "config", "router"
#: The live settings: routing policy, breaker thresholds and cool-downs, the retry limit, workflow mode,
#: the result cache's TTL. Everything else needs a deploy.
LIVE_FIELDS = ("route", "breaker", "max_attempts", "workflow_mode", "cache_ttl_s")


class InvalidConfig(Unprocessable):
    code = "invalid_config"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


def live_values(settings: Settings) -> dict[str, Any]:
    """The live part of `settings`, as JSON."""
    return settings.model_dump(mode="json", include=set(LIVE_FIELDS))


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` over `base`, objects merged key by key (a partial edit of `breaker` keeps its other keys)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def overlay(settings: Settings, live: dict[str, Any]) -> Settings:
    """`settings` with the live values applied, validated by the settings model as a whole.

    Raises InvalidConfig naming the first bad field (`breaker.cooldown_s`)."""
    if not isinstance(live, dict):
        raise InvalidConfig("config", "must be an object")
    for key in live:
        if key not in LIVE_FIELDS:
            raise InvalidConfig(key, f"not a live setting (live: {', '.join(LIVE_FIELDS)})")
    if not live:
        return settings
    try:
        checked = Settings.model_validate(merged(settings.model_dump(include=set(LIVE_FIELDS)), live))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise InvalidConfig(".".join(str(p) for p in first["loc"]) or "config", first["msg"]) from None
    return settings.model_copy(update={name: getattr(checked, name) for name in LIVE_FIELDS})


class _OneTable:
    """The Table resource as the ServiceResource DynamoDBProvider expects (see routing.registry)."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.meta = table.meta

    def Table(self, _name: str) -> Any:  # noqa: N802 - boto3's spelling
        return self._table


class LiveConfigStore:
    """The stored overlay, cached for `max_age_s` per process; `effective()` applies it to the settings."""

    def __init__(self, table: Any, *, max_age_s: int = 5, now: Callable[[], float] = time.time) -> None:
        from aws_lambda_powertools.utilities.parameters import DynamoDBProvider

        self._table = table
        self._provider = DynamoDBProvider(table_name=table.name, boto3_client=_OneTable(table))
        self._max_age_s = max(1, int(max_age_s))
        self._now = now
        self._fetched_at = -float("inf")
        self._stored: dict[str, Any] = {}
        self._good: tuple[Settings, str, Settings] | None = None  # (base, stored JSON, result)

    def stored(self, *, force_fetch: bool = False) -> dict[str, Any]:
        """The stored overlay ({} when none). A read that fails keeps the last one read."""
        if force_fetch or self._now() - self._fetched_at >= self._max_age_s:
            self._fetched_at = self._now()
            try:
                raw = self._provider.get_multiple(PARAM_PATH, max_age=self._max_age_s, transform="json",
                                                  force_fetch=True)
                self._stored = raw.get(PARAM_NAME) or {}
            except Exception as exc:  # noqa: BLE001 - no config table or a throttled read: keep what we had
                if force_fetch:
                    raise
                log.warning("live configuration not read, keeping the last one: %s", exc)
        return self._stored

    def effective(self, base: Settings) -> Settings:
        """`base` with the stored overlay. The same object while nothing changed, so callers can tell."""
        stored = self.stored()
        key = json.dumps(stored, sort_keys=True)
        if self._good is not None and self._good[0] is base and self._good[1] == key:
            return self._good[2]
        try:
            result = overlay(base, stored)
        except InvalidConfig as exc:
            log.error("stored live configuration is invalid, keeping the last good one: %s", exc)
            return self._good[2] if self._good is not None and self._good[0] is base else base
        self._good = (base, key, result)
        return result

    def update(self, base: Settings, changes: dict[str, Any]) -> Settings:
        """Merge `changes` into the stored overlay, after validating the result; returns the new settings.

        Conditional on the item being unchanged since read, so two concurrent edits don't drop one another."""
        if not isinstance(changes, dict):
            raise InvalidConfig("config", "must be an object")
        for _ in range(3):
            item = self._table.get_item(Key={"id": PARAM_PATH, "sk": PARAM_NAME}, ConsistentRead=True).get("Item")
            try:
                current = json.loads(item["value"]) if item else {}
            except ValueError:
                current = {}  # a broken stored value is replaced by a valid one
            new = merged(current, changes)
            result = overlay(base, new)  # raises InvalidConfig: nothing is written
            condition = ({"ConditionExpression": "#v = :old", "ExpressionAttributeNames": {"#v": "value"},
                          "ExpressionAttributeValues": {":old": item["value"]}} if item
                         else {"ConditionExpression": "attribute_not_exists(id)"})
            try:
                self._table.put_item(Item={"id": PARAM_PATH, "sk": PARAM_NAME, "value": json.dumps(new)}, **condition)
            except self._table.meta.client.exceptions.ConditionalCheckFailedException:
                continue
            self._stored, self._fetched_at = new, self._now()
            return result
        raise StillhouseError("the live configuration is being edited concurrently; try again")
