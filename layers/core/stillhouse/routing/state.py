"""Per-endpoint shared state (circuit breaker + routing statistics) in the EndpointStateTable.

One item per endpoint (HASH key `name`), shared by every function instance. Writes are optimistic:
compute the next state with a pure function of the state last seen, write it back on the condition
that `version` is unchanged, and on conflict re-apply it to the item the refusal returns. `in_flight` is the one exception: it is changed only with
atomic ADDs (many dispatchers and webhooks touch it at once) and the versioned write never sets it, so
the two kinds of write cannot overwrite each other. A finished job's outcome and the release of its slot
go in one write (`update(..., release=True)`: the versioned SET plus `ADD in_flight -1`).
"""
from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from stillhouse.errors import Conflict, ErrorClass
from stillhouse.refusals import refused_item

log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"  # traffic flows
    OPEN = "open"  # no traffic until open_until
    HALF_OPEN = "half_open"  # a few probes test whether the endpoint recovered


class EndpointState(BaseModel):
    """The stored item. Times are epoch seconds; None means "never"/"unknown"."""

    # Unknown attributes are ignored so an older function can read an item a newer one wrote.
    model_config = ConfigDict(extra="ignore")

    name: str
    version: int = 0  # optimistic-concurrency counter; 0 = no versioned write yet

    # breaker
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    window: str = ""  # last outcomes, oldest first: "1" = counted failure, "0" = success
    opened_at: float | None = None
    open_until: float | None = None
    opened_reason: str | None = None
    reopen_count: int = 0  # reopenings since the last close; grows the cool-down
    probes_claimed: int = 0
    probe_successes: int = 0
    probe_deadline: float | None = None  # unreported probes stop blocking new ones after this
    capacity_until: float | None = None  # 429 back-off: route elsewhere until then

    # statistics
    ema_latency_ms: float | None = None  # fast EMA of queue delay + execution
    baseline_latency_ms: float | None = None  # slow EMA: what "normal" looks like
    success_rate: float = 1.0  # EMA of successes (1) and counted failures (0)
    samples: int = 0  # outcomes observed, ever
    recent: int = 0  # outcomes since the last close: predictive checks need a minimum
    in_flight: int = 0  # submitted and not yet finished (atomic ADD only)
    last_error: str | None = None
    last_error_class: ErrorClass | None = None
    last_error_at: float | None = None
    updated_at: float | None = None


# Written by the versioned update; `name` is the key, `in_flight` is ADD-only, `version` is bumped.
_VERSIONED_FIELDS = tuple(
    f for f in EndpointState.model_fields if f not in ("name", "version", "in_flight")
)


#: Below this share of right guesses, a write reads the item first: a refused write costs a write unit
#: (5x a consistent read's price), so guessing pays only while at most ~1 in 5 guesses is refused.
GUESS_MIN_HIT_RATE = 0.8


class StateConflict(Conflict):
    """Too many concurrent writers on one endpoint's item; the caller decides whether to drop."""

    code = "endpoint_state_conflict"


