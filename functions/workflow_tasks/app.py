"""Workflow tasks Lambda: one Step Functions task event -> one call of the core.

A raised exception's class name (TransientError, CapacityError, ...) is the error name that the
state machines' Retry and Catch blocks match.
"""
from aws_lambda_powertools import Logger

from stillhouse.container import container, startup_check

startup_check()  # every setting validated now (Lambda init), not at first use

logger = Logger(service="stillhouse")


@logger.inject_lambda_context(correlation_id_path="job_id")
def handler(event: dict, context: object) -> dict:
    return container().workflow_tasks.handle(event)
