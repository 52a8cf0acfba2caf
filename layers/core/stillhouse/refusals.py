"""What a refused DynamoDB conditional write tells: the item as it was, when the write asked for it
(`ReturnValuesOnConditionCheckFailure="ALL_OLD"`). A write that loses a race then needs no read to
try again on what won."""
from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

_DESERIALIZER = TypeDeserializer()


def refused_item(error: ClientError) -> dict[str, Any] | None:
    """The item a conditional write was refused on, as plain Python values (it comes in DynamoDB's wire
    format, even through a Table resource); None when there is none, or the backend did not return it."""
    raw = error.response.get("Item")
    return {name: _DESERIALIZER.deserialize(value) for name, value in raw.items()} if raw else None
