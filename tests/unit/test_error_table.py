"""The one table of failure classes: the state machines and the code read the same error names."""
import json
import re
from pathlib import Path

import pytest

from stillhouse import errors
from stillhouse.errors import WORKFLOW_ERROR_NAMES, WORKFLOW_ERRORS, ErrorClass, error_class_named

STATEMACHINES = Path(__file__).resolve().parents[2] / "statemachines"


def _error_names(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ErrorEquals":
                yield from value
            else:
                yield from _error_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _error_names(value)


@pytest.mark.parametrize("path", sorted(STATEMACHINES.glob("*.asl.json")), ids=lambda p: p.name)
def test_every_error_a_state_machine_matches_is_a_platform_error_or_one_a_task_raises(path):
    # ${...} are the template's DefinitionSubstitutions (some unquoted numbers): any value parses.
    definition = json.loads(re.sub(r"\$\{[^}]+\}", "0", path.read_text()))
    ours = {name for name in _error_names(definition)
            if not name.startswith(("States.", "Lambda.", "Sandbox.", "Runtime."))}  # the platform's own
    assert ours, f"{path.name} matches none of our errors"
    assert ours <= WORKFLOW_ERROR_NAMES, f"{path.name} matches names no task raises: {ours - WORKFLOW_ERROR_NAMES}"


def test_every_class_of_failure_has_one_workflow_error_and_reads_back_as_itself():
    for error_class in ErrorClass:
        raised = WORKFLOW_ERRORS[error_class]
        assert issubclass(raised, errors.WorkflowTaskError)
        assert error_class_named(raised.__name__) is error_class


def test_no_endpoint_at_all_is_its_own_error_and_no_class_of_failure():
    assert WORKFLOW_ERRORS[None] is errors.NoEndpointAvailable
    assert error_class_named("NoEndpointAvailable") is None
    assert error_class_named("States.Timeout") is None