class EndpointStateStore:
    def __init__(
        self,
        table: Any,
        *,
        max_attempts: int = 5,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table
        self._client = table.meta.client
        self._max_attempts = max_attempts
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        # The newest state this process has seen of each endpoint (read, written, refused with, or its
        # own in_flight ADDs): the next write's guess, and routing's input while it is recent.
        self._seen: dict[str, EndpointState] = {}
        self._read_at: dict[str, float] = {}  # when each was last read from the table (self._clock)
        self._guess_hits: dict[str, float] = {}  # how often a write from what was seen was right (EMA)
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def get(self, name: str, *, consistent: bool = True) -> EndpointState:
        item = self._table.get_item(Key={"name": name}, ConsistentRead=consistent).get("Item")
        state = _from_item(item) if item else EndpointState(name=name)
        self._remember(state, read=True, eventual=not consistent)
        return state

    def get_many(self, names: Iterable[str], *, max_age_s: float = 0.0) -> dict[str, EndpointState]:
        """States of several endpoints in one round trip (eventually consistent: routing input).

        `max_age_s`: when every one was read from the table less than this long ago, what this process
        knows of them is the answer, without a call (its own writes and in_flight ADDs included; other
        instances' news arrive with the next read)."""
        wanted = list(dict.fromkeys(names))
        if max_age_s > 0:
            now = self._clock()
            known = {n: self._seen[n] for n in wanted if n in self._seen and now - self._read_at.get(n, -math.inf)
                     < max_age_s}
            if len(known) == len(wanted):
                return known
        found: dict[str, EndpointState] = {n: EndpointState(name=n) for n in wanted}
        for i in range(0, len(wanted), 100):  # BatchGetItem takes at most 100 keys
            # A Table's client belongs to its resource, which (de)serialises plain Python values.
            request = {self._table.name: {"Keys": [{"name": n} for n in wanted[i : i + 100]]}}
            for attempt in range(self._max_attempts):
                resp = self._client.batch_get_item(RequestItems=request)
                for raw in resp.get("Responses", {}).get(self._table.name, []):
                    state = _from_item(raw)
                    found[state.name] = state
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
                self._backoff(attempt)
        for state in found.values():
            self._remember(state, read=True, eventual=True)
        return found

    def forget(self, *names: str) -> None:
        """Drop what this process knows of `names` (their items were replaced behind its back)."""
        for name in names:
            self._seen.pop(name, None)
            self._read_at.pop(name, None)

    def _remember(self, state: EndpointState, *, read: bool = False, eventual: bool = False) -> None:
        known = self._seen.get(state.name)
        # An eventually consistent read may be older than a write this process just made: it never undoes
        # it. Anything else (a consistent read, a write's result, a refusal's item) is the item as it is.
        if not eventual or known is None or state.version >= known.version:
            self._seen[state.name] = state
        if read:
            self._read_at[state.name] = self._clock()

    def update(
        self, name: str, change: Callable[[EndpointState], EndpointState | None], *, release: bool = False
    ) -> EndpointState:
        """Apply `change` (a pure function of the current state) with a conditional write.

        `change` returns the next state, or None when nothing needs writing. While this process's guesses
        are mostly right (it wrote last), the first write is made from the state it last saw, without
        reading: a version conflict returns the item as it is with the refusal
        (ReturnValuesOnConditionCheckFailure), and `change` is re-applied to that. Where other instances
        write too often for that (a refused write costs a write unit, five times a read's price), it
        reads first, and keeps checking whether a guess would have been right. Raises StateConflict after
        max_attempts. `release`: the same write also takes one off `in_flight` (never below zero, as
        add_in_flight), so a finished job costs one write, not two.
        """
        with self._locks[name]:  # this process's threads would only race each other for the item
            guess = self._seen.get(name)
            guessing = guess is not None and self._guess_hits.get(name, 1.0) >= GUESS_MIN_HIT_RATE
            current, confirmed = (guess, False) if guessing else (None, False)
            for attempt in range(self._max_attempts):
                if current is None:
                    current, confirmed = self.get(name), True
                    if not guessing and guess is not None:  # would the guess have been right?
                        self._score_guess(name, current.version == guess.version)
                        guess = None
                nxt = change(current.model_copy(deep=True))
                if nxt is None:
                    if not confirmed:  # "nothing to write" is decided on the item as it is, never on a guess
                        current = None
                        continue
                    if release:
                        self.add_in_flight(name, -1)
                    return current
                # A slot a confirmed state does not show is not ours to free (a duplicate result); on a
                # guess the write's condition (`in_flight >= 1`) decides, and a refusal tells which.
                freeing = release and (current.in_flight >= 1 or not confirmed)
                if release and not freeing:
                    log.info("in_flight of %s already at zero; decrement ignored", name)
                written, found = self._write(current, nxt, release=freeing, whole=not confirmed)
                if not confirmed:
                    self._score_guess(name, written is not None or (
                        found is not None and found.version == current.version))  # refused for the slot only
                if written is not None:
                    self._remember(written)
                    return written
                raced = confirmed  # a refused guess is no contention: no need to back off
                current, confirmed = found, found is not None  # None: a backend that does not return it, read
                if found is not None:
                    self._remember(found)
                if raced:
                    self._backoff(attempt)
            self.forget(name)
            raise StateConflict(f"endpoint state {name!r}: {self._max_attempts} conflicting writes")

    def _score_guess(self, name: str, right: bool) -> None:
        self._guess_hits[name] = 0.8 * self._guess_hits.get(name, 1.0) + 0.2 * (1.0 if right else 0.0)

    def add_in_flight(self, name: str, delta: int) -> None:
        """Atomic ADD; a decrement never takes the counter below zero (a duplicate result is ignored)."""
        if delta == 0:
            return
        kwargs: dict[str, Any] = {
            "Key": {"name": name},
            "UpdateExpression": "ADD in_flight :d",
            "ExpressionAttributeValues": {":d": delta},
        }
        if delta < 0:
            kwargs["ConditionExpression"] = "in_flight >= :need"
            kwargs["ExpressionAttributeValues"][":need"] = -delta
        try:
            done = self._table.update_item(**kwargs, ReturnValues="UPDATED_NEW")
        except self._client.exceptions.ConditionalCheckFailedException:
            log.info("in_flight of %s already at zero; decrement ignored", name)
            return
        known = self._seen.get(name)
        if known is not None:  # the count as it is now, for this process's routing
            self._seen[name] = known.model_copy(update={"in_flight": int(done["Attributes"]["in_flight"])})

    def _write(self, current: EndpointState, state: EndpointState, *, release: bool = False,
               whole: bool = False) -> tuple[EndpointState | None, EndpointState | None]:
        """The conditional write of `state` over `current`: (the item as written, None), or, refused,
        (None, the item as it is when the backend returns it). `whole`: every field, not only those
        that differ from `current` (a guess: an item deleted and made again can be at its version)."""
        expected_version = current.version
        names = {"#version": "version"}
        values: dict[str, Any] = {":next": expected_version + 1}
        sets, removes = ["#version = :next"], []
        for i, field in enumerate(_VERSIONED_FIELDS):
            value = getattr(state, field)
            # Only what changed: the version condition already guarantees the rest is as we read it.
            if expected_version and not whole and value == getattr(current, field):
                continue
            names[f"#f{i}"] = field
            if value is None:
                removes.append(f"#f{i}")
            else:
                sets.append(f"#f{i} = :f{i}")
                values[f":f{i}"] = _to_dynamo(value)
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        if expected_version == 0:
            condition = "attribute_not_exists(#version)"
        else:
            condition = "#version = :expected"
            values[":expected"] = expected_version
        if release:
            # Concurrent ADDs do not bump the version: the slot must still be there when we write.
            expression += " ADD in_flight :release"
            condition += " AND in_flight >= :one"
            values[":release"], values[":one"] = -1, 1
        try:
            done = self._table.update_item(
                Key={"name": state.name},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",  # the item as written, `in_flight` included: free with the write
                ReturnValuesOnConditionCheckFailure="ALL_OLD",  # the item that refused us: no read to retry
            )
        except self._client.exceptions.ConditionalCheckFailedException as refused:
            found = refused_item(refused)
            return None, (_from_item(found) if found else None)
        return _from_item(done["Attributes"]), None

    def _backoff(self, attempt: int) -> None:
        # Full jitter so colliding writers spread out instead of colliding again.
        self._sleep(self._rng.uniform(0, 0.005 * 2**attempt))


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("DynamoDB stores finite numbers only")
        return Decimal(repr(round(value, 6)))
    return value


def _from_item(item: dict[str, Any]) -> EndpointState:
    # pydantic's lax mode turns DynamoDB's Decimals into the declared int/float fields.
    return EndpointState.model_validate(item)
