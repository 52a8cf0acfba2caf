"""Workflows: the Step Functions adapter, typed task events, and the recovery and council tasks."""
