"""Step Functions adapter: start, stop and resume the recovery and council workflows."""
from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from stillhouse.telemetry import tracing


class Workflows:
    def __init__(self, sfn: Any, recovery_arn: str, council_arn: str) -> None:
        self._sfn = sfn
        self._recovery_arn = recovery_arn
        self._council_arn = council_arn

    def _start(self, machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        # Every task of the state machines passes $$.Execution.Input.traceparent on: it must be there.
        payload = {**payload, tracing.HEADER: tracing.outgoing() or tracing.TraceContext.new().traceparent}
        # Named executions make a duplicate start harmless: same name + same input is idempotent.
        try:
            return self._sfn.start_execution(stateMachineArn=machine_arn, name=name, input=json.dumps(payload))[
                "executionArn"
            ]
        except ClientError as err:
            if err.response["Error"]["Code"] != "ExecutionAlreadyExists":
                raise
            return f"{machine_arn.replace(':stateMachine:', ':execution:')}:{name}"

    def start_recovery(self, job_id: str, attempt: int) -> str:
        return self._start(self._recovery_arn, f"{job_id}-{attempt}", {"job_id": job_id})

    def start_council(self, job_id: str, council: dict[str, Any]) -> str:
        return self._start(self._council_arn, f"{job_id}-council", {"job_id": job_id, **council})

    def stop(self, execution_arn: str, cause: str) -> None:
        try:
            self._sfn.stop_execution(executionArn=execution_arn, error="Cancelled", cause=cause)
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("ExecutionDoesNotExist", "ValidationException"):
                raise

    def status(self, execution_arn: str) -> str:
        """RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED (| MISSING when unknown)."""
        try:
            return self._sfn.describe_execution(executionArn=execution_arn)["status"]
        except ClientError as err:
            if err.response["Error"]["Code"] == "ExecutionDoesNotExist":
                return "MISSING"
            raise

    def succeed_task(self, task_token: str, output: dict[str, Any]) -> None:
        self._resume(lambda: self._sfn.send_task_success(taskToken=task_token, output=json.dumps(output)))

    def fail_task(self, task_token: str, error: str, cause: str) -> None:
        self._resume(lambda: self._sfn.send_task_failure(taskToken=task_token, error=error, cause=cause[:32000]))

    @staticmethod
    def _resume(call: Any) -> None:
        try:
            call()
        except ClientError as err:
            # The task already ended (timed out, or the execution was stopped): nothing waits for us.
            if err.response["Error"]["Code"] not in ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken"):
                raise
